"""Image operations of the distortions: kernels, FFT convolution, geometry and 8-bit helpers.

The colour conversions and the Gaussian blur they share with the rest of the package live in
:mod:`iqaguard.ops.arrays` (re-exported here).

All functions take and return ``H x W x C`` float32 numpy arrays (colour images in [0, 1]);
none of them clips, the caller decides.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import signal

from ...ops.arrays import LUMA, blur, lab_to_rgb, luma, rgb_to_lab, rgb_to_ycbcr, ycbcr_to_rgb  # noqa: F401

#: Reference area for patch sizes that scale with the image (the KADID size 384 x 512).
REF_AREA = 384 * 512


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
