"""builtin-nr forward time vs a ResNet-18 forward on the same 3x384x512 input, side by side.

    python benchmarks/metric_speed.py [--threads 2] [--repeats 20]

Both models run in the same process, with the same thread count, interleaved (A, B, A, B, ...)
so that machine noise hits both alike; the ratio of medians is reported. Acceptance (issue 2):
ResNet-18 / builtin-nr >= 3.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet18 import ResNet18  # noqa: E402

import iqaguard  # noqa: E402


def timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, 384, 512, generator=torch.Generator().manual_seed(0))
    nr = iqaguard.metrics.create("builtin-nr").eval()
    r18 = ResNet18().eval()
    models = {"builtin-nr": lambda t: nr(t), "resnet18": lambda t: r18(t)}
    times = {k: [] for k in models}
    with torch.no_grad():
        for fn in models.values():  # warm-up
            for _ in range(3):
                fn(x)
        for _ in range(args.repeats):
            for k, fn in models.items():
                times[k].append(timed(fn, x))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratio = med["resnet18"] / med["builtin-nr"]
    print(f"threads={args.threads} repeats={args.repeats} input=1x3x384x512")
    for k, v in med.items():
        print(f"  {k:10s} median {v:8.2f} ms")
    print(f"  speed-up resnet18 / builtin-nr = {ratio:.2f}x  ({'PASS' if ratio >= 3 else 'FAIL'} >= 3x)")
    return 0 if ratio >= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
