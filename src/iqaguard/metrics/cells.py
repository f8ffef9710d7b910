"""The maps of the builtin-kadid pseudo-MOS (v2) and their per-cell statistics (what builtin-nr predicts).

The pseudo-MOS v2 of ``builtin-kadid`` (:mod:`iqaguard.data.kadid_mos`, ``docs/builtin_kadid.md``)
pools three full-resolution maps of a (distorted, reference) pair:

* the SSIM map of the luma at full resolution (Wang et al., IEEE TIP 2004, eq. 13; ``ssim.m``
  constants, *without* its automatic downsampling, which averages 2x2 blocks and so cannot see
  2x2 pixelation);
* the gradient magnitude similarity (GMS) map of the luma as published (Xue et al., IEEE TIP
  2014, eqs. 4-5: 2x2 mean filter and subsampling, Prewitt filters, ``T = 170``);
* the CIE Lab (D65) chroma difference map ``dC = sqrt(da*^2 + db*^2)`` (CIE76 without the
  lightness term, which the structural maps score) of the 2x2-averaged images: the eye resolves
  chroma at a lower resolution than luminance (the premise of S-CIELAB, Zhang & Wandell 1997).

With ``S = mean(SSIM map)``, ``G = std(GMS map)`` (GMSD, eq. 8) and ``C = mean(dC)``::

    pseudo_MOS = 1 + 4/3 * (clip(S, 0, 1) + 1 - clip(G / 0.35, 0, 1) + 1 - clip(C / 10, 0, 1))

Split the image into a grid of cells: with, per cell, the mean SSIM ``s``, the mean GMS ``m``,
the standard deviation of GMS ``d`` and the mean chroma difference ``c``, the whole-image values
are (law of total variance for ``G``)

    S = mean_cells(s),    G = sqrt(mean_cells(d^2) + var_cells(m)),    C = mean_cells(c).

``builtin-nr`` learns to predict ``(s, m, d, c)`` of every 16x16-pixel cell without the
reference — the "local quality score" training of BIECON (Kim & Lee, "Fully deep blind image
quality predictor", IEEE JSTSP 2017, §III) — and aggregates them with :func:`mos_from_cells`
*without* the clips: the model's output is an unbounded, everywhere-differentiable regression
(the clips only matter outside the label's 1..5 range).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab

from ..ops.color import luma as ops_luma
from .functional import _ssim_maps, _to255

GMSD_T = 170.0  # stability constant of Xue et al. 2014 for 0..255 images
GMSD_MAX = 0.35  # GMSD mapped to 0 quality
CHROMA_MAX = 10.0  # mean dC*ab mapped to 0 quality (about 4 just-noticeable differences)
CELL = 16  # cell size in pixels (the stride of the builtin backbone's last stage)
N_STATS = 4  # (s, m, d, c) per cell

_PREWITT = torch.tensor([[1.0, 0.0, -1.0]] * 3) / 3.0


#: BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: ``[B, 1, H, W]`` of RGB ``[B, 3, H, W]`` (:func:`iqaguard.ops.luma`).
luma = ops_luma


def gradient_magnitude(img: torch.Tensor, downsample: bool = True) -> torch.Tensor:
    """GMSD's gradient magnitude (Xue et al., IEEE TIP 2014, eq. 4) ``[B, h - 2, w - 2]``.

    Luma ``0.299 R + 0.587 G + 0.114 B`` on 0..255, the paper's 2x2 mean filter and
    subsampling by 2 when ``downsample`` (``h, w = H/2, W/2``; else full resolution), Prewitt
    filters with 'valid' borders.
    """
    lum = luma(img) * 255.0
    if downsample:
        lum = F.avg_pool2d(lum, 2)
    hx = _PREWITT.to(img)
    k = torch.stack([hx, hx.t()]).unsqueeze(1)
    return F.conv2d(lum, k).pow(2).sum(dim=1).sqrt()


def gms_map(x: torch.Tensor, ref: torch.Tensor, downsample: bool = True) -> torch.Tensor:
    """Gradient magnitude similarity map ``(2 m_x m_r + T) / (m_x^2 + m_r^2 + T)`` (eq. 5), ``[B, h, w]``.

    ``ref`` may have batch 1 (broadcast over ``x``); ``downsample`` as :func:`gradient_magnitude`.
    """
    mx, mr = gradient_magnitude(x, downsample), gradient_magnitude(ref, downsample)
    return (2 * mx * mr + GMSD_T) / (mx * mx + mr * mr + GMSD_T)


def chroma_map(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) chroma difference ``sqrt(da*^2 + db*^2)`` of the 2x2-averaged images,
    ``[B, H / 2, W / 2]`` (0 = same colour).

    ``ref`` may have batch 1 (converted once, broadcast over ``x``).
    """
    ab_x, ab_r = rgb_to_lab(F.avg_pool2d(x, 2))[:, 1:], rgb_to_lab(F.avg_pool2d(ref, 2))[:, 1:]
    return ((ab_x - ab_r).pow(2).sum(dim=1) + 1e-12).sqrt()


def ssim_map(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Full-resolution luma SSIM map (``rgb2ycbcr`` luma, ``ssim.m`` constants, 'valid'), ``[B, H - 10, W - 10]``."""
    return _ssim_maps(_to255(x, True), _to255(ref, True))[0][:, 0]


def label_stats(x: torch.Tensor, ref: torch.Tensor) -> dict:
    """Whole-image ``S`` (mean SSIM), ``G`` (GMSD) and ``C`` (mean dC), each ``[B]`` (H, W multiples of 16)."""
    return cells_and_stats(x, ref)[1]


def mos_from_stats(s: torch.Tensor, g: torch.Tensor, c: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """``1 + 4/3 * (q_s + q_g + q_c)`` of the whole-image statistics (module docstring).

    ``clip=True`` is the label (each term clipped to [0, 1], result in [1, 5]); ``clip=False`` the
    same affine maps without clips (builtin-nr's unbounded score path).
    """
    q_s, q_g, q_c = s, 1.0 - g / GMSD_MAX, 1.0 - c / CHROMA_MAX
    if clip:
        q_s, q_g, q_c = q_s.clamp(0, 1), q_g.clamp(0, 1), q_c.clamp(0, 1)
    return 1.0 + 4.0 / 3.0 * (q_s + q_g + q_c)


@torch.no_grad()
def quality_cells(x: torch.Tensor, ref: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """Per-cell ``(s, m, d, c)`` of the pseudo-MOS maps: ``[B, 4, H // cell, W // cell]``.

    ``s``: mean of the luma SSIM map; ``m`` / ``d``: mean / standard deviation of the GMS map;
    ``c``: mean chroma difference. SSIM and GMS maps are 'valid'-filtered, so they are
    average-pooled onto the grid (cells at the border cover a few pixels less); the chroma map
    tiles the grid exactly. The label and the cells come from the same maps:
    :func:`cells_and_stats` computes both at once.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], H and W multiples of ``cell``.
        ref: its reference (same shape, or batch 1).
        cell: cell size in pixels.
    """
    return cells_and_stats(x, ref, cell)[0]


@torch.no_grad()
def cells_and_stats(x: torch.Tensor, ref: torch.Tensor, cell: int = CELL):
    """``(quality_cells(x, ref), label_stats(x, ref))`` from one computation of the three maps."""
    grid = (x.shape[-2] // cell, x.shape[-1] // cell)
    smap, g, cmap = ssim_map(x, ref), gms_map(x, ref), chroma_map(x, ref)
    stats = {"ssim": smap.flatten(1).mean(dim=1), "gmsd": g.flatten(1).std(dim=1, unbiased=False),
             "chroma": cmap.flatten(1).mean(dim=1)}
    s = F.adaptive_avg_pool2d(smap.unsqueeze(1), grid)
    g = g.unsqueeze(1)
    m = F.adaptive_avg_pool2d(g, grid)
    d = (F.adaptive_avg_pool2d(g * g, grid) - m * m).clamp(min=0).sqrt()
    c = F.adaptive_avg_pool2d(cmap.unsqueeze(1), grid)
    return torch.cat([s, m, d, c], dim=1), stats


def mos_from_cells(cells: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """Pseudo-MOS formula ``[B]`` on per-cell ``(s, m, d, c)`` ``[B, 4, h, w]`` (module docstring).

    Default ``clip=False``: builtin-nr's score, unbounded and differentiable everywhere
    (``sqrt`` has a 1e-10 floor). ``clip=True`` gives the label's clipped values.
    """
    s, m, d, c = (cells[:, k].flatten(1) for k in range(N_STATS))
    gmsd = (d.pow(2).mean(dim=1) + m.var(dim=1, unbiased=False) + 1e-10).sqrt()
    return mos_from_stats(s.mean(dim=1), gmsd, c.mean(dim=1), clip=clip)


__all__ = ["CELL", "CHROMA_MAX", "GMSD_MAX", "GMSD_T", "N_STATS", "cells_and_stats", "chroma_map", "gms_map", "gradient_magnitude",
           "label_stats", "luma", "mos_from_cells", "mos_from_stats", "quality_cells", "ssim_map"]
