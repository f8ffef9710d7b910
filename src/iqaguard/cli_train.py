"""``iqaguard train --metric M --defense D``: train (or load from the cache) a trained-metric defense
(``adv-training``, ``nt``, ``robust-block``; ``docs/trained.md``) and report it (registered in cli.py)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import typer

from .bench.cli import fail, out_console, require_defense, say
from .errors import IqaguardError


def train_cmd(defense: str = typer.Option(..., "--defense", "-d", help="adv-training | nt | robust-block"),
              metric: str = typer.Option("builtin-nr", "--metric", "-m", help="base metric (iqaguard list metrics)"),
              preset: Optional[int] = typer.Option(None, "--preset", "-p", help="preset index (iqaguard list defenses)"),
              arg: List[str] = typer.Option([], "--arg", help="recipe or training argument KEY=VALUE, repeatable "
                                            "(e.g. --arg epochs=2 --arg images=200 --arg orth=aoc)"),
              out: Optional[Path] = typer.Option(None, "--out", help="also copy the trained model to this .safetensors file"),
              device: str = typer.Option("cpu", help="cpu | cuda | auto")) -> None:
    """Fine-tune METRIC with the DEFENSE recipe once (cached under $IQAGUARD_CACHE/trained) and print its
    validation SROCC/PLCC before and after, the training time and the cached file."""
    from . import defenses, metrics
    from .cli import _parse_fix
    from .defenses.trained.base import TrainedMetric
    from .validation import resolve_device

    try:
        require_defense(defense, TrainedMetric, "trained")
        if out is not None and out.suffix != ".safetensors":  # checked before minutes of training
            raise IqaguardError(f"--out: expected a .safetensors file name, got {out}")
        kwargs = {k.replace("-", "_"): v for k, v in _parse_fix(arg).items()}
        base = metrics.create(metric).to(resolve_device(device))
        t = defenses.create(defense, metric=base, preset=preset, **kwargs)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(t.path, out)
    except IqaguardError as e:
        fail(e)
    before, after = t.log.get("val_before", {}), t.log.get("val_after", {})
    out_console.print(f"{t.name}  recipe {t.recipe}")
    out_console.print(f"validation SROCC {before.get('srocc', float('nan')):.4f} -> {after.get('srocc', float('nan')):.4f}, "
                      f"PLCC {before.get('plcc', float('nan')):.4f} -> {after.get('plcc', float('nan')):.4f} "
                      f"({t.log.get('val_images', '?')} images); trained in {t.log.get('train_seconds', 0):.0f} s")
    say(f"cached: {t.path}" + (f"; copied to {out}" if out is not None else ""))
