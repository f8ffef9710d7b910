"""The benchmark runner: spec -> image selection -> tasks -> executor -> store (driver side).

:func:`run_spec` is resumable: every task whose rows are already stored is skipped before it
runs, a non-adaptive attack whose adversarial PNGs are cached is not recomputed (only missing
defenses are scored), and each finished task is committed in one transaction (rows of the
task + its cache entries), so a killed run loses no finished task and never duplicates one.

Interruption: Ctrl-C (SIGINT) and SIGTERM stop a run the same way: the executor is closed (the
worker processes are terminated, queued tasks dropped), every committed task stays, the ``runs``
row says ``interrupted``, and one line says how many tasks are committed and the command that
resumes the run (the same command with the same store). ``KeyboardInterrupt`` is then re-raised
(the CLI exits with 130) and SIGTERM raises :class:`Terminated` (a ``SystemExit`` with status 143).

Progress: per phase a rich bar on a terminal, and plain lines every ~10 s on a pipe or a file
(:mod:`iqaguard.bench.progress`); a dataset that is slow to prepare (builtin-kadid's first use)
is announced with its duration.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..data.sampling import cluster_subset
from ..data.screen import min_side_of, screen
from .executors import Executor, make_executor
from .executors.worker import get_dataset, get_metric, run_task
from .progress import counter, phase, say
from .spec import Spec, SpecError, load_spec
from .store import Store
from .tasks import (AttackTask, CleanLookup, FitTask, Ref, Selection, TransferTask, adv_path, certify_rows,
                    certify_tasks, clean_rows, expand, fit_tasks, gradient_rows, pending, result_rows, safe_name,
                    transfer_rows, transfer_tasks)


@dataclass
class RunSummary:
    """What a run did: task counts, ``results`` rows written, wall time and where the store is."""

    run_id: str
    store: Path
    tasks_total: int
    tasks_skipped: int
    tasks_run: int
    attacks_reused: int
    rows_written: int
    seconds: float
    images_skipped: int = 0  # images of the spec's datasets left out (the store's ``skipped`` table)


def metric_min_sizes(spec: Spec) -> Dict[str, int]:
    """``{metric label: min_size}`` of the spec's metrics (class attribute; adapters are built once)."""
    from ..registry import METRICS

    sizes = {}
    for m in spec.metrics:
        cls = METRICS.get(m.name) if ":" not in m.name else None
        size = getattr(cls, "min_size", None) if cls is not None else None
        if size is None:
            size = get_metric(Ref(m.key, m.name, json.dumps(m.kwargs, sort_keys=True)), "cpu").min_size
        sizes[m.key] = int(size)
    return sizes


def _metric_min_side(spec: Spec) -> Tuple[int, str]:
    """The largest ``min_size`` of the spec's metrics and the metric that sets it."""
    return min_side_of(metric_min_sizes(spec).items())


def check_defense_presets(spec: Spec, st: Store, selections: Dict[Tuple[str, int], Selection],
                          console: Console, meta: Dict[str, Any]) -> Dict[Tuple[str, int, str], str]:
    """Check every (defense, preset, metric) once (:func:`iqaguard.bench.defense_check.check_defenses`),
    record it in ``defense_presets`` and say which are skipped; returns the excluded ones."""
    from .defense_check import check_defenses

    excluded, rows = check_defenses(spec, selections, metric_min_sizes(spec))
    st.write(defense_presets=[dict(r, **meta) for r in rows])
    for why in dict.fromkeys(excluded.values()):
        n = sum(1 for v in excluded.values() if v == why)
        console.print("[yellow]skipped:[/] " + escape(f"{n} (defense, preset, metric): {why}"), soft_wrap=True)
    return excluded


def select_images(spec: Spec, store: Store, run_id: Optional[str] = None, console: Optional[Console] = None,
                  progress: bool = True) -> Dict[Tuple[str, int], Selection]:
    """The images of every (dataset, seed), fixed in the store on first use (resumes reuse them).

    Every candidate image is screened first (:func:`iqaguard.data.screen.screen`): one that does
    not decode, or whose shorter side is below the largest ``min_size`` of the spec's metrics,
    is left out and recorded in the store's ``skipped`` table with its reason (in the same
    transaction as the selection). KMeans sampling is :func:`iqaguard.data.sampling.cluster_subset`
    (Guardians of Image Quality A.3.1) over the usable images, with the subset's seed or, when it
    has none, the run seed; ``limit`` then keeps the first N usable images. Screening and
    sampling report their progress on ``console`` (plain lines when it is not a terminal).
    """
    console = console or Console(stderr=True)
    out = {}
    min_side: Optional[Tuple[int, str]] = None
    for d in spec.datasets:
        ds = get_dataset(Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True)))
        screened = None
        for seed in spec.seeds:
            sub = d.subset
            s = sub.seed if sub is not None and sub.seed is not None else seed
            selector = json.dumps({"name": d.name, "kwargs": d.kwargs,
                                   "subset": None if sub is None else dict(sub.model_dump(), seed=s)}, sort_keys=True)
            hit = store.subset(d.key, seed, selector)
            if hit is None:
                kmeans = sub is not None and sub.method == "kmeans"
                if screened is None:
                    min_side = min_side or _metric_min_side(spec)
                    need = None if kmeans or sub is None else sub.limit
                    with counter(console, f"screening images of {d.key}", len(ds), progress) as advance:
                        screened = screen(ds, range(len(ds)), *min_side, need=need, on_image=lambda n: advance())
                idx = list(screened.usable)
                if kmeans and idx:
                    with phase(console, f"sampling subset of {d.key} (kmeans, {len(idx)} images, "
                                        f"{sub.n_clusters} clusters)", enabled=progress):
                        idx = [idx[i] for i in cluster_subset(ds.subset(idx), sub.k_per_cluster,
                                                              n_clusters=sub.n_clusters, seed=s)]
                if sub is not None and sub.limit is not None:
                    idx = idx[:sub.limit]
                hit = (idx, [ds[i].name for i in idx])
                store.write(subsets=[{"dataset": d.key, "seed": seed, "selector": selector,
                                      "indices": json.dumps(hit[0]), "names": json.dumps(hit[1])}],
                            skipped=[{"dataset": d.key, "seed": seed, "image": name, "reason": why, "run_id": run_id}
                                     for _, name, why in screened.skipped])
            if not hit[0]:
                raise SpecError(f"datasets: {d.key!r} selects no image for seed {seed}"
                                + (f" ({len(screened.skipped)} skipped: {screened.skipped[0][2]})"
                                   if screened is not None and screened.skipped else ""))
            out[(d.key, seed)] = Selection(tuple(hit[0]), tuple(hit[1]))
    return out


def skipped_images(store: Store, spec: Spec) -> List[Tuple[str, int, str, str]]:
    """``(dataset, seed, image, reason)`` of every image of ``spec``'s datasets the store skipped."""
    keys = {d.key for d in spec.datasets}
    return [r for r in store.query("SELECT dataset, seed, image, reason FROM skipped ORDER BY dataset, seed, image")
            if r[0] in keys and r[1] in spec.seeds]


class Terminated(SystemExit):
    """SIGTERM stopped a benchmark run (committed tasks are kept); the process exits with 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only; the
    previous handlers of SIGTERM and SIGINT are restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        for s, handler in old.items():
            if handler is not None:
                signal.signal(s, handler)


def _hold_signals() -> None:
    """Ignore further Ctrl-C / SIGTERM while an interrupted run cleans up (restored after)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def resume_command(drop: Sequence[str] = ()) -> Optional[str]:
    """The command line of this process when it is the iqaguard CLI, else ``None``.

    Args:
        drop: flags to leave out (``"--fresh"``: re-running it would delete the store).

    Returns:
        ``"iqaguard bench run spec.yaml --store s.duckdb --workers 2"`` (``python -m iqaguard ...``
        when started that way), shell-quoted.
    """
    argv0 = Path(sys.argv[0])
    if argv0.name == "iqaguard":
        prog = "iqaguard"
    elif argv0.name == "__main__.py" and argv0.parent.name == "iqaguard":
        prog = "python -m iqaguard"
    else:
        return None
    return f"{prog} {shlex.join(a for a in sys.argv[1:] if a not in drop)}".rstrip()


def _interrupted_line(why: str, run: Dict[str, Any], store: Path, resume: Optional[str]) -> str:
    if run.get("tasks_total") is None:
        done = "before any task was run"
    else:
        done = f"{run['tasks_skipped'] + run['tasks_run']} of {run['tasks_total']} tasks committed in {store}"
    how = f"resume with: {resume}" if resume else f"resume by running it again with the same store ({store})"
    return f"interrupted ({why}): {done}; {how}"


#: datasets whose first use is slow (their images are generated, then cached): what to expect
FIRST_USE = {"builtin-kadid": "first use generates its images: ~8 s per photograph on 2 cores"}
#: seconds a dataset may take to open before its preparation is announced
PREPARE_NOTICE_AFTER = 1.0


def _dataset_ref(d: Any) -> Ref:
    return Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True))


def _prepare_datasets(spec: Spec, console: Console, enabled: bool) -> None:
    """Open every dataset of ``spec`` and its universal attacks' fit datasets (cached per process),
    announcing the slow ones."""
    for d in list(spec.datasets) + [a.fit.dataset for a in spec.attacks if a.fit is not None]:
        hint = f" ({FIRST_USE[d.name]})" if d.name in FIRST_USE else ""
        with phase(console, f"preparing dataset {d.key}{hint}", after=PREPARE_NOTICE_AFTER, enabled=enabled):
            get_dataset(_dataset_ref(d))


def _check_references(spec: Spec) -> None:
    from ..registry import METRICS

    for i, m in enumerate(spec.metrics):
        if getattr(METRICS.get(m.name) if ":" not in m.name else None, "kind", "nr") != "fr":
            continue
        fit_sets = [a.fit.dataset for a in spec.attacks if a.fit is not None]
        for d in list(spec.datasets) + fit_sets:
            ds = get_dataset(_dataset_ref(d))
            if not ds.full_reference:
                what = "dataset" if d in spec.datasets else "fit dataset"
                raise SpecError(f"metrics[{i}].name: {m.name!r} is full-reference but {what} {d.key!r} has no "
                                "reference images; use NR metrics or an FR dataset (kadid10k, builtin-kadid)")


def _write_file(store: Store, rel: str, blob: bytes) -> None:
    """Write ``blob`` to ``store.cache_dir / rel`` atomically (a temporary file, then a rename)."""
    path = store.cache_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def _write_pngs(store: Store, task: AttackTask, result: Dict[str, Any], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Write the adversarial PNGs of ``result``; return their ``adversarial`` rows."""
    rows = []
    for name, blob, t, q in zip(task.names, result["png"], result["t_attack"], result["queries"]):
        rel = adv_path(task, name)
        _write_file(store, rel, blob)
        rows.append(dict(meta, dataset=task.dataset.label, image=name, metric=task.metric.label,
                         attack=task.attack.label, attack_preset=task.preset, seed=task.seed, path=rel, t_attack=t,
                         attack_params=result["params"], queries=q))
    return rows


def _adversarial_cache(store: Store) -> Dict[tuple, tuple]:
    """``adversarial`` key -> (path, t_attack, attack_params, queries) of every cached image."""
    return {r[:6]: r[6:] for r in store.query(
        "SELECT dataset, image, metric, attack, attack_preset, seed, path, t_attack, attack_params, queries "
        "FROM adversarial")}


def _with_cache(tasks: Iterable[AttackTask], store: Store, counter: List[int]) -> Iterator[AttackTask]:
    """Attach cached PNG bytes to non-adaptive tasks whose images are all cached (lazily)."""
    cached = _adversarial_cache(store)
    for t in tasks:
        hits = [cached.get(k) for k in t.adv_keys()] if t.mode == "non-adaptive" else [None]
        if all(h is not None and (store.cache_dir / h[0]).is_file() for h in hits):
            counter[0] += 1
            t = replace(t, cached=tuple((store.cache_dir / h[0]).read_bytes() for h in hits),
                        cached_t_attack=tuple(h[1] for h in hits), cached_params=hits[0][2],
                        cached_queries=tuple(h[3] for h in hits), universal=None)
        yield t


def _universal_path(task: FitTask) -> str:
    """Cache path of a fitted perturbation, relative to ``Store.cache_dir``."""
    return "/".join(["universal", *(safe_name(k) for k in task.key)]) + ".safetensors"


def _fits_todo(store: Store, spec: Spec, attack_tasks: List[AttackTask]) -> Tuple[List[FitTask], List[FitTask]]:
    """The fits the pending ``attack_tasks`` need, and those of them the store lacks."""
    needed = {(t.metric.label, t.attack.label, t.preset) for t in attack_tasks}
    stored = {r[:3]: r[3] for r in store.query("SELECT metric, attack, attack_preset, path FROM universal")}
    fits = [f for f in fit_tasks(spec) if f.key in needed]
    return fits, [f for f in fits if f.key not in stored or not (store.cache_dir / stored[f.key]).is_file()]


def _fit_universal(store: Store, fits: List[FitTask], todo: List[FitTask], attack_tasks: List[AttackTask],
                   executor: Executor, console: Console, progress: bool, meta: Dict[str, Any],
                   run: Dict[str, Any]) -> List[AttackTask]:
    """Run the ``todo`` fits (one per (metric, attack, preset)), store each perturbation, and return
    ``attack_tasks`` with the perturbations of ``fits`` attached."""
    with counter(console, "fitting universal attacks", len(todo), progress and bool(todo)) as advance, \
            closing(executor.map(run_task, todo)) as results:
        for task, result in results:
            rel = _universal_path(task)
            _write_file(store, rel, result["state"])
            store.write(universal=[dict(meta, metric=task.metric.label, attack=task.attack.label,
                                        attack_preset=task.preset, fit_dataset=task.dataset.label,
                                        fit_images=json.dumps(result["images"]), path=rel,
                                        attack_params=result["params"], t_fit=result["t_fit"])])
            run["tasks_run"] += 1
            advance()
    stored = {r[:3]: r[3] for r in store.query("SELECT metric, attack, attack_preset, path FROM universal")}
    blobs = {f.key: (store.cache_dir / stored[f.key]).read_bytes() for f in fits}
    return [replace(t, universal=blobs[(t.metric.label, t.attack.label, t.preset)])
            if (t.metric.label, t.attack.label, t.preset) in blobs else t for t in attack_tasks]


def _with_sources(tasks: Iterable[TransferTask], store: Store) -> Iterator[TransferTask]:
    """Attach the source metric's cached adversarial PNGs to each transfer task (lazily)."""
    cached = _adversarial_cache(store)
    for t in tasks:
        hits = [cached.get(k) for k in t.adv_keys()]
        missing = [k for k, h in zip(t.adv_keys(), hits) if h is None or not (store.cache_dir / h[0]).is_file()]
        if missing:
            raise SpecError(f"transfer: the cached adversarial image of {missing[0]} is missing from "
                            f"{store.cache_dir} (the PNG cache was deleted?); run the spec into a new store")
        yield replace(t, cached=tuple((store.cache_dir / h[0]).read_bytes() for h in hits))


def _transfer(store: Store, todo: List[TransferTask], clean: CleanLookup, executor: Executor, console: Console,
              progress: bool, meta: Dict[str, Any], run: Dict[str, Any]) -> int:
    """Score every metric's cached adversarial images with the spec's other metrics; returns rows."""
    rows = 0
    with counter(console, "transfer", len(todo), progress and bool(todo)) as advance, \
            closing(executor.map(run_task, _with_sources(todo, store))) as results:
        for task, result in results:
            new = transfer_rows(task, result, clean, meta)
            store.write(transfer=new)
            rows += len(new)
            run["tasks_run"] += 1
            advance()
    return rows


def run_spec(spec: Union[Spec, str, Path], store: Union[Store, str, Path], executor: Optional[Executor] = None,
             progress: bool = True, console: Optional[Console] = None,
             on_commit: Optional[Callable[[int], None]] = None, resume: Optional[str] = None) -> RunSummary:
    """Run (or resume) the benchmark grid of ``spec`` into ``store``.

    Args:
        spec: a :class:`Spec`, a YAML path or a builtin spec name (``"demo"``).
        store: a :class:`Store` or the path of its DuckDB file.
        executor: default :class:`~iqaguard.bench.executors.local.LocalExecutor`.
        progress: show progress with ETA (a rich bar on a terminal, a line every ~10 s otherwise).
        console: where progress and messages go.
        on_commit: called after every committed attack task with the number of ``results`` rows
            committed so far by this run.
        resume: the command that resumes this run, shown when it is interrupted (default: this
            process's command line when it is the iqaguard CLI, see :func:`resume_command`).

    Returns:
        A :class:`RunSummary`.

    Raises:
        SpecError: invalid spec; TaskError: a task failed (finished tasks stay committed).
        KeyboardInterrupt: Ctrl-C; Terminated: SIGTERM (both after the clean stop described in
            the module docstring).
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    own = not isinstance(store, Store)
    st = Store(store) if own else store
    executor = executor or make_executor("local")
    console = console or Console(stderr=True)
    t0, run_id = time.perf_counter(), uuid.uuid4().hex[:12]
    run = {"run_id": run_id, "started": datetime.now(timezone.utc).replace(tzinfo=None), "status": "running",
           "spec_version": spec.version, "spec_hash": spec.hash, "version": __version__, "executor": executor.name}
    with _sigterm_raises():
        try:
            return _run(spec, st, executor, console, progress, on_commit, run, t0)
        except (KeyboardInterrupt, Terminated) as e:
            _hold_signals()
            run["status"] = "interrupted"
            executor.close()  # terminates the worker processes; committed tasks are in the store
            why = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
            say(console, _interrupted_line(why, run, st.path, resume or resume_command()))
            raise
        except BaseException:
            run["status"] = "failed"
            raise
        finally:
            run["finished"] = datetime.now(timezone.utc).replace(tzinfo=None)
            st.log_run(run)
            if own:
                st.close()


def _run(spec: Spec, st: Store, executor: Executor, console: Console, progress: bool,
         on_commit: Optional[Callable[[int], None]], run: Dict[str, Any], t0: float) -> RunSummary:
    """The body of :func:`run_spec`; fills ``run`` (the ``runs`` row) as it goes."""
    run_id = run["run_id"]
    meta = {"version": __version__, "spec_hash": spec.hash, "run_id": run_id}
    old = {h for (h,) in st.query("SELECT DISTINCT spec_hash FROM runs")} - {spec.hash}
    if old:
        console.print("[yellow]note:[/] " + escape(f"{st.path} holds runs of other specs ({', '.join(sorted(old))}); "
                                                   "rows with equal keys are kept, not recomputed"), soft_wrap=True)
    st.log_run(run)
    _prepare_datasets(spec, console, progress)
    _check_references(spec)
    selections = select_images(spec, st, run_id, console, progress)
    excluded = check_defense_presets(spec, st, selections, console, meta)
    clean_tasks, attack_tasks = expand(spec, selections, excluded)
    done_c, done_r, done_t = st.done_keys("clean_scores"), st.done_keys(), st.done_keys("transfer")
    todo_c = [p for p in (pending(t, done_c) for t in clean_tasks) if p is not None]
    todo_a = [p for p in (pending(t, done_r) for t in attack_tasks) if p is not None]
    transfers = transfer_tasks(spec, selections, excluded)
    todo_t = [t for t in transfers if not all(k in done_t for k in t.keys())]
    fits, todo_f = _fits_todo(st, spec, todo_a)
    certifies = certify_tasks(spec, selections, excluded)
    done_k = st.done_keys("certified")
    todo_k = [t for t in certifies if not all(k in done_k for k in t.keys())]
    total = len(clean_tasks) + len(attack_tasks) + len(transfers) + len(fit_tasks(spec)) + len(certifies)
    run.update(tasks_total=total, tasks_skipped=total - len(todo_c) - len(todo_a) - len(todo_t) - len(todo_f)
               - len(todo_k), tasks_run=0)
    console.print("[bold]iqaguard bench[/] " + escape(f"{spec.version} ({spec.hash}): {total} tasks, "
                                                      f"{run['tasks_skipped']} already in {st.path}, executor "
                                                      f"{executor.name}"), soft_wrap=True)
    rows, reused = 0, [0]
    with counter(console, "clean scores", len(todo_c), progress) as advance, \
            closing(executor.map(run_task, todo_c)) as results:
        for task, result in results:
            st.write(clean_scores=clean_rows(task, result, meta))
            run["tasks_run"] += 1
            advance()
    with counter(console, "certificates", len(todo_k), progress) as advance, \
            closing(executor.map(run_task, todo_k)) as results:
        for task, result in results:
            st.write(certified=certify_rows(task, result, meta))
            run["tasks_run"] += 1
            advance()
    clean: CleanLookup = {r[:6]: (r[6], r[7]) for r in st.query(
        "SELECT dataset, image, metric, defense, defense_preset, seed, score, mos FROM clean_scores")}
    todo_a = _fit_universal(st, fits, todo_f, todo_a, executor, console, progress, meta, run)
    with counter(console, "attacks", len(todo_a), progress) as advance, \
            closing(executor.map(run_task, _with_cache(todo_a, st, reused))) as results:
        for task, result in results:
            adv = _write_pngs(st, task, result, meta) if result["png"] else []
            new = result_rows(task, result, clean, dict(meta, spec_version=spec.version))
            st.write(results=new, adversarial=adv, gradient_checks=gradient_rows(task, result, meta))
            rows += len(new)
            run["tasks_run"] += 1
            advance()
            if on_commit is not None:
                on_commit(rows)
    _transfer(st, todo_t, clean, executor, console, progress, meta, run)
    run["status"] = "finished"
    return RunSummary(run_id, st.path, total, run["tasks_skipped"], run["tasks_run"], reused[0], rows,
                      time.perf_counter() - t0, len(skipped_images(st, spec)))
