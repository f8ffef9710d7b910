"""Opening a result store that another process holds (used by :mod:`iqaguard.bench.store`).

Lock: DuckDB lets one process at a time open a file for writing; a second open fails with an
``IOException`` "Could not set lock on file ... Conflicting lock is held in ... (PID N)", from
which :func:`_lock_pid` reads the PID. A second writer gets one :class:`~iqaguard.errors.InputError`
line naming that PID and whether it reads or writes the store (:func:`_busy`).

Concurrent readers: a writer connection never checkpoints on its own
(``checkpoint_threshold`` and ``auto_checkpoint_skip_wal_threshold`` out of reach, optimistic
writes off: :data:`WRITER_CONFIG`), so while a run writes, the main file does not change and every
commit only appends to the ``.wal`` file; the checkpoint happens when the store is closed. A
reader that finds the store locked by a writer copies the main file, then the ``.wal``, to a
temporary folder and opens the copy read-only (:func:`_snapshot`): DuckDB replays the committed
WAL records and ignores a torn last one, so the reader sees the rows of one commit point (it logs
"reading a snapshot: a run (PID N) is writing this store").

Stale runs: a read-only connection never writes, so it cannot mark the ``runs`` rows that a dead
process left ``running``; it sees them as ``interrupted`` through a temporary ``runs`` view
(:func:`_interrupted_view`): no writer can be alive while it holds its shared lock.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import duckdb

from ..errors import InputError

#: DuckDB settings of every connection the store opens: never install or load an extension
#: behind the user's back (a foreign file, e.g. SQLite, would otherwise trigger a download)
DUCKDB_CONFIG: Dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

#: settings of a connection that writes: no automatic checkpoint while it is open (the main file
#: stays as it was and commits only append to the WAL, which readers can snapshot); DuckDB
#: checkpoints when the last connection closes
WRITER_CONFIG: Dict[str, Any] = {**DUCKDB_CONFIG, "checkpoint_threshold": "1000 TB",
                                 "auto_checkpoint_skip_wal_threshold": 2 ** 62, "enable_optimistic_write": False}

#: how the ``runs`` table of a read-only connection shows a run whose process is gone
RUN_STATUS_SQL = "CASE WHEN status = 'running' THEN 'interrupted' ELSE status END"

_LOCK = re.compile(r"Could not set lock on file .*?Conflicting lock is held in .*?\(PID (\d+)\)", re.S)
_SNAPSHOT_TRIES = 5

# the store's logger: the snapshot notice is a store message (callers filter on that name)
log = logging.getLogger(f"{__package__}.store")


def _lock_pid(error: BaseException) -> Optional[int]:
    """The PID in DuckDB's "Conflicting lock is held in ... (PID N)" message, or None for another error."""
    lock = _LOCK.search(str(error))
    return None if lock is None else int(lock.group(1))


def _busy(path: Path, pid: int) -> InputError:
    """The one-line refusal of a second writer (readers share the lock: say which kind holds it)."""
    try:
        duckdb.connect(str(path), read_only=True, config=dict(DUCKDB_CONFIG)).close()
    except duckdb.Error:
        doing = "written"  # a read-only open fails only against a writer
    else:
        doing = "read"
    return InputError(f"store {path} is being {doing} by another process (PID {pid}): wait for it or pass "
                      "another --store")


def _stamp(path: Path) -> Tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _snapshot(path: Path, pid: int) -> "duckdb.DuckDBPyConnection":
    """A read-only connection to a copy of the store that process ``pid`` is writing.

    The main file is copied first, then the WAL (which only grows while the writer is open, see
    the module docstring); a copy during which the main file changed (the writer checkpointed
    or closed) is discarded and taken again, or the store itself is opened once it is free.
    The copy is deleted as soon as DuckDB has opened it (it keeps its file handles).
    """
    log.warning("reading a snapshot: a run (PID %d) is writing this store (%s)", pid, path)
    wal = path.with_name(path.name + ".wal")
    for _ in range(_SNAPSHOT_TRIES):
        tmp = Path(tempfile.mkdtemp(prefix="iqaguard-snapshot-"))
        try:
            before = _stamp(path)
            shutil.copyfile(path, tmp / path.name)
            if wal.is_file():
                shutil.copyfile(wal, tmp / wal.name)
            if _stamp(path) == before:
                return duckdb.connect(str(tmp / path.name), read_only=True, config=dict(DUCKDB_CONFIG))
        except FileNotFoundError as e:  # the WAL went away mid-copy: the writer checkpointed or closed
            log.debug("snapshot of %s discarded: %s", path, e)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            return duckdb.connect(str(path), read_only=True, config=dict(DUCKDB_CONFIG))
        except duckdb.IOException:
            continue  # still written: copy again
    raise InputError(f"store {path} changed during each of {_SNAPSHOT_TRIES} copies while process {pid} wrote "
                     "it: retry, or wait until that run ends")


def _interrupted_view(con: "duckdb.DuckDBPyConnection") -> None:
    """Shadow ``runs`` by a temporary view that shows ``running`` rows as ``interrupted``
    (read-only connections only: no writer is alive while they hold their lock)."""
    catalog = con.execute("SELECT current_database()").fetchone()[0].replace('"', '""')
    con.execute(f'CREATE TEMP VIEW runs AS SELECT * REPLACE ({RUN_STATUS_SQL} AS status) FROM "{catalog}".main.runs')
