"""The benchmark runner: spec -> image selection -> tasks -> executor -> store (driver side).

:func:`run_spec` is resumable: every task whose rows are already stored is skipped before it
runs, a non-adaptive attack whose adversarial PNGs are cached is not recomputed (only missing
defenses are scored), and each finished task is committed in one transaction (rows of the
task + its cache entries), so a killed run loses no finished task and never duplicates one.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import __version__
from ..data.sampling import cluster_subset
from .executors import Executor, make_executor
from .executors.worker import get_dataset, run_task
from .spec import Spec, SpecError, load_spec
from .store import Store
from .tasks import AttackTask, CleanLookup, Ref, Selection, adv_path, clean_rows, expand, pending, result_rows


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


def select_images(spec: Spec, store: Store) -> Dict[Tuple[str, int], Selection]:
    """The images of every (dataset, seed), fixed in the store on first use (resumes reuse them).

    KMeans sampling is :func:`iqaguard.data.sampling.cluster_subset` (Guardians of Image Quality A.3.1) with the
    subset's seed or, when it has none, the run seed; ``limit`` then keeps the first N images.
    """
    out = {}
    for d in spec.datasets:
        ds = get_dataset(Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True)))
        for seed in spec.seeds:
            sub = d.subset
            s = sub.seed if sub is not None and sub.seed is not None else seed
            selector = json.dumps({"name": d.name, "kwargs": d.kwargs,
                                   "subset": None if sub is None else dict(sub.model_dump(), seed=s)}, sort_keys=True)
            hit = store.subset(d.key, seed, selector)
            if hit is None:
                idx = list(range(len(ds)))
                if sub is not None and sub.method == "kmeans":
                    idx = cluster_subset(ds, sub.k_per_cluster, n_clusters=sub.n_clusters, seed=s)
                if sub is not None and sub.limit is not None:
                    idx = idx[:sub.limit]
                hit = (idx, [ds[i].name for i in idx])
                store.write(subsets=[{"dataset": d.key, "seed": seed, "selector": selector,
                                      "indices": json.dumps(hit[0]), "names": json.dumps(hit[1])}])
            if not hit[0]:
                raise SpecError(f"datasets: {d.key!r} selects no image for seed {seed}")
            out[(d.key, seed)] = Selection(tuple(hit[0]), tuple(hit[1]))
    return out


def _check_references(spec: Spec) -> None:
    from ..registry import METRICS

    for i, m in enumerate(spec.metrics):
        if getattr(METRICS.get(m.name) if ":" not in m.name else None, "kind", "nr") != "fr":
            continue
        for d in spec.datasets:
            ds = get_dataset(Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True)))
            if not ds.full_reference:
                raise SpecError(f"metrics[{i}].name: {m.name!r} is full-reference but dataset {d.key!r} has no "
                                "reference images; use NR metrics or an FR dataset (kadid10k, builtin-kadid)")


def _write_pngs(store: Store, task: AttackTask, blobs: List[bytes], meta: Dict[str, Any],
                t_attack: List[float]) -> List[Dict[str, Any]]:
    """Write the adversarial PNGs atomically; return their ``adversarial`` rows."""
    rows = []
    for name, blob, t in zip(task.names, blobs, t_attack):
        rel = adv_path(task, name)
        path = store.cache_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        rows.append(dict(meta, dataset=task.dataset.label, image=name, metric=task.metric.label,
                         attack=task.attack.label, attack_preset=task.preset, seed=task.seed, path=rel, t_attack=t))
    return rows


def _with_cache(tasks: Iterable[AttackTask], store: Store, counter: List[int]) -> Iterator[AttackTask]:
    """Attach cached PNG bytes to non-adaptive tasks whose images are all cached (lazily)."""
    cached = {r[:6]: (r[6], r[7]) for r in store.query(
        "SELECT dataset, image, metric, attack, attack_preset, seed, path, t_attack FROM adversarial")}
    for t in tasks:
        hits = [cached.get(k) for k in t.adv_keys()] if t.mode == "non-adaptive" else [None]
        if all(h is not None and (store.cache_dir / h[0]).is_file() for h in hits):
            counter[0] += 1
            t = replace(t, cached=tuple((store.cache_dir / h[0]).read_bytes() for h in hits),
                        cached_t_attack=tuple(h[1] for h in hits))
        yield t


def run_spec(spec: Union[Spec, str, Path], store: Union[Store, str, Path], executor: Optional[Executor] = None,
             progress: bool = True, console: Optional[Console] = None,
             on_commit: Optional[Callable[[int], None]] = None) -> RunSummary:
    """Run (or resume) the benchmark grid of ``spec`` into ``store``.

    Args:
        spec: a :class:`Spec`, a YAML path or a builtin spec name (``"demo"``).
        store: a :class:`Store` or the path of its DuckDB file.
        executor: default :class:`~iqaguard.bench.executors.local.LocalExecutor`.
        progress: show a rich progress bar with ETA.
        console: where progress and messages go.
        on_commit: called after every committed attack task with the number of ``results`` rows
            committed so far by this run.

    Returns:
        A :class:`RunSummary`.

    Raises:
        SpecError: invalid spec; TaskError: a task failed (finished tasks stay committed).
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    own = not isinstance(store, Store)
    st = Store(store) if own else store
    executor = executor or make_executor("local")
    console = console or Console(stderr=True)
    t0, run_id = time.perf_counter(), uuid.uuid4().hex[:12]
    meta = {"version": __version__, "spec_hash": spec.hash, "run_id": run_id}
    run = {"run_id": run_id, "started": datetime.now(timezone.utc).replace(tzinfo=None), "status": "running",
           "spec_version": spec.version, "spec_hash": spec.hash, "version": __version__, "executor": executor.name}
    try:
        old = {h for (h,) in st.query("SELECT DISTINCT spec_hash FROM runs")} - {spec.hash}
        if old:
            console.print(f"[yellow]note:[/] {st.path} holds runs of other specs ({', '.join(sorted(old))}); "
                          "rows with equal keys are kept, not recomputed")
        st.log_run(run)
        _check_references(spec)
        clean_tasks, attack_tasks = expand(spec, select_images(spec, st))
        done_c, done_r = st.done_keys("clean_scores"), st.done_keys()
        todo_c = [p for p in (pending(t, done_c) for t in clean_tasks) if p is not None]
        todo_a = [p for p in (pending(t, done_r) for t in attack_tasks) if p is not None]
        total = len(clean_tasks) + len(attack_tasks)
        run.update(tasks_total=total, tasks_skipped=total - len(todo_c) - len(todo_a), tasks_run=0)
        console.print(f"[bold]iqaguard bench[/] {spec.version} ({spec.hash}): {total} tasks, "
                      f"{run['tasks_skipped']} already in {st.path}, executor {executor.name}")
        rows, reused = 0, [0]
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*cols, console=console, disable=not progress) as bar:
            pc = bar.add_task("clean scores", total=len(todo_c))
            pa = bar.add_task("attacks", total=len(todo_a))
            with closing(executor.map(run_task, todo_c)) as results:
                for task, result in results:
                    st.write(clean_scores=clean_rows(task, result, meta))
                    run["tasks_run"] += 1
                    bar.advance(pc)
            clean: CleanLookup = {r[:6]: (r[6], r[7]) for r in st.query(
                "SELECT dataset, image, metric, defense, defense_preset, seed, score, mos FROM clean_scores")}
            with closing(executor.map(run_task, _with_cache(todo_a, st, reused))) as results:
                for task, result in results:
                    adv = _write_pngs(st, task, result["png"], meta, result["t_attack"]) if result["png"] else []
                    new = result_rows(task, result, clean, dict(meta, spec_version=spec.version))
                    st.write(results=new, adversarial=adv)
                    rows += len(new)
                    run["tasks_run"] += 1
                    bar.advance(pa)
                    if on_commit is not None:
                        on_commit(rows)
        run["status"] = "finished"
        return RunSummary(run_id, st.path, total, run["tasks_skipped"], run["tasks_run"], reused[0], rows,
                          time.perf_counter() - t0)
    except BaseException:
        run["status"] = "failed"
        raise
    finally:
        run["finished"] = datetime.now(timezone.utc).replace(tzinfo=None)
        st.log_run(run)
        if own:
            st.close()
