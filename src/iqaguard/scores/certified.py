"""Statistics of certified defenses (seed 002 §3.5): Cert.R, Cert.RD and abstentions.

Classification-based smoothing (RS, DRS, DDRS, DensePure) certifies a radius per image or
abstains; regression-based smoothing (MS, DMS) certifies an interval ``[lower, upper]`` of the
score within an L2 ball of radius ε.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import ScoreError
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
    """Mean certified radius Cert.R (seed 002 §3.5), higher is better (↑).

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


def cert_rel_delta(lower: Any, upper: Any, bounds: BoundsLike, abstain: Optional[Any] = None) -> float:
    """Certified relative delta Cert.RD (seed 002 §3.5 and appendix A.3.5).

    ``Cert.RD = mean_i (upper_i - lower_i) / diam(f)``: the width of the certified score interval
    (the certified delta) as a fraction of the metric range, averaged over non-abstained images.
    Seed 002 prints both ↑ and ↓ for it; a narrower certified interval is a tighter guarantee, so
    iqaguard reads it as lower-is-better (↓).

    Args:
        lower: ``[N]`` certified lower score bounds.
        upper: ``[N]`` certified upper score bounds, ``>= lower``.
        bounds: the metric's bounds.
        abstain: optional ``[N]`` abstention flags; abstained images are left out.

    Returns:
        The mean relative delta, a fraction of ``diam(f)`` (0 = exact certificate).

    Raises:
        ScoreError: NaN/empty/mismatched input, ``upper < lower``, zero diam, all abstained.
    """
    lo, hi = to_pair(lower, upper, "lower", "upper")
    diam = to_bounds(bounds).diam
    keep = _kept(abstain, lo.size)
    width = hi[keep] - lo[keep]
    if (width < 0).any():
        raise ScoreError("upper: every certified upper bound must be >= its lower bound")
    return float(width.mean() / diam)


def abstain_rate(abstain: Any) -> float:
    """Percentage of abstentions Abst. (seed 002 §3.5), lower is better (↓), in [0, 100].

    Args:
        abstain: ``[N]`` bool (or 0/1) abstention flags.
    """
    flags = to_array(abstain, "abstain")
    return float(100.0 * to_mask(flags, "abstain", flags.size).mean())
