"""Attack cost per iteration / per query against the metric's own cost, side by side in one run.

    nice -n 5 python benchmarks/attack_speed.py [--device cpu|cuda] [--threads 2] [--steps 5]
                                                [--queries 60] [--repeats 5] [--photo kitten]
                                                [--clock wall|cpu]
                                                [--attacks ifgsm,pgd,...] [--breakdown] [--profile]

Metric: ``builtin-nr`` (its shipped weights; the same network untrained when they are missing:
identical cost) on one builtin photograph (``src/iqaguard/data/photos/<photo>.jpg``), resized
(shorter side, bilinear with antialiasing) and centre-cropped to 3x384x512, quantised to 8 bits.

* Gradient attacks (every registered ``GradientAttack``: ifgsm, pgd, apgd, korhonen, madc):
  seconds per iteration (one attack call with ``steps=--steps``, divided by ``steps``) over the
  seconds of one forward + backward of the metric (``metric.score(x)``, then
  ``torch.autograd.grad`` of the objective ``sign * f / diam`` with respect to ``x``, the
  metric frozen as the attack freezes it). Acceptance for the PGD family (ifgsm, pgd, apgd,
  korhonen): ratio <= 1.15. MADC is printed without a bar.
* Query attacks (every registered ``QueryAttack``: square, nes, parsimonious, one-pixel,
  patch-rs): seconds per query (one attack call with ``max_queries=--queries``, divided by the
  queries it used) over the seconds per image of batched ``metric.score`` forwards under
  ``torch.no_grad()`` at the batch sizes the attack sends per oracle call: an untimed warm-up run
  records the size of every oracle call, and the baseline replays exactly those batch sizes
  (prebuilt batches, no attack logic). Acceptance: ratio <= 1.1.

The machine may be shared and noisy, so every attack is timed right next to its own baseline
(the order alternates between rounds), ``--repeats`` rounds, and the ratio printed is the median
of the per-round ratios (the seconds columns are medians too). Every attack draws from a
generator seeded with 0, so each round runs the same path. ``--breakdown`` (automatic for a ratio
above its bar) splits one extra instrumented run into metric forward, autograd backward, oracle
bookkeeping and the attack's own tensor work; ``--profile`` prints the top operators of
``torch.profiler`` for those attacks.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

import iqaguard
from iqaguard.attacks.gradient import GradientAttack
from iqaguard.attacks.query import QueryAttack, QueryOracle
from iqaguard.attacks.universal import UniversalAttack
from iqaguard.errors import MissingWeightsError
from iqaguard.metrics.base import frozen
from iqaguard.registry import ATTACKS

PHOTOS = Path(iqaguard.__file__).resolve().parent / "data" / "photos"
PGD_FAMILY = {"ifgsm", "pgd", "apgd", "korhonen"}
GRADIENT_BAR, QUERY_BAR = 1.15, 1.1


def photo(name: str, height: int, width: int) -> torch.Tensor:
    """``[1, 3, height, width]``: the builtin photograph resized (shorter side) and centre-cropped."""
    x = iqaguard.data.load_image(PHOTOS / f"{name}.jpg")
    h, w = x.shape[-2:]
    s = max(height / h, width / w)
    size = (max(height, round(h * s)), max(width, round(w * s)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    x = x[..., top:top + height, left:left + width].clamp(0, 1)
    return (torch.round(x * 255) / 255).contiguous()


def seed0() -> torch.Generator:
    """A fresh generator seeded with 0: every run of an attack takes the same path."""
    return torch.Generator().manual_seed(0)


def load_metric(device: str):
    try:
        m, note = iqaguard.metrics.create("builtin-nr"), ""
    except MissingWeightsError:
        m, note = iqaguard.metrics.create("builtin-nr", pretrained=False), " (untrained weights: same cost)"
    return m.to(device).eval(), note


class Clock:
    """Seconds of ``fn()``, synchronising CUDA before and after: wall seconds, or with ``cpu`` the
    CPU seconds of this process (all its threads; on a machine shared with other jobs they count
    the work done rather than the waiting for a core, most faithfully at ``--threads 1``)."""

    def __init__(self, device: str, cpu: bool = False) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.now = time.process_time if cpu else time.perf_counter

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        t = self.now()
        fn()
        self.sync()
        return self.now() - t


class Case:
    """One attack and its baseline: ``run()`` / ``baseline()`` return seconds per unit."""

    def __init__(self, name: str, kind: str, attack, bar: Optional[float], units: int,
                 attack_fn: Callable[[], object], base_fn: Callable[[], object], base_units: int,
                 clock: Clock, note: str = "") -> None:
        self.name, self.kind, self.attack, self.bar, self.units = name, kind, attack, bar, units
        self.attack_fn, self.base_fn, self.base_units, self.clock, self.note = (
            attack_fn, base_fn, base_units, clock, note)
        self.t_unit: List[float] = []
        self.t_base: List[float] = []
        self.ratios: List[float] = []

    def round(self, attack_first: bool) -> None:
        if attack_first:
            a = self.clock(self.attack_fn) / self.units
            b = self.clock(self.base_fn) / self.base_units
        else:
            b = self.clock(self.base_fn) / self.base_units
            a = self.clock(self.attack_fn) / self.units
        self.t_unit.append(a)
        self.t_base.append(b)
        self.ratios.append(a / b)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def passed(self) -> Optional[bool]:
        return None if self.bar is None else self.ratio <= self.bar


@contextlib.contextmanager
def record_oracle_sizes(sizes: List[int]):
    """While active, append the number of candidates of every oracle call to ``sizes``."""
    orig = QueryOracle.__call__

    def rec(self, candidates, idx=None):
        sizes.append(int(candidates.shape[0]))
        return orig(self, candidates, idx)

    QueryOracle.__call__ = rec
    try:
        yield sizes
    finally:
        QueryOracle.__call__ = orig


def build_cases(args: argparse.Namespace, m, x: torch.Tensor, clock: Clock) -> List[Case]:
    sign, diam = m.improvement_sign(), max(m.bounds.diam, 1e-12)
    wanted = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    cases: List[Case] = []

    def fwd_bwd_n(n: int) -> Callable[[], None]:
        def go() -> None:
            with frozen(m):
                for _ in range(n):
                    leaf = x.detach().requires_grad_(True)
                    with torch.enable_grad():
                        obj = sign * m.score(leaf) / diam
                        torch.autograd.grad(obj.sum(), leaf)
        return go

    for name in iqaguard.attacks.names():
        cls = ATTACKS.get(name)
        if wanted is not None and name not in wanted:
            continue
        if not isinstance(cls, type) or not issubclass(cls, (GradientAttack, QueryAttack)) \
                or issubclass(cls, UniversalAttack):  # universal attacks fit once, then add a fixed delta
            continue
        if issubclass(cls, GradientAttack):
            try:
                atk = iqaguard.attacks.create(name, steps=args.steps)
                fn = (lambda a=atk: a(m, x, generator=seed0()))
                fn()  # warm-up
            except Exception as e:  # e.g. an attack without a steps parameter
                print(f"skipped {name}: {type(e).__name__}: {e}")
                continue
            cases.append(Case(name, "iteration", atk, GRADIENT_BAR if name in PGD_FAMILY else None, args.steps,
                              fn, fwd_bwd_n(args.steps), args.steps, clock))
        else:
            sizes: List[int] = []
            try:
                atk = iqaguard.attacks.create(name, max_queries=args.queries)
                fn = (lambda a=atk: a(m, x, generator=seed0()))
                with record_oracle_sizes(sizes):
                    fn()  # warm-up, recording the batch size of every oracle call
            except Exception as e:  # e.g. one-pixel needs max_queries >= population + 1
                print(f"skipped {name}: {type(e).__name__}: {e}")
                continue
            used = int(atk.queries.sum())
            assert used == sum(sizes), (name, used, sizes)
            batches = {k: x.expand(k, -1, -1, -1).contiguous() for k in set(sizes)}

            def replay(sizes=tuple(sizes), batches=batches) -> None:
                with frozen(m), torch.no_grad():
                    for k in sizes:
                        m.score(batches[k])

            hist = sorted({k: sizes.count(k) for k in sizes}.items(), key=lambda kv: -kv[0] * kv[1])
            note = "calls " + ", ".join(f"{c}x{k}" for k, c in hist[:4]) + (", ..." if len(hist) > 4 else "")
            cases.append(Case(name, "query", atk, QUERY_BAR, used, fn, replay, used, clock, note))
    return cases


def breakdown(case: Case, m, clock: Clock) -> str:
    """One instrumented attack run: forward / backward / oracle bookkeeping / rest, per unit."""
    acc = {"score": 0.0, "score_in": 0.0, "grad": 0.0, "oracle": 0.0, "n_score": 0}
    depth = [0]
    orig_score, orig_grad, orig_oracle = m.score, GradientAttack.gradient, QueryOracle.__call__

    def score(*a, **k):
        clock.sync()
        t = clock.now()
        out = orig_score(*a, **k)
        clock.sync()
        dt = clock.now() - t
        acc["score"] += dt
        acc["n_score"] += 1
        if depth[0]:
            acc["score_in"] += dt
        return out

    def wrap(orig, key):
        def inner(*a, **k):
            depth[0] += 1
            clock.sync()
            t = clock.now()
            try:
                return orig(*a, **k)
            finally:
                clock.sync()
                acc[key] += clock.now() - t
                depth[0] -= 1
        return inner

    m.score = score
    GradientAttack.gradient = wrap(orig_grad, "grad")
    QueryOracle.__call__ = wrap(orig_oracle, "oracle")
    try:
        total = clock(case.attack_fn)
    finally:
        del m.score
        GradientAttack.gradient, QueryOracle.__call__ = orig_grad, orig_oracle
    u = case.units
    fwd = acc["score"]
    parts = [f"total {total / u:.4f}", f"forward {fwd / u:.4f} ({acc['n_score']} calls)"]
    if case.kind == "iteration":
        parts.append(f"backward+autograd {(acc['grad'] - acc['score_in']) / u:.4f}")
        rest = total - acc["grad"] - (fwd - acc["score_in"])
    else:
        parts.append(f"oracle bookkeeping {(acc['oracle'] - acc['score_in']) / u:.4f}")
        rest = total - acc["oracle"] - (fwd - acc["score_in"])
    parts.append(f"attack's own work {rest / u:.4f}")
    return f"  {case.name}: s/{case.kind}: " + ", ".join(parts) + f"; baseline {statistics.median(case.t_base):.4f}"


def profile(case: Case, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if case.clock.cuda else [])
    with prof(activities=acts) as p:
        case.attack_fn()
    key = "self_cuda_time_total" if case.clock.cuda else "self_cpu_time_total"
    print(f"--- torch.profiler, {case.name} ({case.units} {case.kind}s), top {rows} by {key}")
    print(p.key_averages().table(sort_by=key, row_limit=rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--steps", type=int, default=5, help="iterations of each gradient attack (default 5)")
    ap.add_argument("--queries", type=int, default=60, help="max_queries of each query attack (default 60)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--photo", default="kitten", help="builtin photograph (default kitten)")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall seconds (default) or CPU seconds of this process (a shared, busy machine)")
    ap.add_argument("--attacks", default="", help="comma-separated subset (default: every gradient and query attack)")
    ap.add_argument("--breakdown", action="store_true", help="time breakdown for every attack, not only failing ones")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table for attacks above their bar")
    ap.add_argument("--profile-rows", type=int, default=12)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("cuda not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    load0 = load_average()
    clock = Clock(args.device, cpu=args.clock == "cpu")
    m, note = load_metric(args.device)
    x = photo(args.photo, args.height, args.width).to(args.device)
    cases = build_cases(args, m, x, clock)
    for r in range(args.repeats):
        for c in cases:
            c.round(attack_first=bool(r % 2))
    dev = torch.cuda.get_device_name(0) if clock.cuda else f"cpu, {args.threads} threads"
    print(f"builtin-nr{note} on {dev}, input 1x3x{args.height}x{args.width} ({args.photo}), torch "
          f"{torch.__version__}, steps={args.steps}, queries={args.queries}, median of {args.repeats} "
          f"interleaved rounds, {args.clock} clock")
    print(f"{'attack':<13} {'unit':<10} {'s/unit':>9} {'baseline s':>10} {'ratio':>6}  {'bar':>6}  result")
    for c in cases:
        bar = "-" if c.bar is None else f"<={c.bar:g}"
        res = "n/a" if c.passed is None else ("PASS" if c.passed else "FAIL")
        spread = f"[{min(c.ratios):.2f}-{max(c.ratios):.2f}]"
        print(f"{c.name:<13} {c.kind:<10} {statistics.median(c.t_unit):9.4f} {statistics.median(c.t_base):10.4f} "
              f"{c.ratio:6.2f}  {bar:>6}  {res:<4} {spread} {c.note}")
    slow = [c for c in cases if args.breakdown or c.passed is False]
    if slow:
        print("time breakdown (one instrumented run; seconds per unit):")
        for c in slow:
            print(breakdown(c, m, clock))
    if args.profile:
        for c in cases:
            if c.passed is False:
                profile(c, args.profile_rows)
    print(f"wall {time.perf_counter() - t0:.0f} s; load average (1, 5, 15 min) at the start {load0}, "
          f"at the end {load_average()}")
    return 0


def load_average() -> str:
    """The machine's 1 / 5 / 15-minute load averages (other jobs make the ratios noisy)."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # not available on this platform
        return "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
