"""Empirical coverage of the smoothing certificates: attacks inside the certified radius never leave the interval.

    nice -n 5 python benchmarks/certified_coverage.py [--metric builtin-nr] [--defenses ms,rs,dms,fs-iqa]
                                                      [--images 20] [--size 128 160] [--n 1000] [--steps 10]
                                                      [--threads 2] [--seed 0]

For each of ``--images`` builtin-kadid test images (evenly spaced over the demo's six test
photographs, resized to ``--size``; with its reference for an FR ``--metric``) and each defense
(preset 0: σ = 0.12, ε = 0.05, α = 0.001 for the image-space ones; σ_f = 0.1, ε_f = σ_f for
``fs-iqa``; with ``--n`` samples):

1. certify the clean image (``certify``: interval ``[lower, upper]``; for RS also the radius);
2. attack the *smoothed* metric with PGD in L2 (``iqaguard.attacks.create("pgd", norm="l2")``,
   ``--steps`` steps, EOT over 16 noise draws per step, its best iterate picked on 64 draws) within
   the certified size — ε for MS/DMS, the certified radius for RS, the image's ``ε_x`` for FS-IQA —
   once towards higher and once towards lower scores (the smoothed metric, and the same
   smoothed metric negated);
3. score the attacked image with the smoothed metric (``predict``, fresh noise, ``--n`` samples)
   and count it as a violation when it leaves ``[lower, upper]``.

Abstained images are skipped (no certificate to violate). At α = 0.001 the expected number of
violations is 0. Prints one line per defense: images certified, violations, the largest
excursion towards either bound as a fraction of the interval's half-width.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import iqaguard
from iqaguard.metrics.base import Metric


class Negated(Metric):
    """``-f``: lets the attack (which raises the predicted quality) push the smoothed score the other way."""

    def __init__(self, m: Metric) -> None:
        super().__init__()
        self.m, self.kind, self.lower_better = m, m.kind, not m.lower_better
        self.bounds, self.min_size, self.name = m.bounds, m.min_size, f"-{m.name}"

    def score(self, x, ref=None):
        return -self.m.score(x, ref)


def _resized(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def images(n: int, size):
    """``n`` ``(image, reference)`` pairs of builtin-kadid test images, resized to ``size``."""
    ds = iqaguard.data.create("builtin-kadid", split="test",
                              sources=["aqua", "cheetah", "coffee", "garden", "montstmichel", "wildpanda"])
    idx = [round(i * (len(ds) - 1) / max(n - 1, 1)) for i in range(n)]
    return [(_resized(ds[i].image, size), _resized(ds[i].ref, size)) for i in idx]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="builtin-nr")
    p.add_argument("--defenses", default="ms,rs")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=(128, 160))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = iqaguard.metrics.create(args.metric)
    xs = images(args.images, args.size)
    for name in args.defenses.split(","):
        certified = violations = 0
        worst = 0.0
        for k, (x, ref) in enumerate(xs):
            ref = ref if m.kind == "fr" else None
            c = iqaguard.defenses.create(name, metric=m, preset=0, n=args.n)
            r = c.certify(x, ref, generator=torch.Generator().manual_seed(args.seed + k))
            if bool(r.abstain[0]):
                continue
            certified += 1
            size = float(r.radius[0]) if r.radius is not None else float(r.eps[0])
            lo, hi = float(r.lower[0]), float(r.upper[0])
            mid, half = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
            # the attacked copy: 16 draws per gradient step (EOT), 64 to pick PGD's best iterate
            sm = iqaguard.defenses.create(name, metric=m, preset=0, n=64, attack_samples=16,
                                          generator=torch.Generator().manual_seed(10_000 + k))
            for target in (sm, Negated(sm)):
                atk = iqaguard.attacks.create("pgd", norm="l2", eps=size, steps=args.steps)
                x_adv = atk(target, x, ref, generator=torch.Generator().manual_seed(20_000 + k))
                s = float(c.predict(x_adv, ref, generator=torch.Generator().manual_seed(30_000 + k))[0])
                worst = max(worst, abs(s - mid) / half)
                violations += int(not lo <= s <= hi)
        print(f"{args.metric} / {name}: {certified} of {len(xs)} images certified; {violations} violations in {2 * certified} attacks "
              f"(PGD-L2, {args.steps} steps, EOT 16, within the certified size); largest excursion "
              f"{worst:.2f} of the interval's half-width", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
