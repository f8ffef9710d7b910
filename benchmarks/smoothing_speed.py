"""Sampling throughput of the smoothing defenses against the metric's own batched forward, side by side.

    nice -n 5 python benchmarks/smoothing_speed.py [--device cpu|cuda] [--threads 2] [--chunk 16]
                                                   [--samples 64] [--repeats 3] [--memory-n 2000]

One builtin photograph at 3x384x512 (``attack_speed.photo``) and ``builtin-nr``. Per round:

* **sampler**: ``noisy_scores(metric, x, sigma=0.12, n=--samples, chunk=--chunk)`` — noise drawn
  from a seeded generator one sample at a time (the per-image reproducible stream), added, and
  scored ``--chunk`` samples per forward; samples per second;
* **plain forward**: ``metric.score`` on a prebuilt batch of ``--chunk`` noisy copies, as many
  batches as the sampler makes; images per second.

The throughput ratio printed is the median over ``--repeats`` rounds of sampler / plain
(acceptance: >= 0.9 at the same batch size). ``--memory-n`` then measures, in a fresh
subprocess, the peak resident memory of one ``ms`` certification with N samples (default 2000)
at the default chunk size (a 256 MB noise budget), and of one plain forward at that chunk, so the
sampler's own share is visible.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_speed import Clock, load_metric, photo  # noqa: E402

PEAK = r"""
import json, resource, sys, torch
sys.path.insert(0, {bench!r})
from attack_speed import load_metric, photo
import iqaguard
torch.set_num_threads({threads})
m, _ = load_metric({device!r})
x = photo("kitten", 384, 512).to({device!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from iqaguard.defenses.certified.sampler import default_chunk
k = default_chunk(x)
with torch.no_grad():
    m.score(x.repeat(k, 1, 1, 1))
plain = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = iqaguard.defenses.create("ms", metric=m, n={n})
r = c.certify(x, generator=torch.Generator().manual_seed(0))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"chunk": k, "n": {n}, "rss_before_mib": base / 1024, "rss_after_plain_forward_mib": plain / 1024,
                  "rss_peak_certify_mib": peak / 1024, "lower": float(r.lower[0]), "upper": float(r.upper[0])}}))
"""


def main(argv=None) -> int:
    from iqaguard.defenses.certified.sampler import noisy_scores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-n", type=int, default=2000, help="N of the peak-memory run (0: skip it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = Clock(args.device)
    metric, note = load_metric(args.device)
    x = photo("kitten", 384, 512).to(args.device)
    g = torch.Generator().manual_seed(0)
    batch = (x + 0.12 * torch.randn((args.chunk, *x.shape[1:]), generator=g).to(args.device))
    batches = -(-args.samples // args.chunk)
    sigma = 0.12

    def sampler():
        with torch.no_grad():
            noisy_scores(metric, x, sigma, args.samples, torch.Generator().manual_seed(1), chunk=args.chunk)

    def plain():
        with torch.no_grad():
            for _ in range(batches):
                metric.score(batch)

    sampler(), plain()  # warm-up
    ratios, ts, tp = [], [], []
    for r in range(args.repeats):
        order = (sampler, plain) if r % 2 == 0 else (plain, sampler)
        t = {f: clock(f) for f in order}
        ts.append(args.samples / t[sampler])
        tp.append(batches * args.chunk / t[plain])
        ratios.append(ts[-1] / tp[-1])
    print(f"builtin-nr{note}, 3x384x512, {args.device}, {args.threads} thread(s), chunk {args.chunk}, "
          f"{args.samples} samples per round, median of {args.repeats} rounds")
    print(f"sampler: {statistics.median(ts):.2f} samples/s; plain batched forward: {statistics.median(tp):.2f} "
          f"images/s; throughput ratio {statistics.median(ratios):.3f} (acceptance >= 0.9)")
    if args.memory_n:
        code = PEAK.format(bench=str(Path(__file__).resolve().parent), threads=args.threads, device=args.device,
                           n=args.memory_n)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"peak-memory run failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            return 1
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peak memory, ms certification with N = {mem['n']} (chunk {mem['chunk']}): "
              f"{mem['rss_peak_certify_mib']:.0f} MiB resident (process start {mem['rss_before_mib']:.0f} MiB, "
              f"after one plain forward of {mem['chunk']} images {mem['rss_after_plain_forward_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
