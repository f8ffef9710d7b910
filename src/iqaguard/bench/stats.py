"""Benchmark statistics as queries over the result rows (Guardians of Image Quality §3.5, §4, Table 2, Figures 2-3).

Every function takes a result source (a ``duckdb`` connection, a :class:`~iqaguard.bench.store.Store`
or anything with a ``.con`` connection, or the path of a ``.duckdb`` file) and returns plain,
JSON-serialisable lists/dicts. Rows are grouped in SQL; the per-group formulas are the ones of
:mod:`iqaguard.scores` (SROCC/PLCC eqs. 8-9, R_score eq. 5, D_score eqs. 6-7).

A *group* is one (metric, dataset, attack, attack preset, defense, defense preset, mode, seed)
cell: correlations with MOS are only meaningful within one metric and one dataset (and one image
subset: the runner draws a subset per seed), so every aggregate is a mean of group values
(Guardians of Image Quality Table 2: "averaged for all images, attacks, IQA models").
Hypothesis tests (Wilcoxon, Kruskal-Wallis) live in :mod:`iqaguard.bench.stats_tests`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import duckdb
import numpy as np

from .. import scores
from ..errors import ScoreError
from ..metrics.base import Bounds

TABLE = "results"
BASE_KEY = ("metric", "dataset", "attack", "attack_preset", "defense", "defense_preset", "mode", "seed")
MODES = ("non-adaptive", "adaptive")
BASELINE = "none"
#: Group score columns and whether higher is better (Guardians of Image Quality Table 2 arrows).
HIGHER_BETTER: Dict[str, bool] = {
    "srocc_clean": True, "srocc_adv": True, "plcc_clean": True, "plcc_adv": True,
    "d_score": False, "d_score_d": False, "r_score": True, "r_score_d": True,
    "psnr": True, "ssim": True, "mse": False, "linf": False, "time_s": False,
}
SCORE_COLUMNS = tuple(HIGHER_BETTER)
BREAKDOWN_BY = ("metric", "attack", "attack_preset", "dataset")
_FIDELITY = {"psnr": "psnr", "ssim": "ssim", "mse": "mse", "linf": "linf", "time_s": "t_defense"}
_LISTS = ("mos", "clean", "defended_clean", "defended_attacked")

Source = Any  # duckdb connection | object with ``.con`` | path of a .duckdb file
Row = Dict[str, Any]


@contextlib.contextmanager
def opened(source: Source) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection for ``source``; a connection opened here from a path is closed after.

    Args:
        source: a ``duckdb`` connection, an object with a ``.con`` connection (``Store``) or a path.

    Raises:
        FileNotFoundError: the path does not exist.
        InputError: the path is not an iqaguard store.
        TypeError: anything else.
    """
    if isinstance(source, duckdb.DuckDBPyConnection):
        yield source
        return
    con = getattr(source, "con", None)
    if isinstance(con, duckdb.DuckDBPyConnection):
        yield con
        return
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source: expected a duckdb connection, a Store or a path, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"source: no result store at {path}")
    from .store import connect  # checks that it is an iqaguard store; extension auto-install off

    try:
        con = connect(path, read_only=True)
    except duckdb.ConnectionException:  # already open read-write in this process
        con = connect(path, read_only=False)
    try:
        yield con
    finally:
        con.close()


def table_columns(con: duckdb.DuckDBPyConnection) -> List[str]:
    """Column names of the results table."""
    return [r[0] for r in con.execute(f"DESCRIBE {TABLE}").fetchall()]


def where_sql(con: duckdb.DuckDBPyConnection, where: Optional[Mapping[str, Any]]) -> Tuple[str, List[Any]]:
    """``WHERE`` clause and parameters for ``{column: value | [values] | None}`` (AND of equalities).

    Raises:
        ValueError: a column that is not in the results table.
    """
    cols, parts, params = set(table_columns(con)), [], []
    for name, value in (where or {}).items():
        if name not in cols:
            raise ValueError(f"where: unknown column {name!r}; the store has {sorted(cols)}")
        if value is None:
            parts.append(f'"{name}" IS NULL')
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = list(value)
            parts.append(f'"{name}" IN ({", ".join("?" for _ in values)})' if values else "FALSE")
            params.extend(values)
        else:
            parts.append(f'"{name}" = ?')
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _finite(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _safe(fn: Callable[..., float], *args: Any) -> Optional[float]:
    """``fn(*args)`` or ``None`` when the score is undefined (too few images, constant input)."""
    try:
        return float(fn(*args))
    except ScoreError:
        return None


def _group_formulas(r: Row) -> Row:
    """Seed 002 Table 2 scores of one group from its per-image lists (``r`` = one SQL row)."""
    mos, clean, dc, da = (_finite(r.pop(c)) for c in _LISTS)
    out: Row = {}
    has_mos = np.isfinite(mos)
    out["n_mos"] = int(has_mos.sum())
    sign = -1.0 if r.pop("lower_better") else 1.0
    for name, pred in (("clean", dc), ("adv", da)):
        ok = has_mos & np.isfinite(pred)
        for corr, fn in (("srocc", scores.srocc), ("plcc", scores.plcc)):
            value = _safe(fn, pred[ok], mos[ok]) if ok.sum() >= 2 else None
            out[f"{corr}_{name}"] = None if value is None else sign * value
    lo_w, hi_w, lo_b, hi_b = r.pop("bw_min"), r.pop("bw_max"), r.pop("bb_min"), r.pop("bb_max")
    if lo_w != hi_w or lo_b != hi_b:
        raise ValueError(f"bounds differ inside group {[r[k] for k in BASE_KEY]}: worst {lo_w}..{hi_w}, "
                         f"best {lo_b}..{hi_b}; one metric must have one Bounds")
    bounds = None if lo_w is None or lo_b is None else Bounds(float(lo_w), float(lo_b))
    for name, fn, anchor in (("d_score", scores.d_score, clean), ("d_score_d", scores.d_score_d, dc),
                             ("r_score", scores.r_score, clean), ("r_score_d", scores.r_score_d, dc)):
        ok = np.isfinite(anchor) & np.isfinite(da)
        out[name] = _safe(fn, anchor[ok], da[ok], bounds) if bounds is not None and ok.any() else None
    return out


def group_scores(source: Source, by: Sequence[str] = (), where: Optional[Mapping[str, Any]] = None) -> List[Row]:
    """Seed 002 Table 2 columns per group of rows.

    Groups are always at least (metric, dataset, attack, attack_preset, defense, defense_preset,
    mode, seed); ``by`` adds columns (e.g. ``image`` or a sampling id). Per group: ``n`` rows, ``n_mos``
    rows with MOS, ``srocc_clean``/``plcc_clean`` (f(P(x)) vs MOS, eq. 8), ``srocc_adv``/``plcc_adv``
    (f(P(x')) vs MOS, eq. 9), ``d_score`` (eq. 6), ``d_score_d`` (eq. 7), ``r_score`` (eq. 5),
    ``r_score_d`` (eq. 5 with P on x too), means of ``psnr``, ``ssim``, ``mse``, ``linf`` (P(x') vs
    x) and ``time_s`` (mean ``t_defense``, seconds per image). Correlations use the rows that have a
    MOS and are ``None`` with fewer than two such rows (e.g. NIPS 2017) or constant input. They are
    *oriented*: negated for ``lower_better`` metrics (e.g. LPIPS against MOS), so that higher
    always means better agreement and means over metrics of both directions make sense.

    Args:
        source: connection, Store or path.
        by: extra grouping columns.
        where: ``{column: value | [values] | None}`` row filter.

    Returns:
        One dict per group, ordered by the group key.
    """
    with opened(source) as con:
        cols = set(table_columns(con))
        key = list(BASE_KEY) + [c for c in by if c not in BASE_KEY]
        unknown = [c for c in key if c not in cols]
        if unknown:
            raise ValueError(f"by: unknown column(s) {unknown}; the store has {sorted(cols)}")
        w, params = where_sql(con, where)
        k = ", ".join(f'"{c}"' for c in key)
        lists = ", ".join(f"list({c} ORDER BY dataset, image) AS {c}" for c in _LISTS)
        means = ", ".join(f"avg({col}) AS {name}" for name, col in _FIDELITY.items())
        cur = con.execute(
            f"SELECT {k}, count(*) AS n, {lists}, min(bound_worst) AS bw_min, max(bound_worst) AS bw_max, "
            f"min(bound_best) AS bb_min, max(bound_best) AS bb_max, bool_or(lower_better) AS lower_better, {means} "
            f"FROM {TABLE}{w} GROUP BY {k} ORDER BY {k}", params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    out = []
    for r in rows:
        scored = _group_formulas(r)
        out.append({**{c: r[c] for c in key}, "n": int(r["n"]), **scored,
                    **{c: (None if r[c] is None else float(r[c])) for c in _FIDELITY}})
    return out


def average_groups(groups: Sequence[Row], by: Sequence[str]) -> List[Row]:
    """Mean of every score column over the groups sharing ``by`` (``None`` values skipped).

    Returns:
        One dict per ``by`` value: the ``by`` columns, ``n`` (rows), ``n_groups`` and the means.
    """
    buckets: Dict[tuple, List[Row]] = {}
    for g in groups:
        buckets.setdefault(tuple(g[c] for c in by), []).append(g)
    out = []
    for key in sorted(buckets, key=lambda t: tuple("" if v is None else str(v) for v in t)):
        members = buckets[key]
        row: Row = dict(zip(by, key))
        row["n"] = int(sum(g["n"] for g in members))
        row["n_groups"] = len(members)
        for col in SCORE_COLUMNS:
            vals = [g[col] for g in members if g.get(col) is not None]
            row[col] = float(np.mean(vals)) if vals else None
        out.append(row)
    return out


def mode_groups(source: Source, mode: str, groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Groups of one mode; the undefended baseline falls back to its non-adaptive rows.

    Without a defense there is nothing to adapt to, so Guardians of Image Quality Table 2 reports one baseline for
    both modes ("66.68/66.68"). When a store holds the ``none`` rows only under ``non-adaptive``,
    they are reused (relabelled) for the adaptive mode.

    Args:
        source: connection, Store or path (unused when ``groups`` is given).
        mode: ``"non-adaptive"`` or ``"adaptive"``.
        groups: precomputed :func:`group_scores` of all modes, to skip the query.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if groups is None:
        groups = group_scores(source, where={"mode": list(MODES)})
    own = [g for g in groups if g["mode"] == mode]
    if mode != MODES[0] and own and not any(g["defense"] == BASELINE for g in own):
        own += [dict(g, mode=mode) for g in groups if g["mode"] == MODES[0] and g["defense"] == BASELINE]
    return own


def defense_table(source: Source, mode: str, groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Seed 002 Table 2 per (defense, defense preset): group scores averaged over metrics,
    datasets, attacks, attack presets and seeds, for one mode.

    Returns:
        One dict per (defense, defense_preset) with ``mode`` and the :data:`SCORE_COLUMNS` means.
    """
    rows = average_groups(mode_groups(source, mode, groups), ("defense", "defense_preset"))
    return [dict(r, mode=mode) for r in rows]


def _rank_key(row: Row, key: str) -> tuple:
    """Sort key: best ``key`` first, ``None`` last, ties by lower D_score^(D) then preset name."""
    v, tie = row.get(key), row.get("d_score_d")
    sign = -1.0 if HIGHER_BETTER[key] else 1.0
    return (v is None, sign * v if v is not None else 0.0, tie is None, tie if tie is not None else 0.0,
            str(row["defense_preset"]))


def best_presets(source: Source, mode: str, key: str = "srocc_adv",
                 groups: Optional[Sequence[Row]] = None) -> Dict[str, str]:
    """Best preset per defense by ``key`` (Guardians of Image Quality §4: "we report the results of defenses with a
    hyperparameter set that provides the best SROCC_adv"; the same rule picks Figure 2's red dots).

    Defenses whose ``key`` is ``None`` everywhere (no MOS) fall back to the lowest D_score^(D).

    Returns:
        ``{defense: defense_preset}``.
    """
    if key not in HIGHER_BETTER:
        raise ValueError(f"key: expected one of {SCORE_COLUMNS}, got {key!r}")
    best: Dict[str, Row] = {}
    for row in defense_table(source, mode, groups):
        cur = best.get(row["defense"])
        if cur is None or _rank_key(row, key) < _rank_key(cur, key):
            best[row["defense"]] = row
    return {d: r["defense_preset"] for d, r in sorted(best.items())}


def leaderboard(source: Source, mode: str, key: str = "srocc_adv", preset_from: Optional[str] = None,
                groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """One :func:`defense_table` row per defense at its best preset, best ``key`` first.

    Args:
        source: connection, Store or path.
        mode: the mode whose scores are shown.
        key: score that selects the preset and orders the rows.
        preset_from: mode whose best preset is used (default ``mode``); e.g. ``"non-adaptive"``
            shows adaptive scores at the non-adaptive choice. A defense without that preset in
            ``mode`` falls back to its best preset in ``mode``.
        groups: precomputed :func:`group_scores` of all modes.

    Returns:
        Rows with ``selected_by`` (= ``key``) and ``preset_mode``.
    """
    if groups is None:
        groups = group_scores(source, where={"mode": list(MODES)})
    table = defense_table(source, mode, groups)
    own = best_presets(source, mode, key, groups)
    chosen = best_presets(source, preset_from, key, groups) if preset_from else own
    out = []
    for defense, fallback in own.items():
        rows = {r["defense_preset"]: r for r in table if r["defense"] == defense}
        preset = chosen.get(defense, fallback)
        used = preset_from if preset in rows and preset_from else mode
        out.append(dict(rows.get(preset, rows[fallback]), selected_by=key, preset_mode=used))
    return sorted(out, key=lambda r: _rank_key(r, key))


def breakdown(source: Source, by: str, mode: Optional[str] = None,
              groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Scores per ``by`` value (Guardians of Image Quality Figure 3b per dataset, Table 11 per attack strength).

    Args:
        source: connection, Store or path.
        by: one of ``metric``, ``attack``, ``attack_preset``, ``dataset``.
        mode: restrict to one mode (baseline fallback as in :func:`mode_groups`); ``None`` = both.
        groups: precomputed :func:`group_scores` of all modes.

    Returns:
        One dict per (``by`` value, mode, defense, defense_preset).
    """
    if by not in BREAKDOWN_BY:
        raise ValueError(f"by: expected one of {BREAKDOWN_BY}, got {by!r}")
    if groups is None:
        groups = group_scores(source, where={"mode": list(MODES)})
    selected = mode_groups(source, mode, groups) if mode else list(groups)
    return average_groups(selected, (by, "mode", "defense", "defense_preset"))


def pareto_front(points: Sequence[Row], x: str = "d_score_d", y: str = "srocc_adv") -> List[Row]:
    """Flag the non-dominated points: minimise ``x``, maximise ``y`` (Guardians of Image Quality Figure 3a).

    A point is dominated when another has ``x`` <= and ``y`` >= with at least one strict. Points
    missing ``x`` or ``y`` are never on the front.

    Returns:
        Copies of ``points`` (same order) with ``pareto: bool``.
    """
    valid = [(p[x], p[y]) for p in points if p.get(x) is not None and p.get(y) is not None]
    out = []
    for p in points:
        px, py = p.get(x), p.get(y)
        on = px is not None and py is not None and not any(
            qx <= px and qy >= py and (qx < px or qy > py) for qx, qy in valid)
        out.append(dict(p, pareto=bool(on)))
    return out
