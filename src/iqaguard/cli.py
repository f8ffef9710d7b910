"""The ``iqaguard`` command line (typer); every command with an example is in ``docs/cli.md``.

    iqaguard list metrics|attacks|defenses|datasets [--names]   # a table of details (or names only)
    iqaguard score IMAGE|FOLDER|"GLOB"... [--metric builtin-nr] [--ref REF] [--format table|json|csv]
    iqaguard defend IMAGE --defense jpeg [--preset 2] --out OUT.png
    iqaguard demo                       # the builtin demo benchmark (+ HTML report)
    iqaguard bench specs|validate|run|report|export ...         # see iqaguard.bench.cli

Results go to stdout, errors to stderr, one ``error:`` line each; user text is printed without
rich markup parsing (:func:`iqaguard.bench.cli.print_error`, :func:`~iqaguard.bench.cli.say`).
"""
from __future__ import annotations

import csv
import glob
import io
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from .bench.cli import WORKERS_HELP, bench_app, console, fail, out_console, print_error, say
from .cli_list import DESCRIBE, KINDS, _entries, kwargs_text
from .errors import IqaguardError, ImageFileError

app = typer.Typer(help="iqaguard: attack, defend, certify and benchmark image quality metrics.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
app.add_typer(bench_app, name="bench")

FORMATS = ("table", "json", "csv")


# ---- iqaguard list: the tables are built in cli_list -------------------------------------------------------

@app.command("list")
def list_cmd(kind: str = typer.Argument(..., help="metrics | attacks | defenses | datasets"),
             names: bool = typer.Option(False, "--names", "-q", help="only the registered names, one per line")) -> None:
    """List the registered metrics, attacks, defenses or datasets with their details, as a table.

    metrics: NR/FR, direction, bounds (worst, best), minimum input size, notes (e.g. an optional
    extra to install); attacks: norm and presets with their budgets; defenses: family, presets,
    gradient used by adaptive attacks; datasets: NR/FR, MOS scale, builtin or download/folder.
    """
    import iqaguard  # noqa: F401  (fills the registries)

    if kind not in KINDS:
        fail(IqaguardError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}"))
    if names:
        for name, _ in _entries(kind):
            typer.echo(name)
        return
    header, rows = DESCRIBE[kind]()
    t = Table()
    for h in header:
        t.add_column(h, overflow="fold")  # long URLs wrap instead of being cut
    for row in rows:
        t.add_row(*(escape(c) for c in row))
    out_console.print(t)


def _version_callback(value: bool) -> None:
    if value:
        from . import __version__

        say(f"iqaguard {__version__}")
        raise typer.Exit(code=0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="print the iqaguard version and exit")) -> None:
    """iqaguard: attack, defend, certify and benchmark image quality metrics."""


# ---- iqaguard score ----------------------------------------------------------------------------------------

def _check_image_path(p: Path) -> None:
    """Refuse a folder where one image file is expected (``load_image`` would call it 'not found')."""
    if p.is_dir():
        raise ImageFileError(f"{p} is a directory, not an image file: pass one image file")


def _load(p: Path):
    from .data import load_image

    _check_image_path(p)
    return load_image(p)


_GLOB_CHARS = re.compile(r"[*?]|\[.+\]")


def expand_images(arg: str) -> List[Path]:
    """The image files an argument of ``score`` stands for: a file, every image of a folder, or a glob.

    A path that exists is taken as it is; one that does not and contains ``*``, ``?`` or ``[...]``
    is expanded as a glob (``**`` recurses), keeping image files (:data:`IMAGE_EXTENSIONS`).

    Raises:
        ImageFileError: a folder without images, or a ``*`` / ``?`` pattern that matches none.
    """
    from .data.io import IMAGE_EXTENSIONS, list_images

    p = Path(arg).expanduser()
    if p.is_dir():
        found = list_images(p)
        if not found:
            raise ImageFileError(f"{p} is a directory with no image files ({' '.join(IMAGE_EXTENSIONS)}): put "
                                 f"images in it, or pass image files or a quoted glob such as \"{p / '*.png'}\"")
        return found
    if not p.exists() and _GLOB_CHARS.search(arg):
        hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True)
                      if Path(h).is_file() and Path(h).suffix.lower() in IMAGE_EXTENSIONS)
        if hits:
            return hits
        if "*" in arg or "?" in arg:
            raise ImageFileError(f"no image file matches the pattern {arg} (extensions {' '.join(IMAGE_EXTENSIONS)})")
    return [p]


def _write_scores(records: List[Dict[str, Any]], fmt: str, title: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(records, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["image", "metric", "score"], lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        typer.echo(buf.getvalue(), nl=False)
    elif records:
        t = Table("image", escape(title))
        for r in records:
            t.add_row(escape(r["image"]), f"{r['score']:.4f}")
        out_console.print(t)


@app.command()
def score(images: List[str] = typer.Argument(..., help="image files (PNG, JPEG, BMP, TIFF, WebP), folders (every "
                                             "image in them) or quoted globs such as \"photos/*.jpg\""),
          metric: str = typer.Option("builtin-nr", "--metric", "-m", help="registered metric name (iqaguard list metrics)"),
          ref: Optional[Path] = typer.Option(None, "--ref", help="reference image (full-reference metrics)"),
          device: str = typer.Option("cpu", help="cpu | cuda | auto"),
          fmt: str = typer.Option("table", "--format", "-f", help="table | json (a list of {image, metric, score}) "
                                  "| csv (header image,metric,score)")) -> None:
    """Score images with a metric (FR metrics need --ref, an image of the same size).

    Every readable image is scored; each bad one (missing, unreadable, too small for the metric,
    a folder without images, a glob that matches nothing, ...) gets one error line on stderr.
    Exit code: 0 all scored, 1 some images failed, 2 nothing could be scored (bad metric /
    reference, or every image failed).
    """
    import torch

    from . import metrics
    from .validation import resolve_device

    if fmt not in FORMATS:
        fail(IqaguardError(f"--format: unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}"))
    try:
        m = metrics.create(metric).to(resolve_device(device))
        if m.kind == "fr" and ref is None:
            raise IqaguardError(f"metric {metric!r} is full-reference: pass --ref REFERENCE_IMAGE")
        r = _load(ref).to(m.device) if ref is not None else None
    except IqaguardError as e:
        fail(e)
    records: List[Dict[str, Any]] = []
    failures: List[str] = []
    with torch.no_grad():
        for arg in images:
            try:
                paths = expand_images(arg)
            except IqaguardError as e:
                failures.append(str(e))
                continue
            for p in paths:
                try:
                    x = _load(p).to(m.device)
                    s = m(x, r) if m.kind == "fr" else m(x)
                    records.append({"image": str(p), "metric": metric, "score": float(s[0])})
                except (IqaguardError, ValueError, RuntimeError) as e:
                    msg = str(e)
                    failures.append(msg if str(p) in msg else f"{p}: {msg}")
    _write_scores(records, fmt, f"{metric} ({'lower' if m.lower_better else 'higher'} is better)")
    for msg in failures:
        print_error(msg, fold=True)
    if failures:
        if records:
            console.print(escape(f"{len(failures)} of {len(failures) + len(records)} images failed"))
        raise typer.Exit(code=1 if records else 2)


# ---- iqaguard defend ---------------------------------------------------------------------------------------

@app.command()
def defend(image: Path = typer.Argument(..., help="input image file"),
           defense: str = typer.Option(..., "--defense", "-d", help="purification defense (iqaguard list defenses)"),
           preset: Optional[int] = typer.Option(None, "--preset", "-p", help="preset index (iqaguard list defenses); "
                                                "default: the defense's default parameters"),
           out: Path = typer.Option(..., "--out", "-o", help="output file, an 8-bit PNG (.png)"),
           seed: int = typer.Option(0, "--seed", min=0, help="seed of a randomized defense")) -> None:
    """Purify IMAGE with a defense (P(x) -> x'), write x' as an 8-bit PNG and print its PSNR / SSIM to IMAGE."""
    import torch

    from . import defenses, scores
    from .bench.executors.worker import quantise
    from .data.io import save_png
    from .defenses.base import Purification
    from .registry import DEFENSES

    try:
        if out.suffix.lower() != ".png":
            raise IqaguardError(f"--out: expected a .png file (the purified image is written as an 8-bit PNG), got {out}")
        if not (isinstance(DEFENSES.get(defense), type) and issubclass(DEFENSES.get(defense), Purification)):
            raise IqaguardError(f"--defense: {defense!r} is not a purification P(x) -> x' (it needs a metric); "
                                "purifications: " + ", ".join(n for n, f in _entries("defenses")
                                                              if isinstance(f, type) and issubclass(f, Purification)))
        p = defenses.create(defense, preset=preset)
        x = _load(image)
        g = torch.Generator().manual_seed(seed) if p.randomized else None
        with torch.no_grad():
            px = quantise(p(x, generator=g))  # exactly the 8-bit values the PNG holds
        fid = scores.fidelity(px, x) if px.shape == x.shape else None
        save_png(px, out)
    except IqaguardError as e:
        fail(e)
    what = f"{defense}" + (f" preset {preset}" if preset is not None else "") + f": {kwargs_text(p.params)}"
    if fid is None:
        say(f"wrote {out} ({what}); the defense changed the size from {tuple(x.shape[-2:])} to "
            f"{tuple(px.shape[-2:])}, so PSNR / SSIM to the input are not defined")
    else:
        say(f"wrote {out} ({what}): PSNR {float(fid['psnr'][0]):.2f} dB, SSIM {float(fid['ssim'][0]):.4f} to {image}")


# ---- iqaguard attack IMAGE | iqaguard attack calibrate -----------------------------------------------------
#
# `attack` is a group with two commands: `calibrate` and the image attack, which is what any other first
# argument runs (so `iqaguard attack IMAGE ...` and `iqaguard attack --help` are what they always were; an
# image file named "calibrate" is `./calibrate`).

_IMAGE_ATTACK = "image"


class _AttackGroup(TyperGroup):
    """Routes ``attack ARGS`` to the image attack unless ARGS starts with a subcommand's name."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if not args or args[0] not in self.commands or args[0] == _IMAGE_ATTACK:
            args = [_IMAGE_ATTACK] + list(args)
        return super().parse_args(ctx, args)


class _ImageAttackCommand(TyperCommand):
    """The image attack under the group's own name: its usage line reads ``iqaguard attack [OPTIONS] IMAGE``."""

    def make_context(self, info_name: Optional[str], args: List[str], parent: Optional[click.Context] = None,
                     **extra: Any) -> click.Context:
        if parent is not None and parent.parent is not None:
            return super().make_context(parent.info_name, args, parent=parent.parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


attack_app = typer.Typer(cls=_AttackGroup, rich_markup_mode="markdown", add_completion=False,
                         help="Attack METRIC on IMAGE (`iqaguard attack IMAGE --out OUT.png`), or calibrate an "
                              "attack's presets (`iqaguard attack calibrate --help`).")
app.add_typer(attack_app, name="attack", cls=_AttackGroup)


@attack_app.command(_IMAGE_ATTACK, cls=_ImageAttackCommand, hidden=True)
def attack(image: Path = typer.Argument(..., help="input image file"),
           metric: str = typer.Option("builtin-nr", "--metric", "-m", help="metric to attack (iqaguard list metrics)"),
           attack_name: str = typer.Option("ifgsm", "--attack", "-a", help="attack (iqaguard list attacks)"),
           preset: str = typer.Option("medium", "--preset", "-p", help="weak | medium | strong"),
           ref: Optional[Path] = typer.Option(None, "--ref", help="reference image (full-reference metrics)"),
           out: Path = typer.Option(..., "--out", "-o", help="output file, an 8-bit PNG (.png)"),
           seed: int = typer.Option(0, "--seed", min=0, help="seed of a randomized attack"),
           device: str = typer.Option("cpu", help="cpu | cuda | auto"),
           table: Optional[Path] = typer.Option(None, "--table", help="calibration table (JSON of `iqaguard attack "
                                                "calibrate`) the preset resolves through; default: the table "
                                                "shipped for this attack and metric, if any")) -> None:
    """Attack METRIC on IMAGE (raise its predicted quality), write x' as an 8-bit PNG, print scores and fidelity.

    The preset resolves through a calibration table: `--table`, else the one shipped for the
    attack and metric (`iqaguard/attacks/tables/`), else the attack's own presets. To calibrate
    presets: `iqaguard attack calibrate --help`.
    """
    import torch

    from . import attacks, metrics, scores
    from .attacks.universal import UniversalAttack
    from .bench.executors.worker import quantise
    from .data.io import save_png
    from .validation import resolve_device

    try:
        if out.suffix.lower() != ".png":
            raise IqaguardError(f"--out: expected a .png file (the attacked image is written as an 8-bit PNG), got {out}")
        m = metrics.create(metric).to(resolve_device(device))
        if m.kind == "fr" and ref is None:
            raise IqaguardError(f"metric {metric!r} is full-reference: pass --ref REFERENCE_IMAGE")
        from .attacks.calibrate import find_table, resolve_preset

        used = table if table is not None else find_table(attack_name, metric)
        a = attacks.create(attack_name, **resolve_preset(attack_name, preset, metric, table=table))
        a.preset = preset
        if isinstance(a, UniversalAttack):
            raise IqaguardError(f"--attack: {attack_name!r} is universal: it is fitted on a set of images "
                                "(Python: attacks.create(...).fit(metric, images)) or in a benchmark run")
        x = _load(image).to(m.device)
        r = _load(ref).to(m.device) if ref is not None else None
        adv = quantise(a(m, x, r, generator=torch.Generator().manual_seed(seed)))  # the 8-bit values saved
        with torch.no_grad():
            before, after = float(m(x, r)[0]), float(m(adv, r)[0])
        fid = scores.fidelity(adv.cpu(), x.cpu())
        save_png(adv, out)
    except IqaguardError as e:
        fail(e)
    better = "lower" if m.lower_better else "higher"
    say(f"wrote {out} ({attack_name} {preset}: {kwargs_text(a.params, per_255=a.restriction == 'linf')})")
    if used is not None:
        say(f"preset {preset} from the calibration table {used}")
    say(f"{metric} ({better} is better): clean {before:.4f} -> attacked {after:.4f}; PSNR {float(fid['psnr'][0]):.2f} dB, "
        f"SSIM {float(fid['ssim'][0]):.4f}, L-inf {255 * float(fid['linf'][0]):.2f}/255 to {image}")


def _note(text: str) -> None:
    """One line of progress on stderr (plain text, not wrapped)."""
    console.print(escape(text), soft_wrap=True)


def _parse_fix(items: List[str]) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise IqaguardError(f"--fix: expected KEY=VALUE (e.g. --fix steps=20), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise IqaguardError(f"--fix: cannot read the value of {item!r}; e.g. --fix steps=20") from None
    return out


def _parse_values(text: str) -> Any:
    if text.strip() == "auto":
        return "auto"
    vals = []
    for part in text.split(","):
        try:
            num, sep, den = part.strip().partition("/")
            vals.append(float(num) / float(den) if sep else float(num))
        except (ValueError, ZeroDivisionError):
            raise IqaguardError(f"--values: expected 'auto' or numbers separated by commas (e.g. 2/255,4/255,8/255), "
                                f"got {text!r}") from None
    return vals


@attack_app.command("calibrate")
def calibrate_cmd(attack_name: str = typer.Option(..., "--attack", "-a", help="attack to calibrate (iqaguard list attacks)"),
                  metric: str = typer.Option("builtin-nr", "--metric", "-m", help="metric attacked (iqaguard list metrics)"),
                  dataset: str = typer.Option("builtin-kadid", "--dataset", "-d", help="dataset the images come from "
                                              "(iqaguard list datasets)"),
                  restriction: Optional[str] = typer.Option(None, "--restriction", "-r", help="linf | ssim | psnr: "
                                                            "the budget measured and targeted; default the attack's own"),
                  split: Optional[str] = typer.Option(None, "--split", help="dataset split (default val where the "
                                                      "dataset has splits; test is refused)"),
                  n: int = typer.Option(125, "--n", help="calibration images (>= 4; 125: every builtin-kadid "
                                       "distortion type x level once)"),
                  held_out: int = typer.Option(125, "--held-out", help="held-out images the presets are verified on "
                                               "(0: no verification)"),
                  size: int = typer.Option(96, "--size", help="crop size in px at seeded random positions "
                                           "(0: whole images, which must share their size)"),
                  seed: int = typer.Option(0, "--seed", min=0, help="seed of the image draw, the crops and the attack"),
                  out: Optional[Path] = typer.Option(None, "--out", "-o", help="table JSON to write (default "
                                                     "runs/calibration/ATTACK__METRIC.json)"),
                  second: str = typer.Option("auto", "--second", help="second parameter calibrated where the varied "
                                             "one cannot reach a budget: a parameter name, auto (steps / max_queries "
                                             "/ epochs) or none"),
                  values: str = typer.Option("auto", "--values", help="sweep of the varied parameter: auto (probe the "
                                             "valid range, then 10 values around the targets) or a comma list"),
                  local: int = typer.Option(4, "--local", help="solve each target on the line through this many sweep "
                                            "values around it (0: one line over the whole sweep)"),
                  fix: List[str] = typer.Option([], "--fix", help="fixed attack parameter KEY=VALUE (repeatable); "
                                                "default: what the attack's presets share, e.g. steps=10"),
                  root: Optional[Path] = typer.Option(None, "--root", help="folder of a dataset that needs one"),
                  batch: int = typer.Option(16, "--batch", min=1, help="images per attack call"),
                  device: str = typer.Option("cpu", help="cpu | cuda | auto")) -> None:
    """Calibrate an attack's weak / medium / strong presets to their budgets (Guardians of Image Quality A.3.4).

    Sweeps the attack's varied parameter over 10 values on N calibration crops, fits the line
    budget ~ a + b * value, solves for the budgets of the presets (L-inf 2/4/8 /255, SSIM
    0.9/0.8/0.75, PSNR 35/30/25 dB), checks them on K held-out crops of other source photographs
    and writes the table; `iqaguard attack IMAGE --table TABLE` uses it. Progress (one line per
    probe, sweep and held-out run) goes to stderr; the fit and the presets to stdout.
    """
    from .attacks.calibrate import calibrate_dataset, fmt_budget

    try:
        fixed = _parse_fix(fix) or None
        sweep = _parse_values(values)
        second_param = None if second == "none" else second
        table = calibrate_dataset(attack_name, metric, dataset, split=split, n=n, held_out=held_out,
                                  size=size or None, seed=seed, restriction=restriction, values=sweep,
                                  second=second_param, root=None if root is None else str(root), fixed=fixed,
                                  progress=_note, batch=batch, device=device, local=local)
        from .attacks.calibrate import table_filename

        path = out if out is not None else Path("runs") / "calibration" / table_filename(attack_name, metric)
        table.to_json(path)
    except IqaguardError as e:
        fail(e)
    r, f = table.restriction, table.fit
    fixed_text = f" ({kwargs_text(table.fixed)})" if table.fixed else ""
    say(f"images: {table.n_images} calibration, {table.n_held_out} held-out ({table.dataset}"
        f"{f' split {table.split}' if table.split else ''}){fixed_text}")
    say(f"fit: {r} ~ a + b * {table.varied}, a = {f['a']:.6g}, b = {f['b']:.6g}, r² = {f['r2']:.5f}")
    for level in table.levels[1:]:
        lf = level["fit"]
        say(f"fit at {table.second}={level['value']}: a = {lf['a']:.6g}, b = {lf['b']:.6g}, r² = {lf['r2']:.5f}")
    for name, e in table.entries.items():
        params = kwargs_text(table.presets()[name])
        line = f"{name}: {params}; target {fmt_budget(r, e['target'])}, predicted {fmt_budget(r, e['predicted'])}"
        if "fit" in e:
            line += f" (local line r² {e['fit']['r2']:.5f})"
        v = table.verification.get(name)
        if v is not None:
            line += f"; held-out {fmt_budget(r, v['achieved'])}, error {100 * v['rel_error']:.2f}%, gain {v['gain']:+.4f}"
        if not e["reached"]:
            line += "; NOT reached (clipped to the end of the sweep)"
        say(line)
    worst = max((v["rel_error"] for v in table.verification.values()), default=None)
    if worst is not None and worst > 0.05:
        say(f"note: the largest held-out error is {100 * worst:.1f}% (> 5%): calibrate on more images (--n, --held-out)")
    say(f"wrote {path}")


# ---- iqaguard demo -----------------------------------------------------------------------------------------

@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output folder (DuckDB store, adversarial PNGs, report)"),
         executor: str = typer.Option("local", help="local | ray"),
         workers: Optional[int] = typer.Option(None, min=1, help=WORKERS_HELP),
         fresh: bool = typer.Option(False, help="delete an existing demo store first instead of resuming")) -> None:
    """Run the builtin demo benchmark (builtin metrics x I-FGSM, PGD, UAP x JPEG, transfer) and write the report."""
    from .bench.demo import run_demo

    try:  # workers=None: run_demo applies the same default as bench run (resolve_workers)
        run_demo(out, executor=executor, workers=workers, fresh=fresh, console=out_console)
    except IqaguardError as e:
        fail(e)


# ---- iqaguard certify ----------------------------------------------------------------------------------------
from .cli_certify import certify_cmd  # noqa: E402  (the command lives in its own module)

app.command("certify")(certify_cmd)
from .cli_train import train_cmd  # noqa: E402

app.command("train")(train_cmd)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="iqaguard", args=sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
