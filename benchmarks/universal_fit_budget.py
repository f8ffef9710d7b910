"""Does a longer fit make a universal perturbation raise more held-out images? (validation only)

    nice -n 5 python benchmarks/universal_fit_budget.py [--metrics builtin-nr,niqe] [--epochs 5 20 50]

UAP and Optimized-UAP are fitted, at the medium preset, on the 16 train images the attack
acceptance script uses (``benchmarks/attack_acceptance.py``) for each ``--epochs``, and scored on
20 **validation** images (six val photographs of builtin-kadid, 128 x 160), never on the test
split. It prints, per (metric, attack, epochs), how many of the 20 rose and the mean gain of the
normalised objective, so a fitting recipe can be chosen on validation data — or shown not to
matter. ``--sizes`` also varies the side of the learned perturbation (default 256, Guardians of
Image Quality's training size).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_acceptance import FIT_SOURCES, images  # noqa: E402
from fr_attack_ceiling import VAL_SOURCES, objective, raised  # noqa: E402
import iqaguard  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", default="builtin-nr,niqe")
    ap.add_argument("--attacks", default="uap,opt-uap")
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 20, 50])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, vref, _ = images("val", VAL_SOURCES, 20, (128, 160))
    fx, fref, _ = images("train", FIT_SOURCES, 16, (128, 160))
    for mname in args.metrics.split(","):
        metric = iqaguard.metrics.create(mname)
        fr = metric.kind == "fr"
        for name in args.attacks.split(","):
            for size in args.sizes:
                for epochs in args.epochs:
                    atk = iqaguard.attacks.create(name, preset="medium", epochs=epochs, size=size)
                    atk.fit(metric, fx, ref=fref if fr else None, generator=torch.Generator().manual_seed(0))
                    r = vref if fr else None
                    gain = objective(metric, atk(metric, x, ref=r), r) - objective(metric, x, r)
                    print(f"{mname:11s} {name:8s} size {size:3d} epochs {epochs:3d}: val raised {raised(gain)}",
                          flush=True)


if __name__ == "__main__":
    main()
