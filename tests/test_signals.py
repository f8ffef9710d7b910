"""Ctrl-C and SIGTERM stop a benchmark cleanly: no process left, committed tasks kept, a resume line.

Old behaviour: SIGTERM killed the driver at once and orphaned the pool's worker processes (still
alive minutes later), the ``runs`` row stayed ``running``; Ctrl-C exited without a word and left
the row ``failed``.
"""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from rich.console import Console

from iqaguard.bench import runner
from iqaguard.bench.spec import Spec, load_plugins
from iqaguard.bench.store import KEY_COLUMNS, Store
from iqaguard.errors import IqaguardError

TOYS = str(Path(__file__).with_name("test_runner.py"))
# an attack that sleeps $IQAGUARD_TEST_DELAY seconds first: slow in the CLI run that gets the
# signal, instant in the reference runs, and the same spec (hence the same rows) for both
SLOW_PLUGIN = '''
import os, time
from iqaguard.registry import ATTACKS

Toy = ATTACKS.get("toy-step")


class SlowStep(Toy):
    def run(self, metric, x, ref, generator):
        time.sleep(float(os.environ.get("IQAGUARD_TEST_DELAY", "0")))
        return super().run(metric, x, ref, generator)


if "slow-step" not in ATTACKS:
    ATTACKS.register("slow-step")(SlowStep)
'''
FULL = 6 * 2 * 2  # 6 images x 2 presets x (no defense + jpeg 0)


def _spec_file(tmp_path: Path) -> Path:
    (toys,) = load_plugins([TOYS])
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text(SLOW_PLUGIN)
    spec = toys.toy_spec(imports=[TOYS, str(plugin)], batch_size=1, modes=["non-adaptive"],
                         attacks=[{"name": "slow-step", "presets": ["weak", "strong"]}],
                         defenses=[{"name": "jpeg", "presets": [0]}])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _descendants(pid: int) -> list:
    """PIDs of every descendant of ``pid`` (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        parents = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        out, frontier = [], [pid]
        while frontier:
            kids = [c for c, p in parents.items() if p in frontier]
            out += kids
            frontier = kids
        return out
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not reaped yet


def _results(store: Path) -> int:
    """Rows committed so far (read from a snapshot while the run holds the store)."""
    if not store.exists():
        return 0
    try:
        with Store(store, read_only=True) as s:
            return s.count()
    except (IqaguardError, duckdb.Error):  # the store is being created
        return 0


@pytest.mark.parametrize("sig, code, why", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_signal_stops_the_pool_and_the_run_resumes_exactly(tmp_path, monkeypatch, sig, code, why):
    spec, store = _spec_file(tmp_path), tmp_path / "s.duckdb"
    env = dict(os.environ, IQAGUARD_TEST_DELAY="0.4")
    cmd = ["bench", "run", str(spec), "--store", str(store), "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "iqaguard", *cmd], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _results(store) == 0:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no task committed in 120 s"
            time.sleep(0.2)
        kids = _descendants(proc.pid)
        assert len(kids) >= 2  # the two workers (and multiprocessing's resource tracker)
        proc.send_signal(sig)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=10)
        while any(_alive(k) for k in kids) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "a worker outlived the run"  # old: orphans, alive for minutes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(line) == 1, err
    m = re.fullmatch(rf"interrupted \({why}\): (\d+) of (\d+) tasks committed in {re.escape(str(store))}; "
                     rf"resume with: python -m iqaguard {re.escape(' '.join(cmd))}", line[0])
    assert m and 1 <= int(m.group(1)) < int(m.group(2)), line[0]
    con = duckdb.connect(str(store), read_only=True)
    try:  # written by the run itself (not only shown so by a read-only view)
        assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
        before = con.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        con.close()
    assert 1 <= before < FULL

    (toys,) = load_plugins([TOYS])
    monkeypatch.delenv("IQAGUARD_TEST_DELAY", raising=False)
    sp = Spec.model_validate(yaml.safe_load(spec.read_text()))
    resumed = runner.run_spec(sp, store, progress=False)
    assert resumed.tasks_skipped >= int(m.group(1))
    runner.run_spec(sp, tmp_path / "ref.duckdb", progress=False)  # an uninterrupted run
    assert toys.assert_same_results(tmp_path / "ref.duckdb", store) == FULL
    with Store(store, read_only=True) as s:
        keys = ", ".join(KEY_COLUMNS)
        assert s.query(f"SELECT count(*), count(DISTINCT ({keys})) FROM results") == [(FULL, FULL)]
        assert [r[0] for r in s.query("SELECT status FROM runs ORDER BY started")] == ["interrupted", "finished"]


class _StopAfter:
    """An in-process executor that runs ``n`` tasks, then gets Ctrl-C; records ``close()``."""

    name = "stop-after"

    def __init__(self, n: int) -> None:
        self.n, self.closed = n, 0

    def map(self, fn, tasks):
        for task in tasks:
            if self.n == 0:
                raise KeyboardInterrupt
            self.n -= 1
            yield task, fn(task)

    def close(self) -> None:
        self.closed += 1


def test_ctrl_c_in_process_marks_the_run_and_prints_one_line(tmp_path):
    (toys,) = load_plugins([TOYS])
    spec = Spec.model_validate(toys.toy_spec(modes=["non-adaptive"], defenses=[]))  # 2 clean + 6 attack tasks
    buf, store, ex, rows = io.StringIO(), tmp_path / "s.duckdb", _StopAfter(4), []
    with pytest.raises(KeyboardInterrupt):
        runner.run_spec(spec, store, executor=ex, progress=False, console=Console(file=buf, width=40),
                        on_commit=rows.append)
    assert ex.closed == 1  # the pool is stopped by the runner itself
    assert buf.getvalue().splitlines()[-1] == (f"interrupted (Ctrl-C): 4 of 8 tasks committed in {store}; resume by "
                                               f"running it again with the same store ({store})")
    with Store(store, read_only=True) as s:
        assert s.query("SELECT status, tasks_run FROM runs") == [("interrupted", 4)]  # old: "failed"
        assert len(rows) == 2 and s.count() == rows[-1] > 0  # the rows of the 2 committed attack tasks


@pytest.mark.parametrize("argv0, prog", [("/venv/bin/iqaguard", "iqaguard"),
                                         ("/src/iqaguard/__main__.py", "python -m iqaguard"),
                                         ("/usr/bin/pytest", None)])
def test_resume_command_is_this_cli_command_without_fresh(monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0, "demo", "--out", "my runs/demo", "--fresh", "--workers", "2"])
    got = runner.resume_command(drop=("--fresh",))
    assert got == (None if prog is None else f"{prog} demo --out 'my runs/demo' --workers 2")


def test_demo_resume_line_never_repeats_fresh(tmp_path, monkeypatch):
    from iqaguard.bench.demo import run_demo

    seen = {}

    def interrupted(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_spec", interrupted)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/python-script"])  # called as a library
    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path / "out", workers=2, fresh=True, console=Console(file=io.StringIO()))
    assert seen["resume"] == f"iqaguard demo --out {tmp_path / 'out'} --workers 2"
