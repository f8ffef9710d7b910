"""Train the DMS-IQA denoiser of a metric (iqaguard.defenses.certified.dms_iqa) on builtin-kadid.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 5 python scripts/train_dms_iqa.py --metric builtin-nr --seed 0 --threads 2

Start: the DRS/DMS DnCNN (``defenses/weights/dncnn.safetensors``), fine-tuned with the DMS-IQA
loss (Stochastic BIQA, Shumitskaya et al. 2025: pixel MSE + score MSE + rank loss,
:func:`~iqaguard.defenses.certified.dms_iqa.dms_iqa_loss`) on random ``--side`` crops of
builtin-kadid **train** images with unclipped Gaussian noise σ ~ U(0, 0.5). The subjective
scores are mapped to the metric's units by the least-squares line ``a·MOS + b`` fitted to the
metric's clean scores of 256 train crops (the orientation of a lower-is-better metric comes out
of the fit). The step is chosen on fixed **val** crops by the SROCC of the median-smoothed score
(``--val-draws`` draws at σ = 0.12 and 0.25); the chosen denoiser is then scored once on fixed
**test** crops beside plain MS and DMS (the DnCNN) with the same draws, and the figures go into
``defenses/weights/MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import iqaguard
from iqaguard import scores
from iqaguard.data.io import load_image
from iqaguard.data.kadid_builtin import BuiltinKadid
from iqaguard.defenses.certified.denoiser import ARCH, dms_iqa_weights, load_denoiser
from iqaguard.defenses.certified.dms_iqa import dms_iqa_loss
from iqaguard.training.checkpoint import save_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iqaguard.training import fit_steps  # noqa: E402
from _training import write_section  # noqa: E402

SIGMAS = (0.12, 0.25)


def crops(samples, k: int, side: int, g: torch.Generator, fr: bool):
    """``k`` random ``side`` crops (with their references for FR, and MOS) of random ``samples``."""
    xs, refs, mos = [], [], []
    for i in torch.randint(0, len(samples), (k,), generator=g).tolist():
        s = samples[i]
        x = load_image(s.path)
        h, w = x.shape[-2:]
        t = int(torch.randint(0, h - side + 1, (1,), generator=g))
        l = int(torch.randint(0, w - side + 1, (1,), generator=g))
        xs.append(x[..., t:t + side, l:l + side])
        if fr:
            refs.append(load_image(s.ref_path)[..., t:t + side, l:l + side])
        mos.append(s.mos)
    return torch.cat(xs), (torch.cat(refs) if fr else None), torch.tensor(mos)


def smoothed_scores(metric, denoiser: Optional[Callable], x: torch.Tensor, ref: Optional[torch.Tensor],
                    sigma: float, draws: int, seed: int, batch: int = 32) -> np.ndarray:
    """Median over ``draws`` noisy copies of ``metric(denoiser(x + σe))`` per crop (fixed draws)."""
    g, out = torch.Generator().manual_seed(seed), []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            rb = ref[i:i + batch] if ref is not None else None
            s = []
            for _ in range(draws):
                z = xb + sigma * torch.randn(xb.shape, generator=g)
                s.append(metric.score(denoiser(z) if denoiser is not None else z, rb))
            out.append(torch.stack(s, 1).median(dim=1).values)
    return torch.cat(out).numpy()


def correlations(metric, denoiser, data, draws: int, seed: int) -> Dict[float, Tuple[float, float]]:
    """``{σ: (SROCC, PLCC)}`` (absolute values) of the smoothed scores of ``data`` against MOS."""
    x, ref, mos = data
    out = {}
    for j, s in enumerate(SIGMAS):
        p = smoothed_scores(metric, denoiser, x, ref, s, draws, seed + j)
        out[s] = (round(abs(scores.srocc(p, mos)), 4), round(abs(scores.plcc(p, mos)), 4))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metric", default="builtin-nr")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--side", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--w-score", type=float, default=1.0)
    p.add_argument("--w-rank", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--val-crops", type=int, default=160)
    p.add_argument("--val-draws", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    metric = iqaguard.metrics.create(args.metric)
    metric.requires_grad_(False)
    fr = metric.kind == "fr"
    out = args.out or dms_iqa_weights(metric.name)[0]
    train = list(BuiltinKadid(split="train", seed=0))
    val = crops(list(BuiltinKadid(split="val", seed=0)), args.val_crops, args.side,
                torch.Generator().manual_seed(args.seed + 1), fr)
    test = crops(list(BuiltinKadid(split="test", seed=0)), args.val_crops, args.side,
                 torch.Generator().manual_seed(args.seed + 2), fr)
    g = torch.Generator().manual_seed(args.seed)
    fx, fref, fmos = crops(train, 256, args.side, g, fr)
    with torch.no_grad():
        clean = torch.cat([metric.score(fx[i:i + 32], fref[i:i + 32] if fr else None) for i in range(0, 256, 32)])
    a, b = np.polyfit(fmos.numpy(), clean.numpy(), 1)
    print(f"MOS -> {args.metric} units: {a:.4f} * MOS + {b:.4f}", flush=True)
    diam = metric.bounds.diam
    base = load_denoiser()
    net = copy.deepcopy(base).requires_grad_(True).train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)

    def val_score() -> float:
        net.eval()
        c = correlations(metric, net, val, args.val_draws, args.seed + 3)
        net.train()
        return float(np.mean([v[0] for v in c.values()]))

    def batch_loss() -> torch.Tensor:
        x, ref, mos = crops(train, args.batch, args.side, g, fr)
        sigma = torch.rand(args.batch, 1, 1, 1, generator=g) * 0.5
        den = net(x + sigma * torch.randn(x.shape, generator=g))
        return dms_iqa_loss(den, x, metric.score(den, ref), torch.as_tensor(a * mos.numpy() + b, dtype=den.dtype),
                            diam, args.w_score, args.w_rank)

    _, best_step, curve, secs = fit_steps(net, opt, sched, args.steps, batch_loss, val_score, args.eval_every)
    net.eval().requires_grad_(False)
    save_model(net, out, dict(ARCH), trained_by="scripts/train_dms_iqa.py", metric=metric.name,
               val_step=str(best_step))
    rows: List[str] = []
    for label, d in (("MS (no denoiser)", None), ("DMS (DnCNN, pixel MSE only)", base), ("DMS-IQA", net)):
        v = correlations(metric, d, val, args.val_draws, args.seed + 3)
        t = correlations(metric, d, test, args.val_draws, args.seed + 4)  # once, after the step was chosen on val
        rows.append(f"| {label} | " + " | ".join(f"{v[s][0]:.3f} / {v[s][1]:.3f}" for s in SIGMAS) + " | "
                    + " | ".join(f"{t[s][0]:.3f} / {t[s][1]:.3f}" for s in SIGMAS) + " |")
        print(label, "val", v, "test", t, flush=True)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Model card: DMS-IQA denoiser of {metric.name}", "",
        f"The denoiser of the `dms-iqa` certified defense on `{metric.name}` (Shumitskaya et al., \"Stochastic BIQA\", "
        "CVIU 2025): the DRS/DMS DnCNN fine-tuned by `scripts/train_dms_iqa.py` with pixel MSE + score MSE + "
        "pairwise hinge rank loss (score terms divided by the metric's range; docs/certified.md).", "",
        f"- command: `python scripts/train_dms_iqa.py {cmd}`",
        f"- data: random {args.side}x{args.side} crops of builtin-kadid train images (their pseudo-MOS mapped to "
        f"{metric.name} units by {a:.4f} * MOS + {b:.4f}, fitted on 256 clean train crops) + unclipped Gaussian "
        "noise, σ ~ U(0, 0.5)",
        f"- recipe: Adam lr {args.lr} (cosine decay), {args.steps} steps of batch {args.batch}, weights score "
        f"{args.w_score} / rank {args.w_rank}, seed {args.seed}",
        f"- selection on val only ({args.val_crops} fixed val crops, SROCC of the median of {args.val_draws} draws, "
        f"mean over σ {', '.join(map(str, SIGMAS))}): step {best_step}; curve {', '.join(curve)}",
        f"- SROCC / PLCC of the median-smoothed score against pseudo-MOS ({args.val_crops} crops each; test scored "
        "once, after selection; the same draws for every row):", "",
        "| denoiser | " + " | ".join(f"val σ {s}" for s in SIGMAS) + " | " + " | ".join(f"test σ {s}" for s in SIGMAS)
        + " |", "|---" * (1 + 2 * len(SIGMAS)) + "|", *rows, "",
        f"- training time: {secs / 60:.1f} min ({args.threads} CPU threads)",
        f"- file: `{out.name}` ({out.stat().st_size / 1024:.1f} KB), sha256 `{sha}`", ""]
    write_section(out.parent / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
