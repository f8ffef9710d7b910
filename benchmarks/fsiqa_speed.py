"""FS-IQA speed and estimator agreement at 3x384x512, side by side in one run.

    nice -n 5 python benchmarks/fsiqa_speed.py [--metric builtin-nr] [--images 20] [--sigma 0.1]
                                               [--repeats 5] [--dms-n 100] [--threads 2] [--out FILE]

On ``--images`` builtin-kadid test images at full size (evenly spaced over the test split):

1. **Estimators.** ``‖J_{FTN∘b}(x)‖₂`` by ``exact`` (all rows) and ``fast`` (Lanczos) on every image:
   the largest ratio ``ε_x(fast) / ε_x(exact)`` (FS-IQA's safety requirement: fast never reports a
   larger radius than exact by more than 1 %), the relative norm differences, and the time of each
   (mean per image; the speed-up is their ratio, measured on the same images in the same run).
2. **predict() vs the undefended forward.** Median of ``--repeats`` interleaved timings of
   ``metric(x)`` and of ``fs-iqa.predict(x)`` (N = 2000) on the same image.
3. **Certification vs DMS.** FS-IQA ``certify`` (fast, N = 2000) per image, against DMS's
   ``certify`` (the DnCNN denoiser, N samples at this size) timed on one image at ``--dms-n`` samples
   and scaled linearly to N = 2000 (its cost is N denoiser + metric forwards in chunks: linear in
   N; the script prints the measured time too). ``--dms-n 2000`` measures it outright.

Prints a markdown report (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import iqaguard


def test_images(n: int):
    ds = iqaguard.data.create("builtin-kadid", split="test")
    idx = [round(i * (len(ds) - 1) / max(n - 1, 1)) for i in range(n)]
    return [(ds[i].image, ds[i].ref) for i in idx]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="builtin-nr")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dms-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", default="1,2,3", help="which sections to run (1 estimators, 2 predict, 3 certify)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = iqaguard.metrics.create(args.metric)
    fr = m.kind == "fr"
    kw = dict(metric=m, sigma=args.sigma, n=2000)
    fast = iqaguard.defenses.create("fs-iqa", mode="fast", **kw)
    exact = iqaguard.defenses.create("fs-iqa", mode="exact", **kw)
    pairs = test_images(args.images)
    lines = [f"# FS-IQA speed on {args.metric}, 3x384x512, σ_f = {args.sigma}, {args.threads} threads", ""]

    parts = {int(v) for v in args.parts.split(",")}
    ratios, rel, t_fast, t_exact, steps = [], [], [], [], []
    for k, (x, ref) in enumerate(pairs if 1 in parts else []):
        r = ref if fr else None
        jf, tf = timed(lambda: fast.jacobian(x, r, torch.Generator().manual_seed(k)))
        je, te = timed(lambda: exact.jacobian(x, r))
        t_fast.append(tf)
        t_exact.append(te)
        steps.append(int(jf.steps[0]))
        ratios.append(float(je.norm[0] / jf.upper[0]))  # ε_fast / ε_exact = ‖J‖_exact / upper_fast
        rel.append(abs(float(jf.norm[0] / je.norm[0]) - 1))
        print(f"image {k}: ‖J‖ exact {float(je.norm[0]):.5f} ({te:.1f} s), fast {float(jf.norm[0]):.5f} upper "
              f"{float(jf.upper[0]):.5f} ({tf:.2f} s, {steps[-1]} steps)", file=sys.stderr, flush=True)
    lines += [] if 1 not in parts else ["## 1. Jacobian norm: fast (Lanczos) against exact (all rows)", "",
              f"- images: {len(pairs)}; max ε_x(fast) / ε_x(exact) = **{max(ratios):.5f}** (requirement ≤ 1.01); "
              f"min {min(ratios):.5f}",
              f"- |‖J‖_fast / ‖J‖_exact − 1|: mean {statistics.mean(rel):.2e}, max {max(rel):.2e}; Lanczos steps: "
              f"mean {statistics.mean(steps):.1f}, max {max(steps)}",
              f"- time per image: exact {statistics.mean(t_exact):.2f} s, fast {statistics.mean(t_fast):.3f} s → "
              f"**{statistics.mean(t_exact) / statistics.mean(t_fast):.1f}×** faster", ""]

    x, ref = pairs[0]
    r = ref if fr else None
    if 2 in parts:
        with torch.no_grad():
            m(x, r)
            fast.predict(x, r)  # warm-up
            tm, tp = [], []
            for i in range(args.repeats):
                tm.append(timed(lambda: m(x, r))[1])
                tp.append(timed(lambda: fast.predict(x, r, generator=torch.Generator().manual_seed(i)))[1])
        lines += ["## 2. predict() against the undefended forward (same image, interleaved)", "",
                  f"- median of {args.repeats}: metric {statistics.median(tm) * 1e3:.1f} ms, FS-IQA predict (N = 2000) "
                  f"{statistics.median(tp) * 1e3:.1f} ms → **{statistics.median(tp) / statistics.median(tm):.3f}×**", ""]
    if 3 in parts:
        t_cert = [timed(lambda: fast.certify(x, ref if fr else None, generator=torch.Generator().manual_seed(k)))[1]
                  for k, (x, ref) in enumerate(pairs[:3])]
        dms = iqaguard.defenses.create("dms", metric=m, sigma=0.12, eps=0.05, n=args.dms_n)
        _, t_dms = timed(lambda: dms.certify(pairs[0][0], pairs[0][1] if fr else None,
                                             generator=torch.Generator().manual_seed(0)))
        t_dms_2000 = t_dms * 2000 / args.dms_n
        lines += ["## 3. Certification time per image: FS-IQA (fast, N = 2000) against DMS (N = 2000)", "",
                  f"- FS-IQA certify: mean {statistics.mean(t_cert):.2f} s over {len(t_cert)} images",
                  f"- DMS certify: {t_dms:.1f} s measured at N = {args.dms_n}"
                  + (f", {t_dms_2000:.0f} s at N = 2000 (linear in N)" if args.dms_n != 2000 else ""),
                  f"- ratio FS-IQA / DMS = **{statistics.mean(t_cert) / t_dms_2000:.4f}** (requirement ≤ 0.1)", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
