"""Is the undefended builtin-nr attackable, as a real IQA model is? (issue: substrate acceptance)

Runs I-FGSM (10 iterations) at the three preset budgets (L-inf 2, 4, 8 /255; Guardians of Image Quality
appendix A.3.4) on three image sets and prints, per set and budget, the share of images whose
score the attack raises and the mean gain in units of the metric's range (``diam``):

* (a) the 50 images of the demo benchmark (``iqaguard demo``: K-Means subset of six test
  photographs of builtin-kadid, seed 0, as the demo spec draws it);
* (b) 24 random 256 x 256 crops (seeded) of the pristine references of the 24 test photographs;
* (c) 16 smoothed-noise images (white noise blurred with a Gaussian of sigma 2, seeded).

Usage: ``python benchmarks/builtin_attackability.py [--threads 2] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List

import numpy as np
import torch

import iqaguard
from iqaguard.data.kadid_builtin import BuiltinKadid
from iqaguard.data.sampling import cluster_subset
from iqaguard.metrics.builtin import gaussian_blur

DEMO_SOURCES = ["aqua", "cheetah", "coffee", "garden", "montstmichel", "wildpanda"]
PRESETS = ("weak", "medium", "strong")


def demo_images() -> List[torch.Tensor]:
    ds = BuiltinKadid(split="test", sources=DEMO_SOURCES, progress=False)
    return [ds[i].image for i in cluster_subset(ds, k_per_cluster=5, n_clusters=10, seed=0)]


def pristine_crops(n: int = 24, side: int = 256, seed: int = 0) -> List[torch.Tensor]:
    ds = BuiltinKadid(split="test", progress=False)
    refs = sorted({str(s.ref_path): s for s in ds}.items())
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        ref = iqaguard.data.load_image(refs[k % len(refs)][0])
        top = int(torch.randint(0, ref.shape[-2] - side + 1, (1,), generator=g))
        left = int(torch.randint(0, ref.shape[-1] - side + 1, (1,), generator=g))
        out.append(ref[..., top:top + side, left:left + side].contiguous())
    return out


def smoothed_noise(n: int = 16, side: int = 256, seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        z = torch.rand(1, 3, side, side, generator=g)
        out.append(gaussian_blur(z, 2.0, radius=6).sub(0.5).mul(4.0).add(0.5).clamp(0, 1))  # restore contrast
    return out


def measure(metric, images: List[torch.Tensor]) -> Dict[str, Dict[str, float]]:
    with torch.no_grad():
        clean = torch.cat([metric(x) for x in images])
    res = {}
    for preset in PRESETS:
        attack = iqaguard.attacks.create("ifgsm", preset=preset)
        adv = []
        for x in images:
            xa = attack(metric, x)
            with torch.no_grad():
                adv.append(metric(xa))
        gain = (torch.cat(adv) - clean) * metric.improvement_sign()
        res[preset] = {"eps_255": round(attack.eps * 255, 3), "raised": float((gain > 0).float().mean()),
                       "mean_gain_diam": float(gain.mean() / metric.bounds.diam), "n": len(images)}
    res["clean_median"] = float(clean.median())
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--metric", default="builtin-nr")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = iqaguard.metrics.create(args.metric)
    sets = {"a_demo": demo_images(), "b_pristine_crops": pristine_crops(), "c_smoothed_noise": smoothed_noise()}
    out = {}
    for name, imgs in sets.items():
        t0 = time.time()
        out[name] = measure(metric, imgs)
        gains = [out[name][p]["mean_gain_diam"] for p in PRESETS]
        print(f"{name}: n={len(imgs)} clean median {out[name]['clean_median']:.3f}; "
              + "; ".join(f"{p} ({out[name][p]['eps_255']:g}/255): raised {out[name][p]['raised']:.1%}, "
                          f"mean gain {out[name][p]['mean_gain_diam']:.4f} diam" for p in PRESETS)
              + f"; gain grows strictly with eps: {bool(np.all(np.diff(gains) > 0))} ({time.time() - t0:.0f}s)",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
