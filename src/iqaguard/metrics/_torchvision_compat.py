"""torchvision without its C++ extension: the operator schemas it expects, so its Python parts import.

Why: PyPI's Linux torchvision wheels are CUDA builds. ``torchvision/_C.so`` links
``libtorch_cuda.so`` / ``libc10_cuda.so``, which a CPU-only torch (``torch==2.13.0+cpu``) does
not have, so the extension fails to load. torchvision tolerates that (``_has_ops()`` becomes
False and its ``register_meta`` registrations are skipped), but ``torchvision/_meta_registrations.py``
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and
``torch.library.register_fake`` on an operator that was never defined raises
``RuntimeError: operator torchvision::nms does not exist`` during ``import torchvision``. piq,
lpips and pyiqa import torchvision, so they fail with it. torchvision honours no environment
variable that skips this (``TORCHVISION_WARN_WHEN_EXTENSION_LOADING_FAILS`` only warns), and the
CPU wheel lives on download.pytorch.org, not on PyPI.

Fix: :func:`ensure_torchvision`, called by the adapters before they import piq, lpips or pyiqa.
When torchvision is installed, not yet imported, and its extension cannot be loaded, it defines
the schemas of the extension's operators (:data:`SCHEMAS`, copied from the signatures of
torchvision 0.28's ``_C.so``) in the ``torchvision`` namespace, with CPU and CUDA kernels that
raise :class:`~iqaguard.errors.MissingDependencyError`. Then ``import torchvision`` works: the
models, transforms and weights that piq/lpips/pyiqa use are pure Python. The detection
operators stay unavailable: ``torchvision.ops.nms(...)`` raises torchvision's own "Couldn't load
custom C++ ops" error (its ``_has_ops()`` is still False) and ``torch.ops.torchvision.nms(...)``
raises the one-line error of this module. No Meta kernel is registered here, so torchvision's
own fake registrations still apply.

Nothing happens when the extension loads (a matching CPU torchvision), when torchvision is
already imported, or when ``IQAGUARD_TORCHVISION_SHIM=0``.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import MissingDependencyError

#: Operator schemas of torchvision's C++ extension (namespace ``torchvision``), as torchvision
#: 0.28.0's ``_C.so`` defines them; ``_meta_registrations.py`` / ``_autograd_registrations.py``
#: name the same operators.
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
    "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
    "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

_LOCK = threading.Lock()
_LIBRARY: Optional[torch.library.Library] = None  # kept alive: dropping it undefines the ops
_REASON: Optional[str] = None


def _op_name(schema: str) -> str:
    return schema.split("(", 1)[0]


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.torchvision, name)


def _extension_error(package_dir: Path) -> Optional[str]:
    """Load ``torchvision/_C`` as torchvision does; ``None`` when it loads, else why not (one line)."""
    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    spec = importlib.machinery.FileFinder(str(package_dir), loader).find_spec("_C")
    if spec is None or spec.origin is None:
        return f"no _C extension in {package_dir}"
    try:
        torch.ops.load_library(spec.origin)
    except (OSError, ImportError, RuntimeError) as e:
        root = e.__cause__ or e  # torch wraps the loader's error ("libc10_cuda.so: cannot open ...")
        return " ".join(str(root).split()) or type(root).__name__
    return None


def _unavailable(name: str, reason: str):
    def kernel(*args: Any, **kwargs: Any) -> None:
        raise MissingDependencyError(
            f"torchvision::{name} is unavailable: torchvision's C++ extension did not load ({reason}); "
            f"iqaguard defined only its schema so that torchvision's Python modules import. Install a "
            f"torchvision build matching torch {torch.__version__} to use torchvision's detection operators."
        )

    return kernel


def shim_reason() -> Optional[str]:
    """Why the operator schemas were defined (the extension's load error), or ``None`` if they were not."""
    return _REASON


def ensure_torchvision() -> Optional[str]:
    """Make ``import torchvision`` work when its C++ extension cannot load (see the module docstring).

    Idempotent and cheap after the first call. Does nothing when torchvision is not installed,
    already imported, its extension loads, its operators exist, or ``IQAGUARD_TORCHVISION_SHIM=0``.

    Returns:
        The extension's load error when the schemas were defined (now or earlier), else ``None``.
    """
    global _LIBRARY, _REASON
    with _LOCK:
        if _LIBRARY is not None:
            return _REASON
        if os.environ.get("IQAGUARD_TORCHVISION_SHIM", "1").strip() == "0" or "torchvision" in sys.modules:
            return None
        try:
            spec = importlib.util.find_spec("torchvision")
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations or _has_op("nms"):
            return None
        reason = _extension_error(Path(list(spec.submodule_search_locations)[0]))
        if reason is None:
            return None
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (kept alive in _LIBRARY)
        for schema in SCHEMAS:
            name = _op_name(schema)
            if _has_op(name):
                continue
            lib.define(schema)
            for key in ("CPU", "CUDA"):
                lib.impl(name, _unavailable(name, reason), key)
        _LIBRARY, _REASON = lib, reason
        return reason


__all__ = ["SCHEMAS", "ensure_torchvision", "shim_reason"]
