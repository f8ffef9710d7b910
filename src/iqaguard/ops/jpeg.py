"""JPEG: the real codec's round trip (Pillow/libjpeg) and a differentiable model of it.

:func:`jpeg_roundtrip` encodes with Pillow at a quality (baseline, 4:2:0 chroma subsampling,
libjpeg's default quantisation tables scaled by quality) and decodes; its output is what a
JPEG file written by Pillow decodes to, bit for bit, and it has no gradient.

:func:`diff_jpeg` computes the same pipeline with differentiable tensor operations, in the
manner of Reich, Debnath, Patel & Chakradhar, "Differentiable JPEG: The Devil is in the
Details" (WACV 2024) and of Shin & Song, "JPEG-resistant Adversarial Images" (NIPS 2017 Workshop
on Machine Learning and Computer Security):

1. RGB -> JFIF full-range YCbCr on 0..255 (ITU-T T.871), edge-replicated to whole 16x16 MCUs;
2. chroma 2x2 mean (libjpeg's ``h2v2_downsample``);
3. level shift by -128, 8x8 orthonormal DCT-II (ITU-T T.81 A.3.3);
4. quantisation by the quality-scaled tables of ITU-T T.81 Annex K (libjpeg's
   ``jpeg_set_quality`` scaling: ``s = 5000 / q`` below 50, else ``200 - 2 q``; entries
   ``floor((t s + 50) / 100)`` clipped to 1..255), with one of four roundings of ``z = c / Q``:

   * ``"cubic"`` — ``round(z) + (z - round(z))^3`` forward and backward (Shin & Song's
     approximation, the polynomial rounding of Reich et al. and of kornia): smooth, but its
     forward keeps part of the rounding residue;
   * ``"ste"`` — exact ``round(z)`` forward with the cubic's slope ``3 (z - round(z))^2``
     backward (a straight-through estimator with a surrogate derivative): the forward of the
     real codec and the gradient of the polynomial;
   * ``"identity"`` — exact forward, slope 1 backward (the plain straight-through estimator:
     the gradient ignores quantisation altogether);
   * ``"hard"`` — exact forward, slope 0 (no useful gradient);
5. dequantisation, inverse DCT, +128 and clipping to 0..255;
6. chroma 2x upsampling by the triangle filter of libjpeg's "fancy upsampling" (weights 3/4,
   1/4 from the nearer and the farther chroma sample: bilinear with half-pixel centres);
7. YCbCr -> RGB, back to [0, 1], cropped to the input size.

What it leaves out of the real codec: the integer (``JDCT_ISLOW``) arithmetic of libjpeg's DCTs
and colour conversion and the final rounding to 8 bits; the output is continuous.
"""
from __future__ import annotations

import io
import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from .color import rgb_to_ycbcr, ycbcr_to_rgb

#: ITU-T T.81 Annex K.1 luminance quantisation table (natural order).
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
#: ITU-T T.81 Annex K.1 chrominance quantisation table (natural order).
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4
ROUNDINGS = ("ste", "cubic", "identity", "hard")


def _check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= int(quality) <= 100:
        raise InputError(f"quality: expected an integer JPEG quality in 1..100, got {quality!r}")
    return int(quality)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` or ``[1, 3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (rounded, clipped)."""
    if x.dim() == 4:
        x = x[0]
    arr = (x.detach().float().clamp(0, 1).cpu() * 255.0).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image of ``x`` as baseline JPEG (Pillow/libjpeg, 4:2:0) at ``quality`` and decode.

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1] (any device; rounded to 8 bits and coded on the CPU).
        quality: libjpeg quality, an integer 1..100.

    Returns:
        ``[B, 3, H, W]`` float32 on ``x``'s device, multiples of 1/255. Not differentiable.

    Raises:
        InputError: ``quality`` is not an integer in 1..100.
    """
    q = _check_quality(quality)
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as dec:
            arr = np.asarray(dec.convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
    return torch.stack(out).to(x.device)


def quantization_tables(quality: int, dtype: torch.dtype = torch.float32,
                        device: torch.device = torch.device("cpu")) -> Tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's ``jpeg_set_quality(quality, force_baseline=TRUE)`` luma and chroma tables, ``[8, 8]`` each.

    Equal to the tables Pillow writes into a file saved with ``quality=q`` (tested).
    """
    q = _check_quality(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = [[min(255, max(1, (v * scale + 50) // 100)) for v in row] for row in base]
        tables.append(torch.tensor(t, dtype=dtype, device=device))
    return tables[0], tables[1]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix ``C[u, n] = a(u) cos((2n + 1) u pi / 16)``."""
    n = torch.arange(8, dtype=torch.float64)
    c = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    c[0] = math.sqrt(1 / 8)
    return c.to(dtype=dtype, device=device)


def _round(z: torch.Tensor, rounding: str) -> torch.Tensor:
    r = torch.round(z)
    if rounding == "cubic":
        return r + (z - r) ** 3
    if rounding == "ste":
        c = (z - r) ** 3
        return r + (c - c.detach())  # value exactly round(z), slope 3 (z - round(z))^2
    if rounding == "identity":
        return z + (r - z).detach()
    return r


def _code_plane(p: torch.Tensor, table: torch.Tensor, c: torch.Tensor, rounding: str) -> torch.Tensor:
    """DCT, quantise, dequantise and inverse DCT of a ``[N, H, W]`` plane (H, W multiples of 8), level-shifted."""
    n, h, w = p.shape
    blocks = (p - 128.0).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # [N, h/8, w/8, 8, 8]
    coef = c @ blocks @ c.t()
    coef = _round(coef / table, rounding) * table
    out = c.t() @ coef @ c
    return (out.transpose(2, 3).reshape(n, h, w) + 128.0).clamp(0.0, 255.0)


def diff_jpeg(x: torch.Tensor, quality: int, rounding: str = "cubic") -> torch.Tensor:
    """Differentiable JPEG round trip at ``quality`` (module docstring), not clipped to [0, 1] exactly.

    Args:
        x: ``[B, 3, H, W]`` RGB in [0, 1], any size (edge-replicated to multiples of 16 inside).
        quality: libjpeg quality 1..100.
        rounding: ``"cubic"`` (default), ``"ste"`` or ``"hard"`` (see the module docstring).

    Returns:
        ``[B, 3, H, W]`` on ``x``'s device and dtype, values in about [0, 1].

    Raises:
        InputError: bad ``quality`` or ``rounding``.
    """
    if rounding not in ROUNDINGS:
        raise InputError(f"rounding: expected one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    qy, qc = quantization_tables(quality, x.dtype, x.device)
    c = _dct_matrix(x.dtype, x.device)
    b, _, h, w = x.shape
    ph, pw = -h % 16, -w % 16
    z = F.pad(x * 255.0, (0, pw, 0, ph), mode="replicate") if ph or pw else x * 255.0
    ycc = rgb_to_ycbcr(z, offset=128.0)
    y = _code_plane(ycc[:, 0], qy, c, rounding)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    hc, wc = chroma.shape[-2:]
    chroma = _code_plane(chroma.reshape(b * 2, hc, wc), qc, c, rounding).reshape(b, 2, hc, wc)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = ycbcr_to_rgb(torch.cat([y.unsqueeze(1), chroma], dim=1), offset=128.0)
    return rgb[..., :h, :w] / 255.0


__all__ = ["CHROMA_TABLE", "LUMA_TABLE", "ROUNDINGS", "diff_jpeg", "jpeg_roundtrip", "quantization_tables", "to_uint8"]
