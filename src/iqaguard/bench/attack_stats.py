"""Attack-side statistics of a result store: robustness curves, the worst-case ensemble, transfer.

Three views the defense tables of :mod:`iqaguard.bench.stats` do not give, each computed from the
stored rows only (no attack is re-run):

* :func:`robustness_curves` — per (metric, dataset, attack, defense preset, mode) the Abs.Gain and
  R-score of every attack preset against the preset's stored budget ``eps`` (the ``attack_params``
  column), and the areas under both curves: AbsGainAUC and R-ScoreAUC of *Robustness as
  Architecture: Designing IQA Models to Withstand Adversarial Perturbations* (§4, eqs. 8-9, PGD at
  several ε). The model evaluated is ``f∘P``: Abs.Gain is ``s·(f(P(x~)) − f(P(x)))/diam`` and the
  R-score is :func:`iqaguard.scores.r_score_d` of the same pair, so an undefended row is the bare
  metric's.
* :func:`worst_case` — per image, the strongest attack of the spec at one preset name (the
  presets are aligned by budget, *Guardians of Image Quality* A.3.4): the ensemble AutoAttack
  reports for classifiers, here for quality metrics. Only images every attack of the set ran on
  count, so the ensemble is never weaker than its members on the images it is compared on.
* :func:`transfer_matrix` — mean gain of adversarial images crafted on metric A and scored by
  metric B (the store's ``transfer`` table; the diagonal is the white-box ``results`` rows),
  undefended and under every defense preset: the transfer study *Guardians of Image Quality*
  A.1.2 names as future work.

Gains are normalised by the scored metric's range (``diam``) and signed so that positive means
"the attack raised the predicted quality"; ``raised`` is the fraction of images with a positive
gain. Every row carries ``n`` (images behind it) and ``low_n`` (the values resting on fewer than
:data:`~iqaguard.bench.stats.MIN_N_CORRELATION` images).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import duckdb
import numpy as np

from .. import scores
from ..errors import ScoreError
from ..metrics.base import Bounds
from .stats import BASELINE, MIN_N_CORRELATION, Row, Source, check_mode, opened

#: the parameter whose stored value is the x axis of a robustness curve (an L∞ or L2 budget)
BUDGET_PARAM = "eps"
#: name of the worst-case pseudo-attack in report rows
WORST_CASE = "worst-case"


def _columns(con: Any, table: str) -> set:
    try:
        return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    except duckdb.CatalogException:  # an older store without the table
        return set()


def _gain(lower_better: bool, worst: float, best: float, before: float, after: float) -> float:
    """``s · (after − before) / diam``: positive when the predicted quality rose."""
    diam = abs(float(best) - float(worst)) or 1e-12
    return (-1.0 if lower_better else 1.0) * (float(after) - float(before)) / diam


def _low_n(row: Row, columns: Sequence[str]) -> Row:
    row["low_n"] = [c for c in columns if row.get(c) is not None and row["n"] < MIN_N_CORRELATION]
    row.setdefault("n_groups", 1)
    return row


def _r_score_d(dc: Sequence[float], da: Sequence[float], worst: float, best: float) -> Optional[float]:
    try:
        return float(scores.r_score_d(np.asarray(dc, dtype=np.float64), np.asarray(da, dtype=np.float64),
                                      Bounds(float(worst), float(best))))
    except ScoreError:
        return None


def robustness_curves(source: Source, mode: str = "non-adaptive") -> List[Row]:
    """AbsGainAUC and R-ScoreAUC per (metric, dataset, attack, defense, defense_preset) of ``mode``.

    Returns:
        One dict per curve: the key columns, ``points`` (per attack preset: ``preset``, ``eps``,
        ``n``, ``abs_gain``, ``r_score``), ``abs_gain_auc`` / ``r_score_auc`` (``None`` with fewer
        than two distinct budgets, e.g. one preset, or for attacks without an ``eps``), ``n`` (the
        fewest images of a point) and ``low_n``. Stores written before ``attack_params`` existed
        give no curve.
    """
    check_mode(mode)
    with opened(source) as con:
        if "attack_params" not in _columns(con, "results"):
            return []
        rows = con.execute(
            "SELECT metric, dataset, attack, defense, defense_preset, attack_preset, attack_params, "
            "list(defended_clean ORDER BY dataset, image, seed), list(defended_attacked ORDER BY dataset, image, seed), "
            "min(bound_worst), min(bound_best), bool_or(lower_better), count(*) "
            "FROM results WHERE mode = ? AND attack_params IS NOT NULL "
            "GROUP BY metric, dataset, attack, defense, defense_preset, attack_preset, attack_params "
            "ORDER BY metric, dataset, attack, defense, defense_preset, attack_preset", [mode]).fetchall()
    curves: Dict[tuple, List[Dict[str, Any]]] = {}
    for metric, dataset, attack, defense, dpreset, preset, params, dc, da, worst, best, lower, n in rows:
        eps = json.loads(params).get(BUDGET_PARAM)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool):
            continue
        gains = [_gain(lower, worst, best, c, a) for c, a in zip(dc, da)]
        curves.setdefault((metric, dataset, attack, defense, dpreset), []).append(
            {"preset": preset, "eps": float(eps), "n": int(n), "abs_gain": float(np.mean(gains)),
             "r_score": _r_score_d(dc, da, worst, best)})
    out = []
    for (metric, dataset, attack, defense, dpreset), points in curves.items():
        points.sort(key=lambda p: p["eps"])
        distinct = len({p["eps"] for p in points}) == len(points) >= 2
        auc = distinct and all(p["r_score"] is not None for p in points)
        row: Row = {"metric": metric, "dataset": dataset, "attack": attack, "defense": defense,
                    "defense_preset": dpreset, "mode": mode, "points": points, "n": min(p["n"] for p in points),
                    "abs_gain_auc": scores.abs_gain_auc([p["eps"] for p in points], [p["abs_gain"] for p in points])
                    if distinct else None,
                    "r_score_auc": scores.r_score_auc([p["eps"] for p in points], [p["r_score"] for p in points])
                    if auc else None}
        out.append(_low_n(row, ("abs_gain_auc", "r_score_auc")))
    return out


def worst_case(source: Source, mode: str = "non-adaptive", attacks: Optional[Sequence[str]] = None) -> List[Row]:
    """The per-image strongest attack at each attack preset name (a worst-case ensemble).

    Args:
        source: connection, Store or path.
        mode: ``"non-adaptive"`` or ``"adaptive"``.
        attacks: the ensemble's members (default: every attack of the store that ran in ``mode``
            at that preset).

    Returns:
        One dict per (metric, dataset, attack_preset, defense, defense_preset): ``attacks`` (the
        members), ``n`` (images every member ran on), ``gain`` (mean over images of the largest
        gain), ``raised`` (fraction of those images the ensemble raised), ``r_score_d`` (of the
        worst-case images), ``best_single`` / ``best_single_gain`` (the member with the highest
        mean gain on the same images), ``wins`` (member -> images where it was the strongest) and
        ``low_n``.
    """
    check_mode(mode)
    with opened(source) as con:
        rows = con.execute(
            "SELECT metric, dataset, attack_preset, defense, defense_preset, dataset || '/' || image || '/' || seed, "
            "attack, defended_clean, defended_attacked, bound_worst, bound_best, lower_better "
            "FROM results WHERE mode = ? ORDER BY metric, dataset, attack_preset, defense, defense_preset, attack",
            [mode]).fetchall()
    cells: Dict[tuple, Dict[str, Dict[str, Tuple[float, float]]]] = {}
    meta: Dict[tuple, Tuple[float, float, bool]] = {}
    for metric, dataset, preset, defense, dpreset, image, attack, dc, da, worst, best, lower in rows:
        if attacks is not None and attack not in attacks:
            continue
        key = (metric, dataset, preset, defense, dpreset)
        cells.setdefault(key, {}).setdefault(attack, {})[image] = (dc, da)
        meta[key] = (worst, best, bool(lower))
    out = []
    for key, per_attack in cells.items():
        members = sorted(per_attack)
        if len(members) < 2:
            continue
        worst, best, lower = meta[key]
        images = sorted(set.intersection(*(set(per_attack[a]) for a in members)))
        if not images:
            continue
        gains = {a: [_gain(lower, worst, best, *per_attack[a][i]) for i in images] for a in members}
        table = np.array([gains[a] for a in members])  # [attacks, images]
        top = table.argmax(axis=0)
        da = [per_attack[members[j]][i][1] for j, i in zip(top, images)]
        dc = [per_attack[members[0]][i][0] for i in images]
        means = table.mean(axis=1)
        row: Row = {"metric": key[0], "dataset": key[1], "attack_preset": key[2], "defense": key[3],
                    "defense_preset": key[4], "mode": mode, "attacks": members, "n": len(images),
                    "gain": float(table.max(axis=0).mean()), "raised": float((table.max(axis=0) > 0).mean()),
                    "r_score_d": _r_score_d(dc, da, worst, best), "best_single": members[int(means.argmax())],
                    "best_single_gain": float(means.max()),
                    "wins": {a: int((top == j).sum()) for j, a in enumerate(members)}}
        out.append(_low_n(row, ("gain", "raised", "r_score_d", "best_single_gain")))
    return out


def transfer_matrix(source: Source) -> List[Row]:
    """Mean gain of metric A's adversarial images scored by metric B (and by every defense of B).

    Returns:
        One dict per (dataset, attack, attack_preset, defense, defense_preset, source, metric):
        ``n``, ``gain`` (mean normalised gain on ``metric``), ``raised`` (fraction of images it
        raised) and ``low_n``; ``source == metric`` rows are the white-box (non-adaptive) results.
        Empty when the store has no ``transfer`` rows.
    """
    with opened(source) as con:
        if "source" not in _columns(con, "transfer") or not con.execute("SELECT count(*) FROM transfer").fetchone()[0]:
            return []
        select = ("SELECT dataset, attack, attack_preset, defense, defense_preset, {src}, metric, "
                  "list(defended_clean), list(defended_attacked), min(bound_worst), min(bound_best), "
                  "bool_or(lower_better) FROM {table} {where} GROUP BY dataset, attack, attack_preset, defense, "
                  "defense_preset, {src}, metric")
        rows = con.execute(select.format(src="source", table="transfer", where="")).fetchall()
        pairs = {(r[0], r[1], r[2]) for r in rows}
        white = [r for r in con.execute(select.format(src="metric", table="results",
                                                      where="WHERE mode = 'non-adaptive'")).fetchall()
                 if (r[0], r[1], r[2]) in pairs]
    out = []
    for dataset, attack, preset, defense, dpreset, src, metric, dc, da, worst, best, lower in rows + white:
        gains = np.array([_gain(lower, worst, best, c, a) for c, a in zip(dc, da)])
        row: Row = {"dataset": dataset, "attack": attack, "attack_preset": preset, "defense": defense,
                    "defense_preset": dpreset, "source": src, "metric": metric, "n": int(gains.size),
                    "gain": float(gains.mean()), "raised": float((gains > 0).mean())}
        out.append(_low_n(row, ("gain", "raised")))
    out.sort(key=lambda r: (r["dataset"], r["attack"], r["attack_preset"], r["defense"] != BASELINE, r["defense"],
                            r["defense_preset"], r["source"], r["metric"]))
    return out


__all__ = ["BUDGET_PARAM", "WORST_CASE", "robustness_curves", "transfer_matrix", "worst_case"]
