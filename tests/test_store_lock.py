"""A store locked by a running benchmark: one-line refusal for writers, snapshots for readers.

Old behaviour: a second writer and every reader (``bench report``, ``bench export``, the
statistics) got DuckDB's raw ``IOException`` ("Could not set lock on file ... Conflicting lock
is held in ... (PID N)"), and the writer checkpointed every 16 MiB of WAL, rewriting the main
file under any reader.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

from iqaguard.bench import store as store_mod
from iqaguard.bench.store import Store
from iqaguard.errors import InputError

BATCH = 7  # rows per commit of the writer process: every consistent snapshot holds a multiple
WRITER = f"""
import sys, time
from iqaguard.bench.store import Store
st = Store(sys.argv[1])
st.log_run({{"run_id": "live", "status": "running"}})
n = 0
while True:
    st.write(subsets=[{{"dataset": "d", "seed": n + i, "selector": "s", "indices": "[]", "names": "x" * 300}}
                      for i in range({BATCH})])
    n += {BATCH}
    if n == {BATCH}:
        print("committed", flush=True)
    time.sleep(0.002)
"""


def _subsets(i0: int, n: int) -> list:
    return [{"dataset": "d", "seed": i, "selector": "s", "indices": "[]", "names": "x" * 300}
            for i in range(i0, i0 + n)]


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """A store that another process keeps writing (a commit of BATCH rows every few ms)."""
    path = tmp_path_factory.mktemp("lock") / "busy.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
        yield path, proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def test_second_writer_gets_one_line_naming_the_pid(busy):
    path, pid = busy
    with pytest.raises(InputError) as e:
        Store(path)
    msg = str(e.value)
    assert msg == f"store {path} is being written by another process (PID {pid}): wait for it or pass another --store"
    with pytest.raises(InputError, match=f"PID {pid}"):
        store_mod.connect(path, read_only=False)


def test_readers_get_consistent_snapshots_while_a_run_writes(busy, caplog, tmp_path):
    from iqaguard.bench.stats import opened

    path, pid = busy
    counts, before = [], set(Path(tempfile.gettempdir()).glob("iqaguard-snapshot-*"))
    with caplog.at_level(logging.WARNING, logger="iqaguard.bench.store"):
        for _ in range(8):
            with Store(path, read_only=True) as s:
                counts.append(s.count("subsets"))
                assert s.query("SELECT status FROM runs") == [("running",)]  # the writer is alive
    assert all(c > 0 and c % BATCH == 0 for c in counts), counts  # whole commits only
    assert counts == sorted(counts) and counts[-1] > counts[0]  # newer snapshots, never older
    assert f"reading a snapshot: a run (PID {pid}) is writing this store" in caplog.text
    with opened(path) as con:  # the statistics and the report open stores this way
        assert con.execute("SELECT count(*) FROM subsets").fetchone()[0] % BATCH == 0
    with Store(path, read_only=True) as s:  # `bench export`
        out = s.export(tmp_path / "subsets.csv", table="subsets")
    assert (len(out.read_text().splitlines()) - 1) % BATCH == 0
    assert not set(Path(tempfile.gettempdir()).glob("iqaguard-snapshot-*")) - before  # copies deleted at once


def test_torn_last_wal_record_is_ignored(tmp_path):
    """A copy of the WAL taken mid-commit ends in a partial record: DuckDB replays up to the last
    whole commit, so a snapshot always holds one of the committed states."""
    p, snap = tmp_path / "s.duckdb", tmp_path / "snap"
    committed = {0}
    with Store(p):
        pass  # the tables, checkpointed on close: the main file of every snapshot below
    with Store(p) as s:
        for k in range(12):
            s.write(subsets=_subsets(k * BATCH, BATCH))
            committed.add((k + 1) * BATCH)
        wal = p.with_name(p.name + ".wal").read_bytes()
        for cut in sorted(random.Random(0).sample(range(len(wal)), 25)) + [len(wal)]:
            snap.mkdir()
            shutil.copyfile(p, snap / p.name)
            (snap / (p.name + ".wal")).write_bytes(wal[:cut])
            con = duckdb.connect(str(snap / p.name), read_only=True)
            n = con.execute("SELECT count(*) FROM subsets").fetchone()[0]
            con.close()
            shutil.rmtree(snap)
            assert n in committed, (cut, n)
        assert n == 12 * BATCH  # the whole WAL: every commit


def test_writer_never_checkpoints_until_it_closes(tmp_path):
    p = tmp_path / "s.duckdb"
    wal = p.with_name(p.name + ".wal")
    with Store(p) as s:
        s.write(subsets=_subsets(0, 1))
        stamp = (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        # ~30 MB in one commit: past DuckDB's default 16 MiB checkpoint threshold
        s.query("INSERT INTO subsets SELECT 'd', range + 10, 's', '[]', repeat('x', 1000) FROM range(30000)")
        for k in range(20):
            s.write(subsets=_subsets(100000 + k, 1))
        assert (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) == stamp  # old: rewritten by a checkpoint
        assert wal.stat().st_size > 16 * 2 ** 20
    assert not wal.exists()  # checkpointed on close
    with Store(p, read_only=True) as s:
        assert s.count("subsets") == 1 + 30000 + 20


def test_writer_blocked_by_a_reader_is_told_so(tmp_path):
    p = tmp_path / "s.duckdb"
    with Store(p):
        pass
    hold = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print('open', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(p)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(InputError, match=rf"is being read by another process \(PID {proc.pid}\): wait for it"):
            Store(p)
    finally:
        proc.kill()
        proc.wait(10)
    with Store(p) as s:  # free again
        assert s.count() == 0


def test_snapshot_retries_when_the_main_file_changes(tmp_path, monkeypatch):
    """A copy during which the writer checkpointed is taken again (here: the store is free by then)."""
    p = tmp_path / "s.duckdb"
    with Store(p) as s:
        s.write(subsets=_subsets(0, BATCH))
    from iqaguard.bench import store_lock

    stamps = iter([(1, 1), (2, 2)])  # the main file "changed" during the first copy
    calls = []

    def stamp(path):
        calls.append(path)
        return next(stamps, (3, 3))

    monkeypatch.setattr(store_lock, "_stamp", stamp)
    con = store_lock._snapshot(p, os.getpid())
    try:
        assert con.execute("SELECT count(*) FROM subsets").fetchone()[0] == BATCH
        # the changed copy was discarded (two stamps taken, differing) and the free store opened itself
        assert len(calls) == 2
    finally:
        con.close()
