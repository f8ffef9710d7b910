"""In-process executor: tasks run one after another in the driver process (the default)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Tuple

from . import TaskError


class LocalExecutor:
    """Run every task sequentially in this process.

    The engine's own cost per task (skip check, result-to-row conversion, one store transaction,
    progress update) is measured by ``benchmarks/bench_overhead.py``.
    """

    name = "local"

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` in task order.

        Raises:
            TaskError: a task raised; earlier results have already been yielded.
        """
        for task in tasks:
            try:
                result = fn(task)
            except Exception as e:
                raise TaskError(f"task failed: {_describe(task)}: {type(e).__name__}: {e}") from e
            yield task, result

    def close(self) -> None:
        """Nothing to release (present for the :class:`Executor` protocol)."""


def _describe(task: Any) -> str:
    return task.describe() if hasattr(task, "describe") else repr(task)
