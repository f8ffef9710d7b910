"""Weightless baselines beside the builtin models, on the same hold-out test images.

Scores every image of the builtin-kadid test split with the weightless full-reference metrics
(PSNR on RGB, SSIM, MS-SSIM, GMSD) and the no-reference ones (NIQE, BRISQUE, PIQE, when their
data files are installed: ``pip install "iqaguard[nss]"``), computes SROCC/PLCC against the
pseudo-MOS (lower-better metrics negated), writes ``baselines.json`` beside the weights and
regenerates ``MODEL_CARD.md`` (``scripts/train_builtin.py`` must have run: it wrote the
weights and ``timing.json``).

Usage: ``python scripts/builtin_baselines.py [--threads 2] [--out src/iqaguard/metrics/weights]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import iqaguard  # noqa: E402
from iqaguard.errors import IqaguardError  # noqa: E402
from iqaguard.data.kadid_mos import gmsd  # noqa: E402
from iqaguard.metrics.builtin import WEIGHTS_DIR  # noqa: E402
from train_builtin import correlations, load_split, predict_pairs, write_card  # noqa: E402

FR = {"psnr": None, "ssim": None, "ms-ssim": None, "gmsd": gmsd}
NR = ("niqe", "brisque", "piqe")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    te = load_split("test", args.seed)
    y = te.y.numpy()
    out = {"builtin-fr": {}, "builtin-nr": {}}
    for name, fn in FR.items():
        t0 = time.time()
        if fn is None:
            m = iqaguard.metrics.create(name)
            fn, lower = m, m.lower_better
        else:
            lower = True
        pred = predict_pairs(lambda x, r, f=fn: f(x, r.expand_as(x)), te)
        out["builtin-fr"][name] = dict(correlations(pred, y, lower_better=lower), seconds=round(time.time() - t0, 1))
        print(name, out["builtin-fr"][name], flush=True)
    for name in NR:
        try:
            m = iqaguard.metrics.create(name)
        except IqaguardError as e:
            print(f"{name}: skipped ({e})", flush=True)
            continue
        t0 = time.time()
        with torch.no_grad():
            pred = np.concatenate([m(te.x[i:i + 8].float() / 255.0).numpy() for i in range(0, len(y), 8)])
        out["builtin-nr"][name] = dict(correlations(pred, y, lower_better=m.lower_better),
                                       seconds=round(time.time() - t0, 1))
        print(name, out["builtin-nr"][name], flush=True)
    (args.out / "baselines.json").write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", write_card(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
