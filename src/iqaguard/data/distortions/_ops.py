"""Shared image operations of the distortions: colour spaces, filters, geometry helpers.

All functions take and return ``H x W x C`` float32 numpy arrays (colour images in [0, 1]);
none of them clips, the caller decides.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage, signal

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

#: Reference area for patch sizes that scale with the image (the KADID size 384 x 512).
REF_AREA = 384 * 512


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


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with a 2-D ``kernel`` (odd sides) by FFT, symmetric borders."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    pad = np.pad(img, ((ry, ry), (rx, rx), (0, 0)), mode="symmetric")
    out = signal.fftconvolve(pad, kernel[..., None].astype(np.float32), mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Normalised disk (defocus) kernel; edge pixels weighted by their covered area."""
    r = int(np.ceil(radius))
    t = (np.arange((2 * r + 1) * supersample) + 0.5) / supersample - (r + 0.5)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    inside = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float32)
    k = inside.reshape(2 * r + 1, supersample, 2 * r + 1, supersample).mean(axis=(1, 3))
    return k / k.sum()


def line_kernel(length: float, angle: float, supersample: int = 16) -> np.ndarray:
    """Normalised motion-blur kernel: a line of ``length`` px at ``angle`` (radians), splatted
    bilinearly from ``supersample`` points per pixel of length."""
    r = int(np.ceil(length / 2)) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.float32)
    s = np.linspace(-length / 2, length / 2, max(2, int(length * supersample)))
    x, y = r + s * np.cos(angle), r - s * np.sin(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), w.astype(np.float32))
    return k / k.sum()


def shift(channel: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate a 2-D array by integer ``(dy, dx)`` px, replicating the border."""
    h, w = channel.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[rows[:, None], cols[None, :]]


def scaled_side(base: int, shape: Tuple[int, ...], minimum: int = 2) -> int:
    """A patch side of ``base`` px at 384 x 512, scaled with ``sqrt(area / (384 * 512))`` so that
    a fixed number of patches covers the same fraction of any image (at least ``minimum``)."""
    return max(minimum, int(round(base * np.sqrt(shape[0] * shape[1] / REF_AREA))))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``H x W x 3`` float in [0, 1] -> uint8 (rounded, clipped)."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def from_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return arr.astype(np.float32) / 255.0
