"""Train the Gaussian denoiser of DRS / DMS (iqaguard.defenses.certified.denoiser) on the builtin photographs.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 5 python scripts/train_denoiser.py --seed 0 --threads 2

Data: random 64x64 crops (random flips) of the builtin-kadid **train** split photographs, each with
unclipped Gaussian noise of σ ~ U(0, 0.5) on the [0, 1] scale (the noise the smoothing defenses
add, at every preset's level: a blind denoiser). Loss: MSE between ``D(x + σe)`` and ``x``. The
step is chosen on fixed **val** crops (mean PSNR at σ = 0.12, 0.25, 0.5); the shipped model is
then scored once on fixed **test** crops and the figures go into ``defenses/weights/MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from iqaguard.defenses.certified.denoiser import ARCH, WEIGHTS_FILE, DnCNN
from iqaguard.training.checkpoint import save_model
from iqaguard.metrics import functional as FM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iqaguard.training import fit_steps  # noqa: E402
from _training import fixed_crops, photos, write_section  # noqa: E402

SIGMAS = (0.12, 0.25, 0.5)


def noisy_psnr(net: torch.nn.Module, x: torch.Tensor, seed: int) -> dict:
    """Mean PSNR (dB, RGB) of the noisy and the denoised crops to the clean ones, per σ of :data:`SIGMAS`."""
    g, out = torch.Generator().manual_seed(seed), {}
    with torch.no_grad():
        for s in SIGMAS:
            z = x + s * torch.randn(x.shape, generator=g)
            out[s] = {"noisy": round(float(FM.psnr(z.clamp(0, 1), x).mean()), 2),
                      "denoised": round(float(FM.psnr(net(z).clamp(0, 1), x).mean()), 2)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pool = photos("train")
    val, test = fixed_crops(photos("val"), 2, 96, args.seed + 1), fixed_crops(photos("test"), 2, 96, args.seed + 2)
    net = DnCNN(**ARCH)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    g = torch.Generator().manual_seed(args.seed)

    def val_score() -> float:
        net.eval()
        v = noisy_psnr(net, val, args.seed + 3)
        net.train()
        return sum(r["denoised"] for r in v.values()) / len(v)

    def batch_loss() -> torch.Tensor:
        x = fixed_crops([pool[int(i)] for i in torch.randint(0, len(pool), (args.batch,), generator=g)], 1,
                        args.side, int(torch.randint(0, 2 ** 31, (1,), generator=g)))
        if bool(torch.rand(1, generator=g) < 0.5):
            x = x.flip(-1)
        sigma = torch.rand(args.batch, 1, 1, 1, generator=g) * 0.5
        return torch.nn.functional.mse_loss(net(x + sigma * torch.randn(x.shape, generator=g)), x)

    _, best_step, curve, secs = fit_steps(net, opt, sched, args.steps, batch_loss, val_score, args.eval_every,
                                          unit=" dB", digits=2)
    net.eval()
    save_model(net, args.out, dict(ARCH), trained_by="scripts/train_denoiser.py", val_step=str(best_step))
    v = noisy_psnr(net, val, args.seed + 3)
    t = noisy_psnr(net, test, args.seed + 4)  # once, after the step was chosen on val
    print(f"val {v}; test {t}", flush=True)
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    fmt = lambda d: "; ".join(f"σ {s}: noisy {r['noisy']} dB -> denoised {r['denoised']} dB" for s, r in d.items())  # noqa: E731
    lines = [
        "# Model card: DRS / DMS denoiser", "",
        "The Gaussian denoiser of the `drs` and `dms` certified defenses: a small DnCNN (Zhang et al., IEEE TIP 2017; "
        "residual `z - r(z)`, no batch normalisation) trained from scratch by `scripts/train_denoiser.py`.", "",
        f"- architecture: {ARCH['depth']} conv 3x3 layers of {ARCH['width']} channels, ReLU; "
        f"{sum(q.numel() for q in net.parameters())} parameters",
        f"- command: `python scripts/train_denoiser.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- data: random {args.side}x{args.side} crops (random flips) of the {len(pool)} builtin-kadid train-split "
        "photographs + unclipped Gaussian noise, σ ~ U(0, 0.5) on the [0, 1] scale",
        f"- recipe: MSE, Adam lr {args.lr} (cosine decay), {args.steps} steps of batch {args.batch}, seed {args.seed}",
        f"- selection on val only (48 fixed 96x96 val crops, mean denoised PSNR over σ 0.12 / 0.25 / 0.5): step "
        f"{best_step}; curve {', '.join(curve)}",
        f"  - val: {fmt(v)}",
        f"- test (once, 48 fixed 96x96 test crops): {fmt(t)}",
        f"- training time: {secs / 60:.1f} min ({args.threads} CPU threads)",
        f"- file: `{args.out.name}` ({args.out.stat().st_size / 1024:.1f} KB), sha256 `{sha}`", ""]
    write_section(args.out.parent / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
