"""Adversarial attacks on IQA metrics (one module per attack, registered by name).

Every module of this package is imported when the package is, so a new attack is one module
(with ``@ATTACKS.register("name")``) plus its tests: nothing else to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, List

from ..registry import ATTACKS
from .base import Attack
from .budgets import PRESET_BUDGETS, PRESET_NAMES, Restriction
from .gradient import GradientAttack
from .query import QueryAttack, QueryOracle
from .universal import UniversalAttack

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


def create(name: str, **kwargs: Any) -> Attack:
    """``create("ifgsm", preset="medium")`` or with explicit kwargs (``eps=4/255, steps=10``)."""
    return ATTACKS.create(name, **kwargs)


def names() -> List[str]:
    return ATTACKS.names()


__all__ = ["Attack", "GradientAttack", "PRESET_BUDGETS", "PRESET_NAMES", "QueryAttack", "QueryOracle",
           "Restriction", "UniversalAttack", "create", "names"]
