"""Train the builtin IQA models (builtin-nr, builtin-fr) from scratch on builtin-kadid.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    python scripts/train_builtin.py --seed 0

Splits are by source photograph (``builtin-kadid`` train / val / test). The NR model learns, on
random 128x128 crops aligned to its 16-pixel grid, to predict every cell's local SSIM/GMS
statistics (:mod:`iqaguard.metrics.cells`: dense supervision as BIECON, Kim & Lee 2017) and its
score pools them with the label's own formula; the checkpoint with the best validation SROCC
(checked after each of the last ``--val-last`` epochs on a type-balanced validation subset,
``--val-levels``) is kept. A
linear head on its pooled backbone features also identifies each crop's distortion type and
level while it trains (:func:`identification_head`, as MEON, Ma et al. 2018; weight ``--aux-w``,
0 turns it off); the head is removed before saving. The FR model (DISTS-style similarities, :class:`FRNet`) reuses the
trained NR backbone, frozen, and only fits its similarity weights to the normalised pseudo-DMOS
``(5 - MOS) / 4``. Hold-out SROCC/PLCC are computed on the full-size test images, whose
photographs were never seen in training. Bounds follow Guardians of Image Quality appendix A.3.2 on the builtin
photographs. Weights are written as safetensors with the config, bounds and scores in the
metadata, and ``MODEL_CARD.md`` is regenerated.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

import iqaguard
from iqaguard.training import fit_epochs, save_model
from iqaguard.data.kadid_builtin import BuiltinKadid, distorted_name
from iqaguard.metrics.bounds import calibrate_bounds
from iqaguard.data.kadid_builtin import read_cells, read_labels, split_sources
from iqaguard.metrics.cells import CELL, CHROMA_MAX, N_STATS, mos_from_cells
from iqaguard.metrics.builtin import WEIGHTS_DIR, BuiltinFR, BuiltinNR, FRNet, NRNet, load_weights, mean_std_pool

ROOT = Path(__file__).resolve().parents[1]
NR_LR = 2e-3  # peak learning rate of builtin-nr (OneCycle)
AUX_W = 0.5  # weight of the distortion-identification loss (--aux-w; the shipped models use it)
N_TYPES = 25  # KADID distortion types


class Split(NamedTuple):
    """The images of a split: uint8 ``x [N,3,H,W]``, the distinct references ``refs [S,3,H,W]``
    (uint8) with ``ref_idx [N]`` (image ``i``'s reference is ``refs[ref_idx[i]]``), pseudo-MOS
    ``y [N]``, source names ``src``, file names ``names`` (``<source>_dXX_lY.png``) and the
    per-cell label statistics ``cells`` (float16 ``[N, 4, H/16, W/16]``, stored with the dataset)."""

    x: torch.Tensor
    refs: torch.Tensor
    ref_idx: torch.Tensor
    y: torch.Tensor
    src: List[str]
    names: Sequence[str] = ()
    cells: Optional[torch.Tensor] = None

    def ref_of(self, idx=slice(None)) -> torch.Tensor:
        """The references of ``x[idx]``."""
        return self.refs[self.ref_idx[idx]]

    def by_reference(self, idx: Optional[torch.Tensor] = None, chunk: int = 50):
        """Yield ``(j, ref)``: positions ``j`` (at most ``chunk``) of images of ``idx`` (default:
        all) that share one reference, and that reference as a float batch-1 ``[1, 3, H, W]``
        in [0, 1]. Work on a batch-1 reference broadcasts, so its share is computed once."""
        idx = torch.arange(len(self.y)) if idx is None else idx
        owner = self.ref_idx[idx]
        for r in owner.unique().tolist():
            pos = (owner == r).nonzero().flatten()
            ref = self.refs[r:r + 1].float() / 255.0
            for i in range(0, len(pos), chunk):
                yield pos[i:i + chunk], ref


def level_subset(sources: List[str], seed: int, levels_per_type: int) -> set:
    """File names of ``levels_per_type`` distinct levels (drawn from ``SeedSequence([seed, 0x5E1])``)
    of every distortion type of every source: a type-balanced subset of builtin-kadid."""
    if not 1 <= levels_per_type <= 5:
        raise ValueError(f"levels_per_type: expected 1..5, got {levels_per_type}")
    g = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1]))
    return {distorted_name(src, t + 1, lv + 1) for src in sorted(set(sources)) for t in range(N_TYPES)
            for lv in g.choice(5, size=levels_per_type, replace=False)}


def balanced_samples(split: str, levels_per_type: int, seed: int) -> list:
    """The builtin-kadid (seed-0 split) samples of ``split`` kept by :func:`level_subset`: ``levels_per_type``
    levels of every distortion type and source."""
    samples = list(BuiltinKadid(split=split, seed=0))
    keep = level_subset([s.meta["source"] for s in samples], seed, levels_per_type)
    return [s for s in samples if s.name in keep]


def load_split(split: str, seed: int, levels_per_type: Optional[int] = None) -> Split:
    """All images of a split (:class:`Split`); each reference is held once.

    ``levels_per_type=k`` keeps only ``k`` of the 5 levels of every type and source, drawn
    from a generator seeded with ``seed`` (the same subset on every call): the validation
    subset that picks checkpoints without running every image each time. PNGs are decoded by
    two threads.
    """
    ds = BuiltinKadid(split=split, seed=seed)
    samples = list(ds)
    if levels_per_type is not None:
        keep = level_subset([s.meta["source"] for s in samples], seed, levels_per_type)
        samples = [s for s in samples if s.name in keep]

    def read(path: Path, out: torch.Tensor) -> None:
        with Image.open(path) as im:
            out.copy_(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))

    ref_paths = sorted({str(s.ref_path) for s in samples})
    h, w = ds.size
    imgs = torch.empty((len(samples), 3, h, w), dtype=torch.uint8)  # filled in place: no second copy
    refs = torch.empty((len(ref_paths), 3, h, w), dtype=torch.uint8)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read, [s.path for s in samples], imgs))
        list(pool.map(read, [Path(p) for p in ref_paths], refs))
    where = {p: i for i, p in enumerate(ref_paths)}
    return Split(imgs, refs, torch.tensor([where[str(s.ref_path)] for s in samples]),
                 torch.tensor([float(s.mos) for s in samples]), [s.meta["source"] for s in samples],
                 [s.name for s in samples], cached_cells(samples))


def cached_cells(samples) -> torch.Tensor:
    """The per-cell ``(s, m, d, c)`` targets of ``samples`` (builtin-kadid items), read from the
    ``cells.npy`` that the dataset stores beside each source's labels (:func:`read_cells`: the
    same maps as the pseudo-MOS, computed once at generation), float16 ``[N, 4, H/16, W/16]``."""
    rows: Dict[Path, Dict[str, int]] = {}
    arrays: Dict[Path, np.ndarray] = {}
    out = []
    for s in samples:
        folder = Path(s.path).parent
        if folder not in arrays:
            arrays[folder] = read_cells(folder)
            rows[folder] = {it["name"]: i for i, it in enumerate(read_labels(folder))}
        out.append(arrays[folder][rows[folder][s.name]])
    return torch.from_numpy(np.stack(out))


def cell_crops(g: torch.Generator, imgs: torch.Tensor, cells: torch.Tensor, idx: torch.Tensor,
               patch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch x patch`` crops of ``imgs[idx]`` (uint8) aligned to the 16-pixel cell grid,
    the matching cells of ``cells[idx]`` and a random horizontal flip of both."""
    k = patch // CELL
    gh, gw = cells.shape[-2:]
    tops = torch.randint(0, gh - k + 1, (len(idx),), generator=g).tolist()
    lefts = torch.randint(0, gw - k + 1, (len(idx),), generator=g).tolist()
    xs, cs = [], []
    for i, t, l in zip(idx.tolist(), tops, lefts):
        xs.append(imgs[i, :, CELL * t:CELL * (t + k), CELL * l:CELL * (l + k)])
        cs.append(cells[i, :, t:t + k, l:l + k])
    xb, cb = torch.stack(xs).float() / 255.0, torch.stack(cs).float()
    flip = (torch.rand(len(idx), generator=g) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip, xb.flip(-1), xb), torch.where(flip, cb.flip(-1), cb)


@torch.no_grad()
def predict(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = 8) -> np.ndarray:
    """Run ``fn`` on full-size uint8 batches and return the scores."""
    out = []
    for i in range(0, tensors[0].shape[0], batch):
        out.append(fn(*[t[i:i + batch].float() / 255.0 for t in tensors]))
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_pairs(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], data: Split,
                  idx: Optional[torch.Tensor] = None, batch: int = 8) -> np.ndarray:
    """``fn(x, ref)`` on the full-size images ``data.x[idx]`` (default: all), in batches that share
    one batch-1 reference (the reference's features are computed once per batch); rows in
    ``idx`` order."""
    idx = torch.arange(len(data.y)) if idx is None else idx
    out: List[Optional[torch.Tensor]] = [None] * len(idx)
    for j, ref in data.by_reference(idx, chunk=batch):
        for k, row in zip(j.tolist(), fn(data.x[idx[j]].float() / 255.0, ref)):
            out[k] = row
    return torch.stack(out).numpy()


def correlations(pred: np.ndarray, mos: np.ndarray, lower_better: bool = False) -> Dict[str, float]:
    p = -pred if lower_better else pred
    return {"srocc": float(stats.spearmanr(p, mos)[0]), "plcc": float(stats.pearsonr(p, mos)[0])}


def type_level(name: str) -> Tuple[int, int]:
    """``(type index 0..24, level 1..5)`` of a builtin-kadid file name ``<source>_dXX_lY.png``."""
    parts = name.rsplit(".", 1)[0].rsplit("_", 2)
    src, d, lv = parts if len(parts) == 3 else ("", "", "")
    if not (src and d[:1] == "d" and lv[:1] == "l" and d[1:].isdigit() and lv[1:].isdigit()):
        raise ValueError(f"not a builtin-kadid distorted image name: {name!r}")
    return int(d[1:]) - 1, int(lv[1:])


def type_levels(names: List[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distortion type indices ``[N]`` (long) and levels ``[N]`` (float) of builtin-kadid file
    names (:attr:`Split.names`)."""
    tl = [type_level(n) for n in names]
    return torch.tensor([t for t, _ in tl]), torch.tensor([lv for _, lv in tl], dtype=torch.float32)


def identification_head(net: NRNet) -> Tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[], None]]:
    """Attach a distortion-identification head to ``net`` for multi-task training (MEON, Ma et al.,
    IEEE TIP 2018, sec. III: identification shares the quality network's features).

    ``net.aux`` (a linear layer on the mean/std-pooled backbone maps of the last forward pass)
    predicts the KADID type (25 logits, cross-entropy) and the level (smooth L1 on
    ``(level - 1) / 4``). Returns ``(loss(types, levels), detach())``; ``detach`` removes the head
    and its hook, leaving a plain :class:`NRNet` (the score never uses the head).
    """
    net.aux = torch.nn.Linear(2 * sum(net.backbone.widths), N_TYPES + 1).to(next(net.parameters()).device)
    maps: Dict[str, List[torch.Tensor]] = {}
    hook = net.backbone.register_forward_hook(lambda mod, inp, out: maps.__setitem__("maps", out))

    def loss(types: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        out = net.aux(mean_std_pool(maps["maps"]))
        return (F.cross_entropy(out[:, :N_TYPES], types)
                + F.smooth_l1_loss(out[:, N_TYPES], (levels - 1) / 4, beta=0.1))

    def detach() -> None:
        hook.remove()
        del net.aux

    return loss, detach


_CELL_SCALE = torch.tensor([1.0, 1.0, 1.0, 1.0 / CHROMA_MAX]).view(1, N_STATS, 1, 1)


def nr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """builtin-nr's loss on a batch of crops: smooth L1 on the per-cell ``(s, m, d, c / 10)`` (the
    chroma difference in units of its 0-quality value) plus a quarter of the smooth L1 on the
    crops' pseudo-MOS (both ``[B, 4, h, w]``)."""
    scale = _CELL_SCALE.to(pred)
    return (F.smooth_l1_loss(pred * scale, target * scale, beta=0.05)
            + F.smooth_l1_loss(mos_from_cells(pred), mos_from_cells(target), beta=0.1) / 4.0)


def fit_fr_weights(fr: FRNet, sim_tr: torch.Tensor, target: torch.Tensor, sim_va: torch.Tensor,
                   y_va: np.ndarray, steps: int, lr: float = 0.05) -> Tuple[FRNet, float, List[dict]]:
    """Fit ``fr.logits`` and ``fr.log_scale`` on precomputed similarities (full batch, Adam).

    The distance is ``exp(log_scale) * (1 - sim) @ softmax(logits)`` (:class:`FRNet`); the loss is a
    smooth L1 to the normalised pseudo-DMOS ``target``; the weights with the best validation
    SROCC (checked every 20 steps) are kept.
    """
    opt = torch.optim.Adam([fr.logits, fr.log_scale], lr=lr)
    dis_tr, dis_va = 1.0 - sim_tr, 1.0 - sim_va
    best, best_state, log = -2.0, None, []
    for step in range(1, steps + 1):
        w = torch.softmax(fr.logits, dim=0)
        loss = F.smooth_l1_loss(fr.log_scale.exp() * dis_tr @ w, target, beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps:
            with torch.no_grad():
                pred = (dis_va @ torch.softmax(fr.logits, dim=0)).numpy()
            val = correlations(pred, y_va, lower_better=True)["srocc"]
            log.append({"step": step, "loss": float(loss.detach()), "val_srocc": val})
            if val > best:
                best, best_state = val, {k: v.clone() for k, v in fr.state_dict().items()}
    print(f"[fr] {steps} steps, loss {log[-1]['loss']:.4f}, best val SROCC {best:.4f}", flush=True)
    fr.load_state_dict(best_state)
    return fr, best, log


def save(net: torch.nn.Module, name: str, cfg: dict, out_dir: Path) -> Path:
    return save_model(net, out_dir / f"{name}.safetensors", cfg)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nr-epochs", type=int, default=16)
    ap.add_argument("--iters", type=int, default=250, help="optimisation steps per epoch")
    ap.add_argument("--nr-restarts", type=int, default=1,
                    help="train builtin-nr this many times (seeds seed, seed+1, ...) and keep the best on validation")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=128, help="training crop side (multiple of 16)")
    ap.add_argument("--fr-images", type=int, default=1000, help="training images used to fit builtin-fr")
    ap.add_argument("--fr-steps", type=int, default=600, help="full-batch Adam steps fitting builtin-fr")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-only", action="store_true",
                    help="train builtin-nr, report its validation SROCC and save it; no test scoring, no builtin-fr")
    ap.add_argument("--nr-lr", type=float, default=NR_LR, help="peak learning rate of builtin-nr (one-cycle)")
    ap.add_argument("--nr-init", type=Path, default=None,
                    help="initialise builtin-nr from this safetensors file and train it further")
    ap.add_argument("--nr-weights", type=Path, default=None,
                    help="skip training builtin-nr: load it from this safetensors file (fit builtin-fr only)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--mscn", type=int, default=1, help="1: add the MSCN luma channel to the backbone input")
    ap.add_argument("--val-levels", type=int, default=1,
                    help="levels per distortion type and validation photograph used to pick checkpoints "
                         "(1..5; 5 = every validation image)")
    ap.add_argument("--val-last", type=int, default=4,
                    help="check validation SROCC (and keep the best state) after each of the last N epochs only")
    ap.add_argument("--aux-w", type=float, default=AUX_W,
                    help="weight of the distortion-identification loss (0: no head; docs/builtin_models.md)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    data = {s: load_split(s, args.seed, args.val_levels if s == "val" else None) for s in ("train", "val", "test")}
    load_s = time.time() - t_start
    tr, va, te = data["train"], data["val"], data["test"]
    x_tr, y_tr = tr.x, tr.y
    print({s: (len(v.y), len(set(v.src))) for s, v in data.items()}, "(images, sources)", flush=True)

    # ---- builtin-nr: predict the per-cell SSIM/GMS statistics of the label (metrics/cells.py) ----
    t0 = time.time()
    cells_tr = tr.cells

    types_tr, levels_tr = type_levels(tr.names)

    def nr_step(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, x_tr.shape[0], (args.batch,), generator=g)
        xb, cb = cell_crops(g, x_tr, cells_tr, idx, args.patch)
        loss = nr_loss(nr.cells(xb), cb)
        return loss + args.aux_w * aux_loss(types_tr[idx], levels_tr[idx]) if args.aux_w else loss

    def nr_val() -> float:
        return correlations(predict(nr, va.x), va.y.numpy())["srocc"]

    runs = []
    if args.nr_weights is not None:  # builtin-fr only: reuse a trained builtin-nr (its config and log)
        state, nr_cfg = load_weights("builtin-nr", args.nr_weights)
        nr = NRNet(widths=tuple(nr_cfg["widths"]), use_mscn=bool(nr_cfg["use_mscn"]))
        nr.load_state_dict(state)
        runs.append((nr.eval(), nr_cfg["best_val_srocc"], nr_cfg["log"]))
    for k in range(args.nr_restarts if args.nr_weights is None else 0):
        torch.manual_seed(args.seed + k)
        nr = NRNet(use_mscn=bool(args.mscn)).to(memory_format=torch.channels_last)  # ~5% faster steps
        if args.nr_init is not None:  # continue training a saved builtin-nr (a second one-cycle schedule)
            nr.load_state_dict(load_weights("builtin-nr", args.nr_init)[0])
        aux_loss, detach = identification_head(nr) if args.aux_w else (None, lambda: None)
        runs.append(fit_epochs(nr, nr_step, nr_val, args.nr_epochs, args.iters, args.nr_lr, args.seed + k,
                               f"nr run {k + 1}", val_last=args.val_last))
        detach()
    nr, nr_best_val, nr_log = max(runs, key=lambda r: r[1])
    print(f"[nr] kept run {[r[1] for r in runs].index(nr_best_val) + 1} (val SROCC {nr_best_val:.4f})", flush=True)
    nr_time = time.time() - t0
    if args.val_only:  # a candidate recipe: judged on validation only, the test split stays unseen
        run_s, prior = time.time() - t_start, {"train_seconds": 0.0, "epochs": 0, "commands": []}
        if args.nr_init is not None:  # the chain of runs that made this model, with their times
            init_cfg = load_weights("builtin-nr", args.nr_init)[1]
            prior = {"train_seconds": init_cfg["train_seconds"], "epochs": init_cfg["epochs"],
                     "commands": init_cfg.get("commands", [init_cfg["command"]])}
            run_s += previous_nr_run_s(Path(args.nr_init).parent)
        cmd = "python scripts/train_builtin.py " + " ".join(a for a in sys.argv[1:])
        cfg = dict(command=" && ".join(prior["commands"] + [cmd]), commands=prior["commands"] + [cmd],
                   seed=args.seed, widths=list(nr.backbone.widths), use_mscn=nr.backbone.use_mscn,
                   epochs=prior["epochs"] + args.nr_epochs, best_val_srocc=nr_best_val,
                   train_seconds=round(prior["train_seconds"] + nr_time, 1), log=nr_log)
        save(nr, "builtin-nr", cfg, args.out)
        (args.out / "timing.json").write_text(json.dumps({"nr_run_s": round(run_s, 1), "nr_eval_s": 0.0}) + "\n")
        print(f"[nr] --val-only: saved to {args.out} (val SROCC {nr_best_val:.4f}); test split not scored", flush=True)
        return 0
    t_eval = time.time()  # scoring the hold-out split is timed apart from training
    # a reused builtin-nr keeps its one hold-out score (the test split is scored once per model)
    reused_test = nr_cfg.get("test") if args.nr_weights is not None else None
    nr_test = reused_test or correlations(predict(nr, te.x), te.y.numpy())
    eval_s = nr_eval_s = time.time() - t_eval

    # ---- builtin-fr (backbone = the trained builtin-nr backbone, frozen) -------------------
    # Only the similarity weights are learned, so the per-channel similarities of full-size
    # images are computed once and the weights are fitted on them by full-batch Adam.
    fr = FRNet(use_mscn=bool(args.mscn))
    fr.backbone.load_state_dict(nr.backbone.state_dict())
    fr.backbone.requires_grad_(False)
    fr.eval()
    t0 = time.time()
    pick = torch.randperm(x_tr.shape[0], generator=torch.Generator().manual_seed(args.seed))[:args.fr_images]
    sim_tr = torch.from_numpy(predict_pairs(fr.similarities, tr, pick))
    sim_va = torch.from_numpy(predict_pairs(fr.similarities, va))
    fr, fr_best_val, fr_log = fit_fr_weights(fr, sim_tr, (5.0 - y_tr[pick]) / 4.0, sim_va,
                                             va.y.numpy(), args.fr_steps)
    fr_time = time.time() - t0
    t_eval = time.time()
    fr_test = correlations(predict_pairs(fr, te), te.y.numpy(), lower_better=True)
    eval_s += time.time() - t_eval

    # ---- bounds (Guardians of Image Quality appendix A.3.2) on the builtin photographs ---------------------
    # calibrated on the train + val photographs only: the test photographs stay unseen
    fit_sources = set(split_sources(args.seed)["train"]) | set(split_sources(args.seed)["val"])
    photos = [s.image for s in iqaguard.data.create("builtin") if Path(s.path).stem in fit_sources]
    photos = [F.interpolate(p, size=(384, 512), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
              for p in photos]
    argv_shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--out" and (i == 0 or sys.argv[i] != "--out")]
    cfg_common = {"seed": args.seed, "command": "python scripts/train_builtin.py " + " ".join(argv_shown),
                  "dataset": "builtin-kadid", "splits": {s: sorted(set(v.src)) for s, v in data.items()},
                  "n_images": {s: int(len(v.y)) for s, v in data.items()}, "val_levels_per_type": args.val_levels, "patch": args.patch,
                  "batch": args.batch, "iters_per_epoch": args.iters, "val_last": args.val_last, "aux_w": args.aux_w, "torch": torch.__version__,
                  "date": date.today().isoformat()}
    results = {}
    for name, net, cls, test, best_val, log, secs, epochs in (
            ("builtin-nr", nr, BuiltinNR, nr_test, nr_best_val, nr_log, nr_time, args.nr_epochs),
            ("builtin-fr", fr, BuiltinFR, fr_test, fr_best_val, fr_log, fr_time, args.fr_steps)):
        if name == "builtin-nr" and reused_test:  # a finished model: kept as trained, file and all
            args.out.mkdir(parents=True, exist_ok=True)
            if Path(args.nr_weights).resolve() != (args.out / f"{name}.safetensors").resolve():
                shutil.copyfile(args.nr_weights, args.out / f"{name}.safetensors")
            continue
        metric = cls(pretrained=False)
        metric.net = net
        metric.eval()
        b = calibrate_bounds(metric, photos, seed=args.seed)
        cfg = dict(cfg_common, fr_images=args.fr_images, widths=list(net.backbone.widths), use_mscn=net.backbone.use_mscn, epochs=epochs,
                   bounds=[b.worst, b.best], test=test, best_val_srocc=best_val,
                   train_seconds=round(secs, 1), log=log)
        if name == "builtin-nr" and args.nr_weights is not None:  # trained by an earlier --val-only run
            cfg.update(command=nr_cfg["command"], epochs=nr_cfg["epochs"], train_seconds=nr_cfg["train_seconds"])
        path = save(net, name, cfg, args.out)
        results[name] = dict(cfg, file=path.name, sha256=sha256(path), size_kb=round(path.stat().st_size / 1024, 1))
        print(f"{name}: test SROCC {test['srocc']:.4f} PLCC {test['plcc']:.4f} bounds {b} -> {path}", flush=True)
    timing = {"train_s": round(time.time() - t_start - eval_s, 1), "eval_s": round(eval_s, 1),
              "threads": torch.get_num_threads()}
    if args.nr_weights is not None:  # this run fitted builtin-fr only: add builtin-nr's own run
        folder = Path(args.nr_weights).parent
        old = json.loads((folder / "timing.json").read_text())
        old = dict(nr_run_s=previous_nr_run_s(folder), nr_eval_s=old.get("nr_eval_s", old.get("eval_s", 0.0)))
        timing = {"train_s": round(timing["train_s"] + old["nr_run_s"], 1),
                  "eval_s": round(timing["eval_s"] + old["nr_eval_s"], 1), "threads": timing["threads"],
                  "nr_run_s": old["nr_run_s"], "nr_eval_s": old["nr_eval_s"], "fr_refit": True}
    else:
        timing.update(nr_run_s=round(nr_time + load_s, 1), nr_eval_s=round(nr_eval_s, 1))
    (args.out / "timing.json").write_text(json.dumps(timing) + "\n")
    write_card(args.out)
    return 0


def previous_nr_run_s(folder: Path) -> float:
    """Wall time of the run that trained the builtin-nr in ``folder`` (``timing.json``); for a run
    that recorded only its total, that total minus its builtin-fr fit (an upper bound)."""
    old = json.loads((folder / "timing.json").read_text())
    if "nr_run_s" in old:
        return float(old["nr_run_s"])
    _, old_fr = load_weights("builtin-fr", folder / "builtin-fr.safetensors")
    return float(old["train_s"]) - float(old_fr["train_seconds"])


def card_results(out_dir: Path) -> Dict[str, dict]:
    """Each shipped model's config (the safetensors metadata) with its file name, hash and size."""
    from iqaguard.metrics.builtin import load_weights

    results = {}
    for name in ("builtin-nr", "builtin-fr"):
        path = out_dir / f"{name}.safetensors"
        _, cfg = load_weights(name, path)
        results[name] = dict(cfg, file=path.name, sha256=sha256(path), size_kb=round(path.stat().st_size / 1024, 1))
    return results


def write_card(out_dir: Path) -> Path:
    """(Re)write ``MODEL_CARD.md`` from the saved weights, ``timing.json`` and, when present,
    ``baselines.json`` (``scripts/builtin_baselines.py``: weightless metrics on the same test images)."""
    timing = json.loads((out_dir / "timing.json").read_text())
    base_file = out_dir / "baselines.json"
    baselines = json.loads(base_file.read_text()) if base_file.is_file() else {}
    path = out_dir / "MODEL_CARD.md"
    path.write_text(model_card(card_results(out_dir), timing["train_s"], timing["eval_s"], timing["threads"], baselines))
    return path


def model_card(results: Dict[str, dict], train_s: float, eval_s: float, threads: int,
               baselines: Optional[Dict[str, dict]] = None) -> str:
    lines = ["# Model card: builtin-nr and builtin-fr", "",
             "Small CNNs trained from scratch by this repository's own script on its own builtin data",
             "(`builtin-kadid`, the KADID-10k-style synthetic set over the builtin photographs; see",
             "`docs/builtin_kadid.md`). They exist so that every feature of iqaguard works offline;",
             "they are not substitutes for published IQA models.", "",
             f"Training time (both models; data loading, cell targets and bounds included): {train_s / 60:.1f} min; "
             f"scoring the {results['builtin-nr']['n_images']['test']} hold-out test images with both models: "
             f"{eval_s / 60:.1f} min ({threads} CPU threads).", ""]
    for name, r in results.items():
        inp = "RGB + MSCN luma" if r["use_mscn"] else "RGB"
        arch = ("backbone (%s input, 4 stride-2 stages, widths %s) + per-cell MLP predicting the local "
                "SSIM, GMS and chroma statistics of the label, pooled by the pseudo-MOS v2 formula without its "
                "clips (an unbounded, everywhere-differentiable score)" % (inp, r["widths"])
                + ("; trained with a distortion-identification head (type and level, loss weight %g, "
                   "MEON-style multi-task) that is dropped after training" % r["aux_w"] if r.get("aux_w") else "")
                if name == "builtin-nr" else
                "DISTS-style weighted SSIM luminance/structure similarities of the image and of every "
                "backbone channel, plus a CIE Lab chroma similarity (backbone = builtin-nr's, frozen; only "
                "the weights are fitted)")
        lines += [f"## {name}", "",
                  f"- architecture: {arch}",
                  f"- command: `{r['command']}` (seed {r['seed']}; " + (
                      f"{r['epochs']} epochs x {r['iters_per_epoch']} steps, batch {r['batch']}, "
                      f"{r['patch']}x{r['patch']} crops)" if name == "builtin-nr" else
                      f"{r['epochs']} full-batch steps on {r['fr_images']} training images)"),
                  f"- data: {r['dataset']} (seed {r['seed']}); images train/val/test: {r['n_images']}",
                  f"- train sources: {', '.join(r['splits']['train'])}",
                  f"- val sources: {', '.join(r['splits']['val'])}",
                  f"- test sources (never seen in training): {', '.join(r['splits']['test'])}",
                  f"- hold-out test SROCC {r['test']['srocc']:.4f}, PLCC {r['test']['plcc']:.4f} "
                  f"(best val SROCC {r['best_val_srocc']:.4f})"
                  + (" — PLCC of the negated distance" if name == "builtin-fr" else ""),
                  ] + baseline_lines(name, (baselines or {}).get(name)) + [
                  f"- bounds (Guardians of Image Quality A.3.2 on the train + val builtin photographs, worst, best): "
                  f"({r['bounds'][0]:.4f}, {r['bounds'][1]:.4f})",
                  f"- training time: {r['train_seconds'] / 60:.1f} min",
                  f"- file: `{r['file']}` ({r['size_kb']} KB), sha256 `{r['sha256']}`", ""]
    return "\n".join(lines)


def baseline_lines(name: str, rows: Optional[Dict[str, dict]]) -> List[str]:
    """Model-card lines: the weightless baselines on the same hold-out test images."""
    if not rows:
        return ["- weightless baselines on the same test images: not computed (run `python scripts/builtin_baselines.py`)"]
    out = ["- weightless baselines on the same test images (SROCC / PLCC of the quality direction"
           + (", full-reference):" if name == "builtin-fr" else ", no-reference):")]
    for metric, r in rows.items():
        out.append(f"  - {metric}: SROCC {r['srocc']:.4f}, PLCC {r['plcc']:.4f}" + (f" ({r['note']})" if r.get("note") else ""))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
