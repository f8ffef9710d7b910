"""Time per 3x384x512 image of every purification defense, side by side with one builtin-nr forward.

    nice -n 5 python benchmarks/defense_speed.py [--device cpu|cuda] [--threads 2] [--repeats 3]
                                                 [--presets all|middle] [--defenses jpeg,diffpure,...]
                                                 [--photo kitten] [--memory] [--out FILE.md]

Guardians of Image Quality Table 2 reports each defense's time per 384x512 image. Here every
registered purification (``iqaguard list defenses``) at every preset (``--presets middle``: the
middle one) purifies one builtin photograph resized and centre-cropped to 3x384x512
(``attack_speed.photo``); right next to it, in the same round, ``builtin-nr`` scores the same
image once under ``torch.no_grad()``, and the ratio printed is the median over ``--repeats``
rounds of (defense seconds / metric seconds) — the machine may be shared and noisy, so only
ratios measured side by side mean anything. Randomized defenses draw from a generator seeded
with 0. A neural defense whose weights are not installed is listed as skipped with the reason.

``--memory`` adds DiffPure's adaptive-attack cost at t = 50: the peak memory of one forward and
backward through the purification (gradient checkpointing per reverse step) on a 3x384x512
image, measured by :func:`iqaguard.defenses.purification._diffusion.peak_memory_adaptive` in a
fresh subprocess.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import List, Optional

import torch

import iqaguard
from iqaguard.errors import IqaguardError, MissingWeightsError
from iqaguard.registry import DEFENSES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_speed import Clock, load_metric, photo  # noqa: E402


def purifications(only: Optional[List[str]]) -> List[str]:
    from iqaguard.defenses.base import Purification

    names = [n for n in DEFENSES.names() if isinstance(DEFENSES.get(n), type) and issubclass(DEFENSES.get(n), Purification)]
    return [n for n in names if only is None or n in only]


def preset_indices(name: str, which: str) -> List[int]:
    n = len(DEFENSES.get(name).presets)
    return list(range(n)) if which == "all" else [n // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--presets", choices=("all", "middle"), default="all")
    p.add_argument("--defenses", default=None, help="comma-separated registry names (default: every purification)")
    p.add_argument("--photo", default="kitten")
    p.add_argument("--memory", action="store_true", help="also measure DiffPure's adaptive peak memory at t = 50")
    p.add_argument("--out", type=Path, default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = Clock(args.device)
    x = photo(args.photo, 384, 512).to(args.device)
    metric, note = load_metric(args.device)
    lines = [f"Defense time per 3x384x512 image, {args.device}, {args.threads} thread(s), median of "
             f"{args.repeats} rounds; baseline: one builtin-nr forward{note}.", "",
             "| defense | preset | params | seconds | ÷ builtin-nr forward |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in purifications(args.defenses.split(",") if args.defenses else None):
        for k in preset_indices(name, args.presets):
            try:
                d = iqaguard.defenses.create(name, preset=k)
            except MissingWeightsError as e:
                row = f"| {name} | {k} | — | skipped: {str(e).split('. Train')[0]} | — |"
                print(row, flush=True)
                lines.append(row)
                break
            except IqaguardError as e:
                row = f"| {name} | {k} | — | skipped: {e} | — |"
                print(row, flush=True)
                lines.append(row)
                continue
            if isinstance(d, torch.nn.Module):
                d = d.to(args.device)
            secs, ratios = [], []
            with torch.no_grad():
                d(x, generator=torch.Generator(device=args.device).manual_seed(0))  # warm-up
                metric(x)
                for r in range(args.repeats):
                    t_d = clock(lambda: d(x, generator=torch.Generator(device=args.device).manual_seed(0)))
                    t_m = clock(lambda: metric(x))
                    secs.append(t_d)
                    ratios.append(t_d / t_m)
            params = ", ".join(f"{a}={v}" for a, v in d.params.items() if a != "weights")
            row = f"| {name} | {k} | {params} | {statistics.median(secs):.4f} | {statistics.median(ratios):.2f} |"
            print(row, flush=True)
            lines.append(row)
    if args.memory:
        from iqaguard.defenses.purification._diffusion import peak_memory_adaptive

        try:
            mem = peak_memory_adaptive(t=50, size=(384, 512), device=args.device)
        except MissingWeightsError as e:
            mem = {"skipped": str(e)}
        line = f"\nDiffPure adaptive forward + backward at t = 50, 3x384x512: {mem}"
        print(line, flush=True)
        lines.append(line)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
