"""Colour conversions of ``[B, 3, H, W]`` RGB tensors (differentiable, not clipped).

Two BT.601 lumas coexist on purpose, because two conventions are published:

* :func:`luma` — full-range ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 weights as JPEG/JFIF
  uses them; the GMSD paper and the builtin-kadid pseudo-MOS compute it);
* :func:`studio_luma255` — MATLAB ``rgb2ycbcr``'s studio-range ``Y = 16 + 65.481 R + 128.553 G +
  24.966 B`` on 0..255 (the SSIM/MS-SSIM reference code and super-resolution PSNR use it).

:func:`rgb_to_ycbcr` / :func:`ycbcr_to_rgb` are the JFIF full-range YCbCr transform of the JPEG
codec (ITU-T T.871), on any scale: pass ``offset=0.5`` for [0, 1] images, ``128`` for 0..255.
"""
from __future__ import annotations

import torch

#: BT.601 luma weights of R, G, B (full range, as JFIF).
BT601 = (0.299, 0.587, 0.114)
#: MATLAB ``rgb2ycbcr`` luma coefficients for R, G, B in [0, 1], output on 0..255, and its offset.
STUDIO_LUMA_WEIGHTS = (65.481, 128.553, 24.966)
STUDIO_LUMA_OFFSET = 16.0


def luma(x: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601 luma ``0.299 R + 0.587 G + 0.114 B``.

    Args:
        x: ``[B, 3, H, W]`` RGB on any scale.

    Returns:
        ``[B, 1, H, W]`` on the scale of ``x``.
    """
    return BT601[0] * x[:, 0:1] + BT601[1] * x[:, 1:2] + BT601[2] * x[:, 2:3]


def studio_luma255(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma ``16 + 65.481 R + 128.553 G + 24.966 B`` on 0..255.

    Args:
        x: ``[B, 3, H, W]`` RGB in [0, 1].

    Returns:
        ``[B, 1, H, W]`` in ``[16, 235]`` for inputs in [0, 1] (not rounded).
    """
    w = torch.tensor(STUDIO_LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) + STUDIO_LUMA_OFFSET


def rgb_to_ycbcr(x: torch.Tensor, offset: float = 0.5) -> torch.Tensor:
    """JFIF full-range YCbCr: ``Y`` = :func:`luma`, ``Cb = (B - Y) / 1.772 + offset``,
    ``Cr = (R - Y) / 1.402 + offset``.

    Args:
        x: ``[B, 3, H, W]`` RGB (in [0, 1] with ``offset=0.5``; on 0..255 with ``offset=128``).
        offset: the chroma offset (half the scale).

    Returns:
        ``[B, 3, H, W]`` (Y, Cb, Cr) on the scale of ``x``.
    """
    y = luma(x)
    cb = (x[:, 2:3] - y) / 1.772 + offset
    cr = (x[:, 0:1] - y) / 1.402 + offset
    return torch.cat([y, cb, cr], dim=1)


def ycbcr_to_rgb(ycc: torch.Tensor, offset: float = 0.5) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped).

    Args:
        ycc: ``[B, 3, H, W]`` (Y, Cb, Cr).
        offset: the chroma offset used by :func:`rgb_to_ycbcr`.

    Returns:
        ``[B, 3, H, W]`` RGB on the scale of ``ycc``.
    """
    y, cb, cr = ycc[:, 0:1], ycc[:, 1:2] - offset, ycc[:, 2:3] - offset
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - BT601[0] * r - BT601[2] * b) / BT601[1]
    return torch.cat([r, g, b], dim=1)


__all__ = ["BT601", "STUDIO_LUMA_OFFSET", "STUDIO_LUMA_WEIGHTS", "luma", "rgb_to_ycbcr", "studio_luma255",
           "ycbcr_to_rgb"]
