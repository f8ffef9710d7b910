"""``iqaguard bench`` commands (a typer sub-app the main CLI mounts), and the console helpers both share.

    iqaguard bench specs                                   # the builtin specs, one line each
    iqaguard bench validate SPEC [--exact] [--no-time]     # dry run: task counts and a time estimate
    iqaguard bench run SPEC --store runs/grid.duckdb [--executor local|ray] [--address ADDR] [--workers N] [--strict]
    iqaguard bench report runs/grid.duckdb --out runs/report
    iqaguard bench export runs/grid.duckdb --out rows.parquet   # or .csv

``SPEC`` is a YAML file or a builtin spec name (``demo``). Re-running ``run`` with the same store
resumes: finished tasks are skipped. Results go to stdout (:data:`out_console`); progress, notes
and errors go to stderr (:data:`console`). User text is never parsed as rich markup: error
messages carry install hints such as ``pip install "iqaguard[pyiqa]"``, whose brackets markup
would swallow.
"""
from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import IqaguardError

bench_app = typer.Typer(help="Validate, run, report and export the benchmark grid of a spec (DuckDB store).",
                        no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
#: progress, notes and errors
console = Console(stderr=True)
#: results (tables, JSON, CSV); a pipe or a file gets wide tables instead of rich's 80-column default
out_console = Console() if sys.stdout.isatty() else Console(width=200)

WORKERS_HELP = ("local executor: worker processes, by default the cores // the spec's num_threads (one "
                "single-threaded process per core for num_threads: 1, as in the demo); 1 runs the tasks in the "
                "calling process. Ray: the CPUs of a local Ray instance (default: all cores)")


def print_error(msg: str, fold: bool = False) -> None:
    """``error: msg`` on stderr, never wrapped, no markup parsing; ``fold`` joins its lines into one.

    Unfolded, a message keeps its own lines (a spec error lists one problem per line, a dataset
    error shows the expected folder layout).
    """
    text = " ".join(str(msg).split("\n")) if fold else str(msg)
    console.print("[bold red]error:[/] " + escape(text), soft_wrap=True)


def say(text: str) -> None:
    """One line of plain user text on stdout (no markup parsing, no wrapping)."""
    out_console.print(escape(text), soft_wrap=True)


def require_defense(name: str, base: type, what: str) -> None:
    """Raise one error line unless the registered defense ``name`` is a subclass of ``base``
    (naming the ``what`` defenses that are)."""
    from ..registry import DEFENSES

    def of_kind(nm: str) -> bool:
        f = DEFENSES.get(nm)
        return isinstance(f, type) and issubclass(f, base)

    if not of_kind(name):
        allowed = [nm for nm in DEFENSES.names() if of_kind(nm)]
        raise IqaguardError(f"--defense: {name!r} is not a {what} defense; {what}: {', '.join(allowed)}")


def fail(e: Exception) -> NoReturn:
    """Print ``e`` as one error line and exit with code 2."""
    print_error(str(e))
    raise typer.Exit(code=2)


def resolve_workers(workers: Optional[int], executor: str, num_threads: int) -> Optional[int]:
    """The local executor's worker count: ``workers`` or ``default_workers(num_threads)`` (Ray: unchanged)."""
    from .executors.local import default_workers

    return default_workers(num_threads) if workers is None and executor == "local" else workers


# ---- bench specs ---------------------------------------------------------------------------------------------

def spec_description(path: Path) -> str:
    """The first comment line of a spec file (its one-line description), or ``""``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip()
            if text:
                return text
        elif line.strip():
            break
    return ""


@bench_app.command("specs")
def specs_cmd() -> None:
    """List the builtin specs (usable by name: iqaguard bench run NAME) with their one-line description."""
    from .spec import SPECS_DIR

    t = Table("spec", "description", "file")
    for path in sorted(SPECS_DIR.glob("*.yaml")):
        t.add_row(escape(path.stem), escape(spec_description(path) or "(no description)"), escape(str(path)))
    out_console.print(t)


# ---- bench validate: the dry run ---------------------------------------------------------------------------

def count_selections(sp: Any) -> Dict[Tuple[str, int], Any]:
    """Image selections sized as ``bench run`` would size them, without KMeans and without screening.

    A ``kmeans`` subset counts ``min(len, k_per_cluster x n_clusters)`` images (an upper bound:
    a cluster smaller than ``k_per_cluster`` gives all it has), ``limit`` caps that; the images
    stand in by the dataset's first names.
    """
    import json

    from .executors.worker import get_dataset
    from .spec import SpecError
    from .tasks import Ref, Selection

    out = {}
    for d in sp.datasets:
        ds = get_dataset(Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True)))
        n, sub = len(ds), d.subset
        if sub is not None and sub.method == "kmeans":
            n = min(n, sub.k_per_cluster * sub.n_clusters)
        if sub is not None and sub.limit is not None:
            n = min(n, sub.limit)
        if n == 0:
            raise SpecError(f"datasets: {d.key!r} selects no image (the dataset is empty)")
        sel = Selection(tuple(range(n)), tuple(ds[i].name for i in range(n)))
        for seed in sp.seeds:
            out[(d.key, seed)] = sel
    return out


def _defenses_text(pairs: List[Tuple[str, str]]) -> str:
    """``[("none", "-"), ("jpeg", "0"), ("jpeg", "4")]`` -> ``"none, jpeg 0,4"``."""
    by: Dict[str, List[str]] = defaultdict(list)
    for label, preset in pairs:
        by[label].append(preset)
    return ", ".join(label if presets == ["-"] else f"{label} {','.join(presets)}" for label, presets in by.items())


def grid_rows(clean: Sequence[Any], attacks: Sequence[Any]) -> List[Tuple[str, ...]]:
    """One row per metric x mode x attack x preset x defense: tasks, images, rows (clean tasks: clean-score rows)."""
    groups: Dict[Tuple[str, ...], List[int]] = {}
    for t in clean:
        key = (t.metric.label, "clean", "-", "-", _defenses_text([("none", "-")] + [d.key for d in t.defenses]))
        g = groups.setdefault(key, [0, 0, 0])
        g[0], g[1], g[2] = g[0] + 1, g[1] + len(t.names), g[2] + len(t.keys())
    for t in attacks:
        key = (t.metric.label, t.mode, t.attack.label, t.preset, _defenses_text(t.scored()))
        g = groups.setdefault(key, [0, 0, 0])
        g[0], g[1], g[2] = g[0] + 1, g[1] + len(t.names), g[2] + len(t.keys())
    return [k + tuple(str(v) for v in g) for k, g in groups.items()]


def time_tasks(clean: Sequence[Any], attacks: Sequence[Any], fits: Sequence[Any] = ()) -> Tuple[float, float]:
    """Estimated serial seconds of every task, and the seconds the measurement took.

    One clean task per metric and one attack task per metric x attack x mode run on their first
    image only (:func:`~iqaguard.bench.executors.worker.run_task`, results discarded); every
    task's cost is that per-image time times its images. A universal attack is first fitted on
    two of its training images (that time, times its images / 2, per preset), and its attack
    tasks are timed with that trial perturbation.
    """
    from .executors.worker import get_metric, run_task

    t_start, cost, trial = time.perf_counter(), {}, {}
    total = 0.0
    for f in fits:
        key = ("fit", f.metric.label, f.attack.label)
        if key not in cost:
            small = replace(f, images=min(2, f.images))
            get_metric(small.metric, small.device)
            t0 = time.perf_counter()
            try:
                trial[key[1:]] = run_task(small)["state"]
            except (IqaguardError, RuntimeError, ValueError) as e:
                raise IqaguardError(f"task {small.describe()} fails: {e}".replace("\n", " ")) from e
            cost[key] = (time.perf_counter() - t0) * f.images / small.images
        total += cost[key]
    attacks = [replace(t, universal=trial[(t.metric.label, t.attack.label)])
               if (t.metric.label, t.attack.label) in trial else t for t in attacks]

    def per_image(key: tuple, task: Any) -> float:
        if key not in cost:
            one = replace(task, indices=task.indices[:1], names=task.names[:1])
            get_metric(one.metric, one.device)  # build (and cache) the metric outside the timed call
            t0 = time.perf_counter()
            try:
                run_task(one)
            except (IqaguardError, RuntimeError, ValueError) as e:
                raise IqaguardError(f"task {one.describe()} fails: {e}".replace("\n", " ")) from e
            cost[key] = time.perf_counter() - t0
        return cost[key] * len(task.names)

    total += sum(per_image(("clean", t.metric.label), t) for t in clean)
    total += sum(per_image((t.metric.label, t.attack.label, t.mode), t) for t in attacks)
    return total, time.perf_counter() - t_start


@bench_app.command("validate")
def validate_cmd(spec: str = typer.Argument(..., help="spec YAML file, or a builtin spec name (iqaguard bench specs)"),
                 exact: bool = typer.Option(False, "--exact", help="select the images as bench run does (screening "
                                            "and KMeans) in a temporary store, deleted afterwards; default: count "
                                            "them without KMeans"),
                 timing: bool = typer.Option(True, "--time/--no-time", help="time one clean task per metric and one "
                                             "attack task per metric x attack x mode on one image to estimate the "
                                             "run time")) -> None:
    """Dry run: validate SPEC, expand its task grid and estimate the run time; nothing is stored.

    Prints the tasks per metric x mode x attack x preset x defense (clean tasks first), the total
    images, and an estimate of the time extrapolated from single-image tasks.
    """
    from .executors.local import default_workers
    from .defense_check import check_defenses, trained_keys
    from .runner import _check_references, metric_min_sizes, select_images
    from .spec import load_spec
    from .store import Store
    from .tasks import certify_tasks, expand, fit_tasks, transfer_tasks

    try:
        sp = load_spec(spec)
        _check_references(sp)
        if exact:
            with tempfile.TemporaryDirectory(prefix="iqaguard-validate-") as tmp, Store(Path(tmp) / "v.duckdb") as st:
                selections = select_images(sp, st)
            how = "images selected as `bench run` selects them (screening, KMeans) in a temporary store"
        else:
            selections = count_selections(sp)
            how = ("images counted without KMeans or screening (a kmeans subset counts as k_per_cluster x "
                   "n_clusters, at most); --exact selects them as `bench run` does")
        excluded, _ = check_defenses(sp, selections, metric_min_sizes(sp), build_trained=False)
        clean, attacks = expand(sp, selections, excluded)
        fits, transfers = fit_tasks(sp), transfer_tasks(sp, selections, excluded)
        untimed = trained_keys(sp)  # building a trained defense trains it: timed without them
        estimate = None
        if timing:
            timed = expand(sp, selections, {**excluded, **untimed}) if untimed else (clean, attacks)
            estimate = time_tasks(*timed, fits)
    except IqaguardError as e:
        fail(e)
    t = Table("metric", "mode", "attack", "preset", "defenses scored", "tasks", "images", "rows",
              title=escape(f"spec {spec} (version {sp.version}, hash {sp.hash}): valid"), title_justify="left")
    for row in grid_rows(clean, attacks):
        t.add_row(*(escape(c) for c in row))
    out_console.print(t)
    n_rows, n_clean = sum(len(a.keys()) for a in attacks), sum(len(c.keys()) for c in clean)
    images = sum(len(s.indices) for s in selections.values())
    extra = "".join(f" + {n} {what}" for n, what in ((len(fits), "universal fit"), (len(transfers), "transfer"))
                    if n)
    total = len(clean) + len(attacks) + len(fits) + len(transfers)
    say(f"tasks: {len(clean)} clean + {len(attacks)} attack{extra} = {total}; {n_rows} result rows "
        f"(+ {n_clean} clean-score rows); {images} images over {len(selections)} dataset x seed selection(s)")
    if transfers:
        say(f"transfer: {sum(len(t.keys()) for t in transfers)} transfer rows (scoring only; not in the estimate)")
    certifies = certify_tasks(sp, selections, excluded)
    if certifies:
        say(f"certify: {len(certifies)} tasks, {sum(len(t.keys()) for t in certifies)} certified rows "
            "(smoothing defenses on the clean images; not in the estimate)")
    say(how)
    if untimed:
        say(f"trained defenses: {len(untimed)} (defense, preset, metric) variants are fine-tuned once on the first "
            "run (about 1-5 min each on 2 cores) and cached; validate neither trains nor times them, and their "
            "tasks are not in the estimate")
    for why in dict.fromkeys(excluded.values()):
        n = sum(1 for v in excluded.values() if v == why)
        say(f"skipped {n} (defense, preset, metric): {why}")
    if estimate is not None:
        serial, took = estimate
        w = default_workers(sp.num_threads)
        say(f"estimated time (an estimate, extrapolated from single-image tasks timed in {took:.1f} s): "
            f"{serial:.0f} s in one process, about {serial / w:.0f} s with the {w} local worker(s) that bench run "
            "uses by default here")


# ---- bench run / report / export --------------------------------------------------------------------------

@bench_app.command("run")
def run_cmd(spec: str = typer.Argument(..., help="spec YAML file, or a builtin spec name (iqaguard bench specs)"),
            store: Path = typer.Option(..., "--store", help="DuckDB result file (created or resumed)"),
            executor: str = typer.Option("local", "--executor", help="local | ray"),
            address: Optional[str] = typer.Option(None, "--address",
                                                  help="Ray cluster address (auto, host:6379, ray://host:10001)"),
            workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
            gpus_per_task: Optional[float] = typer.Option(None, "--gpus-per-task", min=0.0,
                                                          help="GPUs per Ray task (default 1 if device is cuda)"),
            strict: bool = typer.Option(False, "--strict", help="exit with code 1 at the end if any image of a "
                                        "dataset was skipped (unreadable, or too small for a metric)"),
            quiet: bool = typer.Option(False, "--quiet", help="no progress bar")) -> None:
    """Run (or resume) every task of SPEC; rows go to --store, adversarial PNGs next to it.

    Images that cannot be used are skipped and recorded in the store's ``skipped`` table; the
    run goes on without them (exit code 0), or ends with exit code 1 under --strict.
    """
    from .executors import make_executor
    from .runner import run_spec, skipped_images
    from .spec import load_spec
    from .store import Store

    try:
        sp = load_spec(spec)
        ex = make_executor(executor, address=address, workers=resolve_workers(workers, executor, sp.num_threads),
                           device=sp.device, gpus_per_task=gpus_per_task, cpus_per_task=sp.num_threads)
        try:
            s = run_spec(sp, store, executor=ex, progress=not quiet, console=console)
        finally:
            ex.close()
        with Store(s.store, read_only=True) as st:
            skipped = skipped_images(st, sp)
    except IqaguardError as e:
        fail(e)
    console.print("[green]done[/] " + escape(f"run {s.run_id}: {s.tasks_run} tasks run, {s.tasks_skipped} already in the store, "
                                             f"{s.attacks_reused} attacks reused from the PNG cache, {s.rows_written} "
                                             f"rows in {s.seconds:.1f} s -> {s.store}"), soft_wrap=True)
    if skipped:
        console.print(escape(f"{len(skipped)} image(s) skipped, e.g. {skipped[0][2]} of {skipped[0][0]}: "
                             f"{skipped[0][3]} (all: iqaguard bench export {s.store} --table skipped --out "
                             "skipped.csv)"), soft_wrap=True)
        if strict:
            raise typer.Exit(code=1)


@bench_app.command("report")
def report_cmd(store: Path = typer.Argument(..., help="DuckDB result file"),
               out: Path = typer.Option(Path("runs/report"), "--out", help="output folder for index.html")) -> None:
    """Write the self-contained HTML leaderboard of a result store."""
    from .report import write_report

    if not store.is_file():
        fail(IqaguardError(f"store not found: {store} (create it with `iqaguard bench run SPEC --store {store}`)"))
    try:
        console.print("report: [bold]" + escape(str(write_report(store, out))) + "[/]", soft_wrap=True)
    except IqaguardError as e:
        fail(e)


@bench_app.command("export")
def export_cmd(store: Path = typer.Argument(..., help="DuckDB result file"),
               out: Path = typer.Option(..., "--out", help="FILE.parquet or FILE.csv"),
               table: str = typer.Option("results", "--table",
                                         help="results | clean_scores | adversarial | subsets | runs | skipped")) -> None:
    """Export a store table (rows ordered by key) to Parquet or CSV."""
    from .store import TABLES, Store

    if out.suffix.lower() not in (".parquet", ".csv"):
        fail(IqaguardError(f"--out: expected a .parquet or .csv file, got {out}"))
    if table not in TABLES:
        fail(IqaguardError(f"--table: unknown table {table!r}; allowed: {', '.join(TABLES)}"))
    if not store.is_file():
        fail(IqaguardError(f"store not found: {store}"))
    try:
        with Store(store, read_only=True) as s:
            s.export(out, table)
            n = s.count(table)
    except IqaguardError as e:
        fail(e)
    console.print("[green]exported[/] " + escape(f"{n} {table} rows -> {out}"), soft_wrap=True)
