"""Benchmark statistics as queries over the result rows (Guardians of Image Quality §3.5, §4, Table 2, Figures 2-3).

Every function takes a result source (a ``duckdb`` connection, a :class:`~iqaguard.bench.store.Store`
or anything with a ``.con`` connection, or the path of a ``.duckdb`` file) and returns plain,
JSON-serialisable lists/dicts. Rows are grouped in SQL; the per-group formulas are the ones of
:mod:`iqaguard.scores` (SROCC/PLCC eqs. 8-9, R_score eq. 5, D_score eqs. 6-7).

A *group* is one (metric, dataset, attack, attack preset, defense, defense preset, mode, seed)
cell: correlations with MOS are only meaningful within one metric and one dataset (and one image
subset: the runner draws a subset per seed), so every aggregate is a mean of group values
(Guardians of Image Quality Table 2: "averaged for all images, attacks, IQA models").

Honest aggregates:

* every row carries ``n`` (distinct images behind it) and ``n_groups`` (groups averaged; 1 for a
  group), and aggregates carry ``support[column]`` (images, groups and smallest group of the mean);
* a correlation computed from fewer than :data:`MIN_N_CORRELATION` images is kept but flagged in
  the row's ``low_n`` list. A mean of group correlations averages the groups that have at least
  that many images; when none has, it is the mean of all groups, flagged. Any other score resting
  on fewer than that many images is flagged too. Flagged values are never ranked (:func:`rankable`:
  best preset, leaderboard order, Pareto front);
* rows are compared on the same images: the undefended baseline of a mode is computed on exactly
  the (dataset, image, metric, attack, attack preset, seed) keys of that mode's defended rows
  (:func:`mode_groups`).

Hypothesis tests (Wilcoxon, Kruskal-Wallis) live in :mod:`iqaguard.bench.stats_tests`, bootstrap
intervals in :mod:`iqaguard.bench.bootstrap`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import duckdb
import numpy as np

from .. import scores
from ..errors import InputError, ScoreError
from ..metrics.base import Bounds

TABLE = "results"
BASE_KEY = ("metric", "dataset", "attack", "attack_preset", "defense", "defense_preset", "mode", "seed")
MODES = ("non-adaptive", "adaptive")
BASELINE = "none"
#: Fewest images a value may rest on to be ranked (correlations of fewer are greyed, "n < 10: not ranked").
MIN_N_CORRELATION = 10
#: Columns that identify one image of one comparison: a baseline row stands in for a defended
#: row only on the same key.
SAME_IMAGE = ("dataset", "image", "metric", "attack", "attack_preset", "seed")
#: Group score columns and whether higher is better (Guardians of Image Quality Table 2 arrows).
HIGHER_BETTER: Dict[str, bool] = {
    "srocc_clean": True, "srocc_adv": True, "plcc_clean": True, "plcc_adv": True,
    "d_score": False, "d_score_d": False, "r_score": True, "r_score_d": True,
    "psnr": True, "ssim": True, "mse": False, "linf": False, "time_s": False,
}
SCORE_COLUMNS = tuple(HIGHER_BETTER)
#: Correlation column -> the group field counting the images it is computed from.
CORRELATION_N = {"srocc_clean": "n_clean", "plcc_clean": "n_clean", "srocc_adv": "n_adv", "plcc_adv": "n_adv"}
BREAKDOWN_BY = ("metric", "attack", "attack_preset", "dataset")
#: Mean columns of a group -> the per-image results column they average.
FIDELITY = {"psnr": "psnr", "ssim": "ssim", "mse": "mse", "linf": "linf", "time_s": "t_defense"}
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
        InputError: a column that is not in the results table.
    """
    cols, parts, params = set(table_columns(con)), [], []
    for name, value in (where or {}).items():
        if name not in cols:
            raise InputError(f"where: unknown column {name!r}; the store has {sorted(cols)}")
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


def check_mode(mode: str) -> str:
    """``mode`` itself, or an :class:`InputError` naming the valid modes."""
    if mode not in MODES:
        raise InputError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode


def mode_where(con: duckdb.DuckDBPyConnection, mode: str) -> Tuple[str, List[Any]]:
    """SQL condition on ``results`` aliased ``r`` (and its parameters) selecting the rows of ``mode``'s groups.

    The defended rows of ``mode`` and the undefended baseline rows, restricted to the
    :data:`SAME_IMAGE` keys of those defended rows (all baseline rows when the mode has no defended
    row). Without a defense there is nothing to adapt to, so Guardians of Image Quality Table 2
    reports one baseline for both modes ("66.68/66.68"): a mode without baseline rows of its own
    uses the non-adaptive ones, on the images of its defended rows only (e.g. the few images an
    adaptive attack ran on). A mode without rows selects nothing.
    """
    counts = dict(con.execute(f"SELECT defense = ?, count(*) FROM {TABLE} WHERE mode = ? GROUP BY 1",
                              [BASELINE, check_mode(mode)]).fetchall())
    defended, own_baseline = counts.get(False, 0) > 0, counts.get(True, 0) > 0
    if not (defended or own_baseline):
        return "FALSE", []
    source = mode if own_baseline else MODES[0]
    baseline, params = "r.mode = ? AND r.defense = ?", [source, BASELINE]
    if defended:
        same = " AND ".join(f"d.{c} IS NOT DISTINCT FROM r.{c}" for c in SAME_IMAGE)
        baseline += f" AND EXISTS (SELECT 1 FROM {TABLE} d WHERE d.mode = ? AND d.defense <> ? AND {same})"
        params += [mode, BASELINE]
    return f"(r.mode = ? AND r.defense <> ?) OR ({baseline})", [mode, BASELINE] + params


def _finite(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _safe(fn: Callable[..., float], *args: Any) -> Optional[float]:
    """``fn(*args)`` or ``None`` when the score is undefined (too few images, constant input)."""
    try:
        return float(fn(*args))
    except ScoreError:
        return None


def _group_formulas(r: Row) -> Row:
    """Guardians of Image Quality Table 2 scores of one group from its per-image lists (``r`` = one SQL row)."""
    mos, clean, dc, da = (_finite(r.pop(c)) for c in _LISTS)
    out: Row = {}
    has_mos = np.isfinite(mos)
    out["n_mos"] = int(has_mos.sum())
    sign = -1.0 if r.pop("lower_better") else 1.0
    for name, pred in (("clean", dc), ("adv", da)):
        ok = has_mos & np.isfinite(pred)
        out[f"n_{name}"] = int(ok.sum())
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


def images_behind(group: Row, column: str) -> int:
    """Images one group's ``column`` is computed from (with MOS for correlations, else all ``n``)."""
    return int(group.get(CORRELATION_N.get(column, "n"), group["n"]))


def _image_set(groups: Sequence[Row]) -> set:
    return set().union(*(g["image_ids"] for g in groups))


def _grouped(con: duckdb.DuckDBPyConnection, key: Sequence[str], where: str, params: List[Any]) -> List[Row]:
    """Group rows (see :func:`group_scores`) of the results rows selected by ``where``."""
    k = ", ".join(f'"{c}"' for c in key)
    lists = ", ".join(f"list({c} ORDER BY dataset, image) AS {c}" for c in _LISTS)
    means = ", ".join(f"avg({col}) AS {name}" for name, col in FIDELITY.items())
    cur = con.execute(
        f"SELECT {k}, count(*) AS n, {lists}, list(hash(dataset, image) ORDER BY dataset, image) AS image_ids, "
        f"min(bound_worst) AS bw_min, max(bound_worst) AS bw_max, min(bound_best) AS bb_min, "
        f"max(bound_best) AS bb_max, bool_or(lower_better) AS lower_better, {means} "
        f"FROM {TABLE} r{where} GROUP BY {k} ORDER BY {k}", params)
    names = [d[0] for d in cur.description]
    out = []
    for r in (dict(zip(names, row)) for row in cur.fetchall()):
        g = {**{c: r[c] for c in key}, "n": int(r["n"]), "n_groups": 1, **_group_formulas(r),
             **{c: (None if r[c] is None else float(r[c])) for c in FIDELITY}, "image_ids": r["image_ids"]}
        g["low_n"] = [c for c in SCORE_COLUMNS if g[c] is not None and images_behind(g, c) < MIN_N_CORRELATION]
        out.append(g)
    return out


def group_scores(source: Source, by: Sequence[str] = (), where: Optional[Mapping[str, Any]] = None) -> List[Row]:
    """Guardians of Image Quality Table 2 columns per group of rows.

    Groups are always at least (metric, dataset, attack, attack_preset, defense, defense_preset,
    mode, seed); ``by`` adds columns (e.g. ``image`` or a sampling id). Per group: ``n`` images
    (rows), ``n_groups`` = 1, ``n_mos`` images with MOS, ``n_clean``/``n_adv`` images the
    clean/adversarial correlations are computed from, ``srocc_clean``/``plcc_clean`` (f(P(x)) vs
    MOS, eq. 8), ``srocc_adv``/``plcc_adv`` (f(P(x')) vs MOS, eq. 9), ``d_score`` (eq. 6),
    ``d_score_d`` (eq. 7), ``r_score`` (eq. 5), ``r_score_d`` (eq. 5 with P on x too), means of
    ``psnr``, ``ssim``, ``mse``, ``linf`` (P(x') vs x) and ``time_s`` (mean ``t_defense``, seconds
    per image), ``image_ids`` (hashes of the (dataset, image) pairs, to count distinct images over
    groups) and ``low_n`` (the columns resting on fewer than :data:`MIN_N_CORRELATION` images).
    Correlations use the rows that have a MOS and are ``None`` with fewer than two such rows (e.g.
    NIPS 2017) or constant input. They are *oriented*: negated for ``lower_better`` metrics (e.g.
    LPIPS against MOS), so that higher always means better agreement and means over metrics of
    both directions make sense.

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
            raise InputError(f"by: unknown column(s) {unknown}; the store has {sorted(cols)}")
        w, params = where_sql(con, where)
        return _grouped(con, key, w, params)


def usable_groups(groups: Sequence[Row], column: str) -> Tuple[List[Row], bool]:
    """The groups whose ``column`` enters a mean, and whether that mean rests on too few images.

    Correlations: the groups computed from at least :data:`MIN_N_CORRELATION` images; when there
    is none, every group with a value, flagged. Other columns: every group with a value, flagged
    when they hold fewer than :data:`MIN_N_CORRELATION` distinct images.
    """
    defined = [g for g in groups if g.get(column) is not None]
    if column in CORRELATION_N:
        enough = [g for g in defined if images_behind(g, column) >= MIN_N_CORRELATION]
        return (enough, False) if enough else (defined, bool(defined))
    return defined, bool(defined) and len(_image_set(defined)) < MIN_N_CORRELATION


def average_groups(groups: Sequence[Row], by: Sequence[str]) -> List[Row]:
    """Mean of every score column over the groups sharing ``by`` (see :func:`usable_groups`).

    Args:
        groups: rows of :func:`group_scores` or :func:`mode_groups`.
        by: the columns that identify one output row.

    Returns:
        One dict per ``by`` value: the ``by`` columns, ``n`` (distinct images), ``n_rows``,
        ``n_groups``, the means, ``support`` (per column: ``n`` distinct images, ``n_groups`` and
        ``min_n``, the images of the smallest group, of the groups averaged) and ``low_n``.
    """
    buckets: Dict[tuple, List[Row]] = {}
    for g in groups:
        buckets.setdefault(tuple(g[c] for c in by), []).append(g)
    out = []
    for key in sorted(buckets, key=lambda t: tuple("" if v is None else str(v) for v in t)):
        members = buckets[key]
        row: Row = dict(zip(by, key))
        row.update(n=len(_image_set(members)), n_rows=int(sum(g["n"] for g in members)), n_groups=len(members))
        support, low = {}, []
        for col in SCORE_COLUMNS:
            used, flagged = usable_groups(members, col)
            row[col] = float(np.mean([g[col] for g in used])) if used else None
            support[col] = {"n": len(_image_set(used)), "n_groups": len(used),
                            "min_n": min((images_behind(g, col) for g in used), default=0)}
            if flagged:
                low.append(col)
        row["support"], row["low_n"] = support, low
        out.append(row)
    return out


def mode_groups(source: Source, mode: Optional[str] = None, groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Groups of one mode (both when ``mode`` is ``None``), the baseline on the same images.

    The rows are those of :func:`mode_where`; baseline groups taken from another mode are
    relabelled with ``mode``. E.g. an adaptive attack run on 2 of 50 images gets an adaptive
    baseline computed on those 2 images, not on the 50 non-adaptive ones.

    Args:
        source: connection, Store or path (unused when ``groups`` is given).
        mode: ``"non-adaptive"``, ``"adaptive"`` or ``None`` for both.
        groups: precomputed ``mode_groups(source)`` to select ``mode`` from, skipping the query.
    """
    modes = MODES if mode is None else (check_mode(mode),)
    if groups is not None:
        return [g for g in groups if g["mode"] in modes]
    out: List[Row] = []
    with opened(source) as con:
        for m in modes:
            cond, params = mode_where(con, m)
            out += [dict(g, mode=m) for g in _grouped(con, BASE_KEY, f" WHERE {cond}", params)]
    return out


def defense_table(source: Source, mode: str, groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Guardians of Image Quality Table 2 per (defense, defense preset): group scores averaged over
    metrics, datasets, attacks, attack presets and seeds, for one mode.

    Args:
        groups: precomputed :func:`mode_groups` (both modes or this one).

    Returns:
        One :func:`average_groups` dict per (defense, defense_preset) with ``mode``.
    """
    rows = average_groups(mode_groups(source, mode, groups), ("defense", "defense_preset"))
    return [dict(r, mode=mode) for r in rows]


def rankable(row: Row, key: str) -> bool:
    """Whether ``row`` may be ranked by ``key``: the value exists and is not in ``low_n``.

    A row without ``key`` (no MOS, e.g. NIPS 2017) is ranked by its D_score^(D) under the same rule.
    """
    col = key if row.get(key) is not None else "d_score_d"
    return row.get(col) is not None and col not in row.get("low_n", ())


def _rank_key(row: Row, key: str) -> tuple:
    """Sort key: rankable rows first, best ``key`` first, ``None`` last, ties by lower D_score^(D)
    then preset name."""
    v, tie = row.get(key), row.get("d_score_d")
    sign = -1.0 if HIGHER_BETTER[key] else 1.0
    return (not rankable(row, key), v is None, sign * v if v is not None else 0.0, tie is None,
            tie if tie is not None else 0.0, str(row["defense_preset"]))


def _best(table: Sequence[Row], key: str) -> Dict[str, Row]:
    best: Dict[str, Row] = {}
    for row in table:
        cur = best.get(row["defense"])
        if cur is None or _rank_key(row, key) < _rank_key(cur, key):
            best[row["defense"]] = row
    return dict(sorted(best.items()))


def best_presets(source: Source, mode: str, key: str = "srocc_adv", groups: Optional[Sequence[Row]] = None,
                 ranked_only: bool = False) -> Dict[str, str]:
    """Best preset per defense by ``key`` (Guardians of Image Quality §4: "we report the results of
    defenses with a hyperparameter set that provides the best SROCC_adv"; the same rule picks
    Figure 2's red dots).

    Only :func:`rankable` presets compete while a defense has one; a defense with none gets its
    best flagged preset (or, with ``ranked_only``, is left out). Defenses whose ``key`` is
    ``None`` everywhere (no MOS) fall back to the lowest D_score^(D).

    Returns:
        ``{defense: defense_preset}``.
    """
    if key not in HIGHER_BETTER:
        raise InputError(f"key: expected one of {SCORE_COLUMNS}, got {key!r}")
    best = _best(defense_table(source, mode, groups), key)
    return {d: r["defense_preset"] for d, r in best.items() if not ranked_only or rankable(r, key)}


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
        groups: precomputed :func:`mode_groups` of both modes.

    Returns:
        Rows with ``selected_by`` (= ``key``), ``preset_mode`` and ``rank`` (1 = best; ``None`` for
        a row that is not :func:`rankable`, listed after the ranked ones).
    """
    if key not in HIGHER_BETTER:
        raise InputError(f"key: expected one of {SCORE_COLUMNS}, got {key!r}")
    if groups is None:
        groups = mode_groups(source)
    table = defense_table(source, mode, groups)
    own = {d: r["defense_preset"] for d, r in _best(table, key).items()}
    chosen = best_presets(source, preset_from, key, groups) if preset_from else own
    out = []
    for defense, fallback in own.items():
        rows = {r["defense_preset"]: r for r in table if r["defense"] == defense}
        preset = chosen.get(defense, fallback)
        used = preset_from if preset in rows and preset_from else mode
        out.append(dict(rows.get(preset, rows[fallback]), selected_by=key, preset_mode=used))
    out.sort(key=lambda r: _rank_key(r, key))
    ranks = iter(range(1, len(out) + 1))
    return [dict(r, rank=next(ranks) if rankable(r, key) else None) for r in out]


def breakdown(source: Source, by: str, mode: Optional[str] = None,
              groups: Optional[Sequence[Row]] = None) -> List[Row]:
    """Scores per ``by`` value (Guardians of Image Quality Figure 3b per dataset, Table 11 per attack strength).

    Args:
        source: connection, Store or path.
        by: one of ``metric``, ``attack``, ``attack_preset``, ``dataset``.
        mode: restrict to one mode; ``None`` = both (baselines on the same images as in :func:`mode_groups`).
        groups: precomputed :func:`mode_groups` of both modes.

    Returns:
        One :func:`average_groups` dict per (``by`` value, mode, defense, defense_preset).
    """
    if by not in BREAKDOWN_BY:
        raise InputError(f"by: expected one of {BREAKDOWN_BY}, got {by!r}")
    return average_groups(mode_groups(source, mode, groups), (by, "mode", "defense", "defense_preset"))


def pareto_front(points: Sequence[Row], x: str = "d_score_d", y: str = "srocc_adv") -> List[Row]:
    """Flag the non-dominated points: minimise ``x``, maximise ``y`` (Guardians of Image Quality Figure 3a).

    A point is dominated when another has ``x`` <= and ``y`` >= with at least one strict. Points
    missing ``x`` or ``y``, or with either in their ``low_n`` list (fewer than
    :data:`MIN_N_CORRELATION` images), are never on the front and dominate nothing.

    Returns:
        Copies of ``points`` (same order) with ``pareto: bool``.
    """
    def usable(p: Row) -> bool:
        return p.get(x) is not None and p.get(y) is not None and not {x, y} & set(p.get("low_n", ()))

    valid = [(p[x], p[y]) for p in points if usable(p)]
    out = []
    for p in points:
        on = usable(p) and not any(qx <= p[x] and qy >= p[y] and (qx < p[x] or qy > p[y]) for qx, qy in valid)
        out.append(dict(p, pareto=bool(on)))
    return out
