"""Linear and rank filters of ``[N, C, H, W]`` maps (depthwise: every channel on its own).

The one Gaussian kernel of the package (:func:`gaussian_taps`: SSIM's 11x11 window, the MSCN
windows of the NSS metrics and the builtin models, the Gaussian-blur and unsharp-mask defenses),
one separable 'valid' correlation (:func:`separable_filter`), one strided 1-D correlation
(:func:`correlate1d`), one padding helper (:func:`pad2d`) and the filters built from them.

Padding names: ``"reflect"`` mirrors without repeating the border sample (OpenCV's default
``BORDER_REFLECT_101``, numpy ``"reflect"``), ``"replicate"`` repeats it (OpenCV
``BORDER_REPLICATE``, MATLAB ``'replicate'``), ``"zeros"`` pads with 0 (MATLAB ``filter2``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

PADDINGS = ("reflect", "replicate", "zeros")
#: elements of the unfolded windows a median filter materialises at once (bounds its memory)
_MEDIAN_CHUNK = 1 << 24


def gaussian_taps(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                  device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Normalised 1-D factor of ``fspecial('gaussian', size, sigma)`` (the 2-D window is separable).

    ``exp(-t^2 / (2 sigma^2))`` at ``t = i - (size - 1) / 2``, divided by its sum: also OpenCV's
    ``getGaussianKernel(size, sigma)`` for ``sigma > 0``.
    """
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def pad2d(x: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of ``[N, C, H, W]`` by ``radius`` on every side (``mode`` in :data:`PADDINGS`).

    ``"reflect"`` needs ``H, W > radius``.
    """
    if mode == "zeros":
        return F.pad(x, (radius,) * 4, mode="constant")
    return F.pad(x, (radius,) * 4, mode=mode)


def separable_filter(x: torch.Tensor, row: torch.Tensor, col: torch.Tensor = None) -> torch.Tensor:
    """'Valid' depthwise correlation with the separable kernel ``col ⊗ row`` (rows first, then columns).

    Args:
        x: ``[N, C, H, W]``.
        row: 1-D taps applied along ``W`` (length ``k``).
        col: 1-D taps along ``H``; defaults to ``row``.

    Returns:
        ``[N, C, H - len(col) + 1, W - len(row) + 1]``.
    """
    col = row if col is None else col
    c, kr, kc = x.shape[1], row.numel(), col.numel()
    y = F.conv2d(x, row.view(1, 1, 1, kr).expand(c, 1, 1, kr), groups=c)
    return F.conv2d(y, col.view(1, 1, kc, 1).expand(c, 1, kc, 1), groups=c)


def correlate1d(x: torch.Tensor, taps: Sequence[float], dim: int, stride: int = 1) -> torch.Tensor:
    """``'valid'`` correlation of ``x`` with the 1-D kernel ``taps`` along ``dim`` (-1 or -2).

    A sum of ``len(taps)`` shifted (strided) slices: vectorised for any dtype and device, and on
    CPU several times faster in float64 than a depthwise ``conv2d`` (which has no fast float64
    path there). Output length ``(L - K) // stride + 1``.
    """
    k = len(taps)
    n_out = (x.shape[dim] - k) // stride + 1
    span = (n_out - 1) * stride + 1
    out = None
    for j, t in enumerate(taps):
        sl = x[..., j:j + span:stride] if dim == -1 else x[..., j:j + span:stride, :]
        out = sl * t if out is None else out + sl * t
    return out


def gaussian_blur(x: torch.Tensor, sigma: float, size: int, padding: str = "reflect") -> torch.Tensor:
    """Same-size separable Gaussian filter of every channel.

    Args:
        x: ``[N, C, H, W]``.
        sigma: standard deviation in pixels (> 0).
        size: odd number of taps.
        padding: border rule, one of :data:`PADDINGS` (``"reflect"`` needs ``H, W > size // 2``).

    Returns:
        ``[N, C, H, W]``.
    """
    g = gaussian_taps(size, sigma, x.dtype, x.device)
    return separable_filter(pad2d(x, (size - 1) // 2, padding), g)


def unsharp_mask(x: torch.Tensor, sigma: float, size: int, amount: float, padding: str = "reflect") -> torch.Tensor:
    """Unsharp masking ``x + amount * (x - G_sigma * x)`` with a ``size``-tap Gaussian (not clipped).

    Args:
        x: ``[N, C, H, W]``.
        sigma, size, padding: of the Gaussian, as :func:`gaussian_blur`.
        amount: gain of the high-pass detail added back (0 = identity).

    Returns:
        ``[N, C, H, W]``.
    """
    return x + amount * (x - gaussian_blur(x, sigma, size, padding))


def median_blur(x: torch.Tensor, size: int, padding: str = "replicate") -> torch.Tensor:
    """Same-size ``size x size`` median filter of every channel (OpenCV ``medianBlur`` borders by default).

    Differentiable almost everywhere: the gradient of each output pixel goes to the input pixel
    that is its window's median. Computed in bands of rows so that the unfolded windows stay under
    about 64 MB at a time.

    Args:
        x: ``[N, C, H, W]``.
        size: odd window side.
        padding: one of :data:`PADDINGS`.

    Returns:
        ``[N, C, H, W]``.
    """
    n, c, h, w = x.shape
    r = (size - 1) // 2
    xp = pad2d(x, r, padding)
    rows = max(1, _MEDIAN_CHUNK // max(1, n * c * w * size * size))
    bands = []
    for i0 in range(0, h, rows):
        i1 = min(h, i0 + rows)
        win = xp[:, :, i0:i1 + 2 * r].unfold(2, size, 1).unfold(3, size, 1)  # [N, C, i1-i0, W, k, k]
        bands.append(win.reshape(n, c, i1 - i0, w, size * size).median(dim=-1).values)
    return torch.cat(bands, dim=2)


__all__ = ["PADDINGS", "correlate1d", "gaussian_blur", "gaussian_taps", "median_blur", "pad2d", "separable_filter",
           "unsharp_mask"]
