"""``iqaguard demo``: run the builtin demo spec, print one table per defense preset, write the report.

The demo spec (``bench/specs/demo.yaml``) runs builtin-nr on 50 images of six builtin-kadid test
photographs (Guardians of Image Quality A.3.1 KMeans sampling) and builtin-fr on 10 of them:
I-FGSM and UAP (fitted once per metric and preset on train photographs) at the weak / medium /
strong presets and PGD at the medium one, JPEG at its five presets, non-adaptive (attacks
computed once, reused by every defense preset) and adaptive (BPDA through JPEG; gradient attacks
only) on a few images, and the transfer of each metric's adversarial images to the other. The
tables follow Guardians of Image Quality Table 2 (time,
SROCC clean/adv, D_score, D_score^(D), R_score, PSNR, SSIM, MSE, L-inf).

Ctrl-C or SIGTERM stops the demo like any run (:mod:`iqaguard.bench.runner`): the line it prints
names the command that resumes it, which never includes ``--fresh`` (that would delete the store).
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..registry import DEFENSES
from .stats import MIN_N_CORRELATION, group_scores

NO_DEFENSE = "none"
_ATTACK_ORDER = {"weak": 0, "medium": 1, "strong": 2}


def preset_label(defense: str, preset: str) -> str:
    """``"jpeg preset 4 (q=10)"`` — the preset index with its parameters."""
    if defense == NO_DEFENSE:
        return "no defense"
    try:
        params = DEFENSES.get(defense).presets[int(preset)]
        return f"{defense} preset {preset} (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
    except (LookupError, ValueError, TypeError):
        return f"{defense} preset {preset}"


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _corr(v: Optional[float], n: int) -> str:
    """A correlation cell: dimmed with an asterisk when it rests on fewer than MIN_N_CORRELATION images."""
    return _fmt(v, ".3f") if v is None or n >= MIN_N_CORRELATION else f"[dim]{v:.3f}*[/]"


def print_tables(store: Path, console: Console) -> List[Dict]:
    """Print one table per (defense, preset); rows = metric x mode x attack preset.

    Correlations from fewer than ``MIN_N_CORRELATION`` images are dimmed and starred, as the
    report greys them out and never ranks them."""
    groups = group_scores(store)
    by_defense: Dict[Tuple[str, str], List[Dict]] = {}
    for g in groups:
        by_defense.setdefault((g["defense"], g["defense_preset"]), []).append(g)
    keys = sorted(by_defense, key=lambda k: (k[0] != NO_DEFENSE, k[0], k[1]))
    for defense, preset in keys:
        rows = sorted(by_defense[(defense, preset)],
                      key=lambda g: (g["metric"], g["mode"], g["attack"], _ATTACK_ORDER.get(g["attack_preset"], 9)))
        few = any(g["n"] < MIN_N_CORRELATION for g in rows)
        t = Table(title=preset_label(defense, preset), title_justify="left",
                  caption=f"* from fewer than {MIN_N_CORRELATION} images: not meaningful, not ranked" if few else None,
                  caption_justify="left")
        for c in ("metric", "mode", "attack", "n", "time ms", "SROCC clean", "SROCC adv", "D_score",
                  "D_score(D)", "R_score", "PSNR", "SSIM", "MSE", "L∞·255"):
            t.add_column(c, justify="right" if c not in ("metric", "mode", "attack") else "left")
        for g in rows:
            t.add_row(g["metric"], g["mode"], f"{g['attack']}/{g['attack_preset']}", str(g["n"]),
                      _fmt(None if g["time_s"] is None else 1000 * g["time_s"], ".1f"),
                      _corr(g["srocc_clean"], g["n"]), _corr(g["srocc_adv"], g["n"]), _fmt(g["d_score"], ".2f"),
                      _fmt(g["d_score_d"], ".2f"), _fmt(g["r_score"], ".3f"), _fmt(g["psnr"], ".2f"),
                      _fmt(g["ssim"], ".4f"), _fmt(g["mse"], ".2e"),
                      _fmt(None if g["linf"] is None else 255 * g["linf"], ".2f"))
        console.print(t)
    return groups


def run_demo(out: Path, executor: str = "local", workers: Optional[int] = None, fresh: bool = False,
             console: Optional[Console] = None) -> Path:
    """Run (or resume) the demo spec into ``out/demo.duckdb``, print the tables, write the report.

    Args:
        out: output folder.
        executor: ``"local"`` or ``"ray"``.
        workers: local worker processes (default :func:`default_workers` for the spec's
            ``num_threads``: one single-threaded process per core); with Ray, the CPUs of a local
            Ray instance (default: all cores).
        fresh: delete an existing demo store first.
        console: where progress and tables go.

    Returns:
        The path of the report's ``index.html``.
    """
    from .executors import make_executor
    from .executors.local import default_workers
    from .report import write_report
    from .runner import resume_command, run_spec
    from .spec import load_spec

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    store = out / "demo.duckdb"
    if fresh:
        for p in out.glob("demo.duckdb*"):
            p.unlink()
    t0 = time.time()
    spec = load_spec("demo")
    resume = resume_command(drop=("--fresh",)) or shlex.join(
        ["iqaguard", "demo", "--out", str(out)] + (["--executor", executor] if executor != "local" else [])
        + (["--workers", str(workers)] if workers is not None else []))
    if workers is None and executor == "local":
        workers = default_workers(spec.num_threads)
    ex = make_executor(executor, workers=workers, device=spec.device, cpus_per_task=spec.num_threads)
    try:
        summary = run_spec(spec, store, executor=ex, progress=True, console=console, resume=resume)
    finally:
        ex.close()
    print_tables(store, console)
    report = write_report(store, out / "report")
    console.print(escape(f"{summary.rows_written} new rows ({summary.tasks_skipped} tasks already done) in "
                         f"{store}; {time.time() - t0:.0f} s"), soft_wrap=True)  # paths: no markup parsing
    console.print("report: [bold]" + escape(str(report)) + "[/]", soft_wrap=True)
    return report
