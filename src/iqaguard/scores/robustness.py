"""Robustness scores: R_score (Guardians of Image Quality eq. 5), D_score (eqs. 6-7), Abs.Gain (Robustness as Architecture eq. 8) and
their areas under the curve over the attack budget ε (Robustness as Architecture §4).

Notation: f = metric, P = defense (purification), x = clean image, x' = attacked image. Every
function takes *per-image metric scores* (``[N]`` numpy arrays, torch tensors or sequences), not
images, plus the metric's :class:`~iqaguard.metrics.base.Bounds` (``diam = |best - worst|``).
Without a defense pass the attacked scores where ``f(P(x'))`` is asked for (P = identity).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import ScoreError
from ._arrays import BoundsLike, to_bounds, to_pair

#: Default floor of the R-score denominator, as a fraction of diam(f) (see :func:`r_score`).
R_FLOOR = 1e-6


def _r_per_image(anchor: np.ndarray, moved: np.ndarray, bounds: BoundsLike, floor: float) -> np.ndarray:
    """Per-image ``log10(max{β1 - a, a - β2} / max(|a - m|, floor·diam))``, ``[N]``."""
    b = to_bounds(bounds)
    if not (np.isfinite(floor) and 0.0 < floor < 1.0):
        raise ScoreError(f"floor: expected a fraction of diam(f) in (0, 1), got {floor!r}")
    allowed = np.maximum(b.upper - anchor, anchor - b.lower)  # >= diam/2 > 0 for any anchor
    change = np.maximum(np.abs(anchor - moved), floor * b.diam)
    return np.log10(allowed / change)


def r_score(clean: Any, defended_attacked: Any, bounds: BoundsLike, floor: float = R_FLOOR) -> float:
    """Robustness score R (Guardians of Image Quality §3.5 eq. 5; Zhang et al. 2022), higher is more robust (↑).

    ``R = 1/N Σ_i log10( max{β1 - f(x_i), f(x_i) - β2} / |f(x_i) - f(P(x'_i))| )`` with
    ``β1 = bounds.upper`` and ``β2 = bounds.lower``: the log ratio of the largest change the score
    could still make to the change the attack achieved. The logarithm is base 10, as in Zhang et
    al. (2022) and the reference implementations that use their R.

    A zero change would give ``log(·/0) = +inf``. The denominator is floored at ``floor · diam``:
    an image whose score moved by less than that counts as moved by exactly that much, so an
    unchanged score contributes at most ``log10(1/floor) + log10(max{..}/diam) ≈ 6`` (default).

    Args:
        clean: ``[N]`` scores ``f(x)`` of the clean images.
        defended_attacked: ``[N]`` scores ``f(P(x'))`` (``f(x')`` without a defense).
        bounds: the metric's bounds (``Bounds(worst, best)`` or a ``(worst, best)`` pair).
        floor: denominator floor as a fraction of ``diam(f)``, in (0, 1).

    Returns:
        R, unitless (orders of magnitude).

    Raises:
        ScoreError: NaN/empty/mismatched inputs, zero diam or an invalid floor.
    """
    fx, fpx = to_pair(clean, defended_attacked, "clean", "defended_attacked")
    return float(_r_per_image(fx, fpx, bounds, floor).mean())


def r_score_d(defended_clean: Any, defended_attacked: Any, bounds: BoundsLike,
              floor: float = R_FLOOR) -> float:
    """R^(D) (Guardians of Image Quality §3.5): eq. 5 with P applied to both x and x', higher is better (↑).

    ``R^(D) = 1/N Σ_i log10( max{β1 - f(P(x_i)), f(P(x_i)) - β2} / |f(P(x_i)) - f(P(x'_i))| )``;
    base 10 and the zero-change floor as in :func:`r_score`.

    Args:
        defended_clean: ``[N]`` scores ``f(P(x))``.
        defended_attacked: ``[N]`` scores ``f(P(x'))``.
        bounds: the metric's bounds.
        floor: denominator floor as a fraction of ``diam(f)``, in (0, 1).

    Returns:
        R^(D), unitless.
    """
    fpx, fpa = to_pair(defended_clean, defended_attacked, "defended_clean", "defended_attacked")
    return float(_r_per_image(fpx, fpa, bounds, floor).mean())


def d_score(clean: Any, defended_attacked: Any, bounds: BoundsLike) -> float:
    """D_score (Guardians of Image Quality §3.5 eq. 6), lower is better (↓).

    ``D = 100/n Σ_i |f(P(x'_i)) - f(x_i)| / diam(f)``: how far the defended attacked score still
    is from the clean score, in percent of the metric range. The absolute value makes a defense
    that over-corrects (scores P(x') beyond f(x)) pay for the overshoot.

    Args:
        clean: ``[N]`` scores ``f(x)``.
        defended_attacked: ``[N]`` scores ``f(P(x'))`` (``f(x')`` without a defense).
        bounds: the metric's bounds.

    Returns:
        D in percent of ``diam(f)`` (0 = scores fully restored).
    """
    fx, fpa = to_pair(clean, defended_attacked, "clean", "defended_attacked")
    return float(100.0 * np.abs(fpa - fx).mean() / to_bounds(bounds).diam)


def d_score_d(defended_clean: Any, defended_attacked: Any, bounds: BoundsLike) -> float:
    """D_score^(D) (Guardians of Image Quality §3.5 eq. 7), lower is better (↓).

    ``D^(D) = 100/n Σ_i |f(P(x'_i)) - f(P(x_i))| / diam(f)``: the same as :func:`d_score` with the
    clean image purified too (the defense's own shift of the score does not count).

    Args:
        defended_clean: ``[N]`` scores ``f(P(x))``.
        defended_attacked: ``[N]`` scores ``f(P(x'))``.
        bounds: the metric's bounds.

    Returns:
        D^(D) in percent of ``diam(f)``.
    """
    fpx, fpa = to_pair(defended_clean, defended_attacked, "defended_clean", "defended_attacked")
    return float(100.0 * np.abs(fpa - fpx).mean() / to_bounds(bounds).diam)


def abs_gain(clean: Any, attacked: Any, lower_better: bool = False,
             bounds: Optional[BoundsLike] = None) -> float:
    """Absolute gain (Robustness as Architecture §4 eq. 8), lower is more robust (↓).

    ``Abs.Gain = 1/n Σ_i s · (f(x~_i) - f(x_i))`` with ``s = +1`` for higher-better metrics and
    ``s = -1`` for lower-better ones, so a successful attack (which always improves the predicted
    quality) gives a positive gain. With ``bounds`` the gain is min-max normalised by the metric
    range (Robustness as Architecture §4), i.e. divided by ``diam(f)``; without, it is in the metric's own units.

    Args:
        clean: ``[N]`` scores ``f(x)``.
        attacked: ``[N]`` scores ``f(x~)`` of the attacked (optionally defended) images.
        lower_better: the metric's direction (``metric.lower_better``).
        bounds: the metric's bounds, to normalise; ``None`` keeps raw units.

    Returns:
        The signed mean gain (fraction of ``diam`` when ``bounds`` is given).
    """
    fx, fa = to_pair(clean, attacked, "clean", "attacked")
    gain = float(((-1.0 if lower_better else 1.0) * (fa - fx)).mean())
    return gain / to_bounds(bounds).diam if bounds is not None else gain


def _auc(eps: Any, values: Any, values_name: str, eps_unit: float) -> float:
    """Trapezoid area under ``values(ε)`` with ε measured in multiples of ``eps_unit``."""
    e, v = to_pair(eps, values, "eps", values_name)
    if e.size < 2:
        raise ScoreError("eps: an area under the curve needs at least two budgets")
    if not (np.isfinite(eps_unit) and eps_unit > 0):
        raise ScoreError(f"eps_unit: expected a positive number, got {eps_unit!r}")
    if (e < 0).any():
        raise ScoreError(f"eps: budgets must be >= 0, got {e.tolist()}")
    order = np.argsort(e, kind="stable")
    e, v = e[order] / eps_unit, v[order]
    if (np.diff(e) == 0).any():
        raise ScoreError(f"eps: budgets must be distinct, got {(e * eps_unit).tolist()}")
    return float((0.5 * (v[1:] + v[:-1]) * np.diff(e)).sum())


def abs_gain_auc(eps: Any, gains: Any, eps_unit: float = 1.0 / 255.0) -> float:
    """AbsGainAUC (Robustness as Architecture §4): area under the Abs.Gain-vs-ε curve, lower is better (↓).

    Conventions: ``eps`` are L∞ budgets in image units ([0, 1] scale, e.g. ``4/255``); the x axis
    is measured in multiples of ``eps_unit`` (default 1/255, so budgets 2..10/255 span 8 units as
    in Robustness as Architecture). The points are sorted by ε and joined by straight lines (trapezoid rule) from
    the smallest to the largest budget given; the curve is *not* extended to (0, 0): pass
    ``eps=0`` with gain 0 yourself to include that segment.

    Args:
        eps: ``[K]`` distinct budgets >= 0, K >= 2.
        gains: ``[K]`` Abs.Gain values (:func:`abs_gain`, normalised) at those budgets.
        eps_unit: the ε length counted as one unit of the x axis.

    Returns:
        The area, in (gain units) × (ε units).
    """
    return _auc(eps, gains, "gains", eps_unit)


def r_score_auc(eps: Any, rscores: Any, eps_unit: float = 1.0 / 255.0) -> float:
    """R-ScoreAUC (Robustness as Architecture §4): area under the R-vs-ε curve, higher is better (↑).

    Same conventions as :func:`abs_gain_auc` (ε in image units, x axis in multiples of
    ``eps_unit``, trapezoid over the given budgets only). No (0, 0) point is added: R at ε = 0
    is unbounded (no change), so the curve starts at the smallest budget given.

    Args:
        eps: ``[K]`` distinct budgets >= 0, K >= 2.
        rscores: ``[K]`` R-scores (:func:`r_score`) at those budgets.
        eps_unit: the ε length counted as one unit of the x axis.

    Returns:
        The area, in (R units) × (ε units).
    """
    return _auc(eps, rscores, "rscores", eps_unit)
