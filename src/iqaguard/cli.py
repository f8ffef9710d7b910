"""The ``iqaguard`` command line (typer).

    iqaguard demo                       # the builtin demo benchmark (+ HTML report)
    iqaguard bench run SPEC --store F   # a benchmark grid (local or Ray); bench report / export
    iqaguard list metrics|attacks|defenses|datasets
    iqaguard score IMAGE... [--metric builtin-nr] [--ref REF]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .bench.cli import bench_app
from .errors import IqaguardError

app = typer.Typer(help="iqaguard: attack, defend, certify and benchmark image quality metrics.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(bench_app, name="bench")
# a pipe or a file gets wide tables instead of rich's 80-column default
console = Console() if sys.stdout.isatty() else Console(width=200)

KINDS = ("metrics", "attacks", "defenses", "datasets")


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(e))}")  # user text: no markup parsing
    raise typer.Exit(code=2)


@app.command("list")
def list_cmd(kind: str = typer.Argument(..., help="metrics | attacks | defenses | datasets")) -> None:
    """List the registered names of one pluggable kind."""
    import iqaguard  # noqa: F401  (fills the registries)
    from .registry import REGISTRIES

    if kind not in REGISTRIES:
        _fail(IqaguardError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}"))
    for name in REGISTRIES[kind].names():
        console.print(name)


def _version_callback(value: bool) -> None:
    if value:
        from . import __version__

        console.print(escape(f"iqaguard {__version__}"))
        raise typer.Exit(code=0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="print the iqaguard version and exit")) -> None:
    """iqaguard: attack, defend, certify and benchmark image quality metrics."""


def _check_image_path(p: Path) -> None:
    """Refuse a folder with its own message (``load_image`` would call it 'not found')."""
    if p.is_dir():
        raise IqaguardError(f"{p} is a directory, not an image file: pass the image files themselves "
                            f"(e.g. a glob such as {p / '*.png'})")


def _load(p: Path):
    from .data import load_image

    _check_image_path(p)
    return load_image(p)


@app.command()
def score(images: List[Path] = typer.Argument(..., help="image files (PNG, JPEG, BMP, TIFF, WebP)"),
          metric: str = typer.Option("builtin-nr", "--metric", "-m", help="registered metric name"),
          ref: Optional[Path] = typer.Option(None, "--ref", help="reference image (full-reference metrics)"),
          device: str = typer.Option("cpu", help="cpu | cuda | auto")) -> None:
    """Score images with a metric (FR metrics need --ref, an image of the same size).

    Every readable image is scored; each bad one (missing, a directory, unreadable, too small
    for the metric, ...) gets one error line. Exit code: 0 all scored, 1 some images failed,
    2 nothing could be scored (bad metric / reference, or every image failed).
    """
    import torch

    from . import metrics
    from .validation import resolve_device

    try:
        m = metrics.create(metric).to(resolve_device(device))
        if m.kind == "fr" and ref is None:
            raise IqaguardError(f"metric {metric!r} is full-reference: pass --ref REFERENCE_IMAGE")
        r = _load(ref).to(m.device) if ref is not None else None
    except IqaguardError as e:
        _fail(e)
    t = Table("image", f"{escape(metric)} ({'lower' if m.lower_better else 'higher'} is better)")
    failures: List[str] = []
    with torch.no_grad():
        for p in images:
            try:
                x = _load(p).to(m.device)
                s = m(x, r) if m.kind == "fr" else m(x)
                t.add_row(escape(str(p)), f"{float(s[0]):.4f}")
            except (IqaguardError, ValueError, RuntimeError) as e:
                msg = str(e).replace("\n", " ")
                failures.append(msg if str(p) in msg else f"{p}: {msg}")
    if t.row_count:
        console.print(t)
    for msg in failures:
        console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)  # user text: no markup parsing
    if failures:
        scored = len(images) - len(failures)
        if scored:
            console.print(escape(f"{len(failures)} of {len(images)} images failed"))
        raise typer.Exit(code=1 if scored else 2)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output folder (DuckDB store, adversarial PNGs, report)"),
         executor: str = typer.Option("local", help="local | ray"),
         workers: Optional[int] = typer.Option(None, min=1, help="worker processes of the local executor "
                                               "(default: one per core; 1 = in-process)"),
         fresh: bool = typer.Option(False, help="delete an existing demo store first instead of resuming")) -> None:
    """Run the builtin demo benchmark (builtin metrics x I-FGSM x JPEG, both modes) and write the report."""
    from .bench.demo import run_demo

    try:
        run_demo(out, executor=executor, workers=workers, fresh=fresh, console=console)
    except IqaguardError as e:
        _fail(e)


@bench_app.command("report")
def bench_report(store: Path = typer.Argument(..., help="DuckDB result file"),
                 out: Path = typer.Option(Path("runs/report"), "--out", help="output folder for index.html")) -> None:
    """Write the self-contained HTML leaderboard of a result store."""
    from .bench.report import write_report

    if not store.is_file():
        _fail(IqaguardError(f"store not found: {store} (create it with `iqaguard bench run SPEC --store {store}`)"))
    try:
        console.print(f"report: [bold]{escape(str(write_report(store, out)))}[/]")
    except IqaguardError as e:
        _fail(e)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="iqaguard", args=sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
