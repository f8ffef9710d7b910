"""numpy versions of the colour conversions and the Gaussian blur (``H x W x C`` float32 arrays).

They generate the KADID-style distortions of ``builtin-kadid`` (:mod:`iqaguard.data.distortions`)
and stay numpy/scipy, not torch, so that the generated dataset stays bit-identical (scipy's
``gaussian_filter`` truncates at 4 sigma and accumulates differently from a torch convolution).
The torch equivalents are :mod:`iqaguard.ops.color` and :mod:`iqaguard.ops.filters`. None of them
clips; the caller decides.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# sRGB (D65) -> CIE XYZ, IEC 61966-2-1; Lab white point D65.
_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ).astype(np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_EPS = (6.0 / 29.0) ** 3
_KAPPA = 3.0 * (6.0 / 29.0) ** 2

#: BT.601 luma weights (as JPEG's full-range YCbCr).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma ``H x W`` of an RGB image."""
    return img @ LUMA


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr (JPEG/JFIF), channels in [0, 1] with chroma centred at 0.5."""
    y = luma(img)
    cb = 0.5 + (img[..., 2] - y) / 1.772
    cr = 0.5 + (img[..., 0] - y) / 1.402
    return np.stack([y, cb, cr], axis=-1)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped)."""
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 0.5, ycc[..., 2] - 0.5
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - LUMA[0] * r - LUMA[2] * b) / LUMA[1]
    return np.stack([r, g, b], axis=-1)


def rgb_to_lab(img: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> CIE L*a*b* (D65): L in [0, 100], a/b roughly in [-128, 127]."""
    lin = np.where(img <= 0.04045, img / 12.92, ((np.maximum(img, 0.04045) + 0.055) / 1.055) ** 2.4)
    xyz = (lin @ _RGB2XYZ.T) / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(np.maximum(xyz, _EPS)), xyz / _KAPPA + 4.0 / 29.0)
    lum = 116.0 * f[..., 1] - 16.0
    return np.stack([lum, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab` (sRGB, not clipped; out-of-gamut colours leave [0, 1])."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f ** 3, _KAPPA * (f - 4.0 / 29.0)) * _WHITE
    lin = np.clip(xyz @ _XYZ2RGB.T, 0.0, None)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1.0 / 2.4) - 0.055).astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every channel (``sigma`` in px, reflected borders, 4-sigma support)."""
    if img.ndim == 2:
        return ndimage.gaussian_filter(img, sigma, mode="reflect")
    return ndimage.gaussian_filter(img, (sigma, sigma, 0), mode="reflect")


__all__ = ["LUMA", "blur", "lab_to_rgb", "luma", "rgb_to_lab", "rgb_to_ycbcr", "ycbcr_to_rgb"]
