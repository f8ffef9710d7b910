"""MADC: maximum differentiation of the attacked metric on an MSE level set.

Wang & Simoncelli, "Maximum differentiation (MAD) competition: A methodology for comparing
computational models of perceptual quantities", Journal of Vision 8(12):8, 2008, used as an
attack by Guardians of Image Quality (appendix A.3.3: "gradient projection onto a proxy FR
metric", the proxy being the MSE). MAD holds one model fixed and drives the other to its
extreme: here the MSE to the clean image is held at a target level while the attacked metric's
predicted quality is pushed up. Each step moves along the metric's gradient projected onto the
tangent plane of the MSE level set (orthogonal to the MSE gradient ``2 (x' - x) / N``), then
corrects back onto the level set by rescaling the perturbation (a bisection that accounts for
clipping to [0, 1]).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .base import seeded
from .budgets import PRESET_BUDGETS, Restriction, check_budget, check_count, hold
from .gradient import GradientAttack

_PSNR = PRESET_BUDGETS[Restriction.PSNR]
_LOW, _HIGH = 5.0, 50.0  # dB; above ~50 dB float32 rounding near the 58.9 dB quantisation floor of
# iqaguard's PSNR makes the level unholdable (58 dB failed on builtin-nr crops)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def to_level(x: torch.Tensor, d: torch.Tensor, radius: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """``clip(x + s · d)`` with ``s >= 0`` per image such that ``||clip(x + s d) - x||_2 <= radius``
    as closely as bisection gets (``iters`` halvings; the norm is non-decreasing in ``s``).

    Args:
        x: clean images ``[B, 3, H, W]``; d: directions, same shape; radius: ``[B]`` (double).
    """
    def norm(s: torch.Tensor) -> torch.Tensor:
        return ((x + _per_image(s).to(x.dtype) * d).clamp(0, 1).double() - x.double()).flatten(1).norm(dim=1)

    dn = d.double().flatten(1).norm(dim=1).clamp_min(1e-30)
    lo, hi = torch.zeros_like(radius), radius / dn
    for _ in range(60):  # grow hi until the level is passed (clipping shrinks the norm)
        short = norm(hi) < radius
        if not bool(short.any()) or bool((hi > 1e6 / dn).all()):
            break
        hi = torch.where(short, hi * 2, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = norm(mid) <= radius
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (x + _per_image(lo).to(x.dtype) * d).clamp(0, 1)


@ATTACKS.register("madc")
class MADC(GradientAttack):
    """MADC (Wang & Simoncelli 2008) as an attack: raise predicted quality at a fixed MSE.

    Starting from Gaussian noise (from ``generator``) at the target MSE, each of ``steps``
    iterations takes ``g_t = g - (<g, d> / <d, d>) d`` (``g`` the objective's gradient, ``d = x' - x``,
    the MSE gradient's direction), moves ``x'`` by ``lr · ||d|| · g_t / ||g_t||`` and returns to the
    level set with :func:`to_level`. A step that does not raise the objective is undone and that
    image's ``lr`` halved, so the result is the best point found.

    Distance measure: PSNR (equivalently the MSE, ``PSNR = -10 log10 MSE`` on [0, 1]): the output
    is on the level set, ``PSNR(x_adv, x) >= psnr`` exactly as computed and within a tiny fraction
    above it (the MSE is the target's to better than 1e-6 unless clipping to [0, 1] makes the
    level unreachable). Varied parameter (the presets): ``psnr``, the level held fixed, at the
    PSNR budgets of Guardians of Image Quality appendix A.3.4: ``weak`` 35 dB, ``medium`` 30,
    ``strong`` 25. (Its Table 7 restricts MADC by L∞ and varies the learning rate; MAD's own
    constraint is the MSE level, so here that level is the budget.)

    Args:
        psnr: target PSNR in dB, ``5 <= psnr <= 50`` (default 30); the MSE level is
            ``10^(-psnr / 10)``.
        steps: iterations (one gradient each), >= 1 (default 50).
        lr: initial step as a fraction of the perturbation norm, ``0 < lr <= 1`` (default 0.25).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape.

    Example:
        >>> x_adv = MADC(preset="medium")(metric, x)   # PSNR(x_adv, x) = 30 dB
    """

    restriction = Restriction.PSNR
    varied = "psnr"
    presets = {name: {"psnr": level} for name, level in _PSNR.items()}

    def __init__(self, psnr: float = 30.0, steps: int = 50, lr: float = 0.25) -> None:
        ok = isinstance(psnr, numbers.Real) and not isinstance(psnr, bool) and math.isfinite(float(psnr))
        if not ok or not _LOW <= float(psnr) <= _HIGH:
            raise InputError(f"psnr: expected a PSNR level in dB with {_LOW:g} <= psnr <= {_HIGH:g} "
                             f"(e.g. psnr=30), got {psnr!r}")
        check_count("steps", steps)
        check_budget("lr", lr, 1.0, "1 (a step as long as the perturbation)")

    @property
    def mse(self) -> float:
        """The MSE level ``10^(-psnr / 10)`` on the [0, 1] scale."""
        return 10.0 ** (-float(self.psnr) / 10.0)

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Projected ascent on the MSE level set (``generator``: the starting noise; ``None`` = seed 0)."""
        gen = seeded(generator)
        b = x.shape[0]
        radius = torch.full((b,), math.sqrt(self.mse * x[0].numel()), dtype=torch.float64, device=x.device)
        noise = torch.randn(x.shape, generator=gen, device=gen.device).to(device=x.device, dtype=x.dtype)
        best = to_level(x, noise, radius)
        best_obj, best_grad = self.gradient(metric, best, ref)
        lr = torch.full((b,), float(self.lr), dtype=x.dtype, device=x.device)
        for _ in range(self.steps):
            d = best - x
            dd = d.flatten(1).pow(2).sum(dim=1).clamp_min(1e-30)
            g = best_grad - _per_image((best_grad * d).flatten(1).sum(dim=1) / dd) * d
            gn = g.flatten(1).norm(dim=1)
            move = _per_image(lr * dd.sqrt() / gn.clamp_min(1e-30)) * g
            cand = to_level(x, d + torch.where(_per_image(gn) > 0, move, torch.zeros_like(move)), radius)
            obj, grad = self.gradient(metric, cand, ref)
            better = obj > best_obj
            best = torch.where(_per_image(better), cand, best)
            best_grad = torch.where(_per_image(better), grad, best_grad)
            best_obj = torch.where(better, obj, best_obj)
            lr = torch.where(better, lr, lr / 2)
        return hold(Restriction.PSNR, best, x, float(self.psnr))  # float rounding of the level
