"""Can a query or universal attack raise a full-reference metric? Ceilings on builtin-fr.

    nice -n 5 python benchmarks/fr_attack_ceiling.py [--threads 2] [--size 128 160] [--json out.json]

The attack suite's acceptance asks every black-box attack to raise the predicted quality of
≥ 60% of 20 test images and every white-box one ≥ 90%, on builtin-fr too
(``benchmarks/attack_acceptance.py``). On a full-reference metric the best an attack can do is to
move the distorted image towards its reference, which lies *inside* the ε-ball for the mildly
distorted images. This script measures, on the acceptance script's 20 test images at medium
strength (ε = 4/255), what the search space or the information of an attack allows, with no
attack code involved, so that a failure can be told apart from a weak implementation:

* **vertices** (Parsimonious searches the corners ``x ± ε`` of the ball, by its paper's design):
  the corner nearest the reference in every pixel, ``x + ε · sign(ref − x)``;
* **NES's information**: the cosine between the true input gradient and the antithetic
  estimate NES forms from 50 queries (σ = 0.001, Ilyas et al.'s values), and the sign agreement of
  the two; and, as if NES's estimate were exact, one true-gradient signed step of NES's own step
  ``ε / 4``;
* **L0** (One Pixel changes ``pixels`` pixels): the ``pixels`` most distorted pixels set to the
  reference's values (the largest per-pixel improvement there is), and the gain it brings;
* **universal perturbations**: one ``δ`` fitted by Adam on the mean objective of a set of
  validation images and scored on the *same* images (in-sample: the most a universal
  perturbation can do on them), against the package's Optimized-UAP fitted on train images and
  scored on those validation images (held out, as the acceptance and the benchmark do). No test
  image is fitted on.

Every figure is "images whose normalised objective ``sign · f / diam`` rose", as in the acceptance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_acceptance import DEMO_SOURCES, FIT_SOURCES, images  # noqa: E402
import iqaguard  # noqa: E402
from iqaguard.attacks import Attack  # noqa: E402

VAL_SOURCES = ["brandenburggate", "bridge", "brushes", "butterfly", "charminar", "giraffe"]


def objective(metric: Any, x: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return Attack.objective(metric, x, ref)


def raised(gain: torch.Tensor) -> str:
    return f"{int((gain > 0).sum())}/{gain.numel()} (mean gain {float(gain.mean()):+.5f})"


def vertex_ceiling(metric: Any, x: torch.Tensor, ref: torch.Tensor, eps: float) -> torch.Tensor:
    toward = torch.sign(ref - x)
    toward[toward == 0] = 1
    return objective(metric, (x + eps * toward).clamp(0, 1), ref) - objective(metric, x, ref)


def nes_information(metric: Any, x: torch.Tensor, ref: torch.Tensor, eps: float, pairs: int = 25,
                    sigma: float = 1e-3) -> Dict[str, Any]:
    xr = x.clone().requires_grad_(True)
    Attack.objective(metric, xr, ref).sum().backward()
    grad = xr.grad.flatten(1)
    gen = torch.Generator().manual_seed(0)
    est = torch.zeros_like(grad)
    for _ in range(pairs):
        u = torch.randn(x.shape, generator=gen)
        diff = objective(metric, (x + sigma * u).clamp(0, 1), ref) - objective(metric, (x - sigma * u).clamp(0, 1), ref)
        est += diff.view(-1, 1) * u.flatten(1)
    cos = torch.nn.functional.cosine_similarity(est, grad, dim=1)
    agree = (est.sign() == grad.sign()).double().mean(dim=1)
    step = (x + eps / 4 * grad.view_as(x).sign()).clamp(0, 1)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "cosine_max": float(cos.max()),
            "sign_agreement": float(agree.mean()),
            "true_gradient_step_gain": objective(metric, step, ref) - objective(metric, x, ref)}


def l0_ceiling(metric: Any, x: torch.Tensor, ref: torch.Tensor, pixels: int) -> torch.Tensor:
    dist = (x - ref).abs().sum(dim=1).flatten(1)
    top = dist.topk(pixels, dim=1).indices
    out = x.clone().flatten(2)
    for b in range(x.shape[0]):
        out[b][:, top[b]] = ref[b].flatten(1)[:, top[b]]
    return objective(metric, out.view_as(x), ref) - objective(metric, x, ref)


def in_sample_universal(metric: Any, x: torch.Tensor, ref: torch.Tensor, eps: float, steps: int,
                        lr: float) -> torch.Tensor:
    delta = torch.zeros(1, *x.shape[1:], requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        loss = -Attack.objective(metric, (x + delta).clamp(0, 1), ref).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.clamp_(-eps, eps)
    return objective(metric, (x + delta.detach()).clamp(0, 1), ref) - objective(metric, x, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="Adam steps of the in-sample universal perturbation")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    metric = iqaguard.metrics.create("builtin-fr")
    eps = 4 / 255
    pixels = int(iqaguard.attacks.create("one-pixel", preset="medium").params["pixels"])
    x, ref, _ = images("test", DEMO_SOURCES, 20, size)
    print(f"builtin-fr, 20 test images at {size[0]}x{size[1]}, eps = 4/255")
    out: Dict[str, Any] = {}
    g = vertex_ceiling(metric, x, ref, eps)
    out["vertex"] = g.tolist()
    print(f"vertex nearest the reference in every pixel (Parsimonious' search space): raised {raised(g)}")
    nes = nes_information(metric, x, ref, eps)
    print(f"NES, 50-query estimate vs true gradient: cosine mean {nes['cosine_mean']:.4f} "
          f"(min {nes['cosine_min']:.4f}, max {nes['cosine_max']:.4f}), sign agreement {nes['sign_agreement']:.4f}")
    print(f"one TRUE-gradient signed step of NES's step eps/4: raised {raised(nes['true_gradient_step_gain'])}")
    nes["true_gradient_step_gain"] = nes["true_gradient_step_gain"].tolist()
    out["nes"] = nes
    g = l0_ceiling(metric, x, ref, pixels)
    out["l0"] = g.tolist()
    print(f"the {pixels} most distorted pixels set to the reference (One Pixel's medium budget): raised {raised(g)}")
    vx, vref, _ = images("val", VAL_SOURCES, 20, size)
    g = in_sample_universal(metric, vx, vref, eps, args.steps, eps / 40)
    out["universal_in_sample"] = g.tolist()
    print(f"universal delta fitted on 20 val images, scored on the same images: raised {raised(g)}")
    fx, fref, _ = images("train", FIT_SOURCES, 16, size)
    atk = iqaguard.attacks.create("opt-uap", preset="medium").fit(metric, fx, ref=fref,
                                                                   generator=torch.Generator().manual_seed(0))
    g = objective(metric, atk(metric, vx, ref=vref), vref) - objective(metric, vx, vref)
    out["universal_held_out"] = g.tolist()
    print(f"Optimized-UAP (medium) fitted on 16 train images, scored on the 20 val images: raised {raised(g)}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
