"""Ray executor: tasks run as Ray remote functions; results stream back with ``ray.wait``.

The driver (the process calling :meth:`RayExecutor.map`) keeps at most ``max_in_flight`` tasks
submitted, collects each result as soon as it finishes and hands it to the runner, which alone
writes the store. Tasks request ``num_cpus`` (and ``num_gpus`` when the spec's device is CUDA),
so Ray packs as many concurrent tasks on each node as its resources allow.

Ray is joined or started lazily, on the first :meth:`RayExecutor.map`. An ``address`` where no
cluster answers (``"auto"`` with no ``ray start --head`` on this machine) is one
:class:`~iqaguard.errors.InputError` line saying how to start one or to drop ``--address``.
``ray.init`` replaces the driver's SIGTERM handler; one that the caller installed (the runner's,
which stops a run cleanly) is put back, so SIGTERM stops a Ray run like a local one.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

from ...errors import InputError
from . import TaskError


class RayExecutor:
    """Run tasks on a Ray cluster (or a local Ray instance).

    Args:
        address: cluster to join (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``); ``None``
            starts a local instance with ``workers`` CPUs. If Ray is already initialised in this
            process, that session is used as is (and left running); a session this executor
            started stays up across :meth:`map` calls until :meth:`close`.
        workers: CPUs of a local instance (default: ``os.cpu_count()``).
        cpus_per_task: CPUs each task requests (tasks set ``torch.set_num_threads`` to the spec's
            ``num_threads``; keep the two equal).
        gpus_per_task: GPUs each task requests (0 on CPU; fractions share a GPU).
        max_in_flight: tasks submitted at once (default: twice the cluster's CPUs), which bounds
            driver memory for large grids.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, max_in_flight: Optional[int] = None) -> None:
        self.address = address
        self.workers = workers
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_in_flight = max_in_flight
        self._started = False

    def _init(self) -> None:
        """Join or start Ray unless this process is already connected.

        Raises:
            InputError: no Ray cluster answers at ``address``.
        """
        import ray

        if ray.is_initialized():
            return
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
        try:
            self._start(ray)
        finally:
            if callable(handler):  # a Python handler of the caller, e.g. the runner's clean stop
                signal.signal(signal.SIGTERM, handler)
        self._started = True

    def _start(self, ray: Any) -> None:
        if self.address is not None:
            try:
                ray.init(address=self.address, logging_level=logging.WARNING)
            except ConnectionError as e:  # what ray.init raises when no cluster answers
                raise InputError(f"no Ray cluster at {self.address!r}: start one with `ray start --head` or omit "
                                 "--address to start a local Ray instance") from e
        else:
            ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING)

    def close(self) -> None:
        """Shut down the Ray session if this executor started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` in completion order.

        A task whose worker process dies (node lost, out of memory) is retried up to 3 times by
        Ray (tasks are deterministic, so a retry gives the same result); an exception raised by
        the task itself is not retried.

        Raises:
            TaskError: a task raised (outstanding tasks are cancelled; results already yielded
                stay valid).
        """
        import ray

        self._init()
        remote = ray.remote(fn).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=3)
        window = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        todo = iter(tasks)
        pending: Dict[Any, Any] = {}
        try:
            self._submit(remote, todo, pending, window)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:
                    raise TaskError(f"task failed on Ray: {task.describe()}: {type(e).__name__}: {e}") from e
                self._submit(remote, todo, pending, window)
                yield task, result
        finally:
            for ref in pending:
                ray.cancel(ref)

    @staticmethod
    def _submit(remote: Any, todo: Iterator[Any], pending: Dict[Any, Any], window: int) -> None:
        while len(pending) < window:
            task = next(todo, None)
            if task is None:
                return
            pending[remote.remote(task)] = task
