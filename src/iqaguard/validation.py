"""Validation of images at public boundaries (DESIGN.md §Core contracts).

Images are ``float32`` tensors ``[B, 3, H, W]`` with values in ``[0, 1]``, RGB. Public
functions call :func:`check_image` once; internal code trusts its inputs.
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import InputError

_RANGE_TOL = 1e-4


def _shape_hint(shape: list, name: str = "x") -> str:
    """How to turn a tensor of ``shape`` into ``[B, 3, H, W]`` RGB (one sentence, no newline)."""
    hints = []
    if len(shape) == 3:
        hints.append("add the batch dimension with x.unsqueeze(0)")
        channels = shape[0]
        if shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4):
            hints[-1] = "channels-last image: use x.permute(2, 0, 1).unsqueeze(0)"
            channels = shape[-1]
    elif len(shape) == 4:
        channels = shape[1]
        if shape[1] not in (1, 3, 4) and shape[-1] in (1, 3, 4):
            hints.append("channels-last batch: use x.permute(0, 3, 1, 2)")
            channels = shape[-1]
    elif len(shape) == 2:
        hints.append("a single grayscale image: use x.expand(3, -1, -1).unsqueeze(0)")
        channels = 3
    else:
        return "Load files with iqaguard.data.load_image() (RGB [1, 3, H, W])."
    if channels == 1:
        hints.append("convert grayscale to RGB with x.expand(-1, 3, -1, -1)")
    elif channels == 4:
        hints.append("drop the alpha channel with x[:, :3] (or load with PIL .convert('RGB'))")
    elif channels != 3:
        hints.append("convert the image to 3-channel RGB")
    if not hints:
        return "Load files with iqaguard.data.load_image() (RGB [1, 3, H, W])."
    text = "; ".join(hints).replace("x.", f"{name}.").replace("x[", f"{name}[")
    return text[0].upper() + text[1:] + "."


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_image(
    x: object, name: str = "x", batch: Optional[int] = None, dtype: Optional[torch.dtype] = None
) -> torch.Tensor:
    """Check that ``x`` is a float image batch ``[B, 3, H, W]`` in ``[0, 1]``.

    Args:
        x: the value to check.
        name: argument name used in the error message.
        batch: if given, the required batch size.
        dtype: if given, the required floating dtype (metrics' public boundary: ``torch.float32``);
            ``None`` accepts any floating dtype (the functional layer, e.g. float64 gradcheck).
            Never converted silently.

    Returns:
        ``x`` unchanged (a tensor).

    Raises:
        InputError: one line naming ``name``, the expectation, what was received and the fix.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"{name}: expected a torch.Tensor [B, 3, H, W] float32 in [0, 1], got {type(x).__name__}. "
            "Load files with iqaguard.data.load_image()."
        )
    if not x.is_floating_point():
        raise InputError(
            f"{name}: expected a floating-point tensor (float32) in [0, 1], got dtype {_dtype_name(x.dtype)}. "
            f"Convert uint8 images with {name}.float() / 255."
        )
    if dtype is not None and x.dtype != dtype:
        conv = f"{name}.float()" if dtype == torch.float32 else f"{name}.to({dtype})"
        raise InputError(
            f"{name}: expected {_dtype_name(dtype)} [B, 3, H, W] in [0, 1], got {_dtype_name(x.dtype)}; "
            f"convert with {conv}"
        )
    if x.dim() != 4 or x.shape[1] != 3:
        shape = list(x.shape)
        raise InputError(
            f"{name}: expected shape [B, 3, H, W] (RGB batch), got {shape}. {_shape_hint(shape, name)}"
        )
    if x.shape[0] == 0 or x.shape[2] < 1 or x.shape[3] < 1:
        raise InputError(f"{name}: empty image batch, got shape {list(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise InputError(f"{name}: expected batch size {batch}, got {x.shape[0]}")
    with torch.no_grad():
        finite = torch.isfinite(x)
        if not finite.all():
            n_bad = int((~finite).sum())
            n_nan = int(torch.isnan(x).sum())
            raise InputError(
                f"{name}: contains {n_bad} non-finite value(s) of {x.numel()} ({n_nan} NaN, {n_bad - n_nan} Inf); "
                f"fix the upstream computation or replace them, e.g. {name}.nan_to_num(0.0).clamp(0, 1)"
            )
        lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise InputError(
            f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]. "
            "Divide 0..255 images by 255 (or clamp with x.clamp(0, 1))."
        )
    return x


def check_pair(
    x: torch.Tensor,
    ref: torch.Tensor,
    x_name: str = "x",
    ref_name: str = "ref",
    dtype: Optional[torch.dtype] = None,
) -> None:
    """Check a distorted/reference pair: both valid images with equal shapes (and ``dtype`` if given)."""
    check_image(x, x_name, dtype=dtype)
    check_image(ref, ref_name, dtype=dtype)
    if x.shape != ref.shape:
        raise InputError(
            f"{ref_name}: expected the same shape as {x_name} {list(x.shape)}, got {list(ref.shape)}"
        )
    if x.dtype != ref.dtype:
        raise InputError(
            f"{ref_name}: expected the same dtype as {x_name} ({_dtype_name(x.dtype)}), got "
            f"{_dtype_name(ref.dtype)}; convert both with .float()"
        )


_DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (or a torch.device)"


def _cpu_fallback() -> str:
    return "use device='cpu' or 'auto'"


def resolve_device(device: object = None) -> torch.device:
    """Resolve a device argument, checking that the device exists on this machine.

    ``None``/``"auto"`` -> ``cuda`` when a GPU is visible, else ``cpu``. ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"`` or a :class:`torch.device` otherwise.

    Raises:
        InputError: one line, for an unknown string (listing the valid forms) or a device that this
            torch build / machine does not have (saying which, and to use ``'cpu'`` or ``'auto'``).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise InputError(f"device: expected {_DEVICE_FORMS}, got {device!r}")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(
            device.strip() if isinstance(device, str) else device
        )
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"device: expected {_DEVICE_FORMS}, got {device!r}") from e
    shown = device.strip() if isinstance(device, str) else str(dev)
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise InputError(
                f"device {shown!r} requested but this torch build has no CUDA (torch {torch.__version__}); "
                f"{_cpu_fallback()}"
            )
        if not torch.cuda.is_available():
            raise InputError(
                f"device {shown!r} requested but no GPU is visible (torch {torch.__version__} has CUDA; check the "
                f"driver and CUDA_VISIBLE_DEVICES); {_cpu_fallback()}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"device {shown!r} requested but only {count} CUDA device(s) are visible "
                f"(indices 0..{count - 1}); pass a visible index, or device='cpu' or 'auto'"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            built = mps is not None and mps.is_built()
            why = "no MPS device is available" if built else f"this torch build has no MPS (torch {torch.__version__})"
            raise InputError(f"device {shown!r} requested but {why}; {_cpu_fallback()}")
    return dev
