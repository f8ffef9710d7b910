"""Zhang et al.: raise predicted quality while a full-reference fidelity metric stays above a floor.

Zhang, Li, Min, Zhai, Guo, Yang & Ma, "Perceptual Attacks of No-Reference Image Quality Models
with Human-in-the-Loop", NeurIPS 2022, used by Guardians of Image Quality (appendix A.3.3:
"incorporated FR IQA metrics like DISTS and LPIPS into loss functions"). The attack trades the
change of the attacked model's prediction against the perceptual distance to the clean image, as
measured by a full-reference model; here that model is SSIM on the RGB channels
(:func:`iqaguard.metrics.functional.fidelity_ssim`, the measure the SSIM restriction is checked with), and the trade-off is a hinge: the ascent
direction is that of ``objective(x') - lam · max(0, ssim_floor - SSIM(x', x))``, so the fidelity
term only pulls back once the floor is crossed. The best iterate that meets the floor is kept and
the last one is moved back towards ``x`` until it meets it (:func:`~.budgets.hold`).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ..errors import InputError
from ..metrics import functional as FM
from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import PRESET_BUDGETS, Restriction, check_budget, check_count, hold, within
from .gradient import GradientAttack, keep_best

_SSIM = PRESET_BUDGETS[Restriction.SSIM]
FIDELITY = ("ssim",)


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _unit(g: torch.Tensor) -> torch.Tensor:
    """``g`` divided by its per-image mean absolute value (0 stays 0)."""
    return g / _per_image(g.abs().flatten(1).mean(dim=1).clamp_min(1e-30))


@ATTACKS.register("zhang")
class Zhang(GradientAttack):
    """Zhang et al. (NeurIPS 2022): signed-gradient ascent with an SSIM-floor hinge penalty.

    Each of ``steps`` iterations moves every pixel by a (decaying) step along
    ``sign(ĝ_f + lam · [SSIM < floor] · ĝ_s)``, ``ĝ_f`` the objective's gradient and ``ĝ_s`` the
    gradient of ``SSIM(x', x)``, each divided by its
    per-image mean absolute value (so ``lam`` is a scale-free weight: the gradient of the hinge
    ``lam · max(0, floor - SSIM)`` in those units), then clips to [0, 1]. The output is the iterate
    with the highest objective among those meeting the floor, or the last iterate pulled back
    towards ``x`` by :func:`~.budgets.hold` if that is better.

    Distance measure: SSIM to the clean image (``functional.fidelity_ssim``: the RGB channels,
    scikit-image's convention, as Guardians of Image Quality measures it), ``SSIM(x_adv, x) >=
    ssim`` exactly as :func:`~.budgets.within` computes it.
    Varied parameter (the presets): ``ssim``, the floor, at the SSIM budgets of Guardians of Image
    Quality appendix A.3.4: ``weak`` 0.9, ``medium`` 0.8, ``strong`` 0.75. (Its Table 7 restricts
    this attack by L∞ and varies the learning rate; the attack's own constraint is the
    full-reference fidelity, so here the fidelity floor is the budget.)

    Args:
        ssim: SSIM floor, ``0 < ssim < 1`` (default 0.8).
        steps: iterations (one objective gradient each), >= 1 (default 40).
        lr: first step per pixel on the [0, 1] scale, ``0 < lr <= 1`` (default 4/255); step ``t``
            (from 0) is ``lr · (1 - t / steps)``, a linear decay that lets the iterates settle at the floor.
        lam: weight of the fidelity hinge, ``lam >= 0`` (default 2; 0 disables the pull-back,
            leaving only the final :func:`~.budgets.hold`).
        fidelity: the full-reference fidelity metric; only ``"ssim"`` for now (LPIPS / DISTS are
            not built in).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1], ``H, W >= 7`` (the SSIM window) -> ``x_adv`` of
    the same shape.

    Example:
        >>> x_adv = Zhang(preset="medium")(metric, x)   # functional.fidelity_ssim(x_adv, x) >= 0.8
    """

    restriction = Restriction.SSIM
    varied = "ssim"
    presets = {name: {"ssim": floor} for name, floor in _SSIM.items()}

    def __init__(self, ssim: float = 0.8, steps: int = 40, lr: float = 4 / 255, lam: float = 2.0,
                 fidelity: str = "ssim") -> None:
        ok = isinstance(ssim, numbers.Real) and not isinstance(ssim, bool) and math.isfinite(float(ssim))
        if not ok or not 0.0 < float(ssim) < 1.0:
            raise InputError(f"ssim: expected an SSIM floor with 0 < ssim < 1 (e.g. ssim=0.8), got {ssim!r}")
        check_count("steps", steps)
        check_budget("lr", lr, 1.0, "1 (the whole range)")
        ok = isinstance(lam, numbers.Real) and not isinstance(lam, bool) and math.isfinite(float(lam))
        if not ok or float(lam) < 0:
            raise InputError(f"lam: expected a finite weight >= 0 (e.g. lam=2), got {lam!r}")
        if fidelity not in FIDELITY:
            raise InputError(f"fidelity: expected one of {list(FIDELITY)} (LPIPS / DISTS are not built in), "
                             f"got {fidelity!r}")

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Hinge-penalised signed ascent from ``x`` (``generator`` unused: deterministic)."""
        FM.check_fidelity_ssim_size(x)
        floor, lam = float(self.ssim), float(self.lam)
        x_adv, best, best_obj = x.clone(), None, None
        for t in range(self.steps):
            obj, grad = self.gradient(metric, x_adv, ref)
            feasible = within(Restriction.SSIM, x_adv, x, floor).to(x.device)
            masked = torch.where(feasible, obj, torch.full_like(obj, -math.inf))
            best, best_obj = keep_best(best, best_obj, x_adv, masked)
            with torch.enable_grad():
                leaf = x_adv.detach().requires_grad_(True)
                s = FM._fidelity_ssim(leaf, x)
                (g_s,) = torch.autograd.grad(s.sum(), leaf)
            active = _per_image((s.detach() < floor).to(x.dtype))
            step = _unit(grad) + lam * active * _unit(g_s)
            size = float(self.lr) * (1 - t / self.steps)  # linear decay: the iterates settle at the floor
            x_adv = (x_adv + size * step.sign()).clamp(0, 1)
        last = hold(Restriction.SSIM, x_adv, x, floor)
        with torch.no_grad():
            last_obj = self.objective(metric, last, ref)
        best, _ = keep_best(best, best_obj, last, last_obj)
        return hold(Restriction.SSIM, best, x, floor)  # a no-op: every kept iterate meets the floor
