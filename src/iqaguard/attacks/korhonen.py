"""Korhonen et al.: gradient steps masked by a Sobel edge map, under an L∞ budget.

Korhonen & You, "Adversarial Attacks Against Blind Image Quality Assessment Models", 2nd
Workshop on Quality of Experience in Visual Multimedia Applications (QoEVMA) at ACM Multimedia
2022, as used by Guardians of Image Quality (appendix A.3.3: "targeting high-textured regions
using Sobel-filter-based weighting"). Noise is least visible where the image is busy, so every
signed-gradient step is weighted per pixel by the normalised Sobel gradient magnitude of the
clean image's luma: textured regions and edges are perturbed, smooth regions are spared (a region
of constant colour gets no change at all).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import linf_box, project_linf
from .ifgsm import IFGSM

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def sobel_mask(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights ``[B, 1, H, W]`` in [0, 1]: ``|Sobel(Y)|`` divided by its per-image maximum.

    ``Y`` is the BT.601 luma of ``x`` ``[B, 3, H, W]``; the 3x3 Sobel derivatives use replicate
    padding, so a constant region (and its border pixels) has weight exactly 0. A constant image
    has weight 0 everywhere.
    """
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = F.pad((x * w).sum(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    # separable Sobel, differences first: exactly 0 wherever the 3x3 neighbourhood is constant
    dx, dy = y[..., :, 2:] - y[..., :, :-2], y[..., 2:, :] - y[..., :-2, :]
    gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]
    gy = dy[..., :, :-2] + 2 * dy[..., :, 1:-1] + dy[..., :, 2:]
    mag = torch.sqrt(gx * gx + gy * gy)
    peak = mag.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return torch.where(peak > 0, mag / peak.clamp_min(1e-12), torch.zeros_like(mag))


@ATTACKS.register("korhonen")
class Korhonen(IFGSM):
    """Korhonen & You (QoEVMA 2022): Sobel-masked signed-gradient ascent within an L∞ ball.

    Each step: ``x' <- Proj_eps(x' + alpha · M(x) ⊙ sign(∇ objective(x')))`` with ``M`` the
    :func:`sobel_mask` of the clean image (the same weight on the three channels of a pixel).

    Distance measure: L∞. Varied parameter (the presets): ``eps``, at the L∞ budgets of
    Guardians of Image Quality appendix A.3.4 (``weak`` 2/255, ``medium`` 4/255, ``strong``
    8/255, 10 steps each). Its Table 7 varies the learning rate to reach these budgets; here the
    budget is the parameter and the projection enforces it exactly.

    Args:
        eps: L∞ budget on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        steps: iterations, >= 1 (default 10).
        alpha: step size at mask weight 1, ``0 < alpha <= 1``; ``None`` uses ``2 · eps / steps``,
            so that every pixel of weight >= 0.5 can reach the ball's surface.
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape, with
    ``||x_adv - x||_inf <= eps`` and ``x_adv == x`` wherever the Sobel mask is 0.

    Example:
        >>> x_adv = Korhonen(preset="medium")(metric, x)
    """

    # restriction, varied parameter, presets and argument checks: those of I-FGSM

    @property
    def step_size(self) -> float:
        """The step ``alpha`` actually used: ``alpha`` or ``2 · eps / steps``."""
        return float(self.alpha) if self.alpha is not None else 2.0 * float(self.eps) / self.steps

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Masked signed-gradient ascent from ``x`` (``generator`` unused: deterministic)."""
        box = linf_box(x, float(self.eps))
        weight = self.step_size * sobel_mask(x)
        x_adv = x.clone()
        for _ in range(self.steps):
            _, grad = self.gradient(metric, x_adv, ref)
            x_adv = project_linf(x_adv + weight * grad.sign(), box)
        return x_adv
