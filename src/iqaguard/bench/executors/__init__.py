"""Executors: run benchmark tasks on this machine (:class:`LocalExecutor`: in-process or in a pool of
worker processes) or on Ray (:class:`RayExecutor`).

An executor maps a function over tasks and yields ``(task, result)`` pairs as they finish
(any order); the caller — the runner, on the driver — writes results to the store. Both
executors call the same :func:`~iqaguard.bench.executors.worker.run_task`, so they produce the
same rows for the same spec.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Tuple

from ...errors import IqaguardError, InputError


class TaskError(IqaguardError):
    """A benchmark task failed; the message names the task and the original error."""


class Executor(Protocol):
    """What the runner needs from an executor."""

    name: str

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        """Apply ``fn`` to every task, yielding ``(task, fn(task))`` as each finishes."""
        ...

    def close(self) -> None:
        """Release what the executor started (e.g. a Ray session)."""
        ...


def make_executor(kind: str = "local", address: Optional[str] = None, workers: Optional[int] = None,
                  device: str = "cpu", gpus_per_task: Optional[float] = None, cpus_per_task: float = 1.0) -> Executor:
    """Build an executor by name.

    Args:
        kind: ``"local"`` (this machine, default) or ``"ray"``.
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); ``None``
            starts a local Ray instance.
        workers: local: worker processes (default 1 = in-process; give each ``cpus_per_task``
            threads, so ``workers * cpus_per_task <= cores``); ray: CPUs of the local Ray instance
            (default: all cores), ignored with ``address``.
        device: the spec's device; a CUDA device makes Ray tasks request GPUs.
        gpus_per_task: GPUs each Ray task requests (default 1 when ``device`` is CUDA, else 0;
            fractions such as 0.25 pack several small tasks on one GPU).
        cpus_per_task: CPUs each Ray task requests (pass the spec's ``num_threads``).

    Raises:
        InputError: unknown ``kind``; ``workers`` not a positive integer.
    """
    if kind == "local":
        from .local import LocalExecutor

        return LocalExecutor(1 if workers is None else workers)
    if kind == "ray":
        from .ray_exec import RayExecutor

        if gpus_per_task is None:
            gpus_per_task = 1.0 if str(device).startswith("cuda") else 0.0
        return RayExecutor(address=address, workers=workers, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    raise InputError(f"executor: unknown executor {kind!r}; allowed: local, ray")


__all__ = ["Executor", "TaskError", "make_executor"]
