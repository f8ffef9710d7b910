"""Certification time per 3x384x512 image of every certified defense (Guardians of Image Quality Table 21 layout).

    nice -n 5 python benchmarks/certified_time.py [--threads 2] [--measure 16] [--defenses rs,drs,...]

Each defense at preset 0 (σ = 0.12, ε = 0.05, N = 1000, α = 0.001; RS family also n0 = 100) on
builtin-nr and one builtin photograph at 3x384x512. A full certification costs ``N (+ n0)``
sampled evaluations, each the same work, so the script times ``certify`` with ``--measure``
estimation samples (``n0`` scaled alike, at least 1) and reports seconds per sample and the time
of the full preset, **extrapolated linearly** from that measurement (DensePure, whose sample costs
``k · t*`` diffusion steps, would take hours per image at N = 1000 on a CPU). Also printed: the
certificate of the short run (radius or interval width), for orientation only — the full-N
certificate is what ``iqaguard certify`` computes. FS-IQA (its preset 0: σ_f = 0.1, N = 2000) is
timed at its full N: its cost is one backbone forward and the Jacobian-norm estimate, not N
image-sized evaluations.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import iqaguard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_speed import load_metric, photo  # noqa: E402

DEFAULT = "rs,drs,ddrs,densepure,ms,dms,rs-reg,cert-reg,dms-iqa,fs-iqa"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measure", type=int, default=16, help="estimation samples actually run per defense")
    p.add_argument("--defenses", default=DEFAULT)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m, note = load_metric(args.device)
    x = photo("kitten", 384, 512).to(args.device)
    print(f"builtin-nr{note}, 3x384x512, {args.device}, {args.threads} thread(s); preset 0 (N = 1000, RS family n0 = 100); "
          f"measured with {args.measure} estimation samples, full time extrapolated linearly")
    print("| defense | kind | s / sample | full preset, s / image (extrapolated) |")
    print("|---|---|---|---|")
    for name in args.defenses.split(","):
        full = iqaguard.defenses.create(name, metric=m, preset=0)
        if name == "fs-iqa":  # one backbone forward + the Jacobian norm + N scorer passes: timed at full N
            t0 = time.perf_counter()
            full.certify(x, generator=torch.Generator().manual_seed(0))
            secs = time.perf_counter() - t0
            print(f"| {name} | R | {secs / full.n:.5f} | {secs:.1f} (measured at N = {full.n}) |", flush=True)
            continue
        n0_full = getattr(full, "n0", 0)
        kw = {"n": args.measure}
        if n0_full:
            kw["n0"] = max(1, round(args.measure * n0_full / full.n))
        c = iqaguard.defenses.create(name, metric=m, preset=0, **kw)
        t0 = time.perf_counter()
        c.certify(x, generator=torch.Generator().manual_seed(0))
        secs = time.perf_counter() - t0
        per = secs / (c.n + getattr(c, "n0", 0))
        kind = "C" if n0_full else "R"
        print(f"| {name} | {kind} | {per:.4f} | {per * (full.n + n0_full):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
