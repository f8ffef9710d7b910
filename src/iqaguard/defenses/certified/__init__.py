"""Certified defenses: randomized smoothing of a metric (DESIGN.md registry names; ``docs/certified.md``).

Importing this package imports every module in it, so a new certified defense is one module with
a ``@DEFENSES.register(name)`` class: nothing else to edit.
"""
from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name not in ("base", "certificates", "sampler", "denoiser"):
        importlib.import_module(f"{__name__}.{_info.name}")
