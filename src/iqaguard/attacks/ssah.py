"""SSAH: a perturbation confined to the high frequencies, under an L∞ budget.

Luo, Lin, Xie, Wu, Xie & Shen, "Frequency-driven Imperceptible Adversarial Attack on Semantic
Similarity", CVPR 2022, used on IQA metrics by Guardians of Image Quality (appendix A.3.3: "limited
attacks to high frequencies"; Table 7: "grad. descent with high-freq. min."). SSAH attacks the
feature similarity and adds a low-frequency constraint: the low-frequency component of a one-level
Haar discrete wavelet transform (the LL band) of the adversarial image should stay that of the
clean image, so that the change lives in the LH / HL / HH bands, where it is least visible. Here
the similarity term is the normalised objective ``sign · f(x') / diam(f)`` and the low-frequency
constraint is enforced exactly instead of as a penalty: after every signed-gradient step the
perturbation is projected onto the set whose LL band is zero, intersected with the L∞ ball and
[0, 1] (:func:`project_high`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import Restriction, check_budget, check_count, check_linf_eps, linf_box, linf_presets, project_linf
from .gradient import GradientAttack, keep_best


def haar_ll(x: torch.Tensor) -> torch.Tensor:
    """The LL band of a one-level orthonormal Haar DWT: ``[B, C, ceil(H/2), ceil(W/2)]``.

    Each coefficient is ``(a + b + c + d) / 2`` over a 2x2 block; an odd last row / column is
    zero-padded (its blocks sum the pixels they hold).
    """
    h, w = x.shape[-2:]
    x = F.pad(x, (0, w % 2, 0, h % 2))
    return (x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2


def _blocks(v: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` (H, W even) -> ``[B, C, H/2, W/2, 4]``: the values of each 2x2 block."""
    b, c, h, w = v.shape
    return v.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)


def _unblocks(v: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    b, c, h, w = shape
    return v.view(b, c, h // 2, w // 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def project_high(d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Euclidean projection of the perturbation ``d`` onto ``{lo <= d <= hi, Haar LL band of d = 0}``.

    The LL band is zero when every 2x2 block of ``d`` sums to 0, so the projection splits into
    blocks: ``d_i = clip(v_i - mu, lo_i, hi_i)`` with the block's ``mu`` chosen so the sum is 0
    (found by bisection in double precision; the sum decreases in ``mu``). ``lo <= 0 <= hi`` must
    hold (the box contains ``d = 0``), so a solution exists.

    Args:
        d: perturbations ``[B, C, H, W]``; lo, hi: per-value bounds of the same shape.

    Returns:
        ``[B, C, H, W]`` in ``d``'s dtype; every block sums to 0 up to float rounding (~1e-7).
    """
    h, w = d.shape[-2:]
    pad = (0, w % 2, 0, h % 2)  # an odd border: padded values are pinned to 0
    v, l, u = (_blocks(F.pad(t.double(), pad)) for t in (d, lo, hi))
    a = (v - u).amin(dim=-1, keepdim=True)  # sum(clip(v - a)) = sum(u) >= 0
    z = (v - l).amax(dim=-1, keepdim=True)  # sum(clip(v - z)) = sum(l) <= 0
    for _ in range(iters):
        mu = (a + z) / 2
        pos = (v - mu).clamp(l, u).sum(dim=-1, keepdim=True) > 0
        a, z = torch.where(pos, mu, a), torch.where(pos, z, mu)
    out = (v - (a + z) / 2).clamp(l, u)
    return _unblocks(out, (*d.shape[:2], h + h % 2, w + w % 2))[..., :h, :w].to(d.dtype)


@ATTACKS.register("ssah")
class SSAH(GradientAttack):
    """SSAH (Luo et al., CVPR 2022): high-frequency signed-gradient ascent within an L∞ ball.

    Step ``t`` (from 0): ``x' <- x + P(x' - x + a_t · sign(∇ objective(x')))``,
    ``a_t = alpha · (1 - t / steps)``
    (a linear decay), with ``P`` the projection
    :func:`project_high` onto perturbations with a zero Haar LL band inside the ε-ball and [0, 1];
    the best iterate per image (highest objective) is returned.

    Distance measure: L∞ (``||x_adv - x||_inf <= eps`` exactly as computed in float32), and the
    Haar LL band of ``x_adv - x`` is zero up to float rounding. Varied parameter (the presets):
    ``eps``, at the L∞ budgets of Guardians of Image Quality appendix A.3.4 (``weak`` 2/255,
    ``medium`` 4/255, ``strong`` 8/255, 20 steps each). Its Table 7 varies the learning rate
    to reach these budgets; here the budget is the parameter and the projection enforces it.

    Args:
        eps: L∞ budget on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        steps: iterations, >= 1 (default 20).
        alpha: step size on the [0, 1] scale, ``0 < alpha <= 1``; ``None`` uses ``eps / 4`` (the
            projection removes part of each signed step, so steps are not tied to ``eps / steps``).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape.

    Example:
        >>> x_adv = SSAH(preset="medium")(metric, x)   # haar_ll(x_adv - x) ~ 0, L∞ <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(steps=20)

    def __init__(self, eps: float = 4 / 255, steps: int = 20, alpha: Optional[float] = None) -> None:
        check_linf_eps(eps)
        check_count("steps", steps)
        if alpha is not None:
            check_budget("alpha", alpha, 1.0, "1 (the whole range)", ", or None (eps / 4)")

    @property
    def step_size(self) -> float:
        """The step ``alpha`` actually used: ``alpha`` or ``eps / 4``."""
        return float(self.alpha) if self.alpha is not None else float(self.eps) / 4

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Projected high-frequency ascent from ``x`` (``generator`` unused: deterministic)."""
        box = linf_box(x, float(self.eps))
        lo, hi = box[0] - x, box[1] - x
        if bool((lo > 0).any() or (hi < 0).any()):
            raise InputError("x: the L∞ box does not contain x (values outside [0, 1]?)")
        x_adv, best, best_obj = x.clone(), None, None
        for t in range(self.steps):
            obj, grad = self.gradient(metric, x_adv, ref)
            best, best_obj = keep_best(best, best_obj, x_adv, obj)
            size = self.step_size * (1 - t / self.steps)  # linear decay
            d = project_high(x_adv - x + size * grad.sign(), lo, hi)
            x_adv = project_linf(x + d, box)
        with torch.no_grad():
            obj = self.objective(metric, x_adv, ref)
        return keep_best(best, best_obj, x_adv, obj)[0]
