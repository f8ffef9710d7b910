"""stAdv: spatially transformed adversarial examples (a smooth per-pixel flow, bilinear warping).

Xiao, Zhu, Li, He, Liu & Song, "Spatially Transformed Adversarial Examples", ICLR 2018, used to
evaluate IQA models by Robustness as Architecture (its robustness tables, 5 iterations). Instead
of changing pixel values, stAdv moves pixels: a flow field ``f = (du, dv)`` gives every output
pixel ``p`` the location ``p + f(p)`` in the clean image it is read from, by bilinear interpolation
of the four pixels around it (differentiable in ``f``), and the flow is kept smooth by the total
variation loss ``L_flow(f) = sum_p sum_{q in N(p)} sqrt(||du_p - du_q||^2 + ||dv_p - dv_q||^2 + e)``
(``N(p)``: the 4-neighbourhood). stAdv minimises ``L_adv + tau · L_flow``; here ``L_adv`` is the
negated normalised objective ``sign · f(x') / diam(f)``, and ``L_flow`` is averaged over pixels
(so ``tau`` does not depend on the image size).

The budget: no L∞ / SSIM / PSNR bound of Guardians of Image Quality fits a spatial attack, so the
flow itself is bounded in L∞, ``|du|, |dv| <= max_flow`` pixels (the restriction declared is
``Restriction.LINF``, on the flow, not on the pixel values). What that bounds on the image: each
output value is an interpolation of clean values at most ``ceil(max_flow)`` pixels away, so it
lies between the minimum and the maximum of the clean image over the ``(2 ceil(max_flow) + 1)``
square window around it (per channel); a flat region does not change at all.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import Restriction, check_count
from .gradient import GradientAttack, keep_best

MAX_FLOW = 16.0  # pixels: beyond this a "spatial" attack is a re-synthesis of the image
_EPS = 1e-8  # stAdv's e inside the square root (a smooth gradient at zero flow differences)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``x`` read at ``p + flow(p)`` by bilinear interpolation (border pixels repeat outside).

    Args:
        x: images ``[B, C, H, W]``; flow: ``[B, 2, H, W]`` displacements in pixels, ``flow[:, 0]``
            along the width (x), ``flow[:, 1]`` along the height (y).

    Returns:
        ``[B, C, H, W]``; differentiable in ``flow`` (and ``x``).
    """
    b, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def flow_tv(flow: torch.Tensor) -> torch.Tensor:
    """``[B]``: stAdv's ``L_flow`` per image, averaged over pixels (each neighbour pair counted from
    both ends, as the sum over ``N(p)`` does)."""
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    tv = (dx.pow(2).sum(dim=1) + _EPS).sqrt().flatten(1).sum(dim=1) \
        + (dy.pow(2).sum(dim=1) + _EPS).sqrt().flatten(1).sum(dim=1)
    return 2 * tv / (flow.shape[-2] * flow.shape[-1])


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


@ATTACKS.register("stadv")
class StAdv(GradientAttack):
    """stAdv (Xiao et al., ICLR 2018): a smooth flow field that raises the predicted quality.

    From the zero flow, each of ``steps`` iterations moves every flow component by ``a_t`` pixels
    along the sign of the gradient of ``objective(warp(x, f)) - tau · flow_tv(f)`` (the objective's
    gradient with respect to the image, carried back through the bilinear warp), with ``a_t =
    alpha · (1 - t / steps)`` (a linear decay), and clips the flow to ``[-max_flow, max_flow]``. The
    flow with the best penalised objective per image is kept (``attack.flow``, ``[B, 2, H, W]``,
    holds it after a call) and the output is ``warp(x, flow)``. stAdv's L-BFGS is replaced by these
    signed steps, which the flow bound needs anyway.

    Distance measure: L∞ on the flow (pixels), ``|flow| <= max_flow`` per component; the output
    value at each pixel lies within the range of the clean image over the window of radius
    ``ceil(max_flow)`` around it (module docstring). Varied parameter (the presets): ``max_flow``,
    ``weak`` 0.25 px, ``medium`` 0.5 px, ``strong`` 1 px, with 10 steps each (Robustness as
    Architecture runs stAdv for 5 iterations and gives no flow budget; these are ours).

    Args:
        max_flow: bound on each flow component in pixels, ``0 < max_flow <= 16`` (default 0.5).
        tau: weight of the flow smoothness loss, ``tau >= 0`` (default 0.01; stAdv's 0.05 weighs a
            classifier loss, and at 0.05 the 1-pixel steps here are mostly rejected as too rough).
        steps: iterations (one objective gradient each), >= 1 (default 10).
        alpha: first step in pixels, ``0 < alpha <= max_flow``; ``None`` uses ``max_flow / 2``.
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape (values are
    interpolations of ``x``, so they stay in [0, 1]).

    Example:
        >>> a = StAdv(preset="medium")
        >>> x_adv = a(metric, x)   # a.flow.abs().max() <= 0.5 (pixels)
    """

    restriction = Restriction.LINF  # on the flow field, in pixels (see the module docstring)
    varied = "max_flow"
    presets = {name: {"max_flow": m, "steps": 10}
               for name, m in (("weak", 0.25), ("medium", 0.5), ("strong", 1.0))}
    flow: Optional[torch.Tensor] = None

    def __init__(self, max_flow: float = 0.5, tau: float = 0.01, steps: int = 10,
                 alpha: Optional[float] = None) -> None:
        if not _real(max_flow) or not 0 < float(max_flow) <= MAX_FLOW:
            raise InputError(f"max_flow: expected a flow bound in pixels with 0 < max_flow <= {MAX_FLOW:g} "
                             f"(e.g. max_flow=0.5), got {max_flow!r}")
        if not _real(tau) or float(tau) < 0:
            raise InputError(f"tau: expected a finite smoothness weight >= 0 (e.g. tau=0.01), got {tau!r}")
        check_count("steps", steps)
        if alpha is not None and (not _real(alpha) or not 0 < float(alpha) <= float(max_flow)):
            raise InputError(f"alpha: expected a step in pixels with 0 < alpha <= max_flow ({max_flow!r}), "
                             f"or None (max_flow / 2), got {alpha!r}")

    @property
    def step_size(self) -> float:
        """The first step ``alpha`` actually used, in pixels: ``alpha`` or ``max_flow / 2``."""
        return float(self.alpha) if self.alpha is not None else float(self.max_flow) / 2

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Signed ascent on the flow from zero (``generator`` unused: deterministic)."""
        tau = float(self.tau)
        bound = torch.tensor(float(self.max_flow), dtype=x.dtype)
        if float(bound) > float(self.max_flow):  # rounded up in x's dtype: one float inwards
            bound = torch.nextafter(bound, torch.zeros_like(bound))
        bound = float(bound)
        flow = torch.zeros(x.shape[0], 2, *x.shape[-2:], dtype=x.dtype, device=x.device)
        best = best_val = None
        for t in range(self.steps):
            with torch.enable_grad():
                leaf = flow.detach().requires_grad_(True)
                x_adv = warp(x, leaf)
                tv = flow_tv(leaf)
                obj, g_img = self.gradient(metric, x_adv.detach(), ref)
                # the objective's image gradient carried back through the warp, minus tau · d tv / d flow
                (g_flow,) = torch.autograd.grad([x_adv, tv], [leaf],
                                                grad_outputs=[g_img, -tau * torch.ones_like(tv)])
            best, best_val = keep_best(best, best_val, flow, obj - tau * tv.detach())
            size = self.step_size * (1 - t / self.steps)
            flow = (flow + size * g_flow.sign()).clamp(-bound, bound)
        with torch.no_grad():
            val = self.objective(metric, warp(x, flow), ref) - tau * flow_tv(flow)
        best, _ = keep_best(best, best_val, flow, val)
        self.flow = best.detach()
        return warp(x, self.flow)
