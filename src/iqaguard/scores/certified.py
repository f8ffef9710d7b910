"""Statistics of certified defenses (Guardians of Image Quality §3.5): Cert.R, Cert.RD and abstentions.

Classification-based smoothing (RS, DRS, DDRS, DensePure) certifies a radius per image or
abstains; regression-based smoothing (MS, DMS) certifies a delta: within an L2 ball of radius ε
the score changes by no more than delta (Guardians of Image Quality appendix A.3.5). A certificate given as an
interval ``[lower, upper]`` around the score has ``delta = max(upper - score, score - lower)``
(:func:`certified_delta`).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import ScoreError
from ..metrics.base import Bounds
from ._arrays import BoundsLike, to_array, to_bounds, to_mask, to_pair


def _kept(abstain: Optional[Any], n: int) -> np.ndarray:
    """Bool mask ``[n]`` of the images that did not abstain; error when none is left."""
    keep = np.ones(n, dtype=bool) if abstain is None else ~to_mask(abstain, "abstain", n)
    if not keep.any():
        raise ScoreError(
            f"abstain: all {n} images abstained, so no certified value exists; "
            "report abstain_rate() (100%) instead"
        )
    return keep


def cert_radius(radii: Any, abstain: Any) -> float:
    """Mean certified radius Cert.R (Guardians of Image Quality §3.5), higher is better (↑).

    The mean is over the images that did not abstain; abstained entries are ignored and may hold
    any value, NaN included.

    Args:
        radii: ``[N]`` certified L2 radii (image units, [0, 1] scale), >= 0 where not abstained.
        abstain: ``[N]`` bool (or 0/1) abstention flags.

    Returns:
        The mean radius over non-abstained images.

    Raises:
        ScoreError: mismatched lengths, NaN or negative radius on a non-abstained image, or every
            image abstained.
    """
    r = to_array(radii, "radii", allow_nan=True)
    keep = _kept(abstain, r.size)
    used = r[keep]
    if not np.isfinite(used).all():
        raise ScoreError("radii: NaN/Inf radius on an image that did not abstain")
    if (used < 0).any():
        raise ScoreError(f"radii: certified radii must be >= 0, got minimum {used.min():.6g}")
    return float(used.mean())


def certified_delta(score: Any, lower: Any, upper: Any) -> np.ndarray:
    """Per-image certified delta of a regression certificate: ``max(upper - score, score - lower)``.

    Seed 002 appendix A.3.5: a regression-based certified method returns the score and a
    certified delta, and "guarantees that, within a l2 ball of radius epsilon, the metric score
    changes by no more than delta". A certificate that bounds the score in ``[lower, upper]``
    (e.g. median smoothing's quantile bounds) guarantees exactly that for the smallest delta
    ``max(upper - score, score - lower)``; it is half the interval width when the interval is
    centred on the score, never the whole width.

    Args:
        score: ``[N]`` certified (smoothed) scores.
        lower: ``[N]`` certified lower bounds, ``<= score``.
        upper: ``[N]`` certified upper bounds, ``>= score``.

    Returns:
        ``[N]`` float64 deltas ``>= 0``.

    Raises:
        ScoreError: NaN/empty/mismatched input, or a score outside its ``[lower, upper]``.
    """
    s, lo = to_pair(score, lower, "score", "lower")
    _, hi = to_pair(score, upper, "score", "upper")
    if (lo > s).any() or (hi < s).any():
        raise ScoreError("score: every certified score must lie in its interval [lower, upper]; "
                         "pass (score, lower, upper) in this order")
    return np.maximum(hi - s, s - lo)


def cert_rel_delta(delta: Any, bounds: BoundsLike, abstain: Optional[Any] = None) -> float:
    """Certified relative delta Cert.RD (Guardians of Image Quality §3.5 and appendix A.3.5).

    ``Cert.RD = mean_i delta_i / diam(f)``: the certified delta (the largest change of the score
    within the L2 ball of radius ε that the certificate allows; :func:`certified_delta` derives
    it from a ``[lower, upper]`` interval) as a fraction of the metric range, averaged over the
    images that did not abstain. Seed 002 A.3.5: "we define the certified relative delta by
    dividing the certified delta by the metric range". Seed 002 prints both ↑ and ↓ for it; a
    smaller delta is a tighter guarantee, so iqaguard reads it as lower-is-better (↓).

    Args:
        delta: ``[N]`` certified deltas ``>= 0`` (metric units).
        bounds: the metric's bounds (``diam(f) = |best - worst|``).
        abstain: optional ``[N]`` abstention flags; abstained images are left out (their delta
            may be NaN).

    Returns:
        The mean relative delta, a fraction of ``diam(f)`` (0 = exact certificate).

    Raises:
        ScoreError: NaN/empty input, negative delta, zero diam, all abstained.
    """
    if isinstance(abstain, Bounds) or (not isinstance(bounds, Bounds) and np.ndim(bounds) == 1
                                         and np.size(bounds) != 2):
        raise ScoreError("bounds: expected Bounds(worst, best); cert_rel_delta takes (delta, bounds), "
                         "get delta from an interval with certified_delta(score, lower, upper)")
    d = to_array(delta, "delta", allow_nan=True)
    diam = to_bounds(bounds).diam
    used = d[_kept(abstain, d.size)]
    if not np.isfinite(used).all():
        raise ScoreError("delta: NaN/Inf certified delta on an image that did not abstain")
    if (used < 0).any():
        raise ScoreError(f"delta: certified deltas must be >= 0, got minimum {used.min():.6g}")
    return float(used.mean() / diam)


def abstain_rate(abstain: Any) -> float:
    """Percentage of abstentions Abst. (Guardians of Image Quality §3.5), lower is better (↓), in [0, 100].

    Args:
        abstain: ``[N]`` bool (or 0/1) abstention flags.
    """
    flags = to_array(abstain, "abstain")
    return float(100.0 * to_mask(flags, "abstain", flags.size).mean())
