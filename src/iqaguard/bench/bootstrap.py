"""Percentile-bootstrap confidence intervals of aggregate benchmark rows (:func:`aggregate_intervals`).

An aggregate is a mean of group statistics, so each resample draws the images of every group with
replacement, recomputes each group statistic and their mean; the interval is the percentile
interval of those means. Groups on the same images (the same subset under several metrics,
attacks and presets) share the draw, as ``scipy.stats.bootstrap(..., paired=True)`` does; groups
on different images are drawn independently, as it does with ``paired=False``. Sharing matters:
those groups' statistics move together, and drawing them independently would average their noise
away and give intervals too narrow to hold the estimate. Resampling is vectorised (one ``[B, n]``
index array per image set, counts and ranks computed for all resamples at once) and seeded with
``numpy.random.default_rng``, so a report is reproducible.

Inputs are the same result sources as :mod:`iqaguard.bench.stats`; per-image scores are those of
:data:`iqaguard.bench.stats_tests.PER_IMAGE`; outputs are JSON-serialisable.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..metrics.base import Bounds
from .stats import (BASE_KEY, FIDELITY, HIGHER_BETTER, SCORE_COLUMNS, Row, Source, mode_groups, mode_where, opened,
                    usable_groups)
from .stats_tests import PER_IMAGE, per_image

#: Bootstrap defaults of the report: resamples, confidence level, seed of ``numpy.random.default_rng``.
BOOTSTRAP_RESAMPLES, BOOTSTRAP_CONFIDENCE, BOOTSTRAP_SEED = 1000, 0.95, 0
_IMAGE_FIELDS = ("mos", "clean", "defended_clean", "defended_attacked") + tuple(FIDELITY.values())


def _resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[B, k]`` means of the ``[n, k]`` per-image ``values`` in every resample, NaNs skipped (NaN
    where a resample has none); ``counts[b, i]`` = times image ``i`` is drawn in resample ``b``."""
    ok = np.isfinite(values)
    total, count = counts @ np.where(ok, values, 0.0), counts @ ok.astype(np.float64)
    return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``[B, n]`` arrays (NaN for a constant row)."""
    xm, ym = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xm * xm).sum(axis=1) * (ym * ym).sum(axis=1))
    return np.where(den > 0, (xm * ym).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _row_counts(labels: np.ndarray, m: int) -> np.ndarray:
    """``[B, m]``: how often each label ``0..m-1`` occurs in each row of the ``[B, n]`` ``labels``."""
    b = labels.shape[0]
    return np.bincount((np.arange(b)[:, None] * m + labels).ravel(), minlength=b * m).reshape(b, m)


def _resampled_ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank, as ``scipy.stats.rankdata``) of every resample
    ``x[idx[b]]``, from per-resample counts of the distinct values: ``O(B n)``, no sort per row."""
    values, cls = np.unique(x, return_inverse=True)
    cls = cls[idx]
    counts = _row_counts(cls, values.size)
    return np.take_along_axis(np.cumsum(counts, axis=1) - (counts - 1) / 2.0, cls, axis=1)


def _interval(means: np.ndarray, q: np.ndarray, estimate: Optional[float]) -> Optional[List[float]]:
    """Percentile interval of the resampled means; a bound that differs from the point estimate
    by rounding only (a constant column: SQL and numpy sum in different orders) is the estimate."""
    if not means.size:
        return None
    bounds = [float(v) for v in np.percentile(means, q)]
    if estimate is not None:
        bounds = [estimate if np.isclose(b, estimate, rtol=1e-9, atol=1e-12) else b for b in bounds]
    return bounds


class _Draws:
    """``draw(images, n)``: the ``[B, n]`` resampling indices of an image set, drawn on first use from
    one seeded generator and reused for every group on the same images."""

    def __init__(self, seed: int, n_resamples: int) -> None:
        self.rng, self.n_resamples, self.cache = np.random.default_rng(seed), n_resamples, {}

    def __call__(self, images: Hashable, n: int) -> np.ndarray:
        if images not in self.cache:
            self.cache[images] = self.rng.integers(0, n, size=(self.n_resamples, n))
        return self.cache[images]


def _group_resamples(data: Mapping[str, Any], draw: Callable[[Hashable, int], np.ndarray],
                     n_resamples: int) -> Dict[str, np.ndarray]:
    """``{column: [B] values}`` of one group's statistics on ``B`` resamples of its images.

    ``draw(key, n)`` gives the ``[B, n]`` index array of an image set (the same array for every
    group on the same images); it serves every column; a correlation uses the images with a MOS
    and a score (their own draw when that is not every image).
    """
    images = (data["dataset"], data["images"])
    n = len(data["images"])
    idx = draw(images, n)
    counts = _row_counts(idx, n).astype(np.float64)
    names = list(FIDELITY) + list(PER_IMAGE)
    bounds = data["bounds"]
    columns = [data[col] for col in FIDELITY.values()]
    columns += [per_image(score, data[anchor], data[moved], bounds) if bounds is not None else np.full(n, np.nan)
                for score, (anchor, moved, _) in PER_IMAGE.items()]
    out = dict(zip(names, _resampled_means(np.stack(columns, axis=1), counts).T))
    for name, pred in (("clean", "defended_clean"), ("adv", "defended_attacked")):
        ok = np.isfinite(data["mos"]) & np.isfinite(data[pred])
        k = int(ok.sum())
        if k < 2:
            out[f"srocc_{name}"] = out[f"plcc_{name}"] = np.full(n_resamples, np.nan)
            continue
        sel = idx if k == n else draw(images + (ok.tobytes(),), k)
        x, y = data[pred][ok], data["mos"][ok]
        out[f"plcc_{name}"] = data["sign"] * _pearson_rows(x[sel], y[sel])
        out[f"srocc_{name}"] = data["sign"] * _pearson_rows(_resampled_ranks(x, sel), _resampled_ranks(y, sel))
    return out


def _column(cur: Any, name: str) -> np.ndarray:
    """A fetched numpy column as float64 with NaN for SQL NULL."""
    col = cur[name]
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def _per_image_data(source: Source, mode: str, pairs: Sequence[Tuple[Any, Any]]) -> Dict[tuple, Dict[str, Any]]:
    """Per-image arrays of the groups of ``mode`` whose (defense, defense_preset) is in ``pairs``,
    keyed by the group key (mode relabelled as in :func:`~iqaguard.bench.stats.mode_groups`)."""
    if not pairs:
        return {}
    key = ", ".join(BASE_KEY)
    with opened(source) as con:
        cond, params = mode_where(con, mode)
        keep = " OR ".join("(defense = ? AND defense_preset = ?)" for _ in pairs)
        cols = ", ".join(BASE_KEY + ("image", "bound_worst", "bound_best", "lower_better") + _IMAGE_FIELDS)
        data = con.execute(f"SELECT {cols} FROM results r WHERE ({cond}) AND ({keep}) ORDER BY {key}, dataset, image",
                           params + [v for p in pairs for v in p]).fetchnumpy()
    keys = [np.asarray(np.ma.filled(np.ma.asarray(data[c]).astype(object), None)) for c in BASE_KEY]
    n = len(keys[0])
    change = np.zeros(max(n - 1, 0), dtype=bool)
    for k in keys:
        change |= k[1:] != k[:-1]
    starts = [0] + [int(i) + 1 for i in np.flatnonzero(change)] + [n]
    names = np.asarray(data["image"], dtype=object)
    values = {c: _column(data, c) for c in _IMAGE_FIELDS + ("bound_worst", "bound_best")}
    lower = np.ma.filled(np.ma.asarray(data["lower_better"]).astype(bool), False)
    out: Dict[tuple, Dict[str, Any]] = {}
    for a, b in zip(starts, starts[1:]):
        group = tuple(mode if c == "mode" else k[a] for c, k in zip(BASE_KEY, keys))
        worst, best = values["bound_worst"][a], values["bound_best"][a]
        out[group] = {**{c: values[c][a:b] for c in _IMAGE_FIELDS}, "sign": -1.0 if lower[a:b].any() else 1.0,
                      "dataset": group[BASE_KEY.index("dataset")], "images": tuple(names[a:b]),
                      "bounds": Bounds(float(worst), float(best)) if np.isfinite(worst) and np.isfinite(best)
                      else None}
    return out


def resampled_aggregates(source: Source, mode: str, rows: Sequence[Row],
                         by: Sequence[str] = ("defense", "defense_preset"), columns: Sequence[str] = SCORE_COLUMNS,
                         n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                         groups: Optional[Sequence[Row]] = None) -> List[Dict[str, np.ndarray]]:
    """``[{column: [B] resampled means}]``, one dict per row of ``rows`` (NaN where a resample
    leaves every group of the row undefined); see :func:`aggregate_intervals` for the resampling.

    Resample ``b`` of every row draws the same images wherever rows rest on the same image sets
    (each row restarts ``numpy.random.default_rng(seed)``), so statistics of several rows computed
    per resample (the composite ranking of :mod:`iqaguard.bench.composite`) are paired.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"n_resamples: expected an integer >= 1, got {n_resamples!r}")
    unknown = [c for c in columns if c not in HIGHER_BETTER]
    if unknown:
        raise InputError(f"columns: unknown score(s) {unknown}; expected among {list(SCORE_COLUMNS)}")
    members = mode_groups(source, mode, groups)
    wanted = {tuple(r[c] for c in by) for r in rows}
    members = [g for g in members if tuple(g[c] for c in by) in wanted]
    data = _per_image_data(source, mode, sorted({(g["defense"], g["defense_preset"]) for g in members}, key=str))
    out = []
    for row in rows:
        mine = sorted((g for g in members if all(g[c] == row[c] for c in by)),
                      key=lambda g: tuple(str(g[c]) for c in BASE_KEY))
        draw = _Draws(seed, int(n_resamples))
        reps = {id(g): _group_resamples(data[tuple(g[c] for c in BASE_KEY)], draw, int(n_resamples)) for g in mine}
        means: Dict[str, np.ndarray] = {}
        for col in columns:
            used, _ = usable_groups(mine, col)
            stack = np.array([reps[id(g)][col] for g in used]).reshape(len(used), int(n_resamples))
            ok = np.isfinite(stack)
            count = ok.sum(axis=0)
            means[col] = np.where(count > 0, np.where(ok, stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
        out.append(means)
    return out


def aggregate_intervals(source: Source, mode: str, rows: Sequence[Row],
                        by: Sequence[str] = ("defense", "defense_preset"), columns: Sequence[str] = SCORE_COLUMNS,
                        n_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = BOOTSTRAP_CONFIDENCE,
                        seed: int = BOOTSTRAP_SEED, groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Percentile-bootstrap confidence intervals of aggregate rows (means of group statistics).

    For each row (e.g. of :func:`~iqaguard.bench.stats.leaderboard` or
    :func:`~iqaguard.bench.stats.defense_table`) its groups are the groups of ``mode`` that share
    its ``by`` values; each column averages the groups :func:`~iqaguard.bench.stats.usable_groups`
    picks for the point estimate. A resample draws every group's images with replacement,
    recomputes each group statistic (correlations with average ranks for ties, oriented like the
    point estimate) and their mean; resamples where every group is undefined (e.g. a constant
    resample for a correlation) are dropped. The images are the sampled unit: groups on the same
    images (one dataset's subset under every metric, attack and preset) share one draw per
    resample, groups on different images are drawn independently. The interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled means. Each
    row uses a fresh ``numpy.random.default_rng(seed)``, so its interval does not depend on the
    other rows.

    Args:
        source: connection, Store or path.
        mode: the mode of ``rows``.
        rows: aggregate rows carrying the ``by`` columns.
        by: columns that identify a row's groups.
        columns: score columns to bootstrap.
        n_resamples: resamples ``B`` (>= 1).
        confidence: interval level in (0, 1).
        seed: seed of the resampling generator.
        groups: precomputed :func:`~iqaguard.bench.stats.mode_groups`.

    Returns:
        Copies of ``rows`` with ``ci`` (``{column: [low, high] | None}``), ``ci_level`` and
        ``ci_resamples``.
    """
    if not 0.0 < float(confidence) < 1.0:
        raise InputError(f"confidence: expected a level in (0, 1), e.g. 0.95, got {confidence!r}")
    reps = resampled_aggregates(source, mode, rows, by, columns, n_resamples, seed, groups)
    q = percentiles(confidence)
    out = []
    for row, means in zip(rows, reps):
        ci = {col: _interval(m[np.isfinite(m)], q, row.get(col)) for col, m in means.items()}
        out.append(dict(row, ci=ci, ci_level=float(confidence), ci_resamples=int(n_resamples)))
    return out


def percentiles(confidence: float) -> np.ndarray:
    """The two percentiles (0..100) of a central ``confidence`` interval."""
    return 100.0 * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])


__all__ = ["BOOTSTRAP_CONFIDENCE", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "aggregate_intervals", "percentiles",
           "resampled_aggregates"]
