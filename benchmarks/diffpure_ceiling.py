"""How close to the clean image can DiffPure get? PSNR of its pieces on attacked validation crops.

    nice -n 5 python benchmarks/diffpure_ceiling.py [--t 5 10] [--threads 2] [--weights FILE]

The acceptance check of the neural purifications asks that the shipped weights raise the PSNR to
the clean image of attacked builtin-kadid images. DiffPure misses it (docs/defenses.md). This
script separates what the method costs from what the small score network costs, on the
**validation** pairs the training script selects with (``adversarial_pairs("val", 2, 96, 3)``:
48 crops of the 24 val photographs, I-FGSM / PGD at 2-8 /255 on builtin-nr; never the test
split), at each ``--t``, one seeded draw of the forward noise per crop shared by every row:

* ``attacked``: the attacked crop itself (no defense);
* ``noised``: the forward diffusion alone, ``x_t / sqrt(ᾱ_t)`` mapped back to [0, 1] — what the
  reverse process has to undo;
* ``one-shot x̂0``: the network's posterior-mean estimate ``(x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)``
  in one step (no sampling noise: the best the network's denoising does at this noise level);
* ``one-shot x̂0 of the clean crop``: the same from the *clean* crop noised with the same draw (how
  well the network denoises when no perturbation is present);
* ``DiffPure``: the defense itself (t ancestral steps, the shipped sampler).

If the one-shot estimate is already below ``attacked``, no sampler of this network can pass the
check at that t: ancestral sampling draws from the posterior, whose samples lie farther from the
truth than its mean.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _training import adversarial_pairs  # noqa: E402
from iqaguard.defenses.purification.diffpure import DiffPure  # noqa: E402
from iqaguard.metrics import functional as FM  # noqa: E402


def rows(t: int, clean: torch.Tensor, attacked: torch.Tensor, weights: str = None) -> dict:
    """Mean PSNR (dB, RGB) to the clean crops of each stage at ``t``."""
    p = DiffPure(t=t, **({"weights": weights} if weights else {}))
    d, i = p.diffusion, t - 1
    out = {k: [] for k in ("noised", "one-shot x̂0", "one-shot x̂0 of the clean crop", "DiffPure")}
    with torch.no_grad():
        for k in range(len(attacked)):
            x, c = attacked[k:k + 1], clean[k:k + 1]
            e = torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + k))
            xt = d.q_sample(2 * x - 1, i, e)
            out["noised"].append(((xt / d._c("sqrt_a", i, xt) + 1) / 2).clamp(0, 1))
            out["one-shot x̂0"].append((d.denoise_one_shot(xt, i, clip=True) + 1) / 2)
            xc = d.q_sample(2 * c - 1, i, e)
            out["one-shot x̂0 of the clean crop"].append((d.denoise_one_shot(xc, i, clip=True) + 1) / 2)
            out["DiffPure"].append(p(x, generator=torch.Generator().manual_seed(1000 + k)))
    res = {"attacked": float(FM.psnr(attacked, clean).mean())}
    res.update({k: float(FM.psnr(torch.cat(v), clean).mean()) for k, v in out.items()})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None, help="a DiffPure weights file (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clean, attacked = adversarial_pairs("val", 2, 96, 3)
    print(f"{len(clean)} val crops of 96 px; mean PSNR to the clean crop (dB)")
    print("| t | attacked | noised | one-shot x̂0 | one-shot x̂0 of the clean crop | DiffPure |")
    print("|---|---|---|---|---|---|")
    for t in args.t:
        r = rows(t, clean, attacked, args.weights)
        print(f"| {t} | " + " | ".join(f"{r[k]:.2f}" for k in ("attacked", "noised", "one-shot x̂0",
                                                               "one-shot x̂0 of the clean crop", "DiffPure")) + " |",
              flush=True)


if __name__ == "__main__":
    main()
