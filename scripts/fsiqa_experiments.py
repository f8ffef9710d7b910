"""FS-IQA's comparisons re-run on builtin models: Tables 1-2, Figures 3-4, stability and abstention.

Usage (one command, the defaults are what docs/experiments/fsiqa.md reports)::

    nice -n 5 python scripts/fsiqa_experiments.py --threads 2

Analogs of FS-IQA (Shumitskaya et al. 2025) §4 on builtin-kadid with builtin-nr (Table 1, NR) and
builtin-fr (Table 2, FR):

* **Tables 1-2**: |SRCC| / |PLCC| against pseudo-MOS of RS-Reg, Cert-Reg, MS, DMS, DMS-IQA and FS-IQA
  at σ ∈ {0.1, 0.25, 0.5} (image-space σ for the first five, feature-space σ_f for FS-IQA, as the
  paper pairs them), and the time per image with and without certification.
* **Figure 3**: FS-IQA's certified interval width ``S^u − S^l`` (in % of the metric's range)
  against ``ε_x`` in 10 quantile bins of ``ε_x``, per σ_f; abstention rates.
* **Figure 4**: I-FGSM in L2 (10 iterations, no random start: PGD-L2 from the image) at L2 norms
  0.02-0.25, the mean |score change| in % of the range, undefended against FS-IQA (attacked through
  its feature noise with EOT, 16 draws per step).
* **Stability**: the standard deviation of the smoothed score over ``--repeats`` runs with fresh
  noise, per method, in % of the range.

Protocol and departures from the paper (so that everything runs in ≤ 60 min on 2 CPU cores):
images are resized to ``--size`` (96x128 by default, not 384x512) and every method uses ``--n``
samples (not 2000); FS-IQA's heads are trained at that size by the shipped recipe
(:func:`~iqaguard.defenses.fsiqa.training.train_head`, builtin-kadid train / val, one level per
distortion type and source), the test images are the test split (one level per type and source,
``--images`` of them evenly spaced); DMS uses the shipped DnCNN, DMS-IQA the shipped denoiser of the
metric (a row says so where none exists). RS-Reg, Cert-Reg and MS reduce the same plain-noise
samples (their predictions differ only in the statistic), DMS and DMS-IQA their own denoised ones.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

import iqaguard
from iqaguard import scores as scores_
from iqaguard.bench import svg
from iqaguard.defenses.fsiqa.training import dataset_features, mos_to_units, train_head
from iqaguard.errors import MissingWeightsError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_builtin import balanced_samples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("rs-reg", "cert-reg", "ms", "dms", "dms-iqa", "fs-iqa")
L2_NORMS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25)


class Resized:
    """A builtin-kadid sample whose image and reference are resized to ``size`` (bilinear, antialiased)."""

    def __init__(self, sample, size) -> None:
        self.s, self.size, self.mos, self.name = sample, tuple(size), sample.mos, sample.name

    def _r(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    @property
    def image(self) -> torch.Tensor:
        return self._r(self.s.image)

    @property
    def ref(self) -> torch.Tensor:
        return self._r(self.s.ref)


def split(name: str, levels: int, seed: int, size) -> List[Resized]:
    return [Resized(s, size) for s in balanced_samples(name, levels, seed)]


def corr(pred, mos) -> str:
    p, y = np.asarray(pred, dtype=float), np.asarray(mos, dtype=float)
    return f"{abs(scores_.srocc(p, y)):.3f} / {abs(scores_.plcc(p, y)):.3f}"


def gen(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash(key) % (2 ** 31))


def make(name: str, m, sigma: float, n: int, heads: Dict[float, object]):
    """The defense ``name`` on ``m`` at σ, or the reason it cannot be built."""
    try:
        if name == "fs-iqa":
            return iqaguard.defenses.create("fs-iqa", metric=m, sigma=sigma, n=n, head=heads[sigma])
        return iqaguard.defenses.create(name, metric=m, sigma=sigma, n=n, eps=sigma, alpha=0.001)
    except MissingWeightsError as e:
        return str(e).split(". ")[0]


def run_metric(metric_name: str, args, out_dir: Path) -> List[str]:
    m = iqaguard.metrics.create(metric_name)
    fr = m.kind == "fr"
    diam = m.bounds.diam
    t0 = time.time()
    tr = split("train", 1, args.seed, args.size)
    va = split("val", 1, args.seed, args.size)
    te_all = split("test", 1, args.seed, args.size)
    te = [te_all[round(i * (len(te_all) - 1) / max(args.images - 1, 1))] for i in range(args.images)]
    f_tr, s_tr, y_tr = dataset_features(m, tr, batch=32, progress=False)
    f_va, _, y_va = dataset_features(m, va, batch=32, progress=False, scores=False)
    a, b = mos_to_units(y_tr, s_tr)
    heads = {s: train_head((f_tr, a * y_tr + b), (f_va, y_va), s, epochs=args.epochs, seed=args.seed)[0]
             for s in args.sigmas}
    print(f"[{metric_name}] heads trained on {len(tr)} images ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    xs = [s.image for s in te]
    refs = [s.ref if fr else None for s in te]
    mos = [s.mos for s in te]

    # ---------------------------------------------------------------- Tables 1-2
    scores: Dict[tuple, List[float]] = {}
    missing: Dict[str, str] = {}
    for sigma in args.sigmas:
        defs = {name: make(name, m, sigma, args.n, heads) for name in METHODS}
        missing.update({k: v for k, v in defs.items() if isinstance(v, str)})
        plain = defs["ms"]
        for i, (x, r) in enumerate(zip(xs, refs)):
            with torch.no_grad():
                s_plain = plain.samples(x, args.n, r, gen(i, 1))
                for name in ("rs-reg", "cert-reg", "ms"):
                    scores.setdefault((name, sigma), []).append(float(defs[name].statistic(s_plain)[0]))
                for name in ("dms", "dms-iqa", "fs-iqa"):
                    d = defs[name]
                    if not isinstance(d, str):
                        scores.setdefault((name, sigma), []).append(float(d.predict(x, r, generator=gen(i, 2))[0]))
        print(f"[{metric_name}] σ {sigma} scored ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    with torch.no_grad():
        undefended = [float(m(x, r)[0]) for x, r in zip(xs, refs)]
    # time per image with and without certification (3 images, σ = the middle preset)
    mid = args.sigmas[len(args.sigmas) // 2]
    timing: Dict[str, tuple] = {}
    for name in METHODS:
        d = make(name, m, mid, args.n, heads)
        if isinstance(d, str):
            continue
        tp, tc = [], []
        for i in range(3):
            t = time.perf_counter()
            d.predict(xs[i], refs[i], generator=gen(i, 3))
            tp.append(time.perf_counter() - t)
            t = time.perf_counter()
            d.certify(xs[i], refs[i], generator=gen(i, 4))
            tc.append(time.perf_counter() - t)
        timing[name] = (statistics.mean(tc), statistics.mean(tp))
    table = ["| method | " + " | ".join(f"σ = {s}" for s in args.sigmas) + " | time, certify (s) | time, predict (s) |",
             "|---" * (len(args.sigmas) + 3) + "|"]
    for name in METHODS:
        if name in missing:
            table.append(f"| {name} | " + " | ".join("—" for _ in args.sigmas) + " | — | — |")
            continue
        cells = [corr(scores[(name, s)], mos) for s in args.sigmas]
        tc, tp = timing[name]
        table.append(f"| {name} | " + " | ".join(cells) + f" | {tc:.2f} | {tp:.3f} |")
    table += ["", f"Undefended {metric_name} on the same images: {corr(undefended, mos)}."]
    table += [f"Not run: {name}: {why}." for name, why in missing.items()]

    # ---------------------------------------------------------------- Figure 3 and abstention
    fig3, abst = [], []
    for sigma in args.sigmas:
        fs = make("fs-iqa", m, sigma, args.n, heads)
        eps, width, n_abst = [], [], 0
        for i, (x, r) in enumerate(zip(xs, refs)):
            c = fs.certify(x, r, generator=gen(i, 5))
            if bool(c.abstain[0]):
                n_abst += 1
                continue
            eps.append(float(c.eps[0]))
            width.append(100 * float(c.upper[0] - c.lower[0]) / diam)
        abst.append(f"σ_f = {sigma}: {n_abst} of {len(xs)} ({100 * n_abst / len(xs):.0f}%)")
        order = np.argsort(eps)
        pts = []
        for chunk in (np.array_split(order, min(10, len(order))) if len(order) else []):
            if len(chunk):
                pts.append((float(np.mean([eps[j] for j in chunk])), float(np.mean([width[j] for j in chunk]))))
        fig3.append({"label": f"σ_f = {sigma}", "points": pts})
    (out_dir / f"fsiqa_fig3_{metric_name}.svg").write_text(
        svg.lines(fig3, "ε_x (input L2 radius), bin mean", "S^u − S^l, % of range",
                  f"{metric_name}: certified interval width against ε_x (10 quantile bins)"), encoding="utf-8")

    # ---------------------------------------------------------------- Figure 4
    k = min(args.attack_images, len(xs))
    fs = iqaguard.defenses.create("fs-iqa", metric=m, sigma=args.sigmas[0], n=args.n, head=heads[args.sigmas[0]],
                                  attack_samples=16, generator=gen(0, 6))
    undef_pts, fs_pts = [], []
    for eps in L2_NORMS:
        du, dfs = [], []
        for i in range(k):
            atk = iqaguard.attacks.create("pgd", norm="l2", eps=eps, steps=10, alpha=eps / 10, random_start=False)
            x, r = xs[i], refs[i]
            xa = atk(m, x, r, generator=gen(i, 7))
            with torch.no_grad():
                du.append(abs(float(m(xa, r)[0] - m(x, r)[0])) / diam * 100)
            xa = atk(fs, x, r, generator=gen(i, 8))
            dfs.append(abs(float(fs.predict(xa, r, generator=gen(i, 9))[0] - fs.predict(x, r, generator=gen(i, 9))[0]))
                       / diam * 100)
        undef_pts.append((eps, statistics.mean(du)))
        fs_pts.append((eps, statistics.mean(dfs)))
    (out_dir / f"fsiqa_fig4_{metric_name}.svg").write_text(
        svg.lines([{"label": f"undefended {metric_name}", "points": undef_pts},
                   {"label": f"FS-IQA σ_f = {args.sigmas[0]}", "points": fs_pts}],
                  "L2 norm of the I-FGSM perturbation", "|score change|, % of range",
                  f"{metric_name}: I-FGSM (10 iterations) score change"), encoding="utf-8")

    # ---------------------------------------------------------------- stability
    stab = []
    for name in ("ms", "dms", "dms-iqa", "fs-iqa"):
        d = make(name, m, mid, args.n, heads)
        if isinstance(d, str):
            continue
        sds = []
        for i in range(min(args.stability_images, len(xs))):
            runs = [float(d.predict(xs[i], refs[i], generator=gen(i, 100 + j))[0]) for j in range(args.repeats)]
            sds.append(statistics.pstdev(runs) / diam * 100)
        stab.append(f"| {name} | {statistics.mean(sds):.3f} | {max(sds):.3f} |")

    lines = [f"## {metric_name} ({'Table 2, FR' if fr else 'Table 1, NR'})", "",
             f"{len(te)} test images at {args.size[0]}x{args.size[1]}, N = {args.n}, α = 0.001; |SRCC| / |PLCC| against "
             f"pseudo-MOS; FS-IQA heads trained on {len(tr)} train images (val {len(va)}); times per image at σ = {mid} "
             f"({args.threads} threads).", "", *table, "",
             f"Figure 3 (`fsiqa_fig3_{metric_name}.svg`): interval width against ε_x. Abstentions: " + "; ".join(abst) + ".",
             "", f"![Figure 3](fsiqa_fig3_{metric_name}.svg)", "",
             f"Figure 4 (`fsiqa_fig4_{metric_name}.svg`), mean over {k} images, |score change| in % of the range:", "",
             "| L2 norm | " + " | ".join(f"{e}" for e in L2_NORMS) + " |", "|---" * (len(L2_NORMS) + 1) + "|",
             "| undefended | " + " | ".join(f"{v:.2f}" for _, v in undef_pts) + " |",
             f"| FS-IQA σ_f = {args.sigmas[0]} | " + " | ".join(f"{v:.2f}" for _, v in fs_pts) + " |", "",
             f"![Figure 4](fsiqa_fig4_{metric_name}.svg)", "",
             f"Stability over {args.repeats} runs with fresh noise (σ = {mid}, {min(args.stability_images, len(xs))} images): std of the "
             "smoothed score in % of the range.", "", "| method | mean std | max std |", "|---|---|---|", *stab, "",
             f"({time.time() - t0:.0f} s for {metric_name})", ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metrics", nargs="+", default=["builtin-nr", "builtin-fr"])
    p.add_argument("--size", type=int, nargs=2, default=(96, 128))
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--attack-images", type=int, default=10)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--stability-images", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "experiments")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    body: List[str] = []
    for name in args.metrics:
        body += run_metric(name, args, args.out)
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    head = ["# FS-IQA experiments on builtin models", "",
            f"Generated by `python scripts/fsiqa_experiments.py {cmd}` in {(time.time() - t0) / 60:.1f} min "
            f"({args.threads} CPU threads). Protocol and departures: the script's docstring; discussion: "
            "`docs/fsiqa.md`.", ""]
    (args.out / "fsiqa.md").write_text("\n".join(head + body), encoding="utf-8")
    print("\n".join(head + body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
