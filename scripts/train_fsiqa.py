"""Train the FS-IQA heads of a metric (iqaguard.defenses.fsiqa.fs_iqa) on builtin-kadid, one per σ_f.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 5 python scripts/train_fsiqa.py --metric builtin-nr --seed 0 --threads 2

Any registered dataset with MOS instead: ``--dataset koniq10k --dataset-arg root=/data/koniq10k
--out-dir heads/`` (seeded 80/10/10 split; then ``iqaguard.defenses.create("fs-iqa", metric=m,
sigma=s, weights="heads/fs-iqa-<metric>-<σ>.safetensors")``).

Data (builtin-kadid): full size (384x512): a type-balanced subset of the **train** split
(``--train-levels`` of the 5 levels of every distortion type and source), and of **val**
(``--val-levels``) for choosing the epoch; the backbone is frozen, so its features are computed
once and cached under ``$IQAGUARD_CACHE``. Targets: pseudo-MOS mapped to the metric's units by the
line fitted to the metric's clean train scores. Each head is scored once on the test subset
(SROCC/PLCC of the N = 2000 median-smoothed score) and the figures go into
``defenses/weights/MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import torch

import iqaguard
from iqaguard import scores
from iqaguard.data.kadid_builtin import fingerprint
from iqaguard.defenses.fsiqa.fs_iqa import head_file
from iqaguard.defenses.fsiqa.training import dataset_features, mos_to_units, smoothed_head_scores, train_head
from iqaguard.training.checkpoint import save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import write_section  # noqa: E402
from train_builtin import balanced_samples  # noqa: E402


def split_features(metric, split: str, levels: int, seed: int, scores: bool = True):
    """``(features, clean scores or None, mos)`` of a type-balanced subset of a builtin-kadid split (cached)."""
    samples = balanced_samples(split, levels, seed)
    root = Path(os.environ.get("IQAGUARD_CACHE", Path.home() / ".cache" / "iqaguard"))
    key = hashlib.sha256(repr((metric.name, split, levels, seed, fingerprint(), 1) + (() if scores else ("f",)))
                         .encode()).hexdigest()[:16]
    cache = root / f"fsiqa-features-{key}.pt"
    if cache.is_file():
        d = torch.load(cache, weights_only=True)
        return d["f"], d.get("s"), d["y"]
    f, s, y = dataset_features(metric, samples, scores=scores)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"f": f, "s": s, "y": y}, cache)
    return f, s, y


def user_features(metric, name: str, pairs, seed: int):
    """``{split: (features, clean scores, mos)}`` of a registered dataset with MOS (``--dataset``): its
    samples with a MOS, split 80 / 10 / 10 by a permutation seeded with ``seed``, one image per batch
    (sizes may differ)."""
    kwargs = dict(kv.split("=", 1) for kv in pairs)
    samples = [s for s in iqaguard.data.create(name, **kwargs) if s.mos is not None]
    if len(samples) < 10:
        raise SystemExit(f"--dataset {name}: {len(samples)} images with a MOS; FS-IQA training needs at least 10")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_tr, n_va = int(0.8 * len(order)), max(1, int(0.1 * len(order)))
    parts = {"train": order[:n_tr], "val": order[n_tr:n_tr + n_va], "test": order[n_tr + n_va:]}
    return {k: dataset_features(metric, [samples[i] for i in v], batch=1) for k, v in parts.items()}


def corr(pred: torch.Tensor, mos: torch.Tensor):
    return abs(scores.srocc(pred, mos)), abs(scores.plcc(pred, mos))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="builtin-nr")
    p.add_argument("--sigma", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    p.add_argument("--train-levels", type=int, default=2)
    p.add_argument("--val-levels", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", default=None, help="a registered dataset with MOS instead of builtin-kadid "
                   "(split 80/10/10 by --seed); needs --out-dir")
    p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the dataset, e.g. root=/data/koniq10k (repeatable)")
    p.add_argument("--out-dir", type=Path, default=None, help="where the heads and their model card go "
                   "(default: the package's shipped weights, builtin-kadid only)")
    args = p.parse_args(argv)
    if args.dataset is not None and args.out_dir is None:
        p.error("--dataset needs --out-dir (the shipped builtin heads are not overwritten)")
    torch.set_num_threads(args.threads)
    metric = iqaguard.metrics.create(args.metric)
    if args.dataset is None:
        f_tr, s_tr, y_tr = split_features(metric, "train", args.train_levels, args.seed)
        f_va, _, y_va = split_features(metric, "val", args.val_levels, args.seed, scores=False)
        f_te, s_te, y_te = split_features(metric, "test", args.val_levels, args.seed)
    else:
        d = user_features(metric, args.dataset, args.dataset_arg, args.seed)
        (f_tr, s_tr, y_tr), (f_va, _, y_va), (f_te, s_te, y_te) = d["train"], d["val"], d["test"]
    a, b = mos_to_units(y_tr, s_tr)
    print(f"{len(y_tr)} train / {len(y_va)} val / {len(y_te)} test images; MOS -> units {a:.4f} * MOS + {b:.4f}",
          flush=True)
    base = corr(s_te, y_te)
    rows = []
    for sigma in args.sigma:
        head, log = train_head((f_tr, a * y_tr + b), (f_va, y_va), sigma, epochs=args.epochs, seed=args.seed)
        out, _ = head_file(metric.name, sigma)
        if args.out_dir is not None:
            out = args.out_dir / out.name
        save_model(head, out, head.config, trained_by="scripts/train_fsiqa.py", metric=metric.name,
                   sigma=f"{sigma:g}", mos_line=f"{a:.6f},{b:.6f}", val_epoch=str(log["best_epoch"]))
        test = corr(smoothed_head_scores(head, f_te, sigma, 2000, torch.Generator().manual_seed(args.seed + 2)), y_te)
        sha = hashlib.sha256(out.read_bytes()).hexdigest()
        print(f"σ_f {sigma}: val SROCC {log['val_srocc']} (epoch {log['best_epoch']}), test {test}, "
              f"{log['seconds']} s", flush=True)
        rows.append(f"| {sigma:g} | {log['best_epoch']} | {log['val_srocc']:.3f} | {test[0]:.3f} / {test[1]:.3f} | "
                    f"{log['seconds']:.0f} | `{out.name}` ({out.stat().st_size / 1024:.0f} KB, sha256 `{sha[:16]}…`) |")
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Model card: FS-IQA heads of {metric.name}", "",
        f"The FTN + scorer heads of the `fs-iqa` certified defense on `{metric.name}` (Shumitskaya et al., \"FS-IQA: "
        "Certified Feature Smoothing for Robust Image Quality Assessment\", §3): FTN = Linear("
        f"{metric.feature_dim}, 512) + sigmoid, scorer = Linear(512, 128), ReLU, Linear(128, 1); backbone frozen.", "",
        f"- command: `python scripts/train_fsiqa.py {cmd}`",
        (f"- data: builtin-kadid at 384x512, {len(y_tr)} train images ({args.train_levels} levels per type and source), "
         f"{len(y_va)} val and {len(y_te)} test images ({args.val_levels} level per type and source); targets: "
         if args.dataset is None else f"- data: `{args.dataset}` ({' '.join(args.dataset_arg)}), {len(y_tr)} train / "
         f"{len(y_va)} val / {len(y_te)} test images (seeded 80/10/10 split); targets: ")
        + 
        f"pseudo-MOS mapped by {a:.4f} * MOS + {b:.4f} (fitted on the clean train scores)",
        f"- recipe: MSE under feature noise σ_f (one draw per sample and step), AdamW lr 1e-3 (cosine), "
        f"{args.epochs} epochs of batch 128, seed {args.seed}; epoch chosen by val SROCC of the median of 64 draws",
        f"- test (once, after selection): SROCC / PLCC of the N = 2000 median-smoothed score; the undefended "
        f"{metric.name} on the same test images: {base[0]:.3f} / {base[1]:.3f}", "",
        "| σ_f | epoch | val SROCC | test SROCC / PLCC | train s | file |", "|---|---|---|---|---|---|", *rows, ""]
    write_section(out.parent / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
