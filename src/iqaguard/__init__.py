"""iqaguard: adversarial robustness toolkit and benchmark for IQA metrics."""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors  # noqa: E402
from .errors import InputError  # noqa: E402
from . import data, metrics, attacks, defenses, scores  # noqa: E402
from .defenses import defend  # noqa: E402

datasets = data

__all__ = ["InputError", "attacks", "data", "datasets", "defend", "defenses", "errors", "metrics",
           "scores", "__version__"]
