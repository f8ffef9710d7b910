"""Shared image operations: the bottom layer under ``metrics/``, ``data/`` and ``defenses/``.

One implementation of each operation that more than one package needs (DESIGN.md §Layers):

* :mod:`~iqaguard.ops.color` — BT.601 luma (full range, as JPEG, and MATLAB ``rgb2ycbcr``'s
  studio range), JFIF YCbCr and back;
* :mod:`~iqaguard.ops.filters` — Gaussian taps, separable and 1-D correlations, Gaussian, median
  and unsharp-mask filtering;
* :mod:`~iqaguard.ops.jpeg` — the real JPEG round trip (Pillow/libjpeg) and a differentiable JPEG
  model of the same codec;
* :mod:`~iqaguard.ops.arrays` — numpy versions of the colour conversions and the Gaussian blur,
  used by the KADID-style distortions that generate ``builtin-kadid`` (they stay numpy so that
  the generated dataset stays bit-identical).

Torch functions take ``[B, C, H, W]`` floating tensors, are differentiable unless their
docstring says otherwise, and do not validate their inputs (the public callers do).
"""
from __future__ import annotations

from .color import luma, rgb_to_ycbcr, studio_luma255, ycbcr_to_rgb
from .filters import (correlate1d, gaussian_blur, gaussian_taps, median_blur, pad2d, separable_filter,
                      unsharp_mask)
from .jpeg import diff_jpeg, jpeg_roundtrip, quantization_tables, to_uint8

__all__ = [
    "correlate1d", "diff_jpeg", "gaussian_blur", "gaussian_taps", "jpeg_roundtrip", "luma", "median_blur", "pad2d",
    "quantization_tables", "rgb_to_ycbcr", "separable_filter", "studio_luma255", "to_uint8", "unsharp_mask",
    "ycbcr_to_rgb",
]
