"""Defenses: purification, certified smoothing, FS-IQA, training-based and architectural defenses."""
from __future__ import annotations

from typing import Any, List

from ..registry import DEFENSES
from .base import Purification, match_size
from .defend import DefendedMetric, defend
from . import purification  # noqa: F401  (imports and registers every purification module)
from . import certified  # noqa: F401  (and every certified defense)
from . import fsiqa  # noqa: F401  (and FS-IQA)
from . import trained  # noqa: F401  (and the trained-metric recipes)


def create(name: str, **kwargs: Any):
    """``create("jpeg", q=50)`` or ``create("jpeg", preset=2)``."""
    return DEFENSES.create(name, **kwargs)


def names() -> List[str]:
    return DEFENSES.names()


__all__ = ["DefendedMetric", "Purification", "create", "defend", "match_size", "names"]
