"""Validation of images at public boundaries (DESIGN.md §Core contracts).

Images are ``float32`` tensors ``[B, 3, H, W]`` with values in ``[0, 1]``, RGB. Public
functions call :func:`check_image` once; internal code trusts its inputs.
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import InputError

_RANGE_TOL = 1e-4


def check_image(x: object, name: str = "x", batch: Optional[int] = None) -> torch.Tensor:
    """Check that ``x`` is a float image batch ``[B, 3, H, W]`` in ``[0, 1]``.

    Args:
        x: the value to check.
        name: argument name used in the error message.
        batch: if given, the required batch size.

    Returns:
        ``x`` unchanged (a tensor).

    Raises:
        InputError: naming ``name``, the expectation and what was received.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{name}: expected a torch.Tensor [B, 3, H, W] float32 in [0, 1], got {type(x).__name__}. "
            "Load files with iqaguard.data.load_image()."
        )
    if not x.is_floating_point():
        raise InputError(
            f"{name}: expected a floating-point tensor (float32) in [0, 1], got dtype {x.dtype}. "
            "Convert uint8 images with x.float() / 255."
        )
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(
            f"{name}: expected shape [B, 3, H, W] (RGB batch), got {list(x.shape)}. "
            "Add a batch dimension with x.unsqueeze(0) or convert grayscale with x.expand(-1, 3, -1, -1)."
        )
    if x.shape[0] == 0 or x.shape[2] < 1 or x.shape[3] < 1:
        raise InputError(f"{name}: empty image batch, got shape {list(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise InputError(f"{name}: expected batch size {batch}, got {x.shape[0]}")
    with torch.no_grad():
        if not torch.isfinite(x).all():
            raise InputError(f"{name}: contains NaN or Inf values")
        lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise InputError(
            f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]. "
            "Divide 0..255 images by 255 (or clamp with x.clamp(0, 1))."
        )
    return x


def check_pair(x: torch.Tensor, ref: torch.Tensor, x_name: str = "x", ref_name: str = "ref") -> None:
    """Check a distorted/reference pair: both valid images with equal shapes."""
    check_image(x, x_name)
    check_image(ref, ref_name)
    if x.shape != ref.shape:
        raise InputError(
            f"{ref_name}: expected the same shape as {x_name} {list(x.shape)}, got {list(ref.shape)}"
        )


def resolve_device(device: object = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from e
