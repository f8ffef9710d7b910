"""Self-contained HTML leaderboard of a result store (Guardians of Image Quality Table 2, Figures 2 and 3a, Table 10).

``write_report(store, out_dir)`` writes ``out_dir/index.html``: inline CSS, inline vanilla JS (column
sorting) and inline SVG charts; no external URL, so the page opens offline. The numbers come from
:mod:`iqaguard.bench.stats` and :mod:`iqaguard.bench.stats_tests`; the charts from
:mod:`iqaguard.bench.svg`. See ``docs/report.md`` for what each section shows.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jinja2

from .. import __version__
from . import svg
from .stats import (BASELINE, MODES, Row, Source, defense_table, group_scores, leaderboard, opened,
                    pareto_front)
from .stats_tests import win_rate_matrix

#: Defense family -> registry names (DESIGN.md); a new family is one more entry.
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "purification": ("gaussian-blur", "median-blur", "unsharp", "jpeg", "diffjpeg", "color-quantization", "flip",
                     "upscale", "resize", "random-rotate", "random-crop", "random-noise", "fcn", "mprnet",
                     "real-esrgan", "disco", "diffpure"),
}
OTHER_FAMILY = "other"
#: Leaderboard columns: (key, header, scale, decimals, higher is better); Guardians of Image Quality Table 2 order.
COLUMNS: Tuple[Tuple[str, str, float, int, Optional[bool]], ...] = (
    ("time_s", "Time (ms)", 1e3, 2, False), ("srocc_clean", "SROCC clear", 1.0, 3, True),
    ("srocc_adv", "SROCC adv", 1.0, 3, True),
    ("d_score", "D score", 1.0, 2, False), ("d_score_d", "D score (D)", 1.0, 2, False),
    ("r_score", "R score", 1.0, 2, True), ("psnr", "PSNR", 1.0, 2, True), ("ssim", "SSIM", 1.0, 3, True),
    ("mse", "MSE ×10⁻³", 1e3, 2, False), ("linf", "L∞", 1.0, 3, False), ("n", "rows", 1.0, 0, None),
)
TEMPLATE = "report.html.j2"
#: Columns of the store's ``runs`` table shown in the run section (when the table exists).
RUN_FIELDS = ("run_id", "started", "finished", "status", "spec_version", "executor", "tasks_run", "tasks_skipped")
WIN_SCORE = "d_score_d"


def family_of(defense: str) -> str:
    """The :data:`FAMILIES` key of a defense (``"other"`` when unlisted)."""
    return next((f for f, names in FAMILIES.items() if defense in names), OTHER_FAMILY)


def _cell(row: Row, key: str, scale: float, decimals: int) -> Dict[str, str]:
    v = row.get(key)
    if v is None:
        return {"value": "", "text": "—"}
    return {"value": repr(float(v) * scale), "text": f"{float(v) * scale:.{decimals}f}"}


def _table_rows(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    return [{"defense": r["defense"], "preset": r["defense_preset"], "baseline": r["defense"] == BASELINE,
             "cells": [_cell(r, k, s, d) for k, _, s, d, _ in COLUMNS]} for r in rows]


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
            tables.append({"mode": mode, "id": f"lb-{fam}-{mode}", "rows": _table_rows(rows)})
        out.append({"family": fam, "tables": tables})
    return out


def _figure2(tables: Dict[str, List[Row]], boards: Dict[str, List[Row]], key: str, label: str) -> str:
    """Seed 002 Figure 2: adaptive bars, non-adaptive dots per preset, red = preset used adaptively."""
    na, ad = tables.get(MODES[0], []), {r["defense"]: r for r in boards.get(MODES[1], [])}
    chosen = {r["defense"]: r["defense_preset"] for r in boards.get(MODES[1]) or boards.get(MODES[0], [])}
    names = sorted({r["defense"] for r in na} | set(ad), key=lambda d: (d == BASELINE, d))
    dots = [[r[key] for r in na if r["defense"] == d and r[key] is not None] for d in names]
    marked = [next((r[key] for r in na if r["defense"] == d and r["defense_preset"] == chosen.get(d)), None)
              for d in names]
    bars = [ad[d][key] if d in ad else None for d in names]
    shown = ["w/o defense" if d == BASELINE else d for d in names]
    return svg.bars_with_dots(shown, bars, dots, marked, label, f"{label}: bars adaptive, dots non-adaptive presets")


def _pareto(rows: List[Row], mode: str) -> Tuple[str, List[Row]]:
    flagged = pareto_front([r for r in rows if r["defense"] != BASELINE])
    points = [{"x": r["d_score_d"], "y": r["srocc_adv"], "highlight": r["pareto"],
               "label": f"{r['defense']} / {r['defense_preset']}"} for r in flagged]
    chart = svg.scatter(points, "D score (D) ↓", "SROCC adv ↑", f"Defense presets, {mode}: Pareto front in red")
    return chart, [r for r in flagged if r["pareto"]]


def _win_heatmap(source: Source, mode: str, groups: List[Row]) -> Optional[Dict[str, Any]]:
    """Table 10 as a heat map; rows/columns ordered by win rate, the baseline last."""
    result = win_rate_matrix(source, mode, WIN_SCORE, groups=groups)
    names, rates = result["defenses"], result["win_rate"]
    if len(names) < 2:
        return None
    order = sorted(range(len(names)), key=lambda i: (names[i] == BASELINE, -(rates[names[i]] or 0.0), names[i]))
    values = [[result["win_fraction"][i][j] for j in order] + [rates[names[i]]] for i in order]
    labels = ["w/o defense" if names[i] == BASELINE else f"{names[i]} / {result['presets'][names[i]]}" for i in order]
    chart = svg.heatmap(labels, labels + ["win rate"], values, f"Wilcoxon win rates, D score (D), {mode}")
    adjusted = [p for row in result["p_adjusted"] for cell in row for p in cell if p is not None]
    return {"svg": chart, "n_tests": result["n_tests"], "n_experiments": len(result["experiments"]),
            "alpha": result["alpha"], "min_p": min(adjusted) if adjusted else None}


def collect(source: Source) -> Dict[str, Any]:
    """Everything the template shows, computed from the store (JSON-serialisable except SVG strings)."""
    with opened(source) as con:
        meta = _metadata(con)
        groups = group_scores(con, where={"mode": list(MODES)})
        present = [m for m in MODES if any(g["mode"] == m for g in groups)]
        tables = {m: defense_table(con, m, groups) for m in present}
        boards = {m: leaderboard(con, m, groups=groups) for m in present}
        pareto = {}
        for m in present:
            chart, front = _pareto(tables[m], m)
            pareto[m] = {"svg": chart, "front": [f"{r['defense']} / {r['defense_preset']}" for r in front]}
        wins = {m: _win_heatmap(con, m, groups) for m in present}
    figure2 = [_figure2(tables, boards, key, label)
               for key, label in (("srocc_adv", "SROCC adv ↑"), ("d_score_d", "D score (D) ↓"))]
    return {"meta": meta, "modes": list(MODES), "present": present, "columns": COLUMNS, "run_fields": RUN_FIELDS,
            "sort_column": [c[0] for c in COLUMNS].index("srocc_adv"), "leaderboards": _leaderboards(boards),
            "figure2": figure2 if tables else [], "pareto": pareto, "wins": wins}


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
