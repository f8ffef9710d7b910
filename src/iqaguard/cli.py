"""The ``iqaguard`` command line (typer).

    iqaguard demo                       # the builtin demo benchmark
    iqaguard list metrics|attacks|defenses|datasets
    iqaguard score IMAGE... [--metric builtin-nr] [--ref REF]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import IqaguardError

app = typer.Typer(help="iqaguard: attack, defend, certify and benchmark image quality metrics.",
                  no_args_is_help=True, add_completion=False)
console = Console()

KINDS = ("metrics", "attacks", "defenses", "datasets")


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}")
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


@app.command()
def score(images: List[Path] = typer.Argument(..., help="image files (PNG, JPEG, BMP, TIFF, WebP)"),
          metric: str = typer.Option("builtin-nr", "--metric", "-m", help="registered metric name"),
          ref: Optional[Path] = typer.Option(None, "--ref", help="reference image (full-reference metrics)"),
          device: str = typer.Option("cpu", help="cpu | cuda | auto")) -> None:
    """Score images with a metric (FR metrics need --ref, an image of the same size)."""
    import torch

    from . import metrics
    from .data import load_image
    from .validation import resolve_device

    try:
        m = metrics.create(metric).to(resolve_device(device))
        if m.kind == "fr" and ref is None:
            raise IqaguardError(f"metric {metric!r} is full-reference: pass --ref REFERENCE_IMAGE")
        r = load_image(ref).to(m.device) if ref is not None else None
        t = Table("image", f"{metric} ({'lower' if m.lower_better else 'higher'} is better)")
        with torch.no_grad():
            for p in images:
                x = load_image(p).to(m.device)
                s = m(x, r) if m.kind == "fr" else m(x)
                t.add_row(str(p), f"{float(s[0]):.4f}")
        console.print(t)
    except IqaguardError as e:
        _fail(e)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output folder (DuckDB store + tables)"),
         n_images: int = typer.Option(50, "--n-images", min=1, help="number of builtin-kadid test images"),
         batch_size: int = typer.Option(5, min=1),
         seed: int = typer.Option(0),
         device: str = typer.Option("auto", help="cpu | cuda | auto"),
         fresh: bool = typer.Option(False, help="delete an existing store first instead of resuming")) -> None:
    """Run the demo benchmark: builtin-nr x I-FGSM (3 presets) x JPEG (5 presets), non-adaptive."""
    import json
    import time

    from .bench.demo import print_summary, run_demo, summary

    try:
        out.mkdir(parents=True, exist_ok=True)
        store_path = out / "demo.duckdb"
        if fresh and store_path.exists():
            store_path.unlink()
        t0 = time.time()
        store = run_demo(store_path, n_images=n_images, batch_size=batch_size, seed=seed, device=device,
                         console=console)
        summ = summary(store)
        print_summary(summ, console)
        (out / "summary.json").write_text(json.dumps(summ, indent=1))
        console.print(f"{store.count()} rows in [bold]{store_path}[/], summary in {out / 'summary.json'} "
                      f"({time.time() - t0:.0f} s)")
        store.close()
    except IqaguardError as e:
        _fail(e)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="iqaguard", args=sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
