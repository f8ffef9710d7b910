"""Per-type mean pseudo-MOS of builtin-kadid by level, and the label's acceptance checks.

Reads the cached labels (generating missing sources) of one split and prints the markdown
table of ``docs/builtin_kadid.md``: mean pseudo-MOS per distortion type and level (1 -> 5), and
the number of sources for which it falls strictly. Then checks the two properties the v2 label
must have: (1) for every type the mean label decreases strictly from level 1 to level 5;
(2) level 5 of every type scores below the median of level 1 over all types. Exit status 1 when
either fails.

Usage: ``python scripts/kadid_label_table.py [--split train] [--seed 0]``.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from iqaguard.data.distortions import DISTORTIONS, N_LEVELS
from iqaguard.data.kadid_builtin import BuiltinKadid


def table(split: str, seed: int):
    ds = BuiltinKadid(split=split, seed=seed)
    by = defaultdict(dict)  # (type, source) -> {level: mos}
    for s in ds:
        by[(s.meta["dist_id"], s.meta["source"])][s.meta["level"]] = s.mos
    means, strict = {}, {}
    for d in DISTORTIONS.values():
        rows = [v for (t, _), v in by.items() if t == d.id]
        means[d.id] = [float(np.mean([r[lv] for r in rows])) for lv in range(1, N_LEVELS + 1)]
        strict[d.id] = (sum(all(r[lv] > r[lv + 1] for lv in range(1, N_LEVELS)) for r in rows), len(rows))
    med1 = float(np.median([s.mos for s in ds if s.meta["level"] == 1]))
    return means, strict, med1, len({s.meta["source"] for s in ds})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    means, strict, med1, n_src = table(args.split, args.seed)
    print(f"| type | L1 | L2 | L3 | L4 | L5 | strictly falling |\n|---|---|---|---|---|---|---|")
    for d in DISTORTIONS.values():
        print(f"| {d.name} | " + " | ".join(f"{v:.2f}" for v in means[d.id]) + f" | {strict[d.id][0]}/{strict[d.id][1]} |")
    mono = [DISTORTIONS[t].name for t, m in means.items() if not all(a > b for a, b in zip(m, m[1:]))]
    high = [DISTORTIONS[t].name for t, m in means.items() if not m[-1] < med1]
    steps = min(min(a - b for a, b in zip(m, m[1:])) for m in means.values())
    margin = min(med1 - m[-1] for m in means.values())
    print(f"\n{args.split} split, {n_src} sources: median level-1 label {med1:.3f}; smallest level step {steps:.3f}; "
          f"smallest margin of a level-5 mean below that median {margin:.3f}")
    print(f"(1) mean falls strictly with the level for all {len(means)} types: {not mono}" + (f" (fails: {mono})" if mono else ""))
    print(f"(2) level 5 of every type below the median of level 1: {not high}" + (f" (fails: {high})" if high else ""))
    return 0 if not mono and not high else 1


if __name__ == "__main__":
    raise SystemExit(main())
