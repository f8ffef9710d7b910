"""Self-contained HTML leaderboard of a result store (Guardians of Image Quality Table 2, Figures 2 and 3a, Table 10).

``write_report(store, out_dir)`` writes ``out_dir/index.html``: inline CSS, inline vanilla JS (column
sorting) and inline SVG charts; no external URL, so the page opens offline. The numbers come from
:mod:`iqaguard.bench.stats`, :mod:`iqaguard.bench.stats_tests` and :mod:`iqaguard.bench.bootstrap`;
the charts from :mod:`iqaguard.bench.svg`. See ``docs/report.md`` for what each section shows.

What the page promises (the rules of :mod:`iqaguard.bench.stats`): every aggregate shows its n
(distinct images) and its number of groups, in the tables and in the chart tooltips; a value
resting on fewer than :data:`~iqaguard.bench.stats.MIN_N_CORRELATION` images is greyed
("n < 10: not ranked") and left out of the ranks, the best-preset choice, the Pareto front, the
win-rate heat map and the charts; leaderboard cells carry percentile-bootstrap intervals over
images; the undefended baseline of a mode is computed on that mode's images; the images a run
skipped (the store's ``skipped`` table, when it has rows) are listed with their reasons.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jinja2

from .. import __version__
from . import svg
from .bootstrap import BOOTSTRAP_CONFIDENCE, BOOTSTRAP_RESAMPLES, aggregate_intervals
from .stats import (BASELINE, BREAKDOWN_BY, MIN_N_CORRELATION, MODES, Row, Source, breakdown, defense_table,
                    leaderboard, mode_groups, opened, pareto_front, rankable)
from .stats_tests import win_rate_matrix
from .attack_stats import robustness_curves, transfer_matrix, worst_case
from .report_defenses import defense_context

#: Defense family -> registry names (DESIGN.md); a new family is one more entry.
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "purification": ("gaussian-blur", "median-blur", "unsharp", "jpeg", "diffjpeg", "color-quantization", "flip",
                     "upscale", "resize", "random-rotate", "random-crop", "random-noise", "fcn", "mprnet",
                     "real-esrgan", "disco", "diffpure"),
    "certified": ("rs", "drs", "ddrs", "densepure", "ms", "dms", "rs-reg", "cert-reg", "dms-iqa", "fs-iqa"),
}
OTHER_FAMILY = "other"
Column = Tuple[str, str, float, int, Optional[bool]]
#: Leaderboard columns: (key, header, scale, decimals, higher is better); Guardians of Image Quality Table 2 order.
COLUMNS: Tuple[Column, ...] = (
    ("time_s", "Time (ms)", 1e3, 2, False), ("srocc_clean", "SROCC clear", 1.0, 3, True),
    ("srocc_adv", "SROCC adv", 1.0, 3, True),
    ("d_score", "D score", 1.0, 2, False), ("d_score_d", "D score (D)", 1.0, 2, False),
    ("r_score", "R score", 1.0, 2, True), ("psnr", "PSNR", 1.0, 2, True), ("ssim", "SSIM", 1.0, 3, True),
    ("mse", "MSE ×10⁻³", 1e3, 2, False), ("linf", "L∞", 1.0, 3, False),
    ("n", "images", 1.0, 0, None), ("n_groups", "groups", 1.0, 0, None),
)
#: Columns of the per-preset and breakdown tables (a subset of :data:`COLUMNS`).
COMPACT = tuple(c for c in COLUMNS if c[0] in ("srocc_clean", "srocc_adv", "d_score", "d_score_d", "r_score",
                                                "n", "n_groups"))
TEMPLATE = "report.html.j2"
#: Columns of the store's ``runs`` table shown in the run section (when the table exists).
RUN_FIELDS = ("run_id", "started", "finished", "status", "spec_version", "executor", "tasks_run", "tasks_skipped")
SKIPPED_FIELDS = ("dataset", "seed", "image", "reason", "run_id")
#: At most this many ``skipped`` rows are listed (the counts per dataset cover all).
SKIPPED_LISTED = 200
WIN_SCORE = "d_score_d"
RANK_KEY = "srocc_adv"
LOW_N = f"n < {MIN_N_CORRELATION}: not ranked"


def family_of(defense: str) -> str:
    """The :data:`FAMILIES` key of a defense (``"other"`` when unlisted)."""
    return next((f for f, names in FAMILIES.items() if defense in names), OTHER_FAMILY)


def _shown(defense: str) -> str:
    return "w/o defense" if defense == BASELINE else defense


def n_label(row: Row) -> str:
    """``"n = 50 images, 6 groups"``: the sample behind an aggregate row."""
    g = row.get("n_groups", 1)
    return f"n = {row['n']} image{'s' if row['n'] != 1 else ''}, {g} group{'s' if g != 1 else ''}"


def _support(row: Row, key: str) -> str:
    """Tooltip on the images and groups behind one value of ``row``."""
    sup = row.get("support", {}).get(key)
    if sup is None:
        return n_label(row)
    used, total = sup["n_groups"], row.get("n_groups", 1)
    of = f"{used} of {total}" if used != total else f"{used}"
    return f"n = {sup['n']} images; mean of {of} group{'s' if total != 1 else ''} (smallest: {sup['min_n']} images)"


def _cell(row: Row, key: str, scale: float, decimals: int) -> Dict[str, str]:
    v = row.get(key)
    cell = {"key": key, "value": "", "text": "—", "ci": "", "cls": "", "title": ""}
    if v is None:
        return cell
    if key in ("n", "n_groups"):
        return dict(cell, value=str(int(v)), text=str(int(v)))
    cell.update(value=repr(float(v) * scale), text=f"{float(v) * scale:.{decimals}f}")
    tips = [LOW_N] if key in row.get("low_n", ()) else []
    tips.append(_support(row, key))
    interval = row.get("ci", {}).get(key)
    if interval is not None:
        cell["ci"] = f"[{interval[0] * scale:.{decimals}f}, {interval[1] * scale:.{decimals}f}]"
        tips.append(f"{100 * row['ci_level']:.0f}% CI {cell['ci']}: percentile bootstrap over images, "
                    f"{row['ci_resamples']} resamples")
    cell.update(cls="low-n" if key in row.get("low_n", ()) else "", title="; ".join(tips))
    return cell


def _label(key: str, value: Any, text: Optional[str] = None) -> Dict[str, str]:
    shown = "" if value is None else str(value)
    return {"key": key, "value": shown, "text": shown if text is None else text, "ci": "", "cls": "label",
            "title": ""}


def _table(tid: str, mode: str, rows: Sequence[Row], columns: Sequence[Column], labels: Sequence[str],
           ranked: bool = False, family: str = "") -> Dict[str, Any]:
    """Template table: optional rank column, label columns (``labels``), then ``columns``."""
    heads = ([{"key": "rank", "label": "#", "sort": "num", "aria": "ascending", "arrow": "",
               "title": f"rank by SROCC adv; —: {LOW_N}"}] if ranked else [])
    heads += [{"key": k, "label": {"defense": "Defense", "defense_preset": "Preset"}.get(k, k.replace("_", " ")),
               "sort": "text", "aria": "none", "arrow": "", "title": ""} for k in labels]
    heads += [{"key": k, "label": label, "sort": "num", "aria": "none", "title": "",
               "arrow": "" if higher is None else ("↑" if higher else "↓")} for k, label, _, _, higher in columns]
    body = []
    for r in rows:
        cells = [_label("rank", r.get("rank"), "—" if r.get("rank") is None else None)] if ranked else []
        cells += [_label(k, r[k], _shown(r[k]) if k == "defense" else None) for k in labels]
        cells += [_cell(r, k, s, d) for k, _, s, d, _ in columns]
        classes = " ".join(c for c, on in (("baseline", r["defense"] == BASELINE),
                                           ("unranked", ranked and r.get("rank") is None)) if on)
        body.append({"defense": r["defense"], "classes": classes, "cells": cells})
    return {"id": tid, "mode": mode, "family": family, "heads": heads, "rows": body}


def _skipped(con: Any, tables: set) -> Dict[str, Any]:
    """Counts per dataset and the first :data:`SKIPPED_LISTED` rows of the ``skipped`` table (if any)."""
    if "skipped" not in tables:
        return {"total": 0, "per_dataset": [], "rows": []}
    per = con.execute("SELECT dataset, count(*) FROM skipped GROUP BY dataset ORDER BY dataset").fetchall()
    cur = con.execute(f"SELECT {', '.join(SKIPPED_FIELDS)} FROM skipped ORDER BY dataset, seed, image "
                      f"LIMIT {SKIPPED_LISTED}")
    rows = [{k: ("" if v is None else str(v)) for k, v in zip(SKIPPED_FIELDS, r)} for r in cur.fetchall()]
    return {"total": int(sum(c for _, c in per)), "per_dataset": [(str(d), int(c)) for d, c in per], "rows": rows}


def _metadata(con: Any) -> Dict[str, Any]:
    def distinct(col: str) -> List[str]:
        return [str(r[0]) for r in con.execute(f"SELECT DISTINCT {col} FROM results WHERE {col} IS NOT NULL "
                                               f"ORDER BY 1").fetchall()]

    presets = con.execute("SELECT attack, string_agg(DISTINCT attack_preset, ', ' ORDER BY attack_preset) "
                          "FROM results GROUP BY attack ORDER BY attack").fetchall()
    defenses = con.execute("SELECT defense, count(DISTINCT defense_preset) FROM results GROUP BY defense "
                           "ORDER BY defense").fetchall()
    per_mode = dict(con.execute("SELECT mode, count(*) FROM results GROUP BY mode").fetchall())
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    runs = []
    if "runs" in tables:
        cur = con.execute("SELECT * FROM runs ORDER BY started")
        names = [d[0] for d in cur.description]
        runs = [{k: ("" if v is None else str(v)) for k, v in zip(names, r) if k in RUN_FIELDS} for r in cur.fetchall()]
    return {
        "rows": int(con.execute("SELECT count(*) FROM results").fetchone()[0]),
        "rows_per_mode": {m: int(per_mode.get(m, 0)) for m in MODES},
        "images": int(con.execute("SELECT count(DISTINCT (dataset, image)) FROM results").fetchone()[0]),
        "versions": distinct("version"), "spec_versions": distinct("spec_version"), "runs": runs,
        "seeds": distinct("seed"),
        "metrics": distinct("metric"), "datasets": distinct("dataset"),
        "attacks": [f"{a} ({p})" for a, p in presets],
        "defenses": [f"{d} ({n} preset{'s' if n != 1 else ''})" for d, n in defenses],
        "skipped": _skipped(con, tables),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "generator": f"iqaguard {__version__}",
    }


def _leaderboards(boards: Dict[str, List[Row]]) -> List[Dict[str, Any]]:
    """Per family, per mode: the rows of that family's defenses plus the undefended baseline."""
    families = sorted({family_of(r["defense"]) for rows in boards.values() for r in rows if r["defense"] != BASELINE},
                      key=lambda f: (f not in FAMILIES, list(FAMILIES).index(f) if f in FAMILIES else 0, f))
    out = []
    for fam in families or ["purification"]:
        tables = []
        for mode in MODES:
            rows = [r for r in boards.get(mode, []) if r["defense"] == BASELINE or family_of(r["defense"]) == fam]
            tables.append(_table(f"lb-{fam}-{mode}", mode, rows, COLUMNS, ("defense", "defense_preset"),
                                 ranked=True, family=fam))
        out.append({"family": fam, "tables": tables})
    return out


def _value(row: Optional[Row], key: str) -> Optional[float]:
    """``row[key]`` when it may be charted (not resting on n < 10), else ``None``."""
    if row is None or row.get(key) is None or key in row.get("low_n", ()):
        return None
    return row[key]


def _figure2(tables: Dict[str, List[Row]], boards: Dict[str, List[Row]], key: str, label: str) -> Tuple[str, int]:
    """Guardians of Image Quality Figure 2: adaptive bars, non-adaptive dots per preset, red = preset used
    adaptively. Values resting on n < 10 are left out; returns the chart and how many were."""
    na, ad = tables.get(MODES[0], []), {r["defense"]: r for r in boards.get(MODES[1], [])}
    chosen = {r["defense"]: r["defense_preset"] for r in boards.get(MODES[1]) or boards.get(MODES[0], [])}
    names = sorted({r["defense"] for r in na} | set(ad), key=lambda d: (d == BASELINE, d))
    own = [[r for r in na if r["defense"] == d] for d in names]
    dots = [[r for r in rows if _value(r, key) is not None] for rows in own]
    marked = [next((r for r in rows if r["defense_preset"] == chosen.get(d)), None) for d, rows in zip(names, dots)]
    bars = [ad[d] if _value(ad.get(d), key) is not None else None for d in names]
    hidden = sum(len(a) - len(b) for a, b in zip(own, dots)) + sum(d in ad and b is None for d, b in zip(names, bars))
    chart = svg.bars_with_dots(
        [_shown(d) for d in names], [None if b is None else b[key] for b in bars],
        [[r[key] for r in ds] for ds in dots], [None if m is None else m[key] for m in marked], label,
        f"{label}: bars adaptive, dots non-adaptive presets",
        bar_notes=["" if b is None else f"({n_label(b)})" for b in bars],
        dot_notes=[[f"preset {r['defense_preset']} ({n_label(r)})" for r in ds] for ds in dots],
        marked_notes=["" if m is None else f"({n_label(m)})" for m in marked])
    return chart, hidden


def _pareto(rows: List[Row], mode: str) -> Dict[str, Any]:
    candidates = [r for r in rows if r["defense"] != BASELINE]
    shown = [r for r in candidates if _value(r, "d_score_d") is not None and _value(r, "srocc_adv") is not None]
    flagged = pareto_front(shown)
    points = [{"x": r["d_score_d"], "y": r["srocc_adv"], "highlight": r["pareto"],
               "label": f"{r['defense']} / {r['defense_preset']} (n = {r['n']})",
               "tip": f"{r['defense']} / {r['defense_preset']} ({n_label(r)})"} for r in flagged]
    chart = svg.scatter(points, "D score (D) ↓", "SROCC adv ↑", f"Defense presets, {mode}: Pareto front in red")
    return {"svg": chart, "front": [f"{r['defense']} / {r['defense_preset']} ({n_label(r)})" for r in flagged
                                    if r["pareto"]], "hidden": len(candidates) - len(shown)}


def _win_heatmap(source: Source, mode: str, board: List[Row], groups: List[Row]) -> Dict[str, Any]:
    """Table 10 as a heat map of the ranked leaderboard rows; ordered by win rate, the baseline last."""
    ranked = [r for r in board if r["rank"] is not None and rankable(r, WIN_SCORE)]
    note = {"svg": None, "hidden": len(board) - len(ranked)}
    if len(ranked) < 2:
        return note
    result = win_rate_matrix(source, mode, WIN_SCORE, presets={r["defense"]: r["defense_preset"] for r in ranked},
                             groups=groups)
    names, rates = result["defenses"], result["win_rate"]
    if len(names) < 2:
        return note
    rows = {r["defense"]: r for r in ranked}
    order = sorted(range(len(names)), key=lambda i: (names[i] == BASELINE, -(rates[names[i]] or 0.0), names[i]))
    values = [[result["win_fraction"][i][j] for j in order] + [rates[names[i]]] for i in order]
    labels = [f"{_shown(names[i])}{'' if names[i] == BASELINE else ' / ' + result['presets'][names[i]]} "
              f"(n = {rows[names[i]]['n']})" for i in order]
    chart = svg.heatmap(labels, labels + ["win rate"], values, f"Wilcoxon win rates, D score (D), {mode}")
    adjusted = [p for row in result["p_adjusted"] for cell in row for p in cell if p is not None]
    return dict(note, svg=chart, n_tests=result["n_tests"], n_experiments=len(result["experiments"]),
                alpha=result["alpha"], min_p=min(adjusted) if adjusted else None)


def _breakdowns(con: Any, mode: str, board: List[Row], groups: List[Row]) -> List[Dict[str, Any]]:
    """Per-factor tables of the leaderboard's (defense, preset) rows (Figure 3b, Table 11)."""
    chosen = {(r["defense"], r["defense_preset"]) for r in board}
    out = []
    for by in BREAKDOWN_BY:
        rows = [r for r in breakdown(con, by, mode, groups) if (r["defense"], r["defense_preset"]) in chosen]
        out.append({"by": by, "table": _table(f"bd-{by}-{mode}", mode, rows, COMPACT,
                                                (by, "defense", "defense_preset"))})
    return out


#: Columns of the attack-side tables (:mod:`iqaguard.bench.attack_stats`); gains are fractions of diam(f).
CURVE_COLUMNS: Tuple[Column, ...] = (("abs_gain_auc", "AbsGainAUC", 1.0, 3, False),
                                     ("r_score_auc", "R-ScoreAUC", 1.0, 2, True), ("n", "images", 1.0, 0, None))
WORST_COLUMNS: Tuple[Column, ...] = (("gain", "worst-case gain", 1.0, 3, False), ("raised", "raised", 1.0, 2, False),
                                     ("r_score_d", "R score (D)", 1.0, 2, True),
                                     ("best_single_gain", "best single gain", 1.0, 3, False),
                                     ("n", "images", 1.0, 0, None))


def _fmt_points(points: Sequence[Row]) -> str:
    return ", ".join(f"{p['eps'] * 255:.3g}/255: {p['abs_gain']:.3f}" for p in points)


def _attack_tables(con: Any, present: Sequence[str]) -> Dict[str, Any]:
    """Robustness curves and worst-case ensemble per mode, and the transfer matrices."""
    curves, worst = {}, {}
    for m in present:
        rows = [dict(r, curve=_fmt_points(r["points"])) for r in robustness_curves(con, m)]
        curves[m] = _table(f"curves-{m}", m, rows, CURVE_COLUMNS, ("metric", "attack", "defense", "defense_preset",
                                                                   "curve")) if rows else None
        rows = [dict(r, wins=", ".join(f"{a}: {k}" for a, k in r["wins"].items() if k)) for r in worst_case(con, m)]
        worst[m] = _table(f"worst-{m}", m, rows, WORST_COLUMNS, ("metric", "attack_preset", "defense",
                                                                 "defense_preset", "best_single", "wins")) if rows else None
    cells = transfer_matrix(con)
    targets = sorted({r["metric"] for r in cells})
    matrices: Dict[tuple, Dict[str, Row]] = {}
    for r in cells:
        key = (r["dataset"], r["attack"], r["attack_preset"], r["defense"], r["defense_preset"], r["source"])
        matrices.setdefault(key, {})[r["metric"]] = r
    rows = []
    for (dataset, attack, preset, defense, dpreset, src), by_target in matrices.items():
        row: Row = {"dataset": dataset, "attack": attack, "attack_preset": preset, "defense": defense,
                    "defense_preset": dpreset, "source": src, "n": min(c["n"] for c in by_target.values())}
        row.update({t: by_target[t]["gain"] if t in by_target else None for t in targets})
        row["low_n"] = [t for t in targets if t in by_target and by_target[t]["low_n"]]
        rows.append(row)
    columns = tuple((t, f"→ {t}", 1.0, 3, None) for t in targets) + (("n", "images", 1.0, 0, None),)
    transfer = _table("transfer", "non-adaptive", rows, columns, ("attack", "attack_preset", "defense",
                                                                  "defense_preset", "source")) if rows else None
    return {"curves": curves, "worst": worst, "transfer": transfer}


def collect(source: Source) -> Dict[str, Any]:
    """Everything the template shows, computed from the store (JSON-serialisable except SVG strings)."""
    with opened(source) as con:
        meta = _metadata(con)
        groups = mode_groups(con)
        present = [m for m in MODES if any(g["mode"] == m for g in groups)]
        tables = {m: defense_table(con, m, groups) for m in present}
        boards = {m: aggregate_intervals(con, m, leaderboard(con, m, key=RANK_KEY, groups=groups), groups=groups)
                  for m in present}
        pareto = {m: _pareto(tables[m], m) for m in present}
        wins = {m: _win_heatmap(con, m, boards[m], groups) for m in present}
        breakdowns = {m: _breakdowns(con, m, boards[m], groups) for m in present}
        attack_side = _attack_tables(con, present)
        defense_side = defense_context(con, boards, groups)
    figure2 = [_figure2(tables, boards, key, label)
               for key, label in (("srocc_adv", "SROCC adv ↑"), ("d_score_d", "D score (D) ↓"))]
    presets = {m: _table(f"presets-{m}", m, tables[m], COMPACT, ("defense", "defense_preset")) for m in present}
    return {"meta": meta, "modes": list(MODES), "present": present, "run_fields": RUN_FIELDS,
            "skipped_fields": SKIPPED_FIELDS, "skipped_listed": SKIPPED_LISTED, "min_n": MIN_N_CORRELATION,
            "low_n": LOW_N, "ci_level": f"{100 * BOOTSTRAP_CONFIDENCE:.0f}%", "ci_resamples": BOOTSTRAP_RESAMPLES,
            "leaderboards": _leaderboards(boards), "presets": presets, "breakdowns": breakdowns,
            "figure2": figure2 if tables else [], "pareto": pareto, "wins": wins, **attack_side, **defense_side}


def render(context: Dict[str, Any], title: str) -> str:
    """Render :data:`TEMPLATE` with ``context`` (autoescaped; SVG strings are inserted verbatim)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(title=title, **context)


def write_report(store: Source, out_dir: str | Path, title: str = "iqaguard benchmark report") -> Path:
    """Write ``out_dir/index.html``, the offline leaderboard of a result store.

    Args:
        store: the ``.duckdb`` path (or an open ``Store``/connection).
        out_dir: output folder (created).
        title: page title.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(render(collect(store), title), encoding="utf-8")
    return page
