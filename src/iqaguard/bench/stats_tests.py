"""Inference over benchmark rows: Wilcoxon win rates with Bonferroni correction (Guardians of Image Quality
appendix A.4, Tables 10 and 15-17), the sampling-validity check of Guardians of Image Quality Table 5:
Kruskal-Wallis (as the paper) and, beside it, the Friedman test that pairs the samplings by
configuration. Percentile-bootstrap confidence intervals of aggregate rows are in
:mod:`iqaguard.bench.bootstrap`.

Why both: every sampling is scored on the same configurations (metric, dataset, attack, preset,
defense, preset, mode), so the samplings' values are *repeated measures*, not independent
samples. Kruskal-Wallis pools them and compares ranks across samplings, so a systematic shift of
one sampling on every configuration hides inside the (much larger) spread between
configurations. Friedman ranks the samplings *within* each configuration (blocks =
configurations, treatments = samplings) and detects exactly such a shift.

Inputs are the same result sources as :mod:`iqaguard.bench.stats`; outputs are JSON-serialisable.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import stats as sps

from .. import scores
from ..errors import InputError
from ..metrics.base import Bounds
from .stats import (BASE_KEY, HIGHER_BETTER, Row, Source, best_presets, group_scores, mode_groups, mode_where,
                    opened)

#: Per-image scores: (anchor column, moved column, score function applied to one image).
PER_IMAGE: Dict[str, Tuple[str, str, Callable[..., float]]] = {
    "d_score": ("clean", "defended_attacked", scores.d_score),
    "d_score_d": ("defended_clean", "defended_attacked", scores.d_score_d),
    "r_score": ("clean", "defended_attacked", scores.r_score),
    "r_score_d": ("defended_clean", "defended_attacked", scores.r_score_d),
}
PER_IMAGE_COLUMNS = ("psnr", "ssim", "mse", "linf")
GROUP_LEVEL = ("srocc_clean", "srocc_adv", "plcc_clean", "plcc_adv")
EXPERIMENT = ("dataset", "metric", "attack", "attack_preset", "seed")
SAMPLING_SCORES = ("d_score", "srocc_adv", "srocc_clean", "ssim")
Subsets = Union[Mapping[str, Sequence[str]], Sequence[Sequence[str]]]
#: Per-sampling values keyed by configuration: ``{score: [{configuration: value}, ...]}``.
Blocks = Mapping[str, Sequence[Mapping[Hashable, float]]]


def per_image(score: str, anchor: Sequence[Optional[float]], moved: Sequence[Optional[float]],
              bounds: Bounds) -> np.ndarray:
    """Per-image values of a :data:`PER_IMAGE` score (the group score is their mean); NaN where missing."""
    fn = PER_IMAGE[score][2]
    return np.array([np.nan if a is None or b is None or not np.isfinite(a) or not np.isfinite(b)
                     else fn([a], [b], bounds) for a, b in zip(anchor, moved)], dtype=np.float64)


def _image_units(source: Source, mode: str, score: str, presets: Mapping[str, str]) -> List[Row]:
    """Per-image values of ``score`` for the chosen (defense, preset) of ``mode``.

    The rows are those of :func:`iqaguard.bench.stats.mode_where` (the baseline on the images
    of the mode's defended rows).
    """
    with opened(source) as con:
        cond, params = mode_where(con, mode)
        cur = con.execute(f"SELECT * FROM results r WHERE {cond} ORDER BY dataset, image", params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    out = []
    for r in rows:
        if presets.get(r["defense"]) != r["defense_preset"]:
            continue
        if score in PER_IMAGE:
            if None in (r["bound_worst"], r["bound_best"]):
                continue
            a, b, _ = PER_IMAGE[score]
            value = per_image(score, [r[a]], [r[b]], Bounds(r["bound_worst"], r["bound_best"]))[0]
        else:
            value = r[score]
        if value is not None and np.isfinite(value):
            out.append(dict({c: r[c] for c in EXPERIMENT + ("image", "defense")}, value=float(value)))
    return out


def _one_sided(a: np.ndarray, b: np.ndarray, higher_better: bool) -> Tuple[float, float]:
    """One-sided Wilcoxon signed-rank test of "a better than b" on paired samples.

    ``scipy.stats.wilcoxon(a, b, alternative=...)`` with its defaults (zero differences dropped,
    exact/normal method chosen by scipy); all-zero differences give p = 1 (no evidence).
    """
    if not np.any(a - b):
        return 0.0, 1.0
    res = sps.wilcoxon(a, b, alternative="greater" if higher_better else "less")
    return float(res.statistic), float(res.pvalue)


def win_rate_matrix(source: Source, mode: str, score: str = "d_score", alpha: float = 0.05,
                    within: Optional[Sequence[str]] = None, presets: Optional[Mapping[str, str]] = None,
                    groups: Optional[Sequence[Row]] = None) -> Dict[str, Any]:
    """Pairwise one-sided Wilcoxon signed-rank tests with Bonferroni correction (Guardians of Image Quality A.4).

    Samples: per-image values for :data:`PER_IMAGE` scores and fidelity columns, paired by
    (dataset, metric, attack, attack_preset, seed, image); per-group values (one per dataset,
    metric, attack, attack_preset, seed) for the correlation scores, which have no per-image value.
    Each defense enters at one preset (default: :func:`~iqaguard.bench.stats.best_presets`); the
    baseline's rows are those on the images of the mode's defended rows
    (:func:`~iqaguard.bench.stats.mode_where`). ``groups``: precomputed
    :func:`~iqaguard.bench.stats.mode_groups`.

    An *experiment* is one value of the ``within`` columns (default: dataset, metric, attack,
    attack_preset, seed for per-image scores, as Table 10 counts "the percentage of experiments";
    ``()`` for group-level scores, i.e. one pooled test). For every experiment and ordered pair (A, B),
    A != B, with at least one paired sample, the test asks whether A is better than B (lower for
    D_score/MSE/L-inf, higher otherwise). The Bonferroni family is every test performed, so
    ``bonferroni_factor = n_tests`` (``n_defenses*(n_defenses-1)*n_experiments`` when all pairs
    are testable): ``p_adjusted = min(1, p * n_tests)``; significant when ``p_adjusted < alpha``.

    Returns:
        ``defenses`` (row/column order), ``presets``, ``experiments`` (list of ``within`` dicts),
        ``n_tests`` = ``bonferroni_factor``, ``p_raw``/``p_adjusted``/``significant`` as
        ``[A][B][experiment]`` (``None`` = untested), ``win_fraction[A][B]`` = fraction of tested
        experiments where A significantly beats B (the Table 10 cell), and ``win_rate[A]`` = mean
        of A's row over its opponents (= fraction of opponents beaten with one experiment).
    """
    higher = _direction(score)
    presets = dict(presets) if presets is not None else best_presets(source, mode, "srocc_adv", groups)
    unit_key = EXPERIMENT if score in GROUP_LEVEL else EXPERIMENT + ("image",)
    within = tuple(within) if within is not None else (() if score in GROUP_LEVEL else EXPERIMENT)
    if not set(within) <= set(unit_key):
        raise InputError(f"within: expected columns among {unit_key}, got {list(within)}")
    if score in GROUP_LEVEL:
        units = [dict({c: g[c] for c in EXPERIMENT + ("defense",)}, value=g[score])
                 for g in mode_groups(source, mode, groups)
                 if presets.get(g["defense"]) == g["defense_preset"] and g[score] is not None]
    else:
        units = _image_units(source, mode, score, presets)
    data: Dict[tuple, Dict[str, Dict[tuple, float]]] = {}
    for u in units:
        exp = tuple(u[c] for c in within)
        data.setdefault(exp, {}).setdefault(u["defense"], {})[tuple(u[c] for c in unit_key)] = u["value"]
    defenses = sorted({u["defense"] for u in units})
    experiments = sorted(data, key=lambda t: tuple(str(v) for v in t))
    n, e = len(defenses), len(experiments)
    p_raw: List[List[List[Optional[float]]]] = [[[None] * e for _ in range(n)] for _ in range(n)]
    for k, exp in enumerate(experiments):
        per = data[exp]
        for i, da in enumerate(defenses):
            for j, db in enumerate(defenses):
                common = sorted(set(per.get(da, {})) & set(per.get(db, {})), key=str) if i != j else []
                if common:
                    a = np.array([per[da][u] for u in common])
                    b = np.array([per[db][u] for u in common])
                    p_raw[i][j][k] = _one_sided(a, b, higher)[1]
    m = sum(p is not None for row in p_raw for cell in row for p in cell)
    p_adj = [[[None if p is None else min(1.0, p * m) for p in cell] for cell in row] for row in p_raw]
    sig = [[[None if p is None else bool(p < alpha) for p in cell] for cell in row] for row in p_adj]
    frac = [[_fraction(cell) for cell in row] for row in sig]
    rates = {}
    for i, d in enumerate(defenses):
        vals = [frac[i][j] for j in range(n) if j != i and frac[i][j] is not None]
        rates[d] = float(np.mean(vals)) if vals else None
    return {"mode": mode, "score": score, "higher_better": higher, "alpha": alpha, "within": list(within),
            "defenses": defenses, "presets": {d: presets[d] for d in defenses},
            "experiments": [dict(zip(within, exp)) for exp in experiments], "n_tests": m,
            "bonferroni_factor": m, "p_raw": p_raw, "p_adjusted": p_adj, "significant": sig,
            "win_fraction": frac, "win_rate": rates}


def _direction(score: str) -> bool:
    if score not in PER_IMAGE and score not in PER_IMAGE_COLUMNS and score not in GROUP_LEVEL:
        raise InputError(f"score: expected one of {sorted(PER_IMAGE) + list(PER_IMAGE_COLUMNS + GROUP_LEVEL)}, "
                         f"got {score!r}")
    return HIGHER_BETTER[score]


def _fraction(flags: Sequence[Optional[bool]]) -> Optional[float]:
    tested = [f for f in flags if f is not None]
    return float(np.mean(tested)) if tested else None


def kruskal_table(samples: Mapping[str, Sequence[Sequence[float]]]) -> List[Row]:
    """Guardians of Image Quality Table 5 from per-sampling value lists.

    Args:
        samples: ``{score: [values of sampling 1, values of sampling 2, ...]}``.

    Returns:
        Per score: ``n_samplings``, ``mean`` (mean of the per-sampling means), ``variance_of_means``
        (sample variance, ddof=1, of those means), and ``statistic``/``p_value`` of
        ``scipy.stats.kruskal`` over the samplings (``None`` when undefined: fewer than two
        non-empty samplings or all values equal).
    """
    out = []
    for name, groups in samples.items():
        arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
        means = np.array([a.mean() for a in arrays])
        stat = p = None
        if len(arrays) >= 2 and np.ptp(np.concatenate(arrays)) > 0:
            res = sps.kruskal(*arrays)
            stat, p = float(res.statistic), float(res.pvalue)
        out.append({"score": name, "n_samplings": len(arrays),
                    "mean": float(means.mean()) if len(means) else None,
                    "variance_of_means": float(means.var(ddof=1)) if len(means) >= 2 else None,
                    "statistic": stat, "p_value": p})
    return out


def friedman_table(blocks: Blocks) -> List[Row]:
    """Friedman test of the samplings, blocked by configuration (the paired check beside Table 5).

    Args:
        blocks: ``{score: [values of sampling 1, values of sampling 2, ...]}``, each sampling's
            values a ``{configuration: value}`` mapping.

    Returns:
        Per score: ``n_samplings``, ``n_blocks`` (configurations with a value in every sampling:
        only complete blocks enter) and ``friedman_statistic``/``friedman_p_value`` of
        ``scipy.stats.friedmanchisquare`` with the samplings as treatments and the complete
        configurations as blocks (``None`` when undefined: fewer than three samplings, fewer than
        two complete blocks, or every block tied).
    """
    out = []
    for name, samplings in blocks.items():
        samplings = [s for s in samplings if len(s)]
        common = set.intersection(*(set(s) for s in samplings)) if samplings else set()
        keys = sorted(common, key=lambda k: tuple(str(v) for v in (k if isinstance(k, tuple) else (k,))))
        stat = p = None
        if len(samplings) >= 3 and len(keys) >= 2:
            table = np.array([[float(s[k]) for k in keys] for s in samplings])
            if np.ptp(table, axis=0).any():
                res = sps.friedmanchisquare(*table)
                if np.isfinite(res.statistic):
                    stat, p = float(res.statistic), float(res.pvalue)
        out.append({"score": name, "n_samplings": len(samplings), "n_blocks": len(keys),
                    "friedman_statistic": stat, "friedman_p_value": p})
    return out


def sampling_blocks(source: Source, subsets: Optional[Subsets] = None, columns: Sequence[str] = SAMPLING_SCORES,
                    where: Optional[Mapping[str, Any]] = None) -> Dict[str, List[Dict[tuple, float]]]:
    """Per-sampling group scores keyed by configuration (see :func:`sampling_values`).

    The configuration of a group is its key without the sampling: (metric, dataset, attack,
    attack_preset, defense, defense_preset, mode) when the samplings are the store's seeds, the
    whole group key (seed included) when they are ``subsets`` of image names.

    Returns:
        ``{score: [{configuration: value} per sampling]}``, undefined (``None``) values left out.
    """
    if subsets is None:
        rows = group_scores(source, where=where)
        samplings = [[r for r in rows if r["seed"] == s] for s in sorted({r["seed"] for r in rows})]
        config = tuple(c for c in BASE_KEY if c != "seed")
    else:
        named = subsets.values() if isinstance(subsets, Mapping) else subsets
        samplings = [group_scores(source, where=dict(where or {}, image=list(names))) for names in named]
        config = BASE_KEY
    return {c: [{tuple(r[k] for k in config): r[c] for r in rows if r[c] is not None} for rows in samplings]
            for c in columns}


def sampling_values(source: Source, subsets: Optional[Subsets] = None, columns: Sequence[str] = SAMPLING_SCORES,
                    where: Optional[Mapping[str, Any]] = None) -> Dict[str, List[List[float]]]:
    """Per-sampling distributions of group scores (Guardians of Image Quality Figure 6, one box per sampling).

    A sampling's values are its group scores (one per metric, dataset, attack, preset, defense,
    preset, mode: "for each IQA model, attack and defense method, we calculated four scores per
    sample") that are defined. Samplings are the ``subsets`` of image names or, when ``None``, the
    store's seeds (the runner draws one KMeans subset per seed).
    """
    blocks = sampling_blocks(source, subsets, columns, where)
    return {c: [list(s.values()) for s in per] for c, per in blocks.items()}


def sampling_validity(source: Source, subsets: Optional[Subsets] = None,
                      columns: Sequence[str] = SAMPLING_SCORES,
                      where: Optional[Mapping[str, Any]] = None) -> List[Row]:
    """Guardians of Image Quality Table 5: Kruskal-Wallis over repeated samplings of the images, and Friedman.

    Kruskal-Wallis (``statistic``/``p_value``, as Guardians of Image Quality) treats the samplings as independent
    samples; the samplings share their configurations, so a shift of one sampling on every
    configuration can pass it unnoticed. The Friedman test (``friedman_statistic``/
    ``friedman_p_value``, blocks = configurations, treatments = samplings, :func:`friedman_table`)
    pairs them and is the one to trust: a small Friedman p-value means that some sampling
    systematically scores differently from the others on the same configurations.

    Args:
        source: connection, Store or path holding the rows of every sampling's images.
        subsets: the samplings as lists of image names (the store's ``image`` column), e.g. from
            :func:`iqaguard.data.sampling.repeated_subsets` (indices):
            ``[[ds[i].name for i in s] for s in subsets]``; ``None``: one sampling per seed (a
            spec with ``seeds: [0, ..., 9]`` and an unseeded KMeans subset gives Table 5's 10).
        columns: group score columns to test (default D_score, SROCC_adv, SROCC_clear, SSIM).
        where: extra row filter (e.g. ``{"mode": "non-adaptive", "dataset": "koniq10k"}``).

    Returns:
        Per score, the :func:`kruskal_table` row (``n_samplings``, ``mean``, ``variance_of_means``,
        ``statistic``, ``p_value``) merged with the :func:`friedman_table` row (``n_blocks``,
        ``friedman_statistic``, ``friedman_p_value``).
    """
    unknown = [s for s in columns if s not in HIGHER_BETTER]
    if unknown:
        raise InputError(f"columns: unknown score(s) {unknown}; expected among {list(HIGHER_BETTER)}")
    blocks = sampling_blocks(source, subsets, columns, where)
    kw = kruskal_table({c: [list(s.values()) for s in per] for c, per in blocks.items()})
    fr = {r["score"]: r for r in friedman_table(blocks)}
    return [dict(r, **{k: v for k, v in fr[r["score"]].items() if k not in ("score", "n_samplings")}) for r in kw]


__all__ = ["friedman_table", "kruskal_table", "per_image", "sampling_blocks",
           "sampling_validity", "sampling_values", "win_rate_matrix"]
