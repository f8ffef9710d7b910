"""Weightless full-reference fidelity measures, differentiable with respect to ``x``.

All functions take a distorted batch ``x`` and a reference batch ``y`` (``[B, 3, H, W]``
float in ``[0, 1]``, RGB, same shape) and return one value per image, ``[B]``.

They follow the conventions of the original reference implementations so that the numbers
match published results (Guardians of Image Quality reports PSNR/SSIM/MS-SSIM as fidelity scores, §4 and
appendix A.3):

* luma: ITU-R BT.601 as MATLAB ``rgb2ycbcr`` (``Y = 16 + 65.481 R + 128.553 G + 24.966 B``).
* SSIM: Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
  structural similarity", IEEE TIP 2004, eq. (13), as in the authors' ``ssim.m`` (revision of
  2009): 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``,
  ``'valid'`` filtering, mean of the SSIM map, after the automatic downsampling by
  ``f = max(1, round(min(H, W) / 256))`` (``f x f`` mean filter with symmetric borders, then
  keep every ``f``-th row and column).
* MS-SSIM: Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality
  assessment", Asilomar 2003, eq. (7), as in ``msssim.m``: 5 scales, exponents
  ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]``, contrast-structure at scales 1..4 and the full
  SSIM at scale 5, 2x2 mean filter (symmetric borders) + subsampling by 2 between scales.

* PSNR: over all three RGB channels by default (``10 log10(peak^2 / MSE)`` with the MSE over
  channels and pixels), as MATLAB ``psnr``, scikit-image ``peak_signal_noise_ratio`` and pyiqa
  ``psnr`` compute it; ``y_channel=True`` gives the BT.601-luma variant of super-resolution
  papers. The MSE is floored at the 8-bit quantisation-noise level
  :data:`QUANTIZATION_MSE` ``= (1/255)^2 / 12`` (the MSE of uniform rounding to 8 bits), so
  PSNR is finite for identical images: at most ``10 log10(12 * 255^2) = 58.92`` dB for peak 1
  (:data:`PSNR_BEST`), with a finite (zero) gradient there. Above the floor the value is exactly
  the unfloored PSNR.

* fidelity SSIM (:func:`fidelity_ssim`): the benchmark's fidelity and restriction SSIM, scikit-image's
  ``structural_similarity(channel_axis=2, data_range=1)`` convention (RGB channels, 7x7 uniform
  window, sample covariances), as Guardians of Image Quality's code computes it.

SSIM and MS-SSIM use the luma by default (``luma=True``); ``luma=False`` runs the grayscale
algorithm on each RGB channel (still on the 0..255 scale with ``L = 255``) and averages the
three per-channel values, so a gray image replicated into three channels gives the SSIM of the
gray image (e.g. of MATLAB ``rgb2gray`` output).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..ops.color import STUDIO_LUMA_OFFSET, STUDIO_LUMA_WEIGHTS, studio_luma255
from ..ops.filters import gaussian_taps, separable_filter
from ..validation import check_image, check_pair

#: BT.601 luma coefficients of MATLAB ``rgb2ycbcr`` for R, G, B in [0, 1], output on 0..255.
LUMA_WEIGHTS = STUDIO_LUMA_WEIGHTS
LUMA_OFFSET = STUDIO_LUMA_OFFSET

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_L = 255.0

#: MSE of uniform 8-bit rounding noise on the [0, 1] scale, ``(1/255)^2 / 12``: the floor of the
#: PSNR's MSE (an error below what rounding to 8 bits adds cannot be measured on 8-bit images).
QUANTIZATION_MSE = (1.0 / 255.0) ** 2 / 12.0
#: PSNR (dB, peak 1) at the quantisation-noise floor: ``10 log10(12 * 255^2) = 58.92``.
PSNR_BEST = 10.0 * math.log10(1.0 / QUANTIZATION_MSE)

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: msssim.m refuses images whose side divided by 2**(levels-1) is below the window size.
MS_SSIM_MIN_SIZE = SSIM_WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of MATLAB ``rgb2ycbcr``, rescaled to the ``[0, 1]`` scale.

    Args:
        x: ``[B, 3, H, W]`` RGB in ``[0, 1]``.

    Returns:
        ``[B, 1, H, W]`` equal to ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``; values lie in
        ``[16/255, 235/255]``. Multiply by 255 for the 0..255 scale of ``rgb2ycbcr`` on uint8.
        Not rounded, so it is differentiable.
    """
    check_image(x, "x")
    return _luma255(x) / 255.0


#: ``rgb2ycbcr`` luma on 0..255 (:func:`iqaguard.ops.studio_luma255`).
_luma255 = studio_luma255


def _to255(x: torch.Tensor, luma: bool) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, C, H, W]`` on 0..255 (C = 1 for luma, else 3)."""
    return _luma255(x) if luma else x * 255.0


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over channels and pixels on the ``[0, 1]`` scale.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1].
        y: reference, same shape.

    Returns:
        ``[B]`` MSE in ``[0, 1]``.
    """
    check_pair(x, y, "x", "y")
    return (x - y).pow(2).flatten(1).mean(dim=1)


def linf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest absolute pixel difference ``||x - y||_inf`` on the ``[0, 1]`` scale.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1].
        y: reference, same shape.

    Returns:
        ``[B]`` values in ``[0, 1]`` (Guardians of Image Quality reports the L-inf norm of the perturbation).
    """
    check_pair(x, y, "x", "y")
    return (x - y).abs().flatten(1).amax(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, y_channel: bool = False, *,
         luma: Optional[bool] = None) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / max(MSE, (1/255)^2 / 12))`` in dB.

    RGB by default: the MSE over all three channels and every pixel on the [0, 1] scale, equal to
    ``skimage.metrics.peak_signal_noise_ratio(ref, dist, data_range=255)`` on the uint8 images
    (and to MATLAB ``psnr`` / pyiqa ``psnr``) wherever the MSE is above the floor.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1].
        y: reference, same shape.
        data_range: peak value on the ``[0, 1]`` scale (1.0 = 255 on the 8-bit scale).
        y_channel: compare the BT.601 luma Y (``rgb2ycbcr``, on the [0, 1] scale) instead of RGB.
        luma: older name of ``y_channel`` (``luma=False`` = RGB), kept for existing callers.

    Returns:
        ``[B]`` PSNR in dB, finite: the MSE is floored at :data:`QUANTIZATION_MSE`, so identical
        images give ``PSNR_BEST + 20 log10(data_range)`` (58.92 dB for peak 1) and zero gradient.

    Raises:
        InputError: invalid images, a non-positive ``data_range``, or ``luma`` contradicting
            ``y_channel``.
    """
    check_pair(x, y, "x", "y")
    if not data_range > 0:
        raise InputError(f"data_range: expected a positive peak value, got {data_range}")
    return _psnr(x, y, data_range, _y_channel(y_channel, luma))


def _y_channel(y_channel: bool, luma: Optional[bool]) -> bool:
    """Resolve ``y_channel`` and its older alias ``luma`` (which wins when given)."""
    if luma is None:
        return bool(y_channel)
    if y_channel and not luma:
        raise InputError("luma: luma=False contradicts y_channel=True; pass only y_channel= (True = BT.601 luma)")
    return bool(luma)


def _psnr(x: torch.Tensor, y: torch.Tensor, data_range: float, y_channel: bool) -> torch.Tensor:
    d = (_to255(x, y_channel) - _to255(y, y_channel)) / 255.0
    return _psnr_from_mse(d.pow(2).flatten(1).mean(dim=1), data_range)


def _psnr_from_mse(err: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``10 log10(data_range^2 / max(err, QUANTIZATION_MSE))``: PSNR (dB) of MSE values on the [0, 1] scale."""
    return 10.0 * torch.log10(data_range**2 / err.clamp(min=QUANTIZATION_MSE))


def _gaussian_1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """SSIM's window factor: :func:`gaussian_taps` ``(11, 1.5)``."""
    return gaussian_taps(SSIM_WINDOW, SSIM_SIGMA, dtype, device)


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``filter2(window, x, 'valid')`` on the last two dims with the separable Gaussian window.

    ``[..., H, W] -> [..., H - 10, W - 10]``: all maps are stacked as the channels of one image
    and filtered depthwise by the row then the column kernel (the window is symmetric, so
    correlation = convolution). On CPU this is about 6x faster than sliding-window dot products
    and equal to them up to float rounding.
    """
    y = separable_filter(x.reshape(1, -1, *x.shape[-2:]), g)
    return y.reshape(*x.shape[:-2], *y.shape[-2:])


def symmetric_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of MATLAB's ``'symmetric'`` padding (mirror including the border sample; also
    for pads longer than ``n``, as ``imresize`` and ``imfilter`` repeat the mirror)."""
    j = torch.remainder(torch.arange(-before, n + after, device=device), 2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def _mean_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """``imfilter(x, ones(f)/f^2, 'symmetric', 'same')`` then ``x(1:f:end, 1:f:end)``.

    MATLAB anchors an ``f x f`` kernel at ``floor((f + 1) / 2)``, so output sample ``i`` averages
    inputs ``i - floor((f-1)/2) .. i + f - 1 - floor((f-1)/2)``; keeping every ``f``-th sample is
    an ``f x f`` average pool with stride ``f`` over the symmetrically padded image.
    Output size ``ceil(H / f) x ceil(W / f)``.
    """
    before = (f - 1) // 2
    after = f - 1 - before
    for dim in (-2, -1):
        n = x.shape[dim]
        if before or n % f:  # otherwise no kept window reaches the padding (e.g. f = 2, even size)
            x = x.index_select(dim, symmetric_index(n, before, after, x.device))
    return F.avg_pool2d(x, kernel_size=f, stride=f)


def ssim_downsample_factor(h: int, w: int) -> int:
    """``f = max(1, round(min(H, W) / 256))`` of ssim.m (MATLAB rounds halves away from zero)."""
    return max(1, int(math.floor(min(h, w) / 256.0 + 0.5)))


def _ssim_maps(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps (``'valid'`` size) of 0..255 images ``[B, C, H, W]``.

    Wang et al. 2004 eq. (13) with ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` and population
    (biased) local moments under the Gaussian window, as ``ssim.m`` computes them. ``b`` may
    have batch 1 (one reference for every image of ``a``): its moments are then filtered once.
    """
    g = _gaussian_1d(a.dtype, a.device)
    c1 = (SSIM_K1 * SSIM_L) ** 2
    c2 = (SSIM_K2 * SSIM_L) ** 2
    if b.shape[0] == a.shape[0]:
        mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(torch.stack([a, b, a * a, b * b, a * b]), g)
    else:
        mu_a, e_aa, e_ab = _filter_valid(torch.stack([a, a * a, a * b]), g)
        mu_b, e_bb = _filter_valid(torch.stack([b, b * b]), g)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    lum = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
    return lum * cs, cs


def _check_min_size(x: torch.Tensor, minimum: int, what: str) -> None:
    """Raise :class:`InputError` when ``min(H, W) < minimum``."""
    h, w = x.shape[-2:]
    if min(h, w) < minimum:
        raise InputError(
            f"x: {what} needs images of at least {minimum}x{minimum} pixels, got {h}x{w}. "
            "Use larger images (or psnr/mse for tiny crops)."
        )


def ssim(x: torch.Tensor, y: torch.Tensor, luma: bool = True, downsample: bool = True) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, eq. 13) following the authors' ``ssim.m``.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1].
        y: reference, same shape.
        luma: SSIM of the BT.601 luma (0..255 scale) when True; when False the mean of the
            three per-channel SSIM values of the RGB image (each on 0..255, ``L = 255``).
        downsample: apply ssim.m's automatic downsampling (``f = max(1, round(min(H,W)/256))``:
            e.g. ``f = 2`` for 512x512). Disable it to compare at full resolution.

    Returns:
        ``[B]`` mean SSIM, at most 1 (1 for identical images).

    Raises:
        InputError: the (downsampled) image is smaller than the 11x11 window.
    """
    check_pair(x, y, "x", "y")
    check_ssim_size(x, downsample)
    return _ssim(x, y, luma, downsample)


def check_ssim_size(x: torch.Tensor, downsample: bool = True) -> None:
    """Raise :class:`InputError` when ``x`` (``[..., H, W]``) is too small for :func:`ssim`.

    The image must hold one 11x11 window after the automatic downsampling by ``f``.
    """
    h, w = x.shape[-2:]
    f = ssim_downsample_factor(h, w) if downsample else 1
    # ceil(n / f) >= 11  <=>  n > 10 f
    if min(h, w) <= (SSIM_WINDOW - 1) * f:
        _check_min_size(x, (SSIM_WINDOW - 1) * f + 1, f"SSIM (11x11 window after downsampling by {f})")


def check_ms_ssim_size(x: torch.Tensor) -> None:
    """Raise :class:`InputError` when ``x`` is smaller than 176x176 (msssim.m's 5-scale check)."""
    _check_min_size(x, MS_SSIM_MIN_SIZE, "MS-SSIM (5 scales, 11x11 window)")


def _ssim(x: torch.Tensor, y: torch.Tensor, luma: bool, downsample: bool) -> torch.Tensor:
    a, b = _to255(x, luma), _to255(y, luma)
    f = ssim_downsample_factor(*a.shape[-2:]) if downsample else 1
    if f > 1:
        a, b = _mean_downsample(a, f), _mean_downsample(b, f)
    ssim_map, _ = _ssim_maps(a, b)
    return ssim_map.flatten(2).mean(dim=2).mean(dim=1)


#: scikit-image ``structural_similarity`` defaults: a 7x7 uniform window
FIDELITY_SSIM_WINDOW = 7


def check_fidelity_ssim_size(x: torch.Tensor) -> None:
    """Raise :class:`InputError` when ``x`` (``[..., H, W]``) is smaller than :func:`fidelity_ssim`'s 7x7 window."""
    _check_min_size(x, FIDELITY_SSIM_WINDOW, "fidelity SSIM (7x7 window)")


def fidelity_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM as Guardians of Image Quality measures its SSIM restriction and fidelity: on the RGB channels.

    The benchmark's code scores images with scikit-image's
    ``structural_similarity(a, b, channel_axis=2, data_range=1)`` at its defaults, so this is that
    convention: each RGB channel on the [0, 1] scale (``C1 = 0.01^2``, ``C2 = 0.03^2``), a 7x7
    *uniform* window, sample (``N/(N-1)``-corrected) variances and covariance, the mean of the
    SSIM map over the positions where the window lies inside the image (scikit-image crops 3
    pixels at each border), averaged over the three channels; no downsampling. Unlike the luma
    SSIM of :func:`ssim` (``ssim.m``), it sees changes of colour, which is why Guardians of Image
    Quality (appendix A.3.4) restricts colour attacks such as cAdv by SSIM. Differentiable.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], ``H, W >= 7``.
        y: reference, same shape (or batch 1).

    Returns:
        ``[B]`` mean SSIM, at most 1 (1 for identical images).

    Raises:
        InputError: invalid images, different shapes, or images smaller than 7x7.
    """
    one_ref = y.dim() == x.dim() == 4 and y.shape[0] == 1 and y.shape[1:] == x.shape[1:]
    check_pair(x, y.expand_as(x) if one_ref else y, "x", "y")
    check_fidelity_ssim_size(x)
    return _fidelity_ssim(x, y)


def _fidelity_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`fidelity_ssim` without the input checks (the attacks' inner loops and the fidelity scores)."""
    k = FIDELITY_SSIM_WINDOW
    win = torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device)
    y = y.expand_as(x)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(torch.stack([x, y, x * x, y * y, x * y]), win)
    norm = k * k / (k * k - 1.0)
    var_x, var_y = norm * (e_xx - mu_x * mu_x), norm * (e_yy - mu_y * mu_y)
    cov = norm * (e_xy - mu_x * mu_y)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.flatten(2).mean(dim=2).mean(dim=1)


def _positive_pow(v: torch.Tensor, w: float) -> torch.Tensor:
    """``max(v, 0) ** w`` with finite gradients (0 where ``v <= 0``)."""
    pos = v > 0
    return torch.where(pos, v.clamp(min=1e-12).pow(w), torch.zeros_like(v))


def ms_ssim(x: torch.Tensor, y: torch.Tensor, luma: bool = True) -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003, eq. 7) following ``msssim.m``.

    ``MS-SSIM = prod_{j=1..4} cs_j^{w_j} * ssim_5^{w_5}`` where ``cs_j`` is the mean
    contrast-structure map and ``ssim_5`` the mean SSIM map at the coarsest scale. No automatic
    downsampling (as in msssim.m). Between scales: ``imfilter(ones(2)/4, 'symmetric', 'same')``
    and ``(1:2:end)`` subsampling, the distributed msssim.m (an older variant used ``filter2
    'valid'`` and drops the last odd row/column; both agree on even sizes). Negative mean values (possible for anti-correlated images,
    where MATLAB would return a complex number) are clipped to 0 before the power, as a ReLU
    (the score is then 0 and that factor passes no gradient).

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], both sides at least 176 pixels
            (``11 * 2**4``, the check of msssim.m).
        y: reference, same shape.
        luma: on the BT.601 luma when True; else mean of the per-channel RGB values.

    Returns:
        ``[B]`` MS-SSIM in ``[0, 1]`` (1 for identical images).

    Raises:
        InputError: images smaller than 176x176.
    """
    check_pair(x, y, "x", "y")
    check_ms_ssim_size(x)
    return _ms_ssim(x, y, luma)


def _ms_ssim(x: torch.Tensor, y: torch.Tensor, luma: bool) -> torch.Tensor:
    a, b = _to255(x, luma), _to255(y, luma)
    levels = len(MS_SSIM_WEIGHTS)
    out = torch.ones(a.shape[:2], dtype=a.dtype, device=a.device)
    for j, w in enumerate(MS_SSIM_WEIGHTS):
        ssim_map, cs_map = _ssim_maps(a, b)
        term = (ssim_map if j == levels - 1 else cs_map).flatten(2).mean(dim=2)
        out = out * _positive_pow(term, w)
        if j < levels - 1:
            a, b = _mean_downsample(a, 2), _mean_downsample(b, 2)
    return out.mean(dim=1)


__all__ = [
    "QUANTIZATION_MSE", "PSNR_BEST", "rgb_to_luma", "psnr", "ssim", "ms_ssim", "mse", "linf",
    "fidelity_ssim", "check_fidelity_ssim_size", "ssim_downsample_factor", "check_ssim_size", "check_ms_ssim_size",
    "gaussian_taps", "symmetric_index",
]
