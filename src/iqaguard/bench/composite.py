"""A composite ranking of the defenses with bootstrap confidence intervals.

Guardians of Image Quality ranks defenses one criterion at a time (Table 2) and names a
principled composite ranking as future work (appendix A.1.3). The composite here is the mean
of four criteria, each rescaled over the ranked defenses of one leaderboard (best = 1, worst = 0):

* robustness: D_score^(D) (eq. 7, lower is better) and R_score (eq. 5, higher is better);
* correlation with MOS: SROCC on clean images (eq. 8) and on attacked images (eq. 9).

Min-max rescaling makes the criteria commensurable (each spans [0, 1] over the same defenses),
and equal weights give robustness and accuracy equal say — the two sides of Figure 3a's
trade-off. The rescaling and the ranks are recomputed inside every bootstrap resample, on the
aligned resamples of :func:`iqaguard.bench.bootstrap.resampled_aggregates` (the same images drawn
for every defense on the same images), so each defense gets a percentile interval of its
composite score *and* of its rank. A criterion no resample can compute for a defense (e.g. a
dataset without MOS) is left out of that defense's mean; a leaderboard row that is not ranked
(n < 10) is not ranked here either.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .bootstrap import BOOTSTRAP_CONFIDENCE, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, percentiles, resampled_aggregates
from .stats import HIGHER_BETTER, Row, Source, rankable

#: criteria of the composite (each oriented by :data:`iqaguard.bench.stats.HIGHER_BETTER`)
CRITERIA = ("d_score_d", "r_score", "srocc_clean", "srocc_adv")


def _scaled(values: np.ndarray, higher: bool) -> np.ndarray:
    """``[R, B]`` values rescaled per resample over the rows to [0, 1], 1 = best (0.5 when all tie)."""
    v = values if higher else -values
    filled = np.isfinite(v).any(axis=0, keepdims=True)  # a resample where no row has the criterion stays NaN
    lo = np.where(filled, np.nanmin(np.where(np.isfinite(v), v, np.inf), axis=0, keepdims=True), np.nan)
    hi = np.where(filled, np.nanmax(np.where(np.isfinite(v), v, -np.inf), axis=0, keepdims=True), np.nan)
    span = hi - lo
    return np.where(span > 0, (v - lo) / np.where(span > 0, span, 1.0), 0.5)


def composite_scores(values: np.ndarray) -> np.ndarray:
    """``[R, B]`` composite of ``[R, C, B]`` criterion values (columns ordered as :data:`CRITERIA`)."""
    scaled = np.stack([_scaled(values[:, c, :], HIGHER_BETTER[k]) for c, k in enumerate(CRITERIA)], axis=1)
    scaled = np.where(np.isfinite(values), scaled, np.nan)
    ok = np.isfinite(scaled).any(axis=1)
    return np.where(ok, np.nansum(np.nan_to_num(scaled, nan=0.0), axis=1) / np.maximum(np.isfinite(scaled).sum(1), 1),
                    np.nan)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """``[R, B]`` ranks (1 = best; ties share the best rank) of ``[R, B]`` scores, NaN last."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    return 1 + (s[None, :, :] > s[:, None, :]).sum(axis=1)


def composite_ranking(source: Source, mode: str, board: Sequence[Row], n_resamples: int = BOOTSTRAP_RESAMPLES,
                      confidence: float = BOOTSTRAP_CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                      groups: Optional[Sequence[Row]] = None) -> List[Dict[str, Any]]:
    """The composite ranking of a leaderboard's ranked rows (see the module docstring).

    Args:
        source: connection, Store or path.
        mode: the leaderboard's mode.
        board: rows of :func:`iqaguard.bench.stats.leaderboard` (the undefended baseline included).
        n_resamples, confidence, seed: the bootstrap (as :func:`iqaguard.bench.bootstrap.aggregate_intervals`).
        groups: precomputed :func:`iqaguard.bench.stats.mode_groups`.

    Returns:
        Rows ``{"defense", "defense_preset", "composite", "composite_ci", "rank", "rank_ci",
        "criteria": {criterion: rescaled point value}}``, best composite first (``[]`` with fewer
        than two ranked rows).
    """
    rows = [r for r in board if all(r.get(k) is None or rankable(r, k) for k in CRITERIA) and r.get("rank") is not None]
    if len(rows) < 2:
        return []
    point = np.array([[[np.nan if r.get(k) is None else float(r[k])] for k in CRITERIA] for r in rows])
    reps = resampled_aggregates(source, mode, rows, columns=CRITERIA, n_resamples=n_resamples, seed=seed,
                                groups=groups)
    values = np.array([[m[k] for k in CRITERIA] for m in reps])  # [R, C, B]
    est = composite_scores(point)[:, 0]
    comp = composite_scores(values)
    ranks = _ranks(comp)
    est_rank = _ranks(est[:, None])[:, 0]
    q = percentiles(confidence)
    scaled_point = np.stack([_scaled(point[:, c, :], HIGHER_BETTER[k]) for c, k in enumerate(CRITERIA)], axis=1)
    out = []
    for i, r in enumerate(rows):
        c = comp[i][np.isfinite(comp[i])]
        out.append({"defense": r["defense"], "defense_preset": r["defense_preset"],
                    "composite": None if not np.isfinite(est[i]) else float(est[i]),
                    "composite_ci": [float(v) for v in np.percentile(c, q)] if c.size else None,
                    "rank": int(est_rank[i]),
                    "rank_ci": [int(v) for v in np.percentile(ranks[i][np.isfinite(comp[i])], q, method="nearest")]
                    if c.size else None,
                    "criteria": {k: (None if not np.isfinite(point[i, j, 0]) else float(scaled_point[i, j, 0]))
                                 for j, k in enumerate(CRITERIA)},
                    "ci_level": float(confidence), "ci_resamples": int(n_resamples)})
    out.sort(key=lambda r: (r["rank"], str(r["defense"])))
    return out
