"""Weightless full-reference metrics: ``psnr``, ``ssim``, ``ms-ssim`` (registry names).

They wrap :mod:`iqaguard.metrics.functional` (PSNR; SSIM of Wang et al. 2004 as ``ssim.m``;
MS-SSIM of Wang, Simoncelli & Bovik 2003 as ``msssim.m``), are differentiable with respect to
the distorted image, and carry bounds that follow Guardians of Image Quality appendix A.3.2 adapted to FR metrics:

* ``best`` is the value of a pristine image against itself: 1.0 for SSIM and MS-SSIM. PSNR of
  identical images would be infinite, so PSNR (here and in :func:`iqaguard.metrics.functional.psnr`
  and the benchmark's fidelity columns alike) saturates at the 8-bit quantisation noise level:
  an MSE below that of uniform rounding noise, ``(1/255)^2 / 12``, counts as that MSE, hence
  ``best = 10 log10(12 * 255^2) = 58.92 dB`` (finite, reached by ``f(x, x)``, and the gradient
  stays finite everywhere).
* ``worst`` is the minimum over the JPEG q=10 versions and the uniform-noise images of the
  builtin photographs of the builtin-kadid train and validation splits against their references,
  measured by ``scripts/calibrate_classic_bounds.py`` (which runs
  :func:`iqaguard.metrics.bounds.calibrate_bounds`) and stored below for each option setting.

PSNR is computed over the three RGB channels by default (MATLAB ``psnr``, scikit-image
``peak_signal_noise_ratio``, pyiqa ``psnr``); ``create("psnr", y_channel=True)`` gives the
BT.601-luma PSNR. SSIM and MS-SSIM default to the luma (``luma=True``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ..registry import METRICS
from . import functional as F
from .base import Bounds, Metric
from .functional import PSNR_BEST, QUANTIZATION_MSE

#: Worst values measured by ``python scripts/calibrate_classic_bounds.py`` (seed 0, JPEG q=10 +
#: uniform noise) on the 135 builtin photographs of the builtin-kadid train and validation splits
#: (``iqaguard.data.kadid_builtin.split_sources(0)``): the 24 test photographs, on which
#: builtin-nr/fr and the demo are evaluated, are excluded (7 CPU-minutes, 15.5 min wall on 2
#: shared cores). Keys are (registry name, option values in constructor order): psnr
#: ``(y_channel,)``, ssim ``(luma, downsample)``, ms-ssim ``(luma,)``.
CALIBRATED_WORST: Dict[Tuple[str, Tuple[bool, ...]], float] = {
    ("psnr", (True,)): 7.7742,
    ("ssim", (True, True)): 0.0407,
    ("ssim", (True, False)): 0.0136,
    ("ms-ssim", (True,)): 0.066,
    ("psnr", (False,)): 5.6045,
    ("ssim", (False, True)): 0.0089,
    ("ssim", (False, False)): 0.0028,
    ("ms-ssim", (False,)): 0.0362,
}


def _bounds(name: str, options: Tuple[bool, ...], best: float) -> Bounds:
    return Bounds(worst=CALIBRATED_WORST[(name, options)], best=best)


class _ClassicFR(Metric):
    """Shared shape of the weightless FR metrics: kind ``fr``, higher is better."""

    kind = "fr"
    lower_better = False

    def __init__(self, default: Bounds, bounds: Optional[Bounds]) -> None:
        super().__init__()
        self.bounds = default if bounds is None else bounds


@METRICS.register("psnr")
class PSNR(_ClassicFR):
    """Peak signal-to-noise ratio in dB over the RGB channels, saturating at 58.92 dB.

    ``score = 10 log10(1 / max(MSE, (1/255)^2 / 12))`` on the [0, 1] scale with the MSE over all
    three RGB channels (as MATLAB ``psnr``, scikit-image and pyiqa), or over the BT.601 luma with
    ``y_channel=True`` (as super-resolution papers report). Equal to
    :func:`iqaguard.metrics.functional.psnr`.

    Args:
        y_channel: compare the luma Y (True) instead of RGB (False, default).
        bounds: override the calibrated ``Bounds(worst, best=58.92)``.
        luma: older name of ``y_channel``.

    Call ``m(x, ref)`` with ``[B, 3, H, W]`` tensors in [0, 1]; returns ``[B]`` dB.
    """

    name = "psnr"
    min_size = 1  # a per-pixel MSE: defined for any size, 1x1 included

    def __init__(self, y_channel: bool = False, bounds: Optional[Bounds] = None, *,
                 luma: Optional[bool] = None) -> None:
        y_channel = F._y_channel(y_channel, luma)
        super().__init__(_bounds("psnr", (y_channel,), PSNR_BEST), bounds)
        self.y_channel = y_channel

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        assert ref is not None
        return F._psnr(x, ref, 1.0, self.y_channel)


@METRICS.register("ssim")
class SSIM(_ClassicFR):
    """SSIM (Wang et al. 2004, eq. 13) with the conventions of ``ssim.m`` (2009 revision).

    Args:
        luma: on BT.601 luma (True) or mean over RGB channels (False).
        downsample: ssim.m's automatic downsampling by ``max(1, round(min(H, W) / 256))``.
        bounds: override the calibrated ``Bounds(worst, best=1.0)``.

    Call ``m(x, ref)`` with ``[B, 3, H, W]`` tensors in [0, 1], ``H, W >= 11``; returns ``[B]``.
    """

    name = "ssim"
    #: one 11x11 window; with ``downsample`` larger images are also checked after downsampling
    #: by :func:`iqaguard.metrics.functional.check_ssim_size` (the factor is 1 below 384 pixels).
    min_size = F.SSIM_WINDOW

    def __init__(self, luma: bool = True, downsample: bool = True, bounds: Optional[Bounds] = None) -> None:
        super().__init__(_bounds("ssim", (bool(luma), bool(downsample)), 1.0), bounds)
        self.luma = bool(luma)
        self.downsample = bool(downsample)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        assert ref is not None
        F.check_ssim_size(x, self.downsample)
        return F._ssim(x, ref, self.luma, self.downsample)


@METRICS.register("ms-ssim")
class MSSSIM(_ClassicFR):
    """MS-SSIM (Wang, Simoncelli & Bovik 2003, eq. 7) with the conventions of ``msssim.m``.

    Args:
        luma: on BT.601 luma (True) or mean over RGB channels (False).
        bounds: override the calibrated ``Bounds(worst, best=1.0)``.

    Call ``m(x, ref)`` with ``[B, 3, H, W]`` tensors in [0, 1], ``H, W >= 176``; returns ``[B]``.
    """

    name = "ms-ssim"
    min_size = F.MS_SSIM_MIN_SIZE  # 176: an 11x11 window at the coarsest of 5 scales (msssim.m)

    def __init__(self, luma: bool = True, bounds: Optional[Bounds] = None) -> None:
        super().__init__(_bounds("ms-ssim", (bool(luma),), 1.0), bounds)
        self.luma = bool(luma)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        assert ref is not None
        F.check_ms_ssim_size(x)
        return F._ms_ssim(x, ref, self.luma)


__all__ = ["PSNR", "SSIM", "MSSSIM", "PSNR_BEST", "QUANTIZATION_MSE", "CALIBRATED_WORST"]
