"""Per-image fidelity of a processed image to its original (Guardians of Image Quality §3.5, "Quality scores").

Guardians of Image Quality reports PSNR, SSIM, MSE and L∞ between defended (or attacked) images and their clean
originals. These wrappers fix the benchmark's conventions on top of
:mod:`iqaguard.metrics.functional` and return plain ``float64`` numpy arrays for the result rows:

* PSNR uses the functional default: all three RGB channels, peak 1.0 on the [0, 1] scale (as
  MATLAB ``psnr``, scikit-image ``peak_signal_noise_ratio`` and pyiqa), with the MSE floored at
  the 8-bit quantisation noise ``(1/255)^2 / 12``: it is finite for identical images (58.92 dB,
  :data:`iqaguard.metrics.functional.PSNR_BEST`), so stored rows and their averages never hold
  ``+inf``. It is a function of the MSE column: ``psnr = 10 log10(1 / max(mse, (1/255)^2 / 12))``.
* SSIM is :func:`iqaguard.metrics.functional.fidelity_ssim`, the convention of Guardians of Image
  Quality's own code (scikit-image ``structural_similarity`` on the RGB channels, 7x7 uniform
  window, ``data_range=1``), the same SSIM the attacks' SSIM restriction is checked with. It sees
  colour changes, which the luma SSIM of the ``ssim`` metric (``ssim.m``) does not.
* MSE and L∞ are computed on all three RGB channels on the [0, 1] scale (L∞ is the perturbation
  budget unit of the attacks, e.g. 4/255).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np
import torch

from ..errors import InputError
from ..metrics import functional as F
from ..validation import check_pair


def _as_image(x: Any, name: str) -> torch.Tensor:
    """Accept a torch tensor or a numpy array ``[B, 3, H, W]`` (float in [0, 1])."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"{name}: expected a float array in [0, 1], got dtype {x.dtype}; divide uint8 by 255")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x


def _per_image(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: Any, y: Any) -> np.ndarray:
    """Validate the pair once, apply ``fn`` without autograd, return ``[B]`` float64."""
    x, y = _as_image(x, "x"), _as_image(y, "y")
    check_pair(x, y, "x", "y")
    with torch.no_grad():
        return fn(x.detach(), y.detach()).to("cpu", torch.float64).numpy()


def psnr(x: Any, y: Any) -> np.ndarray:
    """PSNR in dB of ``x`` against ``y`` over the RGB channels, peak 1.0 (↑).

    Args:
        x: processed images ``[B, 3, H, W]`` in [0, 1] (torch or numpy).
        y: original images, same shape.

    Returns:
        ``[B]`` PSNR in dB, at most 58.92 (the MSE is floored at ``(1/255)^2 / 12``, so identical
        images give 58.92 dB, never ``+inf``).
    """
    return _per_image(F.psnr, x, y)


def ssim(x: Any, y: Any) -> np.ndarray:
    """SSIM (Wang et al. 2004) of ``x`` against ``y`` on the RGB channels, scikit-image's convention (↑).

    Args:
        x: processed images ``[B, 3, H, W]`` in [0, 1], at least 7x7 (the window).
        y: original images, same shape.

    Returns:
        ``[B]`` mean SSIM, at most 1.
    """
    def checked(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        F.check_fidelity_ssim_size(a)  # after _per_image validated the pair
        return F._fidelity_ssim(a, b)
    return _per_image(checked, x, y)


def mse(x: Any, y: Any) -> np.ndarray:
    """Mean squared error over the RGB channels and pixels, [0, 1] scale (↓).

    Args:
        x: processed images ``[B, 3, H, W]`` in [0, 1].
        y: original images, same shape.

    Returns:
        ``[B]`` MSE in [0, 1].
    """
    return _per_image(F.mse, x, y)


def linf(x: Any, y: Any) -> np.ndarray:
    """L∞ distance ``max |x - y|`` over the RGB channels and pixels, [0, 1] scale (↓).

    Args:
        x: processed images ``[B, 3, H, W]`` in [0, 1].
        y: original images, same shape.

    Returns:
        ``[B]`` values in [0, 1] (``4/255`` for a saturated medium L∞ attack).
    """
    return _per_image(F.linf, x, y)


def fidelity(x: Any, y: Any) -> Dict[str, np.ndarray]:
    """All four fidelity scores at once: ``{"psnr", "ssim", "mse", "linf"}``, each ``[B]`` float64.

    Equal to :func:`psnr`, :func:`ssim`, :func:`mse` and :func:`linf` (same conventions), but the
    pair is validated once and the difference image is shared — the benchmark scores every
    defended image this way, four times cheaper in validation.

    Args:
        x: processed images ``[B, 3, H, W]`` in [0, 1] (torch or numpy), at least 7x7 (SSIM's window).
        y: original images, same shape.

    Raises:
        InputError: invalid images, different shapes, or images too small for SSIM.
    """
    x, y = _as_image(x, "x"), _as_image(y, "y")
    check_pair(x, y, "x", "y")
    F.check_fidelity_ssim_size(x)
    with torch.no_grad():
        x, y = x.detach(), y.detach()
        d = (x - y).flatten(1)
        err = d.pow(2).mean(dim=1)
        out = {"psnr": F._psnr_from_mse(err), "ssim": F._fidelity_ssim(x, y),
               "mse": err, "linf": d.abs().amax(dim=1)}
        return {k: v.to("cpu", torch.float64).numpy() for k, v in out.items()}
