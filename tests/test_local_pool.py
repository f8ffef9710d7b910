"""The local executor's process pool (``workers > 1``): same rows as in-process, clear failures."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from iqaguard.bench.executors import TaskError, make_executor
from iqaguard.bench.executors.local import LocalExecutor
from iqaguard.errors import InputError


def test_pool_rows_identical_to_in_process(tmp_path):
    from iqaguard.bench.spec import load_plugins

    (toys,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])
    spec = toys.toy_spec(num_threads=1)  # randomized + BPDA defenses, both modes, batches of 4 + 2
    serial = toys.run(spec, tmp_path / "serial.duckdb", executor=LocalExecutor())
    pool = LocalExecutor(workers=2)
    try:
        parallel = toys.run(spec, tmp_path / "pool.duckdb", executor=pool)
    finally:
        pool.close()
    assert parallel.tasks_run == serial.tasks_run > 0
    assert toys.assert_same_results(tmp_path / "serial.duckdb", tmp_path / "pool.duckdb") == 6 * 3 * 4 + 6 * 3 * 3


def test_pool_failure_names_the_task_and_keeps_finished_results():
    ex = make_executor("local", workers=2)
    assert isinstance(ex, LocalExecutor) and ex.workers == 2 and "2 processes" in ex.name
    try:
        assert sorted(ex.map(math.sqrt, [4.0, 9.0, 16.0])) == [(4.0, 2.0), (9.0, 3.0), (16.0, 4.0)]
        got = []
        with pytest.raises(TaskError, match=r"-1\.0: ValueError"):
            for task, result in ex.map(math.sqrt, [4.0, -1.0] + [float(i * i) for i in range(1, 40)]):
                got.append((task, result))
        assert all(math.sqrt(t) == r for t, r in got)  # what finished first was yielded correctly
        # the pool survives a failed task and runs the next map
        assert list(ex.map(math.sqrt, [25.0])) == [(25.0, 5.0)]
    finally:
        ex.close()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_worker_count_is_a_clear_error(bad):
    with pytest.raises(InputError, match="workers"):
        LocalExecutor(workers=bad)


def test_default_workers_fill_the_usable_cores(monkeypatch):
    import iqaguard.bench.executors.local as local

    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert [local.default_workers(t) for t in (1, 2, 3, 8)] == [5, 2, 1, 1]


def test_close_terminates_busy_workers():
    """Old behaviour: ``shutdown(wait=False)`` let each worker finish its task (here: 60 s) and the
    interpreter waited for them at exit; a SIGTERMed driver left them running as orphans."""
    import threading
    import time

    ex = LocalExecutor(workers=2)
    results = ex.map(time.sleep, [60.0, 60.0, 60.0])
    def consume():  # submits, then waits; the abandoned tasks end as a TaskError (a broken pool)
        with pytest.raises(TaskError, match="BrokenProcessPool"):
            next(results)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    deadline = time.monotonic() + 60
    while (ex._pool is None or len(ex._pool._processes or {}) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = list(ex._pool._processes.values())
    time.sleep(0.5)  # let them pick up the sleeping tasks
    t0 = time.monotonic()
    ex.close()
    assert time.monotonic() - t0 < 10 and not [p for p in workers if p.is_alive()]
    assert ex._pool is None
    assert list(ex.map(math.sqrt, [9.0])) == [(9.0, 3.0)]  # a new pool for the next map
    ex.close()
