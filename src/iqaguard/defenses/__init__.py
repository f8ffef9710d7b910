"""Defenses: purification (and, later, training, certified, FS-IQA, architecture)."""
from __future__ import annotations

from typing import Any, List

from ..registry import DEFENSES
from .base import Purification
from .defend import DefendedMetric, defend
from .purification import jpeg  # noqa: F401  (registration side effects)


def create(name: str, **kwargs: Any):
    """``create("jpeg", q=50)`` or ``create("jpeg", preset=2)``."""
    return DEFENSES.create(name, **kwargs)


def names() -> List[str]:
    return DEFENSES.names()


__all__ = ["DefendedMetric", "Purification", "create", "defend", "names"]
