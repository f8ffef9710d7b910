"""Measure builtin-nr training variants side by side (docs/builtin_models.md, "What was tried").

Every variant changes one thing of the recipe that ``scripts/train_builtin.py`` shipped until
2026-11-30 (:data:`BASE`: 6 x 250 AdamW steps, no identification head, batch 32, 128x128 crops, peak lr 2e-3, widths 16-32-64-96, MSCN input, the
per-cell loss :func:`train_builtin.nr_loss`). Each run keeps the checkpoint with the best
validation SROCC (checked 6 times, as the real script) and reports that SROCC, the test SROCC
of the same checkpoint and the SROCC on 500 training images (how well the run fits what it saw).
The test split only reports; nothing is chosen on it.

Usage::

    python scripts/nr_sweep.py --variants base,steps6000 --seeds 0,1 --out runs/nr_sweep.jsonl
    python scripts/nr_sweep.py --list                     # the variants and what they change

Runs already in ``--out`` (same variant and seed) are skipped, so an interrupted sweep resumes.
``--device auto`` trains on a GPU when there is one; ``--workers N`` runs N variants at once
(processes forked after the data is loaded; on a GPU they share it). On 2 CPU cores one base
run takes about 5 minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_builtin import (AUX_W, NR_LR, cell_crops, cell_targets, correlations, identification_head,  # noqa: E402
                           load_split, nr_loss, predict, train_loop, type_levels)

from iqaguard.metrics.builtin import NRNet  # noqa: E402
from iqaguard.metrics.cells import mos_from_cells, quality_cells  # noqa: E402
from iqaguard.metrics.functional import ssim_downsample_factor  # noqa: E402
from iqaguard.validation import resolve_device  # noqa: E402

BASE = dict(steps=1500, batch=32, patch=128, lr=NR_LR, widths=(16, 32, 64, 96), hidden=64, mscn=True,
            plcc_w=0.0, rank_w=0.0, ntrain=0, smin=1.0, aux_w=0.0)
#: name -> (what it changes, overrides of BASE)
VARIANTS: Dict[str, Tuple[str, dict]] = {
    "base": ("the recipe shipped until 2026-11-30 (no identification head, 1,500 steps)", {}),
    "steps6000": ("4x the optimisation steps", dict(steps=6000)),
    "steps12000": ("8x the optimisation steps", dict(steps=12000)),
    "patch256_b8": ("256x256 crops, batch 8 (same pixels per step)", dict(patch=256, batch=8)),
    "patch256_b32": ("256x256 crops, batch 32 (4x the pixels)", dict(patch=256, batch=32)),
    "plcc": ("+ (1 - PLCC) of the crops' pseudo-MOS over the batch", dict(plcc_w=1.0)),
    "rank": ("+ pairwise logistic ranking loss on the crops' pseudo-MOS", dict(rank_w=1.0)),
    "wide": ("widths 24-48-96-144", dict(widths=(24, 48, 96, 144))),
    "hidden128": ("head hidden width 128", dict(hidden=128)),
    "mscn0": ("RGB input only (no MSCN channel)", dict(mscn=False)),
    "lr4e-3": ("peak learning rate 4e-3", dict(lr=4e-3)),
    "lr1e-3": ("peak learning rate 1e-3", dict(lr=1e-3)),
    "ntrain10": ("only the first 10 training photographs", dict(ntrain=10)),
    "ntrain15": ("only the first 15 training photographs", dict(ntrain=15)),
    "rescale0.5": ("crops rescaled by a random factor in [0.5, 1] (content augmentation), "
                   "labels recomputed on the rescaled pair", dict(smin=0.5)),
    "rescale0.7": ("as rescale0.5 with factors in [0.7, 1]", dict(smin=0.7)),
    "rescale0.5_steps6000": ("rescale0.5 with 4x the steps", dict(smin=0.5, steps=6000)),
    "aux_type": ("+ distortion identification (MEON-style multi-task, Ma et al. 2018): "
                 "train_builtin.identification_head, weight 0.5", dict(aux_w=AUX_W)),
    "aux_type1": ("aux_type with weight 1", dict(aux_w=1.0)),
}
EVALS = 6
VAL_LEVELS = 1  # validation subset: one level per type and photograph (as train_builtin's default)
_DATA: dict = {}


def load_data(seed: int) -> dict:
    """uint8 images, references and labels of the three splits plus the training cell targets."""
    data = {}
    for split in ("train", "val", "test"):
        d = load_split(split, seed, VAL_LEVELS if split == "val" else None)
        data[split] = d._asdict()
        if split == "train":
            data[split]["cells"] = cell_targets(d)
    data["train"]["types"], data["train"]["levels"] = type_levels(data["train"]["names"])
    return data


def rescaled_crops(g: torch.Generator, x: torch.Tensor, refs: torch.Tensor, ref_idx: torch.Tensor, idx: torch.Tensor,
                   patch: int, smin: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crops of side ``patch / s`` (``s`` uniform in [smin, 1]) of images and references, resized to
    ``patch`` (antialiased bilinear), randomly flipped, and their cells recomputed with the SSIM
    factor of the full image."""
    h, w = x.shape[-2:]
    xs, rs = [], []
    for i in idx.tolist():
        s = float(torch.empty(()).uniform_(smin, 1.0, generator=g))
        q = min(int(round(patch / s)), h, w)
        t = int(torch.randint(0, h - q + 1, (), generator=g))
        lft = int(torch.randint(0, w - q + 1, (), generator=g))
        r = refs[ref_idx[i]]
        pair = torch.stack([x[i, :, t:t + q, lft:lft + q], r[:, t:t + q, lft:lft + q]]).float() / 255
        if q != patch:
            pair = torch.nn.functional.interpolate(pair, size=(patch, patch), mode="bilinear", antialias=True,
                                                   align_corners=False).clamp(0, 1)
        if float(torch.rand((), generator=g)) < 0.5:
            pair = pair.flip(-1)
        xs.append(pair[0])
        rs.append(pair[1])
    xb, rb = torch.stack(xs), torch.stack(rs)
    return xb, quality_cells(xb, rb, ssim_factor=ssim_downsample_factor(h, w))


def batch_losses(pred: torch.Tensor, target: torch.Tensor, cfg: dict) -> torch.Tensor:
    """:func:`nr_loss` plus the optional batch-level PLCC and ranking terms of ``cfg``."""
    loss = nr_loss(pred, target)
    pm, ym = mos_from_cells(pred), mos_from_cells(target)
    if cfg["plcc_w"]:
        a, b = pm - pm.mean(), ym - ym.mean()
        loss = loss + cfg["plcc_w"] * (1 - (a * b).sum() / (a.norm() * b.norm() + 1e-8))
    if cfg["rank_w"]:
        dp, dy = pm[:, None] - pm[None, :], ym[:, None] - ym[None, :]
        pairs = dy.abs() > 0.05
        if pairs.any():
            loss = loss + cfg["rank_w"] * torch.nn.functional.softplus(-dp[pairs] * dy[pairs].sign() / 0.1).mean()
    return loss


def run(job: Tuple[str, int, str]) -> dict:
    """Train one variant with one seed on ``_DATA``; return its result row."""
    name, seed, device = job
    cfg = dict(BASE, **VARIANTS[name][1])
    dev = resolve_device(device)
    torch.set_num_threads(_DATA["threads"])
    tr = _DATA["train"]
    keep = sorted(set(tr["src"]))[:cfg["ntrain"]] if cfg["ntrain"] else sorted(set(tr["src"]))
    rows = torch.tensor([s in keep for s in tr["src"]]).nonzero().flatten()
    torch.manual_seed(seed)
    net = NRNet(widths=cfg["widths"], hidden=cfg["hidden"], use_mscn=cfg["mscn"]).to(dev)
    aux_loss, _ = identification_head(net) if cfg["aux_w"] else (None, None)

    def score(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(dev)).cpu()

    def step(g: torch.Generator) -> torch.Tensor:
        idx = rows[torch.randint(0, len(rows), (cfg["batch"],), generator=g)]
        if cfg["smin"] < 1.0:
            xb, cb = rescaled_crops(g, tr["x"], tr["refs"], tr["ref_idx"], idx, cfg["patch"], cfg["smin"])
        else:
            xb, cb = cell_crops(g, tr["x"], tr["cells"], idx, cfg["patch"])
        loss = batch_losses(net.cells(xb.to(dev)), cb.to(dev), cfg)
        if cfg["aux_w"]:
            loss = loss + cfg["aux_w"] * aux_loss(tr["types"][idx].to(dev), tr["levels"][idx].to(dev))
        return loss

    def srocc(split: str, pick=slice(None)) -> float:
        d = _DATA[split]
        return correlations(predict(score, d["x"][pick], batch=25), d["y"][pick].numpy())["srocc"]

    t0 = time.time()
    net, best_val, log = train_loop(net, step, lambda: srocc("val"), EVALS, cfg["steps"] // EVALS, cfg["lr"],
                                    seed, f"{name} seed {seed}")
    net.eval()
    sub = torch.randperm(len(tr["x"]), generator=torch.Generator().manual_seed(1))[:500]
    return {"variant": name, "seed": seed, "best_val_srocc": round(best_val, 4),
            "test_srocc_at_best": round(srocc("test"), 4), "train_srocc": round(srocc("train", sub), 4),
            "last_val_srocc": round(log[-1]["val_srocc"], 4), "seconds": round(time.time() - t0, 1),
            "device": str(dev), "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}


def read_rows(path: Path) -> List[dict]:
    """Result rows already in ``path``; a line cut off by an interrupted write is reported and
    dropped (its run is done again)."""
    rows = []
    if path.exists():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"{path}:{n}: unreadable line (interrupted write?) ignored; that run is done again",
                      file=sys.stderr)
    return rows


def summary(rows: List[dict]) -> str:
    """Markdown table: per variant, mean (and per-seed) best-val / test / train SROCC."""
    lines = ["| variant | seeds | val SROCC | test SROCC | train SROCC |", "|---|---|---|---|---|"]
    for name in VARIANTS:
        rs = [r for r in rows if r["variant"] == name]
        if not rs:
            continue
        cells = [f"{np.mean([r[k] for r in rs]):.3f} ({' / '.join(f'{r[k]:.2f}' for r in rs)})"
                 for k in ("best_val_srocc", "test_srocc_at_best", "train_srocc")]
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base", help="comma-separated names (see --list) or 'all'")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--out", type=Path, default=Path("runs/nr_sweep.jsonl"))
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--workers", type=int, default=1, help="variants trained at the same time")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per worker")
    ap.add_argument("--data-seed", type=int, default=0, help="builtin-kadid seed (splits and images)")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, over) in VARIANTS.items():
            print(f"{name:22s} {what} {over or ''}")
        return 0
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    done = read_rows(args.out)
    jobs = [(n, s, args.device) for n in names for s in seeds
            if not any(r["variant"] == n and r["seed"] == s for r in done)]
    print(f"{len(jobs)} run(s) to do, {len(done)} already in {args.out}", flush=True)
    if jobs:
        torch.set_num_threads(args.threads * args.workers)  # data preparation uses every worker's threads
        _DATA.update(load_data(args.data_seed), threads=args.threads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pool = multiprocessing.get_context("fork").Pool(args.workers) if args.workers > 1 else None
        with pool or contextlib.nullcontext():
            for row in (pool.imap_unordered(run, jobs) if pool else map(run, jobs)):
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
                print(f"{row['variant']} seed {row['seed']}: val {row['best_val_srocc']:.3f} "
                      f"test {row['test_srocc_at_best']:.3f} train {row['train_srocc']:.3f} ({row['seconds']:.0f}s)",
                      flush=True)
    print(summary([r for r in done if r["variant"] in names]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
