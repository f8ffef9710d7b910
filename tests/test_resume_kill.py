"""Acceptance: SIGKILL a running benchmark at a random point, re-run, and check the store.

* every row reported committed before the kill survives it (DuckDB WAL replay);
* after the re-run: no duplicate key, rows from before the kill unchanged, the full grid present;
* finished tasks are not recomputed and unfinished ones are, exactly (attack-call log);
* the killed run's ``runs`` row ends ``interrupted``, not ``running``.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from iqaguard.bench.spec import load_plugins

TOYS = str(Path(__file__).with_name("test_runner.py"))
CHILD = """
import sys
from iqaguard.bench.runner import run_spec
from iqaguard.bench.spec import Spec, load_plugins
(toys,) = load_plugins([{toys!r}])
spec = Spec.model_validate(toys.toy_spec(**{over!r}))
run_spec(spec, sys.argv[1], progress=False, on_commit=lambda n: print(n, flush=True))
print("finished", flush=True)
"""
GRID = dict(datasets=[{"name": "toy", "kwargs": {"n": 8}}], batch_size=2,
            attacks=[{"name": "toy-step", "presets": ["weak", "strong"], "kwargs": {"delay": 0.05}}])
CLASS = {"jpeg": "JPEG", "toy-noise": "ToyNoise"}


def _run_child(store: Path, log: Path, kill_after: float | None) -> tuple[int, list[str]]:
    env = dict(os.environ, TOY_ATTACK_LOG=str(log))
    code = CHILD.format(toys=TOYS, over=GRID)
    proc = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    if kill_after is not None:
        lines.append(proc.stdout.readline())  # blocks until the first task's rows are committed
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, [ln for ln in lines + out.splitlines() if ln.strip()]


def _expected_attack_calls(missing_keys, toys) -> Counter:
    """One toy-step call per image of every task that still has a missing row."""
    ds = toys.toy_dataset(8)
    fp = {s.name: f"{float(s.image[0].sum()):.4f}" for s in ds}
    tasks = {}  # (image, preset, attacked defense or None) -> logged line; rows of one task collapse
    for (_, image, _, _, preset, defense, dpreset, mode, _) in missing_keys:
        target = None if mode == "non-adaptive" else (defense, dpreset)
        metric = "toy-nr" if target is None else f"toy-nr+{CLASS[defense]}"
        tasks[(image, preset, target)] = f"{metric} {preset} {fp[image]}"
    return Counter(tasks.values())


def test_sigkill_then_resume(tmp_path):
    (toys,) = load_plugins([TOYS])
    store, log1, log2 = tmp_path / "s.duckdb", tmp_path / "run1.log", tmp_path / "run2.log"
    delay = random.Random(1234).uniform(0.2, 1.0)
    rc, printed = _run_child(store, log1, kill_after=delay)
    assert rc == -signal.SIGKILL and "finished" not in printed, "the run ended before the kill"
    committed = max(int(x) for x in printed)
    before = toys.rows_by_key(store)
    assert committed >= 1 and len(before) >= committed  # nothing reported committed was lost
    print(f"killed after {delay:.2f} s with {len(before)} rows committed")

    full = 8 * 2 * 4 + 8 * 2 * 3  # non-adaptive (none + 3 defenses) + adaptive (3 defenses)
    assert len(before) < full
    rc, _ = _run_child(store, log2, kill_after=None)
    assert rc == 0
    after = toys.rows_by_key(store)
    assert len(after) == full
    assert all(after[k] == v for k, v in before.items())  # identical values, incl. timings and run_id
    from iqaguard.bench.store import Store

    with Store(store) as s:
        assert s.query("SELECT COUNT(*) FROM (SELECT DISTINCT * EXCLUDE (run_id) FROM results)")[0][0] == full
        runs = s.df("SELECT status, tasks_run, tasks_skipped FROM runs ORDER BY started")
    # the killed run never finished; the next open for writing marks it interrupted (it used to
    # stay "running" forever)
    assert [r["status"] for r in runs] == ["interrupted", "finished"]
    missing = set(after) - set(before)
    assert Counter(log2.read_text().split("\n")[:-1]) == _expected_attack_calls(missing, toys)
    assert runs[1]["tasks_skipped"] > 0
