"""The defense-side sections of the report: every defense preset with its status and time, the
gradient-masking flags, and the composite ranking (see ``docs/report.md``).

* **Defenses** — every (defense, preset, metric) the runs checked (the store's ``defense_presets``
  table), ``ok`` or skipped with the reason (a neural defense without weights, images too small),
  whether it is randomized / differentiable / has a BPDA surrogate, and its time per image:
  measured at the run's image size and scaled to a 384×512 image by the pixel count (Guardians
  of Image Quality Table 2 reports time per 384×512 image; the scaling assumes time linear in
  pixels, which holds for the filters and convolutional networks; ``benchmarks/defense_speed.py``
  measures 3×384×512 directly).
* **Gradient-masking checks** — :func:`iqaguard.bench.masking.masking_flags`; every flagged cell
  links to the row that lists the numbers behind it.
* **Composite ranking** — :func:`iqaguard.bench.composite.composite_ranking` per mode.
* **Certificates** — the ``certified`` table of the smoothing defenses (:func:`certified_section`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from .composite import CRITERIA, composite_ranking
from .defense_check import latest_presets
from .masking import CHECKS, LABELS, masking_flags
from .stats import Row

#: the reference size of Guardians of Image Quality's Time column
REFERENCE_PIXELS = 384 * 512


def _times(con: Any) -> Dict[tuple, Dict[str, float]]:
    """``(defense, preset, metric) -> {"ms", "ms_384x512"}`` from the results rows (ms per image)."""
    cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'results'").fetchall()}
    if not cols:
        return {}
    scaled = (f"1000 * avg(t_defense * {REFERENCE_PIXELS} / pixels)" if "pixels" in cols else "NULL")
    rows = con.execute(f"SELECT defense, defense_preset, metric, 1000 * avg(t_defense), {scaled} FROM results "
                       "WHERE defense <> 'none' GROUP BY ALL").fetchall()
    return {(d, p, m): {"ms": t, "ms_384x512": s} for d, p, m, t, s in rows}


def defense_status(con: Any) -> List[Dict[str, Any]]:
    """One row per checked (defense, preset, metric), with the times of :func:`_times`."""
    times = _times(con)
    out = []
    for r in latest_presets(con):
        t = times.get((r["defense"], r["defense_preset"], r["metric"]), {})
        out.append({k: r[k] for k in ("defense", "defense_preset", "metric", "name", "status", "reason", "randomized",
                                      "differentiable", "surrogate", "eot_samples", "adaptive")}
                   | {"ms": t.get("ms"), "ms_384x512": t.get("ms_384x512")})
    return out


def masking_section(con: Any) -> Dict[str, Any]:
    """The flag table: rows with one cell per check (``flag``: True / False / None) and an anchor."""
    rows = masking_flags(con)
    for i, r in enumerate(rows):
        r["anchor"] = f"mask-{i}"
    return {"checks": [(c, LABELS[c]) for c in CHECKS], "rows": rows,
            "n_flagged": sum(1 for r in rows if r["flagged"])}


def composite_section(con: Any, boards: Dict[str, Sequence[Row]], groups: Sequence[Row]) -> Dict[str, List[Row]]:
    """``{mode: composite rows}`` of every mode with a leaderboard."""
    return {m: composite_ranking(con, m, board, groups=groups) for m, board in boards.items()}


def certified_section(con: Any) -> List[Dict[str, Any]]:
    """Per (metric, defense, preset) of the ``certified`` table, Guardians of Image Quality Table 3's
    certified columns: images, Abst. (% abstained, :func:`~iqaguard.scores.abstain_rate`), Cert.R
    (mean certified L2 radius of the RS family, :func:`~iqaguard.scores.cert_radius`), the ε the
    MS family certifies for and its Cert.RD (mean certified delta over the metric's range,
    :func:`~iqaguard.scores.cert_rel_delta`), each over the images that did not abstain (``None``
    when every image abstained or the family has none), seconds per image and samples
    (``[]`` without the table)."""
    from ..metrics.base import Bounds
    from ..scores import abstain_rate, cert_radius, cert_rel_delta, certified_delta

    if "certified" not in {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}:
        return []
    cur = con.execute(
        "SELECT metric, defense, defense_preset, list(score ORDER BY dataset, image), list(lower ORDER BY dataset, "
        "image), list(upper ORDER BY dataset, image), list(radius ORDER BY dataset, image), "
        "list(abstain ORDER BY dataset, image), avg(eps) FILTER (WHERE NOT abstain), any_value(bound_worst), "
        "any_value(bound_best), avg(t_certify), max(samples) FROM certified GROUP BY ALL ORDER BY ALL")
    out = []
    for m, d, p, score, lo, hi, radius, abst, eps, worst, best, secs, samples in cur.fetchall():
        kept = [i for i, a in enumerate(abst) if not a]
        row = {"metric": m, "defense": d, "defense_preset": p, "n": len(abst), "abstain": abstain_rate(abst),
               "radius": None, "eps": eps, "rel_delta": None, "seconds": secs, "samples": samples}
        if kept and all(radius[i] is not None for i in kept):
            row["radius"] = cert_radius([radius[i] for i in kept], [False] * len(kept))
        elif kept:
            delta = certified_delta([score[i] for i in kept], [lo[i] for i in kept], [hi[i] for i in kept])
            row["rel_delta"] = cert_rel_delta(delta, Bounds(worst, best))
        out.append(row)
    return out


def certified_plots(con: Any) -> List[str]:
    """One SVG per (metric, defense, preset) of the ``certified`` table: each clean image's certified
    interval and score, and the smoothed scores of its non-adaptive attacked versions (every attack
    preset) as red dots, hollow when outside the interval."""
    from . import svg

    if "certified" not in {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}:
        return []
    cur = con.execute(
        "SELECT c.metric, c.defense, c.defense_preset, c.dataset, c.image, c.score, c.lower, c.upper, "
        "list(r.defended_attacked) FILTER (WHERE r.defended_attacked IS NOT NULL) FROM certified c "
        "LEFT JOIN results r ON r.dataset = c.dataset AND r.image = c.image AND r.metric = c.metric "
        "AND r.defense = c.defense AND r.defense_preset = c.defense_preset AND r.seed = c.seed "
        "AND r.mode = 'non-adaptive' AND NOT c.abstain GROUP BY ALL ORDER BY 1, 2, 3")
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for m, d, p, ds, img, score, lo, hi, attacked in cur.fetchall():
        groups.setdefault((m, d, p), []).append({"label": f"{ds}/{img}", "score": score, "lower": lo, "upper": hi,
                                                 "attacked": list(attacked or [])})
    return [svg.intervals(items, f"{m} score", f"{d} preset {p} on {m}: certified intervals, attacked scores")
            for (m, d, p), items in groups.items()]


def defense_context(con: Any, boards: Dict[str, Sequence[Row]], groups: Sequence[Row]) -> Dict[str, Any]:
    """The template context of the four sections."""
    return {"defense_status": defense_status(con), "masking": masking_section(con),
            "composite": composite_section(con, boards, groups), "composite_criteria": CRITERIA,
            "certified": certified_section(con), "certified_plots": certified_plots(con)}
