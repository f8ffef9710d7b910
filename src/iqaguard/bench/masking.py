"""Gradient-masking checks of the defended metrics of a benchmark run (the report's flags).

A defense can look robust only because the adaptive attacks get no useful gradient through it
(Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018,
§3 lists the symptoms; AutoAttack reports such flags for classifiers). For every (metric,
defense, preset) of a store four checks are made; each flag carries the numbers behind it:

* ``gradient`` — the input gradient of the defended metric at the clean images, as the adaptive
  attacks get it (the ``gradient_checks`` table), is zero or not finite on some image;
* ``eot`` — a randomized defense attacked adaptively with one draw per step (``eot_samples: 1``):
  the attack follows the gradient of one random draw, not of the expectation;
* ``black_box`` — a query attack (which needs no gradient) is stronger through the defense than
  every white-box gradient attack of the adaptive mode;
* ``adaptive_weaker`` — a white-box attack preset is weaker when it attacks the defense
  (adaptive) than when it ignores it (non-adaptive), on the same images: its gradient through the
  defense is worse than none. Query attacks are left out of this check (they use no gradient,
  and with a finite query budget either mode may win by chance).

Strength is D_score^(D) (Guardians of Image Quality §3.5 eq. 7: ``100 · mean |f(P(x')) − f(P(x))| /
diam(f)``, higher = stronger attack), compared over the same images. A check without the data it
needs (no adaptive rows, no query attack) is ``None`` ("not measured"), never silently passed.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..registry import ATTACKS
from .defense_check import latest_presets
from .stats import Source, opened

CHECKS = ("gradient", "eot", "black_box", "adaptive_weaker")
LABELS = {"gradient": "zero / non-finite gradient", "eot": "randomized, no EOT",
          "black_box": "black-box > white-box", "adaptive_weaker": "adaptive < non-adaptive"}
#: D_score^(D) differences below this (percent of the metric range) are ties, not flags
TOLERANCE = 0.05

Key = Tuple[str, str, str]  # metric, defense, defense_preset


def _tables(con: Any) -> set:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def is_query_attack(name: str) -> Optional[bool]:
    """Whether the registered attack ``name`` is a query (black-box) attack; ``None`` if unknown."""
    from ..attacks.query import QueryAttack

    try:
        return issubclass(ATTACKS.get(name), QueryAttack)
    except Exception:  # an attack of a plugin not imported here, or a non-class factory
        return None


def _strength(con: Any, mode: str, images_of: Optional[str] = None) -> Dict[Tuple[str, ...], Tuple[float, int]]:
    """``(metric, defense, preset, attack, attack_preset) -> (D_score^(D), n images)`` of ``mode``
    (restricted to the images that the other mode has for the same key when ``images_of`` is given)."""
    same = ""
    if images_of is not None:
        same = (" AND EXISTS (SELECT 1 FROM results o WHERE o.mode = ? AND o.dataset = r.dataset AND o.image = r.image"
                " AND o.metric = r.metric AND o.attack = r.attack AND o.attack_preset = r.attack_preset"
                " AND o.defense = r.defense AND o.defense_preset = r.defense_preset AND o.seed = r.seed)")
    params = [mode] + ([images_of] if images_of is not None else [])
    rows = con.execute(
        "SELECT metric, defense, defense_preset, attack, attack_preset, "
        "100 * avg(abs(defended_attacked - defended_clean) / (bound_best - bound_worst)), count(*) "
        f"FROM results r WHERE mode = ? AND defense <> 'none'{same} "
        "GROUP BY ALL", params).fetchall()
    return {tuple(r[:5]): (float(r[5]), int(r[6])) for r in rows}


def masking_flags(source: Source) -> List[Dict[str, Any]]:
    """One row per (metric, defense, preset) with the four checks of the module docstring.

    Returns:
        Rows ``{"metric", "defense", "defense_preset", "checks": {check: {"flag": bool | None,
        "detail": str}}, "flagged": [checks that fired]}``, sorted by (metric, defense, preset).
    """
    with opened(source) as con:
        tables = _tables(con)
        keys: Dict[Key, Dict[str, Dict[str, Any]]] = {}

        def cell(k: Key) -> Dict[str, Dict[str, Any]]:
            return keys.setdefault(k, {c: {"flag": None, "detail": "not measured"} for c in CHECKS})

        if "results" in tables:
            for m, d, p in con.execute("SELECT DISTINCT metric, defense, defense_preset FROM results "
                                       "WHERE defense <> 'none'").fetchall():
                cell((m, d, p))
        if "gradient_checks" in tables:
            for m, d, p, n, bad_zero, bad_fin, l1 in con.execute(
                    "SELECT metric, defense, defense_preset, count(*), sum(CASE WHEN nonzero = 0 THEN 1 ELSE 0 END), "
                    "sum(CASE WHEN finite < 1 THEN 1 ELSE 0 END), avg(grad_l1) FROM gradient_checks "
                    "GROUP BY ALL").fetchall():
                flag = bool(bad_zero or bad_fin)
                cell((m, d, p))["gradient"] = {
                    "flag": flag, "detail": f"{int(bad_zero)} of {n} images with an all-zero gradient, {int(bad_fin)} "
                                            f"with non-finite entries; mean L1 norm {l1:.3g}"}
        for r in latest_presets(con):
            if r["status"] != "ok" or not r["adaptive"] or r["randomized"] is None:
                continue
            k = (r["metric"], r["defense"], r["defense_preset"])
            if r["randomized"]:
                cell(k)["eot"] = {"flag": int(r["eot_samples"]) < 2,
                                  "detail": f"randomized; adaptive attacks average {int(r['eot_samples'])} draw(s) "
                                            "per step (set eot_samples >= 2 in the spec)"}
            elif k in keys:
                cell(k)["eot"] = {"flag": False, "detail": "deterministic"}
        if "results" in tables:
            adaptive = _strength(con, "adaptive")
            per_key: Dict[Key, Dict[str, List[Tuple[float, str]]]] = {}
            for (m, d, p, a, ap), (s, _n) in adaptive.items():
                kind = is_query_attack(a)
                if kind is not None:
                    per_key.setdefault((m, d, p), {"query": [], "white": []})["query" if kind else "white"].append(
                        (s, f"{a}/{ap}"))
            for k, got in per_key.items():
                if got["query"] and got["white"]:
                    qb, wb = max(got["query"]), max(got["white"])
                    cell(k)["black_box"] = {
                        "flag": qb[0] > wb[0] + TOLERANCE,
                        "detail": f"strongest query attack {qb[1]} D_score^(D) {qb[0]:.2f} vs strongest white-box "
                                  f"{wb[1]} {wb[0]:.2f}"}
            both = _strength(con, "adaptive", images_of="non-adaptive")
            non = _strength(con, "non-adaptive", images_of="adaptive")
            worse: Dict[Key, List[str]] = {}
            compared: Dict[Key, int] = {}
            for key5, (s_ad, n) in both.items():
                if key5 not in non or is_query_attack(key5[3]) is not False:
                    continue
                k = key5[:3]
                compared[k] = compared.get(k, 0) + 1
                s_na = non[key5][0]
                if s_ad + TOLERANCE < s_na:
                    worse.setdefault(k, []).append(f"{key5[3]}/{key5[4]}: adaptive {s_ad:.2f} < non-adaptive "
                                                   f"{s_na:.2f} ({n} images)")
            for k, n in compared.items():
                bad = worse.get(k, [])
                cell(k)["adaptive_weaker"] = {
                    "flag": bool(bad),
                    "detail": "; ".join(bad) if bad else f"adaptive >= non-adaptive for all {n} white-box attack "
                                                         "preset(s)"}
    out = []
    for (m, d, p), checks in sorted(keys.items()):
        out.append({"metric": m, "defense": d, "defense_preset": p, "checks": checks,
                    "flagged": [c for c in CHECKS if checks[c]["flag"]]})
    return out


def adaptive_gain_share(source: Source) -> Dict[str, Any]:
    """How often adaptive white-box attacks beat non-adaptive ones, per (defense, preset) over every
    metric and white-box attack preset both modes ran on the same images (Guardians of Image
    Quality §4: the attacker who knows the defense is stronger).

    Returns:
        ``{"rows": [{"defense", "defense_preset", "differentiable", "adaptive", "non_adaptive", "higher"}],
        "share": float | None}``: mean D_score^(D) of each mode, whether adaptive is higher, and
        ``share``, the fraction of the differentiable defense presets where it is (``None``: none compared).
    """
    with opened(source) as con:
        if "results" not in _tables(con):
            return {"rows": [], "share": None}
        both = _strength(con, "adaptive", images_of="non-adaptive")
        non = _strength(con, "non-adaptive", images_of="adaptive")
        diff = {(r["defense"], r["defense_preset"]): r["differentiable"] for r in latest_presets(con)}
    acc: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for k, (s, _n) in both.items():
        if k in non and is_query_attack(k[3]) is False:
            acc.setdefault((k[1], k[2]), []).append((s, non[k][0]))
    rows = []
    for (d, p), pairs in sorted(acc.items()):
        ad = sum(a for a, _ in pairs) / len(pairs)
        na = sum(b for _, b in pairs) / len(pairs)
        rows.append({"defense": d, "defense_preset": p, "differentiable": diff.get((d, p)), "adaptive": ad,
                     "non_adaptive": na, "higher": ad > na})
    counted = [r for r in rows if r["differentiable"]]
    return {"rows": rows, "share": (sum(r["higher"] for r in counted) / len(counted)) if counted else None}
