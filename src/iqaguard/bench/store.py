"""DuckDB result store of the benchmark (DESIGN.md §Benchmark).

Tables (created on open when missing):

* ``results`` — one row per (dataset, image, metric, attack, attack_preset, defense,
  defense_preset, mode, seed): clean / attacked / defended-clean / defended-attacked scores,
  MOS, metric bounds, fidelity of the scored image to the clean one, timings, seeds, versions,
  the resolved attack parameters (``attack_params``, JSON: ``{"eps": 0.0157, "steps": 10, ...}``)
  and, for query attacks, the mean number of queries per image (``queries``), and the pixel count
  ``H·W`` of the attacked image (``pixels``: the report scales defense times to 384×512).
* ``clean_scores`` — the clean score of every (dataset, image, metric, seed) (defense ``none``)
  and its defended-clean score per (defense, preset), computed once and joined into ``results``.
* ``adversarial`` — the non-adaptive adversarial images cached as PNG (path relative to
  :meth:`Store.cache_dir`), with the attack time, so defenses added later reuse them.
* ``subsets`` — the image selection of every (dataset, seed, selector), fixed on first use.
* ``runs`` — one row per engine run (spec version and hash, executor, task counts).
* ``universal`` — one row per (metric, attack, attack_preset) of a universal attack: the fitted
  perturbation (a safetensors file under :meth:`Store.cache_dir`), the training images it was
  fitted on and the fit time; every task reuses it and a resumed run never refits it.
* ``transfer`` — adversarial images crafted on one metric (``source``) scored by another
  (``metric``), undefended and under every defense preset (the transfer matrix of the report).
* ``skipped`` — the images of a dataset that could not be used (unreadable, too small for a
  metric, ...), one row per (dataset, seed, image) with the reason; they are left out of every
  task and listed in the report.
* ``defense_presets`` — every (defense, preset, metric) a run checked before its tasks
  (:mod:`iqaguard.bench.defense_check`): ``ok`` or ``skipped`` with the reason (missing weights,
  images too small), whether it is randomized / differentiable / has a BPDA surrogate, its EOT
  draws; one row per check (``checked``), the newest is the current one.
* ``certified`` — per (dataset, image, metric, smoothing defense, preset, seed) the certificate of
  the clean image (``docs/certified.md``): smoothed score, certified interval (NULL where the
  samples cannot bound it: ``±inf``), radius (RS family) or ε (MS family), abstain, noise samples,
  seconds per image, the metric's bounds and the noise seed.
* ``gradient_checks`` — per (dataset, image, metric, defense, preset, seed) of the adaptive mode:
  the input gradient of the defended metric at the clean image, as the adaptive attacks get it
  (L1 norm, finite and non-zero fractions), for the gradient-masking flags of the report
  (:mod:`iqaguard.bench.masking`).

Values: every number stored is finite. PSNR is floored at the 8-bit quantisation noise
(58.92 dB for identical images, never ``+inf``) and R-scores at ``floor · diam``, so aggregates
(``avg(psnr)``) stay finite; :meth:`Store.write` rejects a NaN/Inf value with a
:class:`~iqaguard.errors.ScoreError` naming the column and the row instead of storing it.

Durability: every write is one transaction with ``INSERT ... ON CONFLICT DO NOTHING`` on the
primary key. DuckDB appends a committed transaction to its write-ahead log and ``fdatasync``s it
before ``COMMIT`` returns (checked with ``strace``), and replays the log on the next open, so a
process killed at any moment (SIGKILL) loses no committed row and re-running never duplicates.
One process at a time may open a store for writing (DuckDB holds a file lock).

Runs: a ``runs`` row says ``running`` while its run is alive. Because only one process can hold a
store open for writing, every ``running`` row found when a store is opened for writing belongs to
a process that died (SIGKILL, power loss): that open marks them ``interrupted``, in the same
transaction as any table it creates. A read-only open never writes; its connection sees those rows
as ``interrupted`` (:mod:`iqaguard.bench.store_lock`), so ``bench report`` and the statistics show
the truth.

Concurrent readers and a second writer (a store locked by a running benchmark): see
:mod:`iqaguard.bench.store_lock`. Readers read a snapshot; a second writer gets one line naming
the PID of the process that holds the store.

Identity: a store carries an ``iqaguard_meta`` table (``key``/``value``; ``schema_version``)
written when it is created. Opening checks the file BEFORE anything is written: a file that is
not a DuckDB database (SQLite, text, binary, empty) or a DuckDB database with tables but neither
the marker nor the iqaguard tables is refused with one :class:`~iqaguard.errors.InputError` line,
and left untouched. Stores written before the marker existed (all iqaguard tables with their
columns, no marker) are recognised by their tables and get the marker when opened for writing.
Every connection is opened with extension auto-install and auto-load off, so opening a store
never reaches the network.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import duckdb

from .. import __version__
from ..errors import InputError, ScoreError
# the lock / snapshot part of opening a store
from .store_lock import DUCKDB_CONFIG, WRITER_CONFIG, _busy, _interrupted_view, _lock_pid, _snapshot

KEY_COLUMNS = ("dataset", "image", "metric", "attack", "attack_preset", "defense", "defense_preset", "mode",
               "seed")

COLUMNS: Dict[str, str] = {
    "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "attack": "VARCHAR",
    "attack_preset": "VARCHAR", "defense": "VARCHAR", "defense_preset": "VARCHAR", "mode": "VARCHAR",
    "seed": "BIGINT", "mos": "DOUBLE",
    "clean": "DOUBLE", "attacked": "DOUBLE", "defended_clean": "DOUBLE", "defended_attacked": "DOUBLE",
    "bound_worst": "DOUBLE", "bound_best": "DOUBLE", "lower_better": "BOOLEAN",
    "psnr": "DOUBLE", "ssim": "DOUBLE", "mse": "DOUBLE", "linf": "DOUBLE",
    "t_attack": "DOUBLE", "t_defense": "DOUBLE", "gen_seed": "BIGINT",
    "version": "VARCHAR", "spec_version": "VARCHAR", "spec_hash": "VARCHAR", "run_id": "VARCHAR",
    "attack_params": "VARCHAR", "queries": "DOUBLE", "pixels": "BIGINT",
}

_META = {"version": "VARCHAR", "spec_hash": "VARCHAR", "run_id": "VARCHAR"}

#: table -> (columns with DuckDB types, primary key)
TABLES: Dict[str, Tuple[Dict[str, str], Tuple[str, ...]]] = {
    "results": (COLUMNS, KEY_COLUMNS),
    "clean_scores": ({
        "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "defense": "VARCHAR",
        "defense_preset": "VARCHAR", "seed": "BIGINT", "mos": "DOUBLE", "score": "DOUBLE",
        "t_defense": "DOUBLE", "gen_seed": "BIGINT", **_META,
    }, ("dataset", "image", "metric", "defense", "defense_preset", "seed")),
    "adversarial": ({
        "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "attack": "VARCHAR",
        "attack_preset": "VARCHAR", "seed": "BIGINT", "path": "VARCHAR", "t_attack": "DOUBLE", **_META,
        "attack_params": "VARCHAR", "queries": "DOUBLE",
    }, ("dataset", "image", "metric", "attack", "attack_preset", "seed")),
    "subsets": ({
        "dataset": "VARCHAR", "seed": "BIGINT", "selector": "VARCHAR", "indices": "VARCHAR", "names": "VARCHAR",
    }, ("dataset", "seed", "selector")),
    "runs": ({
        "run_id": "VARCHAR", "started": "TIMESTAMP", "finished": "TIMESTAMP", "status": "VARCHAR",
        "spec_version": "VARCHAR", "spec_hash": "VARCHAR", "version": "VARCHAR", "executor": "VARCHAR",
        "tasks_total": "BIGINT", "tasks_skipped": "BIGINT", "tasks_run": "BIGINT",
    }, ("run_id",)),
    "skipped": ({
        "dataset": "VARCHAR", "seed": "BIGINT", "image": "VARCHAR", "reason": "VARCHAR", "run_id": "VARCHAR",
    }, ("dataset", "seed", "image")),
    "universal": ({
        "metric": "VARCHAR", "attack": "VARCHAR", "attack_preset": "VARCHAR", "fit_dataset": "VARCHAR",
        "fit_images": "VARCHAR", "path": "VARCHAR", "attack_params": "VARCHAR", "t_fit": "DOUBLE", **_META,
    }, ("metric", "attack", "attack_preset")),
    "transfer": ({
        "dataset": "VARCHAR", "image": "VARCHAR", "source": "VARCHAR", "metric": "VARCHAR", "attack": "VARCHAR",
        "attack_preset": "VARCHAR", "defense": "VARCHAR", "defense_preset": "VARCHAR", "seed": "BIGINT",
        "clean": "DOUBLE", "attacked": "DOUBLE", "defended_clean": "DOUBLE", "defended_attacked": "DOUBLE",
        "bound_worst": "DOUBLE", "bound_best": "DOUBLE", "lower_better": "BOOLEAN", **_META,
    }, ("dataset", "image", "source", "metric", "attack", "attack_preset", "defense", "defense_preset", "seed")),
    "defense_presets": ({
        "defense": "VARCHAR", "defense_preset": "VARCHAR", "metric": "VARCHAR", "name": "VARCHAR",
        "status": "VARCHAR", "reason": "VARCHAR", "adaptive": "BOOLEAN", "eot_samples": "BIGINT",
        "randomized": "BOOLEAN", "differentiable": "BOOLEAN", "surrogate": "BOOLEAN", "checked": "TIMESTAMP",
        **_META,
    }, ("defense", "defense_preset", "metric", "checked")),
    "certified": ({
        "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "defense": "VARCHAR",
        "defense_preset": "VARCHAR", "seed": "BIGINT", "score": "DOUBLE", "lower": "DOUBLE", "upper": "DOUBLE",
        "radius": "DOUBLE", "eps": "DOUBLE", "abstain": "BOOLEAN", "samples": "BIGINT", "t_certify": "DOUBLE",
        "bound_worst": "DOUBLE", "bound_best": "DOUBLE", "gen_seed": "BIGINT", **_META,
    }, ("dataset", "image", "metric", "defense", "defense_preset", "seed")),
    "gradient_checks": ({
        "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "defense": "VARCHAR",
        "defense_preset": "VARCHAR", "seed": "BIGINT", "grad_l1": "DOUBLE", "finite": "DOUBLE",
        "nonzero": "DOUBLE", **_META,
    }, ("dataset", "image", "metric", "defense", "defense_preset", "seed")),
}

#: tables added after schema version 1 was first written: created when missing on every open for
#: writing, and optional when a store is classified (older stores simply lack them)
OPTIONAL_TABLES = ("skipped", "universal", "transfer", "defense_presets", "gradient_checks", "certified")
#: columns added after schema version 1 was first written (table -> columns): added with
#: ``ALTER TABLE`` when missing on every open for writing (NULL in older rows), optional when a
#: store is classified
OPTIONAL_COLUMNS: Dict[str, Tuple[str, ...]] = {"results": ("attack_params", "queries", "pixels"),
                                                "adversarial": ("attack_params", "queries")}

#: the marker table of an iqaguard store and the schema version written into it
META_TABLE = "iqaguard_meta"
SCHEMA_VERSION = 1

#: ids of the runs of this process that are running now (a second Store on the same file in this
#: process must not mark them interrupted)
_LIVE_RUNS: set = set()

_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of a DuckDB database file
_FIX = "pass a new path or a store written by `iqaguard bench run`"

_CHUNK_ROWS = 256  # rows per multi-row INSERT statement (bounded parameter count)


def check_finite(table: str, row: Dict[str, Any]) -> None:
    """Raise :class:`ScoreError` when a float of ``row`` is NaN or infinite (one line, naming it)."""
    for col, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            key = {k: row.get(k) for k in TABLES[table][1] if k in row}
            raise ScoreError(f"{table}.{col}: non-finite value {v} for {key}; the store keeps finite numbers only: "
                             "fix the metric or score that produced it (PSNR is floored at 58.92 dB)")


def _not_a_store(path: Path, why: str) -> InputError:
    return InputError(f"not an iqaguard store: {path} ({why}); {_FIX}")


def _check_file(path: Path) -> None:
    """Refuse an existing ``path`` that is not a DuckDB database file (read from its header only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InputError(f"cannot read store {path}: {e.strerror or e}; {_FIX}") from None
    if len(head) < 12 or head[8:12] != _DUCKDB_MAGIC:
        kind = ("a SQLite database" if head.startswith(b"SQLite format 3") else
                "an empty file" if not head else "not a DuckDB database")
        raise _not_a_store(path, kind)


def _connect(path: Path, read_only: bool) -> Tuple["duckdb.DuckDBPyConnection", str]:
    """Open ``path``; returns the connection and how: ``"write"``, ``"read"`` (a shared read-only
    lock: no writer is alive), ``"shared"`` (read-only asked, but this process already has the
    store open for writing) or ``"snapshot"`` (another process writes it: a copy is open)."""
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=dict(DUCKDB_CONFIG if read_only else WRITER_CONFIG))
        return con, "read" if read_only else "write"
    except duckdb.ConnectionException:
        if not read_only:
            raise
        # already open read-write in this process: DuckDB refuses a second, read-only config
        return duckdb.connect(str(path), config=dict(WRITER_CONFIG)), "shared"
    except duckdb.IOException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "not a valid DuckDB database" in first:
            raise _not_a_store(path, "not a DuckDB database") from None
        pid = _lock_pid(e)
        if pid is None:
            raise  # a permission problem, a full disk: DuckDB's own message
        if read_only:
            return _snapshot(path, pid), "snapshot"
        raise _busy(path, pid) from None


def _layout(con: "duckdb.DuckDBPyConnection") -> Tuple[Dict[str, Dict[str, str]], str | None]:
    """``({table: {column: type}}, schema_version or None)`` of the main schema of ``con``."""
    tables: Dict[str, Dict[str, str]] = {}
    for t, c, ty in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' "
            "ORDER BY table_name, ordinal_position").fetchall():
        tables.setdefault(t, {})[c] = ty
    version = None
    if META_TABLE in tables and {"key", "value"} <= set(tables[META_TABLE]):
        hit = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchall()
        version = str(hit[0][0]) if hit else None
    return tables, version


def _is_legacy(tables: Dict[str, Dict[str, str]]) -> bool:
    """True when every iqaguard table is there with all its columns (a store from before the marker)."""
    return all(name in tables and {k.lower(): v.upper() for k, v in tables[name].items()}.items()
               >= {k.lower(): v.upper() for k, v in cols.items() if k not in OPTIONAL_COLUMNS.get(name, ())}.items()
               for name, (cols, _) in TABLES.items() if name not in OPTIONAL_TABLES)


def _missing_columns(tables: Dict[str, Dict[str, str]]) -> List[Tuple[str, str, str]]:
    """``(table, column, type)`` of the optional columns an existing table lacks."""
    return [(t, c, TABLES[t][0][c]) for t, cols in OPTIONAL_COLUMNS.items() if t in tables
            for c in cols if c.lower() not in {k.lower() for k in tables[t]}]


def check_store(con: "duckdb.DuckDBPyConnection", path: str | Path) -> str:
    """Classify the database of ``con``: ``"new"`` (no tables), ``"marked"`` or ``"legacy"``.

    Raises:
        InputError: it has tables but is not an iqaguard store, or a newer schema version.
    """
    tables, version = _layout(con)
    if version is not None:
        try:
            newer = int(version) > SCHEMA_VERSION
        except ValueError:
            newer = True
        if newer:
            raise InputError(f"store {path} has schema version {version}, this iqaguard ({__version__}) reads "
                             f"up to {SCHEMA_VERSION}: upgrade iqaguard or {_FIX}")
        return "marked"
    if not tables:
        return "new"
    if _is_legacy(tables):
        return "legacy"
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise _not_a_store(Path(path), f"a DuckDB database with tables {shown} and no {META_TABLE} marker")


def connect(path: str | Path, read_only: bool = True) -> "duckdb.DuckDBPyConnection":
    """A checked connection to the existing iqaguard store at ``path`` (extension auto-load off).

    Nothing is written: a store from before the marker is accepted as it is.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: ``path`` is not an iqaguard store (one line naming it and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result store at {path}")
    _check_file(path)
    con, how = _connect(path, read_only)
    try:
        if check_store(con, path) == "new":
            if how == "snapshot":
                raise InputError(f"store {path} is being created by another process: retry in a moment")
            raise _not_a_store(path, "a DuckDB database without tables")
        if how == "read" and "runs" in _layout(con)[0]:
            _interrupted_view(con)
    except BaseException:
        con.close()
        raise
    return con


class Store:
    """A DuckDB file holding benchmark rows.

    Args:
        path: the ``.duckdb`` file (created with its tables when missing; parent folders too).
        read_only: open an existing store without writing anything (no tables, no marker).

    Raises:
        InputError: ``path`` exists but is not an iqaguard store (nothing is written to it), or
            ``read_only`` and it does not exist.

    Example:
        >>> with Store("runs/demo.duckdb") as s:
        ...     s.count()
    """

    table = "results"

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            if not self.path.is_file():
                raise InputError(f"store not found: {self.path}; {_FIX}")
            self.con = connect(self.path, read_only=True)
            return
        if self.path.exists():
            _check_file(self.path)  # before DuckDB touches it
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con, _ = _connect(self.path, read_only=False)
        try:
            self._prepare(check_store(self.con, self.path))
        except BaseException:
            self.con.close()
            raise

    def _prepare(self, state: str) -> None:
        """In one transaction: create the missing tables (and the marker unless ``state`` is
        "marked") and mark ``interrupted`` the runs left ``running`` by a process that is gone."""
        layout = _layout(self.con)[0]
        tables, columns = set(layout), _missing_columns(layout)
        create = state != "marked" or not set(OPTIONAL_TABLES) <= tables or bool(columns)
        stale = ("status = 'running' AND NOT list_contains(?::VARCHAR[], run_id)", [sorted(_LIVE_RUNS)])
        dead = "runs" in tables and self.query(f"SELECT count(*) FROM runs WHERE {stale[0]}", stale[1])[0][0] > 0
        if not (create or dead):
            return
        self.con.execute("BEGIN TRANSACTION")
        try:
            if create:
                for name, (cols, key) in TABLES.items():
                    body = ", ".join(f"{k} {v}" for k, v in cols.items())
                    self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({body}, PRIMARY KEY ({', '.join(key)}))")
                for name, col, kind in columns:
                    self.con.execute(f"ALTER TABLE {name} ADD COLUMN {col} {kind}")
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            if create and state != "marked":
                self.con.execute(f"INSERT OR REPLACE INTO {META_TABLE} VALUES (?, ?), (?, ?)",
                                 ["schema_version", str(SCHEMA_VERSION), "created_by", f"iqaguard {__version__}"
                                  + (" (marker added to an older store)" if state == "legacy" else "")])
            if dead:
                self.con.execute(f"UPDATE runs SET status = 'interrupted' WHERE {stale[0]}", stale[1])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    @property
    def cache_dir(self) -> Path:
        """Folder of the cached adversarial PNGs: ``<parent>/<stem>_adv``."""
        return self.path.parent / f"{self.path.stem}_adv"

    def _insert_sql(self, table: str, rows: List[Dict[str, Any]]) -> List[Tuple[str, List[Any]]]:
        cols = list(TABLES[table][0])
        stmts = []
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start:start + _CHUNK_ROWS]
            one = "(" + ", ".join("?" for _ in cols) + ")"
            sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join(one for _ in chunk)} "
                   "ON CONFLICT DO NOTHING")
            stmts.append((sql, [r.get(c) for r in chunk for c in cols]))
        return stmts

    def write(self, **tables: Iterable[Dict[str, Any]]) -> int:
        """Insert rows into several tables in ONE transaction (all or nothing).

        Args:
            **tables: ``results=[...]``, ``clean_scores=[...]``, ``adversarial=[...]``, ...; each
                row a dict of column values (missing columns -> NULL; ``version`` defaults to the
                package version; ``seed`` defaults to 0 in ``results``). Rows whose key is already
                stored are ignored (the first value is kept).

        Returns:
            The number of rows given.
        """
        stmts, n = [], 0
        for table, rows in tables.items():
            if table not in TABLES:
                raise KeyError(f"unknown store table {table!r}; tables: {', '.join(TABLES)}")
            cols = TABLES[table][0]
            filled = []
            for r in rows:
                r = dict(r)
                if "version" in cols and r.get("version") is None:
                    r["version"] = __version__
                if table == "results" and r.get("seed") is None:
                    r["seed"] = 0
                check_finite(table, r)
                filled.append(r)
            n += len(filled)
            if filled:
                stmts += self._insert_sql(table, filled)
        if not stmts:
            return 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            for sql, params in stmts:
                self.con.execute(sql, params)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return n

    def insert(self, rows: Iterable[Dict[str, Any]]) -> int:
        """Insert ``results`` rows in one transaction; returns the number of rows given."""
        return self.write(results=rows)

    def done_keys(self, table: str = "results") -> set:
        """Primary-key tuples of the rows already stored in ``table`` (to skip finished work)."""
        key = TABLES[table][1]
        return set(self.con.execute(f"SELECT {', '.join(key)} FROM {table}").fetchall())

    def query(self, sql: str, params: Sequence[Any] = ()) -> List[tuple]:
        """Run any SQL and return all result tuples."""
        return self.con.execute(sql, list(params)).fetchall()

    def df(self, sql: str | None = None, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        """Rows as a list of dicts (``sql`` defaults to the whole ``results`` table)."""
        cur = self.con.execute(sql or f"SELECT * FROM {self.table}", list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self, table: str = "results") -> int:
        """Number of rows of ``table``."""
        return int(self.con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def export(self, out: str | Path, table: str = "results") -> Path:
        """Write ``table`` to Parquet (``.parquet``) or CSV (``.csv``) with DuckDB ``COPY``.

        Rows are ordered by the table's primary key, so exports of equal stores are equal files.

        Raises:
            ValueError: the extension is neither ``.parquet`` nor ``.csv``.
        """
        out = Path(out)
        fmt = {".parquet": "FORMAT PARQUET", ".csv": "FORMAT CSV, HEADER"}.get(out.suffix.lower())
        if fmt is None or table not in TABLES:
            raise ValueError(f"out: expected a .parquet or .csv file and a table in {list(TABLES)}, "
                             f"got {out} / {table}")
        out.parent.mkdir(parents=True, exist_ok=True)
        key = ", ".join(TABLES[table][1])
        target = str(out).replace("'", "''")
        self.con.execute(f"COPY (SELECT * FROM {table} ORDER BY {key}) TO '{target}' ({fmt})")
        return out

    def log_run(self, run: Dict[str, Any]) -> None:
        """Insert or replace the ``runs`` row of ``run["run_id"]`` (committed immediately).

        A run logged as ``running`` is remembered as alive in this process until it is logged
        with another status, so another :class:`Store` opened on the same file here leaves it be.
        """
        cols = list(TABLES["runs"][0])
        self.con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                         [run.get(c) for c in cols])
        (_LIVE_RUNS.add if run.get("status") == "running" else _LIVE_RUNS.discard)(run["run_id"])

    def subset(self, dataset: str, seed: int, selector: str) -> Tuple[List[int], List[str]] | None:
        """The stored image selection (indices, names) of ``(dataset, seed, selector)``, or None."""
        hit = self.query("SELECT indices, names FROM subsets WHERE dataset = ? AND seed = ? AND selector = ?",
                         (dataset, seed, selector))
        return (json.loads(hit[0][0]), json.loads(hit[0][1])) if hit else None

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the write-ahead log when the last one closes)."""
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
