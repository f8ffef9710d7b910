"""Local statistics of the builtin-kadid pseudo-MOS, per cell of a grid (what builtin-nr predicts).

The pseudo-MOS of ``builtin-kadid`` (:mod:`iqaguard.data.kadid_mos`) is
``1 + 4 * mean(clip(SSIM, 0, 1), 1 - clip(GMSD / 0.35, 0, 1))``. Both measures are pooled maps:
SSIM is the mean of the SSIM map, GMSD the standard deviation of the gradient magnitude
similarity (GMS) map. Split the image into a grid of cells: with, per cell, the mean SSIM
``s``, the mean GMS ``m`` and the standard deviation of GMS ``d``, the whole-image values are
(law of total variance)

    SSIM = mean_cells(s),    GMSD = sqrt(mean_cells(d^2) + var_cells(m)).

``builtin-nr`` learns to predict ``(s, m, d)`` of every 16x16-pixel cell without the reference —
the "local quality score" training of BIECON (Kim & Lee, "Fully deep blind image quality
predictor", IEEE JSTSP 2017, §III), with SSIM/GMS statistics as the local targets — and
aggregates them with :func:`mos_from_cells`, the same formula as the label.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError
from .functional import _mean_downsample, _ssim_maps, _to255, ssim_downsample_factor

GMSD_T = 170.0  # stability constant of Xue et al. 2014 for 0..255 images
GMSD_MAX = 0.35  # GMSD mapped to 0 quality (kadid_mos)
CELL = 16  # cell size in pixels (the stride of the builtin backbone's last stage)

_PREWITT = torch.tensor([[1.0, 0.0, -1.0]] * 3) / 3.0


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: ``[B, 1, H, W]`` of RGB ``[B, 3, H, W]``."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def gradient_magnitude(img: torch.Tensor) -> torch.Tensor:
    """GMSD's gradient magnitude (Xue et al., IEEE TIP 2014, eq. 4) ``[B, H/2 - 2, W/2 - 2]``.

    Luma ``0.299 R + 0.587 G + 0.114 B`` on 0..255, 2x2 mean filter and subsampling by 2,
    Prewitt filters with 'valid' borders.
    """
    lum = F.avg_pool2d(luma(img) * 255.0, 2)
    hx = _PREWITT.to(img)
    k = torch.stack([hx, hx.t()]).unsqueeze(1)
    return F.conv2d(lum, k).pow(2).sum(dim=1).sqrt()


def gms_map(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude similarity map ``(2 m_x m_r + T) / (m_x^2 + m_r^2 + T)`` (eq. 5), ``[B, h, w]``.

    ``ref`` may have batch 1 (broadcast over ``x``).
    """
    mx, mr = gradient_magnitude(x), gradient_magnitude(ref)
    return (2 * mx * mr + GMSD_T) / (mx * mx + mr * mr + GMSD_T)


@torch.no_grad()
def quality_cells(x: torch.Tensor, ref: torch.Tensor, cell: int = CELL,
                  ssim_factor: Optional[int] = None) -> torch.Tensor:
    """Per-cell ``(s, m, d)`` of the pseudo-MOS maps: ``[B, 3, H // cell, W // cell]``.

    ``s``: mean of the luma SSIM map (ssim.m conventions, automatic downsampling of the whole
    image); ``m`` / ``d``: mean / standard deviation of the GMS map. Maps are 'valid'-filtered,
    so each is average-pooled onto the grid (cells at the border cover a few pixels less).

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], H and W multiples of ``cell``.
        ref: its reference (same shape, or batch 1).
        cell: cell size in pixels.
        ssim_factor: SSIM downsampling factor; default ssim.m's automatic one for the size of
            ``x``. A crop of a 384 x 512 image passes 2, the factor of the whole image, so that
            its SSIM cells approximate those of the crop inside the full image (the 'valid'
            maps pool onto slightly shifted grids).
    """
    if ssim_factor is not None and (isinstance(ssim_factor, bool) or int(ssim_factor) != ssim_factor
                                    or ssim_factor < 1):
        raise InputError(f"ssim_factor: expected a positive integer or None, got {ssim_factor!r}")
    h, w = x.shape[-2] // cell, x.shape[-1] // cell
    a, b = _to255(x, True), _to255(ref, True)  # a batch-1 reference is processed once
    f = ssim_downsample_factor(*a.shape[-2:]) if ssim_factor is None else int(ssim_factor)
    if f > 1:
        a, b = _mean_downsample(a, f), _mean_downsample(b, f)
    s = F.adaptive_avg_pool2d(_ssim_maps(a, b)[0], (h, w))
    g = gms_map(x, ref).unsqueeze(1)
    m = F.adaptive_avg_pool2d(g, (h, w))
    d = (F.adaptive_avg_pool2d(g * g, (h, w)) - m * m).clamp(min=0).sqrt()
    return torch.cat([s, m, d], dim=1)


def mos_from_cells(cells: torch.Tensor) -> torch.Tensor:
    """Pseudo-MOS ``[B]`` from per-cell ``(s, m, d)`` ``[B, 3, h, w]`` (module docstring formula)."""
    s, m, d = cells[:, 0].flatten(1), cells[:, 1].flatten(1), cells[:, 2].flatten(1)
    gmsd = (d.pow(2).mean(dim=1) + m.var(dim=1, unbiased=False) + 1e-10).sqrt()
    q_ssim = s.mean(dim=1).clamp(0, 1)
    q_gmsd = 1.0 - (gmsd / GMSD_MAX).clamp(0, 1)
    return 1.0 + 2.0 * (q_ssim + q_gmsd)


__all__ = ["CELL", "GMSD_MAX", "GMSD_T", "gms_map", "gradient_magnitude", "luma", "mos_from_cells", "quality_cells"]
