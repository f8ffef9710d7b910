"""Train the FACPA generator (iqaguard.attacks.facpa) against a metric on the builtin photographs.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 5 python scripts/train_facpa.py --metric builtin-nr --seed 0 --threads 2

Training data: random square crops (side 64..128, random horizontal flips) of the builtin
photographs of the builtin-kadid **train** split (``split_sources(0)["train"]``: the sources of
builtin-kadid's train references, at their shipped size). The generator is trained at
``--eps`` (8/255); its output is ``eps · tanh(g(x))``, so the same file serves every budget by
rescaling (the card reports the validation gain at 2/255, 4/255 and 8/255). Nothing is chosen on
the test photographs: after the fixed number of steps the generator is scored once on fixed
96x96 crops of the **val** split photographs (mean gain of the metric's score, fraction of crops
whose score improved). Writes ``attacks/weights/facpa-<metric>.safetensors`` and, for the shipped
builtin-nr generator, ``attacks/weights/MODEL_CARD.md`` (else ``facpa-<metric>.MODEL_CARD.md``).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

import iqaguard
from iqaguard.attacks.facpa import FACPA, WEIGHTS_DIR, weights_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import fixed_crops, photos, write_section  # noqa: E402

VAL_CROP, VAL_PER_PHOTO = 96, 2


def val_crops(images: List[torch.Tensor], seed: int) -> torch.Tensor:
    """``VAL_PER_PHOTO`` fixed random ``VAL_CROP`` crops of every image (drawn from ``seed + 1``)."""
    return fixed_crops(images, VAL_PER_PHOTO, VAL_CROP, seed + 1)


@torch.no_grad()
def gains(attack: FACPA, metric, x: torch.Tensor) -> Dict[str, float]:
    """Mean score gain (in the quality direction) and fraction of improved crops at 2/4/8 /255."""
    sign = metric.improvement_sign()
    clean = metric(x)
    out = {}
    for k in (2, 4, 8):
        at_k = FACPA(eps=k / 255)
        at_k.net = attack.net
        g = sign * (metric(at_k(metric, x)) - clean)
        out[f"{k}/255"] = {"mean_gain": float(g.mean()), "improved": float((g > 0).float().mean())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="builtin-nr", help="metric name for iqaguard.metrics.create (NR)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--epochs", type=int, default=14, help="passes over the train photographs")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    metric = iqaguard.metrics.create(args.metric)
    if metric.kind != "nr":
        print(f"train_facpa.py trains on single images: {args.metric!r} is full-reference; use "
              "FACPA.fit(metric, images, ref=refs) from Python", file=sys.stderr)
        return 2
    train, val = photos("train"), photos("val")
    t0 = time.time()
    attack = FACPA(eps=args.eps).fit(metric, train, epochs=args.epochs, lr=args.lr, batch=args.batch,
                                     crop=(64, 128), generator=torch.Generator().manual_seed(args.seed))
    train_s = time.time() - t0
    path = attack.save(args.out / weights_file(args.metric).name)
    v = gains(attack, metric, val_crops(val, args.seed))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    steps = args.epochs * -(-len(train) // args.batch)
    print(f"trained {steps} steps in {train_s / 60:.1f} min; val {v}; {path} sha256 {sha}")

    cmd = "python scripts/train_facpa.py " + " ".join(argv if argv is not None else sys.argv[1:])
    card = args.out / ("MODEL_CARD.md" if args.metric == "builtin-nr" else f"{path.stem}.MODEL_CARD.md")
    n_params = sum(q.numel() for q in attack.net.parameters())
    lines = [
        f"# Model card: FACPA generator for {args.metric}", "",
        "The generator of the FACPA attack (Shumitskaya, Antsiferova & Vatolin, \"Fast Adversarial "
        "CNN-based Perturbation Attack on No-Reference Image- and Video-Quality Metrics\", ICLR Tiny "
        "Papers 2023), trained from scratch by `scripts/train_facpa.py` on the builtin photographs. "
        f"It is trained against **{args.metric}** only; applied to another metric it is a transfer attack.", "",
        f"- architecture: 3-level U-Net (widths 16/32/64, GroupNorm, {n_params} parameters); "
        "perturbation `eps * tanh(g(x))`, then the exact L-inf box clip",
        f"- command: `{cmd}` (run under `nice -n 5`)",
        f"- data: random square crops (side 64..128, random flips) of the {len(train)} builtin photographs "
        "of the builtin-kadid train split (seed 0 split by source); no val or test photograph was seen",
        f"- recipe: eps {args.eps * 255:.0f}/255, Adam lr {args.lr}, batch {args.batch}, {args.epochs} epochs "
        f"({steps} steps), seed {args.seed}, {args.threads} CPU threads; no checkpoint selection",
        f"- scaling: trained at {args.eps * 255:.0f}/255; other budgets rescale the same direction field "
        "(`eps` multiplies `tanh(g(x))`)",
        f"- validation ({len(val)} val-split photographs x {VAL_PER_PHOTO} fixed {VAL_CROP}x{VAL_CROP} crops; "
        f"gain = {args.metric} score of the attacked minus the clean crop, in the quality direction):",
        *[f"  - eps {k}: mean gain {r['mean_gain']:.4f}, improved on {r['improved']:.0%} of crops" for k, r in v.items()],
        "- test-split photographs: not used here (the test suite checks 6 held-out test crops)",
        f"- training time: {train_s / 60:.1f} min (2 CPU threads shared with other jobs)",
        f"- file: `{path.name}` ({path.stat().st_size / 1024:.1f} KB), sha256 `{sha}`", ""]
    write_section(card, lines[0], lines)  # the card also holds other models' sections
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
