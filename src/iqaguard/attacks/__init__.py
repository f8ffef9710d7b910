"""Adversarial attacks on IQA metrics (one module per attack, registered by name)."""
from __future__ import annotations

from typing import Any, List

from ..registry import ATTACKS
from .base import PRESET_NAMES, Attack
from . import ifgsm  # noqa: F401  (registration side effects)


def create(name: str, **kwargs: Any) -> Attack:
    """``create("ifgsm", preset="medium")`` or with explicit kwargs (``eps=4/255, steps=10``)."""
    return ATTACKS.create(name, **kwargs)


def names() -> List[str]:
    return ATTACKS.names()


__all__ = ["Attack", "PRESET_NAMES", "create", "names"]
