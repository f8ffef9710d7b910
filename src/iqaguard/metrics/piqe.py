"""PIQE (Venkatanath N, Praneeth D, Maruthi Chandrasekhar Bh, Channappayya & Medasani, "Blind
image quality evaluation using perception based features", NCC 2015), registered as ``piqe``.

Differentiable torch re-implementation with the conventions of the MATLAB Image Processing
Toolbox ``piqe`` (the implementation behind the published outputs):

1. gray image (``rgb2gray``) padded at the bottom/right to multiples of 16 (symmetric mirror),
   stretched to ``round(255 I / max(I))``;
2. MSCN coefficients (§2 eq. 1, 7x7 Gaussian, sigma 7/6, ``C = 1``, replicated borders),
   divided into non-overlapping 16x16 blocks (§2.1);
3. a block is *spatially active* when the (unbiased) variance of its MSCN coefficients exceeds
   ``T_A = 0.1`` (§2.1, eq. 2);
4. in an active block (§2.2): a *noticeable-artifact* criterion — one of the 11 segments of 6
   contiguous coefficients along any of its four edges has a standard deviation below
   ``T_B = 0.1`` (eq. 3-4; blockiness / sudden artifacts); a *noise* criterion — the block
   standard deviation ``sigma`` exceeds ``2 beta`` with ``beta = |sigma - r| / max(sigma, r)``
   and ``r`` the ratio of the standard deviations of the centre columns and of the surround
   (eq. 5-6);
5. score (eq. 7): ``PIQE = (sum_active [w_a (1 - v_k) + w_n v_k] + C) / (N_SA + C) * 100`` with
   ``v_k`` the block variance, ``w_a``/``w_n`` the artifact/noise indicators, ``N_SA`` the number
   of active blocks and ``C = 1``. 0 = best, 100 = worst (e.g. a flat image).

Centre/surround columns: MATLAB's ``piqe`` takes the centre as columns 8 and 9 (1-based) of the
block and removes column 8 and then column 9 *of the reduced block* (i.e. original column 10)
to form the surround; this is reproduced (``CENTER``, ``SURROUND_DROP``).

Gradient (piecewise): the activity, artifact and noise indicators are thresholds, hence locally
constant; the gradient flows through the block variances ``v_k`` of the active blocks that carry
an indicator (and through the ``max`` normalisation). Where an input change flips an indicator,
the score jumps (by ``~100 / N_SA``); the gradient does not see that.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..registry import METRICS
from . import nss
from .base import Bounds, Metric

BLOCK = 16
ACTIVITY_T = 0.1
IMPAIRED_T = 0.1
SEGMENT = 6
CENTER = (7, 8)          # 0-based centre columns (MATLAB 8, 9)
SURROUND_DROP = (7, 9)   # 0-based columns left out of the surround (MATLAB's sequential removal)
C = 1.0


def _pad_to_blocks(g: torch.Tensor) -> torch.Tensor:
    """Mirror-pad (``'symmetric'``, edge repeated) bottom/right to multiples of :data:`BLOCK`."""
    for dim in (-2, -1):
        n = g.shape[dim]
        extra = (-n) % BLOCK
        if extra:
            idx = torch.arange(n + extra, device=g.device)
            idx = torch.where(idx >= n, 2 * n - 1 - idx, idx).clamp(min=0)
            g = g.index_select(dim, idx)
    return g


def block_indicators(b: torch.Tensor):
    """Block variance and the three PIQE indicators of MSCN blocks ``[B, K, 16, 16]``.

    Returns:
        ``(var, active, artifact, noise)``, each ``[B, K]`` (indicators as bool, detached).
    """
    var = torch.var(b, dim=(-2, -1), unbiased=True)
    with torch.no_grad():
        active = var > ACTIVITY_T
        edges = torch.stack([b[..., 0, :], b[..., :, -1], b[..., -1, :], b[..., :, 0]], dim=-2)  # [B,K,4,16]
        segs = edges.unfold(-1, SEGMENT, 1)                                                   # [B,K,4,11,6]
        artifact = (torch.var(segs, dim=-1, unbiased=True).sqrt() < IMPAIRED_T).flatten(-2).any(dim=-1)
        keep = [j for j in range(BLOCK) if j not in SURROUND_DROP]
        center = torch.var(b[..., list(CENTER)], dim=(-2, -1), unbiased=True).sqrt()
        surround = torch.var(b[..., keep], dim=(-2, -1), unbiased=True).sqrt()
        ratio = torch.nan_to_num(center / surround, nan=0.0)
        sigma = var.sqrt()
        beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
        noise = sigma > 2 * beta
    return var, active, artifact, noise


def piqe_from_gray(gray: torch.Tensor, quantize: bool) -> torch.Tensor:
    """PIQE ``[B]`` of a 0..255 gray batch ``[B, 1, H, W]`` (see the module docstring)."""
    g = _pad_to_blocks(gray)
    g = 255.0 * g / g.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    if quantize:
        g = nss.round_ste(g)
    m, _ = nss.mscn(g, padding="replicate")
    var, active, artifact, noise = block_indicators(nss.blocks(m, BLOCK))
    a = active.to(var.dtype)
    dist = a * (artifact.to(var.dtype) * (1 - var) + noise.to(var.dtype) * var)
    return (dist.sum(dim=1) + C) / (a.sum(dim=1) + C) * 100.0


#: Bounds of Guardians of Image Quality appendix A.3.2 (``iqaguard.metrics.bounds.calibrate_bounds``, seed 0, default
#: options) on the 135 builtin train+val photographs (``src/iqaguard/data/photos`` less the
#: builtin-kadid test split): best = the best pristine value, worst = the worst value over their
#: JPEG q=10 versions and uniform-noise images. See docs/nss_metrics.md.
CALIBRATED_BOUNDS = Bounds(worst=87.9572, best=19.0135)


@METRICS.register("piqe")
class PIQE(Metric):
    """PIQE of Venkatanath N et al. 2015 (no-reference, lower is better, 0..100), differentiable
    piecewise (gradient through the block variances of the kept blocks).

    Args:
        quantize: round to 8 bits in the forward pass (``rgb2gray`` of a ``uint8`` image and the
            ``round(255 I / max I)`` stretch), straight-through gradient. With ``False`` both
            roundings are skipped.
        bounds: override the calibrated ``Bounds(worst=87.9572, best=19.0135)``.

    Call ``m(x)`` with ``[B, 3, H, W]`` in [0, 1], ``H, W >= 16``; returns ``[B]``. Computed in
    float64; the result has the input's dtype.
    """

    kind = "nr"
    lower_better = True
    name = "piqe"
    min_size = BLOCK

    def __init__(self, quantize: bool = True, bounds: Optional[Bounds] = None) -> None:
        super().__init__()
        self.quantize = bool(quantize)
        self.bounds = CALIBRATED_BOUNDS if bounds is None else bounds

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        gray = nss.rgb2gray(x.to(torch.float64), self.quantize)
        return piqe_from_gray(gray, self.quantize).to(x.dtype)


__all__ = ["PIQE", "CALIBRATED_BOUNDS", "piqe_from_gray", "block_indicators", "BLOCK", "ACTIVITY_T", "IMPAIRED_T"]
