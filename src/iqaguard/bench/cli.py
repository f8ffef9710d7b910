"""``iqaguard bench`` commands (a typer sub-app the main CLI mounts).

    iqaguard bench run SPEC --store runs/grid.duckdb [--executor local|ray] [--address ADDR] [--workers N]
    iqaguard bench export runs/grid.duckdb --out rows.parquet   # or .csv

``SPEC`` is a YAML file or a builtin spec name (``demo``). Re-running ``run`` with the same store
resumes: finished tasks are skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import IqaguardError

bench_app = typer.Typer(help="Run the benchmark grid of a spec into a DuckDB store; export rows.",
                        no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(e))}")  # user text: no markup parsing
    raise typer.Exit(code=2)


@bench_app.command("run")
def run_cmd(spec: str = typer.Argument(..., help="spec YAML file, or a builtin spec name (demo)"),
            store: Path = typer.Option(..., "--store", help="DuckDB result file (created or resumed)"),
            executor: str = typer.Option("local", "--executor", help="local | ray"),
            address: Optional[str] = typer.Option(None, "--address",
                                                  help="Ray cluster address (auto, host:6379, ray://host:10001)"),
            workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                                  help="local: worker processes (default 1, in-process; keep workers x "
                                                       "num_threads <= cores); ray: CPUs of a local Ray instance"),
            gpus_per_task: Optional[float] = typer.Option(None, "--gpus-per-task", min=0.0,
                                                          help="GPUs per Ray task (default 1 if device is cuda)"),
            quiet: bool = typer.Option(False, "--quiet", help="no progress bar")) -> None:
    """Run (or resume) every task of SPEC; rows go to --store, adversarial PNGs next to it."""
    from .executors import make_executor
    from .runner import run_spec
    from .spec import load_spec

    try:
        sp = load_spec(spec)
        ex = make_executor(executor, address=address, workers=workers, device=sp.device,
                           gpus_per_task=gpus_per_task, cpus_per_task=sp.num_threads)
        try:
            s = run_spec(sp, store, executor=ex, progress=not quiet, console=console)
        finally:
            ex.close()
    except IqaguardError as e:
        _fail(e)
    console.print(f"[green]done[/] run {s.run_id}: {s.tasks_run} tasks run, {s.tasks_skipped} skipped, "
                  f"{s.attacks_reused} attacks reused from the PNG cache, {s.rows_written} rows in "
                  f"{s.seconds:.1f} s -> {s.store}")


@bench_app.command("export")
def export_cmd(store: Path = typer.Argument(..., help="DuckDB result file"),
               out: Path = typer.Option(..., "--out", help="FILE.parquet or FILE.csv"),
               table: str = typer.Option("results", "--table",
                                         help="results | clean_scores | adversarial | subsets | runs")) -> None:
    """Export a store table (rows ordered by key) to Parquet or CSV."""
    from .store import TABLES, Store

    if out.suffix.lower() not in (".parquet", ".csv"):
        _fail(IqaguardError(f"--out: expected a .parquet or .csv file, got {out}"))
    if table not in TABLES:
        _fail(IqaguardError(f"--table: unknown table {table!r}; allowed: {', '.join(TABLES)}"))
    if not store.is_file():
        _fail(IqaguardError(f"store not found: {store}"))
    try:
        with Store(store, read_only=True) as s:
            s.export(out, table)
            n = s.count(table)
    except IqaguardError as e:
        _fail(e)
    console.print(f"[green]exported[/] {n} {table} rows -> {out}")


if __name__ == "__main__":
    bench_app()
