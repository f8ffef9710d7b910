"""Input conversion and validation shared by every score function.

Scores accept per-image values as numpy arrays, torch tensors (any device, detached here) or
plain sequences, and convert them once, at their boundary, to 1-D ``float64`` numpy arrays.
Problems raise :class:`iqaguard.errors.ScoreError` naming the offending argument.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ScoreError
from ..metrics.base import Bounds

BoundsLike = Union[Bounds, Sequence[float]]


def to_array(values: Any, name: str, allow_nan: bool = False) -> np.ndarray:
    """Convert per-image values to a non-empty 1-D ``float64`` array.

    Args:
        values: ``[N]`` numpy array, torch tensor or sequence of numbers.
        name: argument name used in error messages.
        allow_nan: keep NaN/Inf entries (the caller masks them out itself).

    Returns:
        ``[N]`` float64 numpy array (a copy).

    Raises:
        ScoreError: not numeric, not 1-D, empty, or containing NaN/Inf.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ScoreError(f"{name}: expected a 1-D array of numbers, got {type(values).__name__} ({e})") from e
    if arr.ndim != 1:
        raise ScoreError(
            f"{name}: expected a 1-D array of per-image values [N], got shape {list(arr.shape)}. "
            "Flatten it with .reshape(-1)."
        )
    if arr.size == 0:
        raise ScoreError(f"{name}: empty input; scores need at least one image")
    if not allow_nan and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ScoreError(f"{name}: contains {bad} NaN/Inf value(s); drop or recompute those images first")
    return arr


def to_pair(a: Any, b: Any, name_a: str, name_b: str) -> Tuple[np.ndarray, np.ndarray]:
    """Convert two per-image arrays and check that their lengths match (see :func:`to_array`)."""
    x, y = to_array(a, name_a), to_array(b, name_b)
    if x.shape != y.shape:
        raise ScoreError(
            f"{name_b}: expected {x.size} values (one per image of {name_a}), got {y.size}"
        )
    return x, y


def to_mask(abstain: Any, name: str, n: int) -> np.ndarray:
    """Convert per-image abstention flags (bool or 0/1) to a ``[n]`` bool array."""
    arr = to_array(abstain, name)
    if arr.size != n:
        raise ScoreError(f"{name}: expected {n} flags (one per image), got {arr.size}")
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ScoreError(f"{name}: expected booleans or 0/1 flags, got values {np.unique(arr)[:5].tolist()}")
    return arr.astype(bool)


def to_bounds(bounds: BoundsLike, name: str = "bounds") -> Bounds:
    """Return ``bounds`` as a :class:`Bounds` with finite ends and ``diam > 0``.

    Args:
        bounds: a :class:`Bounds` or a ``(worst, best)`` pair.
        name: argument name used in error messages.

    Raises:
        ScoreError: not a pair of finite numbers, or zero diameter.
    """
    if not isinstance(bounds, Bounds):
        try:
            worst, best = (float(v) for v in bounds)  # type: ignore[union-attr]
        except (TypeError, ValueError) as e:
            raise ScoreError(
                f"{name}: expected iqaguard.metrics.Bounds(worst, best) or a (worst, best) pair, "
                f"got {bounds!r}"
            ) from e
        bounds = Bounds(worst, best)
    if not (np.isfinite(bounds.worst) and np.isfinite(bounds.best)):
        raise ScoreError(f"{name}: bounds must be finite, got {bounds}")
    if bounds.diam <= 0:
        raise ScoreError(
            f"{name}: zero metric range diam(f) = |best - worst| = 0 ({bounds}); "
            "recompute the bounds with iqaguard.metrics.calibrate_bounds()"
        )
    return bounds
