"""Local executor: tasks run in this process (the default) or in a pool of worker processes.

With ``workers=1`` every task runs in the driver process, one after another. With ``workers=N``
(N > 1) the tasks run in N worker processes started with the ``spawn`` method (safe with
PyTorch's thread pools, unlike ``fork``); each worker builds its metrics and datasets once
(:mod:`~iqaguard.bench.executors.worker` caches them per process) and sets
``torch.set_num_threads(task.num_threads)`` per task. Use ``workers * num_threads <= cores``:
on 2 cores, 2 single-threaded workers ran an I-FGSM x JPEG grid 1.29x faster than one 2-thread
process (``python benchmarks/bench_overhead.py --skip-parts 1,2``), because small convolutions
scale poorly across threads and the per-task Python work (JPEG, PNG, fidelity scores) then runs
in parallel too. Rows are identical either way (``tests/test_local_pool.py``).

Process hygiene: :meth:`LocalExecutor.close` terminates the worker processes (SIGTERM, then
SIGKILL after :data:`iqaguard._pool.STOP_GRACE_S`) instead of letting them finish their current task, so a run
stopped by Ctrl-C or SIGTERM leaves no process behind. Workers ignore SIGINT: a Ctrl-C in a
terminal reaches the whole process group, and the driver alone decides how the run stops.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

from ..._pool import ignore_sigint, stop_pool
from ...errors import InputError
from . import TaskError



class LocalExecutor:
    """Run tasks on this machine: in-process (``workers=1``) or in ``workers`` spawned processes.

    Results are yielded as tasks finish (task order when ``workers=1``). At most ``2 * workers``
    tasks are in flight, so lazily produced tasks (e.g. ones carrying cached PNG bytes) are not
    all materialised at once. The engine's own cost per task (skip check, result-to-row
    conversion, one store transaction, progress update) is measured by
    ``benchmarks/bench_overhead.py``.

    Args:
        workers: number of processes; 1 (default) runs in the calling process.

    Raises:
        InputError: ``workers`` is not a positive integer.
    """

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers: expected a positive integer number of processes, got {workers!r}")
        self.workers = workers
        self._pool: Optional[ProcessPoolExecutor] = None
        if workers > 1:
            self.name = f"local ({workers} processes)"

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` for every task.

        Raises:
            TaskError: a task raised; results that finished before it have already been yielded,
                and tasks not yet started are cancelled.
        """
        return self._serial(fn, tasks) if self.workers == 1 else self._parallel(fn, tasks)

    @staticmethod
    def _serial(fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        for task in tasks:
            try:
                result = fn(task)
            except Exception as e:
                raise TaskError(f"task failed: {_describe(task)}: {type(e).__name__}: {e}") from e
            yield task, result

    def _parallel(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=ignore_sigint)
        pending: Dict[Future, Any] = {}
        source = iter(tasks)
        try:
            while True:
                for task in source:
                    pending[self._pool.submit(fn, task)] = task
                    if len(pending) >= 2 * self.workers:
                        break
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as e:
                        raise TaskError(f"task failed: {_describe(task)}: {type(e).__name__}: {e}") from e
                    yield task, result
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        """Stop the worker processes now (a no-op in-process); a later :meth:`map` starts new ones.

        Queued tasks are cancelled and running ones abandoned (the driver never committed them):
        each worker gets SIGTERM, and SIGKILL if it is still alive after :data:`iqaguard._pool.STOP_GRACE_S`.
        """
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        stop_pool(pool)


def default_workers(num_threads: int) -> int:
    """Worker processes that fill this machine's usable cores with ``num_threads`` threads each."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, num_threads))


def _describe(task: Any) -> str:
    return task.describe() if hasattr(task, "describe") else repr(task)
