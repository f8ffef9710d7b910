"""Benchmark-engine overhead, measured side by side in one process.

    python benchmarks/bench_overhead.py [--images 12] [--height 384 --width 512] [--repeats 3] [--device cpu]
                                        [--workers N] [--skip-parts 1,2]

Part 1 — one attack (I-FGSM medium) and D = 5 defenses (JPEG presets 0..4), non-adaptive:

* attack alone: the attack on every batch, the clean and attacked scores and the fidelity of
  the attacked image (exactly the numbers of the undefended row);
* defense-eval alone, per preset: ``P(x)`` and ``P(x_adv)``, the metric on both and the fidelity
  of ``P(x_adv)`` to ``x`` (exactly the numbers one defense row needs);
* the full engine run (``run_spec`` into a fresh store with the local executor): image loading,
  PNG cache, clean phase, result rows, DuckDB commits, progress. (The "alone" timings get their
  images preloaded, so the ratio charges image loading to the engine: a conservative ratio.)

It prints ``total / (attack + sum of defense evals)``; acceptance: <= 1.2.

Part 2 — per-task executor overhead: an engine run whose tasks cost almost nothing (identity
attack, mean-pixel metric, 16x16 images, no defense), wall time / number of tasks; acceptance:
<= 50 ms.

Part 3 — local executor throughput: the part 1 grid (``--pool-images``, batch 2) run in-process with ``num_threads = N``
against a pool of ``N`` single-threaded worker processes (``LocalExecutor(workers=N)``, what
``iqaguard demo`` uses), N = ``--workers`` (default: the usable cores); it prints both wall
times and their ratio. Results are identical (tests/test_local_pool.py); only speed differs.

The metric is ``builtin-nr`` (when its weights are missing, the same network with random
weights: identical cost); images are KADID-sized 384x512 by default. Everything runs with one
torch thread (the engine's default ``num_threads``) except in part 3; medians over ``--repeats``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from rich.console import Console

from iqaguard import attacks, defenses, metrics, scores
from iqaguard.attacks.base import Attack
from iqaguard.bench.executors import Executor
from iqaguard.bench.executors.local import LocalExecutor, default_workers
from iqaguard.bench.runner import run_spec
from iqaguard.bench.spec import Spec
from iqaguard.errors import MissingWeightsError
from iqaguard.data.base import Dataset, Sample
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import ATTACKS, DATASETS, METRICS


class MeanPixel(Metric):
    """Near-zero-cost metric for the per-task overhead run."""

    kind, lower_better, bounds, name = "nr", False, Bounds(0.0, 1.0), "bench-mean"

    def score(self, x, ref=None):
        return x.mean(dim=(1, 2, 3))


class Identity(Attack):
    """Near-zero-cost attack for the per-task overhead run."""

    presets = {"weak": {}, "medium": {}, "strong": {}}

    def __init__(self) -> None:
        pass

    def run(self, metric, x, ref, generator):
        return x


def synthetic(n: int = 12, height: int = 384, width: int = 512) -> Dataset:
    """``n`` smooth random 8-bit images of ``height`` x ``width``."""
    def image(i: int) -> torch.Tensor:
        rng = np.random.default_rng(i)
        low = torch.from_numpy(rng.uniform(0, 1, (1, 3, 6, 8))).float()
        x = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
        x = x + 0.05 * torch.from_numpy(rng.standard_normal((1, 3, height, width))).float()
        return torch.round(x.clamp(0, 1) * 255) / 255

    ds = Dataset([Sample(name=f"im{i:03d}", mos=float(i % 5 + 1), loader=lambda i=i: image(i)) for i in range(n)])
    ds.name = "bench-synth"
    return ds


for _reg, _name, _obj in ((METRICS, "bench-mean", MeanPixel), (ATTACKS, "bench-identity", Identity),
                          (DATASETS, "bench-synth", synthetic)):
    if _name not in _reg:
        _reg.register(_name)(_obj)


def pick_metric() -> Dict:
    """``builtin-nr`` with its shipped weights, else the same network untrained (same cost)."""
    try:
        metrics.create("builtin-nr")
        return {"name": "builtin-nr", "kwargs": {}}
    except MissingWeightsError:
        return {"name": "builtin-nr", "kwargs": {"pretrained": False}}


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def engine_run(spec: Dict, executor: Optional[Executor] = None) -> float:
    with tempfile.TemporaryDirectory() as d:
        return timed(lambda: run_spec(Spec.model_validate(spec), Path(d) / "s.duckdb", executor=executor,
                                      progress=False, console=Console(quiet=True)))


def grid_spec(args: argparse.Namespace, metric: Dict, num_threads: int = 1, images: Optional[int] = None,
              batch_size: int = 4) -> Dict:
    """Part 1's grid: I-FGSM medium x JPEG presets 0..4 on the synthetic images, non-adaptive."""
    return {"version": "overhead", "imports": [str(Path(__file__).resolve())], "metrics": [metric],
            "datasets": [{"name": "bench-synth", "kwargs": {"n": images or args.images, "height": args.height,
                                                            "width": args.width}}],
            "attacks": [{"name": "ifgsm", "presets": ["medium"]}], "defenses": [{"name": "jpeg", "presets": "all"}],
            "modes": ["non-adaptive"], "batch_size": batch_size, "num_threads": num_threads,
            "device": args.device}


def part1(args: argparse.Namespace, metric: Dict) -> None:
    m = metrics.create(metric["name"], **metric["kwargs"]).to(args.device).eval()
    ds = synthetic(args.images, args.height, args.width)
    batches = [torch.cat([ds[i].image for i in range(s, min(s + 4, len(ds)))]).to(args.device)
               for s in range(0, len(ds), 4)]
    atk = attacks.create("ifgsm", preset="medium")
    jpegs = [defenses.create("jpeg", preset=p) for p in range(5)]
    advs: List[torch.Tensor] = []

    def fidelity(y: torch.Tensor, x: torch.Tensor) -> None:
        scores.fidelity(y, x)

    def attack_alone() -> None:
        advs.clear()
        for x in batches:
            with torch.no_grad():
                m(x)
            xa = torch.round(atk(m, x) * 255) / 255
            with torch.no_grad():
                m(xa)
            fidelity(xa, x)
            advs.append(xa)

    def defense_alone(p) -> Callable[[], None]:
        def go() -> None:
            for x, xa in zip(batches, advs):
                with torch.no_grad():
                    m(p(x))
                    pa = p(xa)
                    m(pa)
                fidelity(pa, x)
        return go

    spec = grid_spec(args, metric)
    t_att, t_def, t_eng = [], [[] for _ in jpegs], []
    engine_run(spec)  # warm-up (imports, first-call allocations)
    for _ in range(args.repeats):
        t_att.append(timed(attack_alone))
        for i, p in enumerate(jpegs):
            t_def[i].append(timed(defense_alone(p)))
        t_eng.append(engine_run(spec))
    a, ds_ = statistics.median(t_att), [statistics.median(t) for t in t_def]
    e = statistics.median(t_eng)
    trained = "" if not metric["kwargs"] else " (untrained weights)"
    print(f"metric {metric['name']}{trained} on {args.device}, {args.images} images {args.height}x{args.width}, "
          f"batch 4, 1 thread, median of {args.repeats}")
    print(f"  attack alone (ifgsm medium + scores + fidelity):      {a:8.3f} s")
    for i, d in enumerate(ds_):
        print(f"  defense eval alone, jpeg preset {i}:                  {d:8.3f} s")
    ratio = e / (a + sum(ds_))
    print(f"  full engine run:                                      {e:8.3f} s")
    print(f"  total / (attack + {len(ds_)} x defense eval) = {ratio:.3f}  (acceptance <= 1.2: "
          f"{'PASS' if ratio <= 1.2 else 'FAIL'})")


def part2(args: argparse.Namespace) -> None:
    spec = {"version": "noop", "metrics": ["bench-mean"],
            "datasets": [{"name": "bench-synth", "kwargs": {"n": args.noop_images, "height": 16, "width": 16}}],
            "attacks": [{"name": "bench-identity", "presets": "all"}], "modes": ["non-adaptive"],
            "batch_size": 1, "num_threads": 1}
    n_tasks = args.noop_images * (1 + 3)  # one clean task + three attack tasks per image
    engine_run(spec)
    t = statistics.median(engine_run(spec) for _ in range(args.repeats))
    print(f"per-task executor overhead (local): {1000 * t / n_tasks:.1f} ms over {n_tasks} no-op tasks "
          f"(acceptance <= 50 ms: {'PASS' if 1000 * t / n_tasks <= 50 else 'FAIL'})")


def part3(args: argparse.Namespace, metric: Dict) -> None:
    n = args.workers or default_workers(1)
    grid = dict(images=args.pool_images, batch_size=2)  # the demo's batch size; many tasks per worker
    pool = LocalExecutor(workers=n)
    try:
        engine_run(grid_spec(args, metric, images=2 * n, batch_size=2), pool)  # warm-up: start the workers
        t_pool = statistics.median(engine_run(grid_spec(args, metric, **grid), pool) for _ in range(args.repeats))
    finally:
        pool.close()
    t_one = statistics.median(engine_run(grid_spec(args, metric, num_threads=n, **grid))
                              for _ in range(args.repeats))
    print(f"local executor, part 1 grid on {args.pool_images} images, batch 2: in-process with {n} threads "
          f"{t_one:.3f} s; {n} worker processes x 1 thread {t_pool:.3f} s; speed-up {t_one / t_pool:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--noop-images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="device of parts 1 and 3 (part 2 always runs on the CPU)")
    ap.add_argument("--pool-images", type=int, default=24, help="part 3: images of the grid")
    ap.add_argument("--workers", type=int, default=None, help="part 3: worker processes (default: usable cores)")
    ap.add_argument("--skip-parts", default="", help="comma-separated parts to skip, e.g. 1,2")
    args = ap.parse_args(argv)
    skip = {p.strip() for p in args.skip_parts.split(",") if p.strip()}
    torch.set_num_threads(1)
    metric = pick_metric()
    if "1" not in skip:
        part1(args, metric)
    if "2" not in skip:
        part2(args)
    if "3" not in skip:
        part3(args, metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
