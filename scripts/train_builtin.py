"""Train the builtin IQA models (builtin-nr, builtin-fr) from scratch on builtin-kadid.

Usage (the exact command recorded in the model card)::

    python scripts/train_builtin.py --seed 0

Splits are by source photograph (``builtin-kadid`` train / val / test). The NR model regresses the
pseudo-MOS with an L1 loss on random crops; the checkpoint with the best validation SROCC is
kept; hold-out SROCC/PLCC are computed on full-size test images never seen in training. The FR
model starts from the trained NR backbone and learns an LPIPS-style channel-weighted feature
distance to the normalised pseudo-DMOS ``(5 - MOS) / 4``. Bounds follow seed 002 appendix
A.3.2 on the builtin photographs. Weights are written as safetensors with the config, bounds
and scores in the metadata, and ``MODEL_CARD.md`` is regenerated.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

import iqaguard
from iqaguard.data.kadid_builtin import BuiltinKadid
from iqaguard.metrics.bounds import calibrate_bounds
from iqaguard.metrics.builtin import WEIGHTS_DIR, BuiltinFR, BuiltinNR, FRNet, NRNet

ROOT = Path(__file__).resolve().parents[1]


def load_split(split: str, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[str]]:
    """All images of a split as uint8 ``[N,3,H,W]``, their references, MOS ``[N]``, sources."""
    ds = BuiltinKadid(split=split, seed=seed)
    imgs, refs, mos, src = [], [], [], []
    ref_cache: Dict[str, torch.Tensor] = {}
    for s in ds:
        imgs.append((s.image[0] * 255).round().to(torch.uint8))
        key = str(s.ref_path)
        if key not in ref_cache:
            ref_cache[key] = (s.ref[0] * 255).round().to(torch.uint8)
        refs.append(ref_cache[key])
        mos.append(float(s.mos))
        src.append(s.meta["source"])
    return torch.stack(imgs), torch.stack(refs), torch.tensor(mos), src


def random_crops(g: torch.Generator, imgs: List[torch.Tensor], size: Tuple[int, int]) -> List[torch.Tensor]:
    """Same random crop (and horizontal flip) applied to every tensor of ``imgs`` ``[B,3,H,W]``."""
    _, _, h, w = imgs[0].shape
    ch, cw = size
    out = [[] for _ in imgs]
    for b in range(imgs[0].shape[0]):
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        flip = bool(torch.randint(0, 2, (1,), generator=g))
        for k, t in enumerate(imgs):
            c = t[b, :, top:top + ch, left:left + cw]
            out[k].append(c.flip(-1) if flip else c)
    return [torch.stack(o).float() / 255.0 for o in out]


@torch.no_grad()
def predict(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = 8) -> np.ndarray:
    """Run ``fn`` on full-size uint8 batches and return the scores."""
    out = []
    for i in range(0, tensors[0].shape[0], batch):
        out.append(fn(*[t[i:i + batch].float() / 255.0 for t in tensors]))
    return torch.cat(out).numpy()


def correlations(pred: np.ndarray, mos: np.ndarray, lower_better: bool = False) -> Dict[str, float]:
    p = -pred if lower_better else pred
    return {"srocc": float(stats.spearmanr(p, mos)[0]), "plcc": float(stats.pearsonr(p, mos)[0])}


def train_loop(model: torch.nn.Module, step: Callable[[torch.Generator], torch.Tensor],
               evaluate: Callable[[], float], epochs: int, iters: int, lr: float, seed: int, tag: str,
               params=None) -> Tuple[torch.nn.Module, float, List[dict]]:
    """Generic AdamW + cosine loop; keeps the state with the best validation SROCC."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * iters, pct_start=0.15)
    best, best_state, log = -2.0, copy.deepcopy(model.state_dict()), []
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        losses = []
        for _ in range(iters):
            loss = step(g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        model.eval()
        val = evaluate()
        log.append({"epoch": ep + 1, "loss": float(np.mean(losses)), "val_srocc": val,
                    "elapsed_s": round(time.time() - t0, 1)})
        print(f"[{tag}] epoch {ep + 1}/{epochs} loss {np.mean(losses):.4f} val SROCC {val:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, best, log


def save(net: torch.nn.Module, name: str, cfg: dict, out_dir: Path) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(cfg)})
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nr-epochs", type=int, default=24)
    ap.add_argument("--fr-epochs", type=int, default=6)
    ap.add_argument("--iters", type=int, default=60, help="optimisation steps per epoch")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, nargs=2, default=(192, 256))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--mscn", type=int, default=1, help="1: add the MSCN luma channel to the backbone input")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    data = {s: load_split(s, args.seed) for s in ("train", "val", "test")}
    x_tr, r_tr, y_tr, _ = data["train"]
    print({s: (len(v[2]), len(set(v[3]))) for s, v in data.items()}, "(images, sources)", flush=True)
    crop = tuple(args.crop)

    # ---- builtin-nr --------------------------------------------------------------------
    nr = NRNet(use_mscn=bool(args.mscn))
    nr.target_mean.fill_(float(y_tr.mean()))
    nr.target_std.fill_(float(y_tr.std()))

    def nr_step(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, x_tr.shape[0], (args.batch,), generator=g)
        (xb,) = random_crops(g, [x_tr[idx]], crop)
        return F.smooth_l1_loss(nr(xb) / nr.target_std, y_tr[idx] / nr.target_std, beta=0.5)

    def nr_val() -> float:
        x, _, y, _ = data["val"]
        return correlations(predict(nr, x), y.numpy())["srocc"]

    t0 = time.time()
    nr, nr_best_val, nr_log = train_loop(nr, nr_step, nr_val, args.nr_epochs, args.iters, 2e-3,
                                         args.seed, "nr")
    nr_time = time.time() - t0
    x_te, r_te, y_te, _ = data["test"]
    nr_test = correlations(predict(nr, x_te), y_te.numpy())

    # ---- builtin-fr (backbone initialised from builtin-nr) --------------------------------
    fr = FRNet(use_mscn=bool(args.mscn))
    fr.backbone.load_state_dict(nr.backbone.state_dict())
    t_tr = (5.0 - y_tr) / 4.0

    def fr_step(g: torch.Generator) -> torch.Tensor:
        fr.backbone.eval()  # keep the NR batch-norm statistics: identical inputs stay at distance 0
        idx = torch.randint(0, x_tr.shape[0], (args.batch,), generator=g)
        xb, rb = random_crops(g, [x_tr[idx], r_tr[idx]], crop)
        return F.smooth_l1_loss(fr(xb, rb), t_tr[idx], beta=0.1)

    def fr_val() -> float:
        x, r, y, _ = data["val"]
        return correlations(predict(fr, x, r), y.numpy(), lower_better=True)["srocc"]

    params = [{"params": [fr.input_weights, *fr.channel_weights.parameters()], "lr": 5e-2},
              {"params": fr.backbone.parameters(), "lr": 5e-4}]
    t0 = time.time()
    fr, fr_best_val, fr_log = train_loop(fr, fr_step, fr_val, args.fr_epochs, args.iters, 5e-2,
                                         args.seed + 1, "fr", params=params)
    fr_time = time.time() - t0
    fr_test = correlations(predict(fr, x_te, r_te), y_te.numpy(), lower_better=True)

    # ---- bounds (seed 002 appendix A.3.2) on the builtin photographs ---------------------
    photos = [s.image for s in iqaguard.data.create("builtin")]
    photos = [F.interpolate(p, size=(384, 512), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
              for p in photos]
    argv_shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--out" and (i == 0 or sys.argv[i] != "--out")]
    cfg_common = {"seed": args.seed, "command": "python scripts/train_builtin.py " + " ".join(argv_shown),
                  "dataset": "builtin-kadid", "splits": {s: sorted(set(v[3])) for s, v in data.items()},
                  "n_images": {s: int(len(v[2])) for s, v in data.items()}, "crop": list(crop),
                  "batch": args.batch, "iters_per_epoch": args.iters, "torch": torch.__version__,
                  "date": date.today().isoformat()}
    results = {}
    for name, net, cls, test, best_val, log, secs, epochs in (
            ("builtin-nr", nr, BuiltinNR, nr_test, nr_best_val, nr_log, nr_time, args.nr_epochs),
            ("builtin-fr", fr, BuiltinFR, fr_test, fr_best_val, fr_log, fr_time, args.fr_epochs)):
        metric = cls(pretrained=False)
        metric.net = net
        metric.eval()
        b = calibrate_bounds(metric, photos, seed=args.seed)
        cfg = dict(cfg_common, widths=list(net.backbone.widths), use_mscn=net.backbone.use_mscn, epochs=epochs,
                   bounds=[b.worst, b.best], test=test, best_val_srocc=best_val,
                   train_seconds=round(secs, 1), log=log)
        path = save(net, name, cfg, args.out)
        results[name] = dict(cfg, file=path.name, sha256=sha256(path), size_kb=round(path.stat().st_size / 1024, 1))
        print(f"{name}: test SROCC {test['srocc']:.4f} PLCC {test['plcc']:.4f} bounds {b} -> {path}", flush=True)
    (args.out / "MODEL_CARD.md").write_text(model_card(results, time.time() - t_start))
    return 0


def model_card(results: Dict[str, dict], total_s: float) -> str:
    lines = ["# Model card: builtin-nr and builtin-fr", "",
             "Small CNNs trained from scratch by this repository's own script on its own builtin data",
             "(`builtin-kadid`, the KADID-10k-style synthetic set over the builtin photographs; see",
             "`docs/builtin_kadid.md`). They exist so that every feature of iqaguard works offline;",
             "they are not substitutes for published IQA models.", "",
             f"Total training time (both models, data loading and bounds included): {total_s / 60:.1f} min "
             f"on {torch.get_num_threads()} CPU threads.", ""]
    for name, r in results.items():
        inp = "RGB + MSCN luma" if r["use_mscn"] else "RGB"
        arch = ("backbone (%s input, 4 stride-2 stages, widths %s) + mean/std pooling + MLP head" % (inp, r["widths"])
                if name == "builtin-nr" else
                "LPIPS-style channel-weighted distance of unit-normalised backbone features plus "
                "weighted input (RGB + MSCN) differences (backbone initialised from builtin-nr)")
        lines += [f"## {name}", "",
                  f"- architecture: {arch}",
                  f"- command: `{r['command']}` (seed {r['seed']}, {r['epochs']} epochs x {r['iters_per_epoch']} "
                  f"steps, batch {r['batch']}, crops {r['crop'][0]}x{r['crop'][1]})",
                  f"- data: {r['dataset']} (seed {r['seed']}); images train/val/test: {r['n_images']}",
                  f"- train sources: {', '.join(r['splits']['train'])}",
                  f"- val sources: {', '.join(r['splits']['val'])}",
                  f"- test sources (never seen in training): {', '.join(r['splits']['test'])}",
                  f"- hold-out test SROCC {r['test']['srocc']:.4f}, PLCC {r['test']['plcc']:.4f} "
                  f"(best val SROCC {r['best_val_srocc']:.4f})"
                  + (" — PLCC of the negated distance" if name == "builtin-fr" else ""),
                  f"- bounds (seed 002 A.3.2 on the builtin photographs, worst, best): "
                  f"({r['bounds'][0]:.4f}, {r['bounds'][1]:.4f})",
                  f"- training time: {r['train_seconds'] / 60:.1f} min",
                  f"- file: `{r['file']}` ({r['size_kb']} KB), sha256 `{r['sha256']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
