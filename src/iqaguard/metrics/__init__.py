"""IQA metrics: the interface, builtin offline models, weightless FR metrics and adapters.

``create(name_or_module, **kwargs)`` builds any registered metric (``builtin-nr``,
``builtin-fr``, ``psnr``, ``ssim``, ``ms-ssim``, ``pyiqa:<name>``) or wraps a ``torch.nn.Module``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, List

from torch import nn

from ..registry import METRICS
from .base import Bounds, Metric

# Every module of this package registers its metrics on import: a new metric is one module,
# found here without editing this file.
for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

from .adapters import ModuleMetric  # noqa: E402
from .bounds import calibrate_bounds


def create(name: Any, **kwargs: Any) -> Metric:
    """Create a metric by registry name, or wrap an ``nn.Module`` (see :class:`ModuleMetric`)."""
    if isinstance(name, Metric):
        return name
    if isinstance(name, nn.Module):
        return ModuleMetric(name, **kwargs)
    return METRICS.create(name, **kwargs)


def names() -> List[str]:
    return METRICS.names()


__all__ = ["Bounds", "Metric", "ModuleMetric", "calibrate_bounds", "create", "names"]
