"""DuckDB store: primary key, idempotent inserts, persistence."""
from iqaguard.bench.store import KEY_COLUMNS, Store


def _row(image, clean=1.0):
    return {"dataset": "d", "image": image, "metric": "m", "attack": "ifgsm", "attack_preset": "weak",
            "defense": "jpeg", "defense_preset": "0", "mode": "non-adaptive", "clean": clean}


def test_insert_is_idempotent_and_persistent(tmp_path):
    p = tmp_path / "s.duckdb"
    with Store(p) as s:
        s.insert([_row("a"), _row("b")])
        s.insert([_row("a", clean=5.0), _row("c")])  # duplicate key ignored, first value kept
        assert s.count() == 3
    with Store(p) as s:
        rows = {r["image"]: r for r in s.df()}
        assert rows["a"]["clean"] == 1.0 and set(rows) == {"a", "b", "c"}
        assert rows["a"]["version"]
        assert len(next(iter(s.done_keys()))) == len(KEY_COLUMNS)


# --- store identity: foreign files are refused before anything is written ------------------------

import sqlite3  # noqa: E402

import duckdb  # noqa: E402
import pytest  # noqa: E402

from conftest import no_network  # noqa: E402
from iqaguard.bench import store as store_mod  # noqa: E402
from iqaguard.bench.store import META_TABLE, SCHEMA_VERSION, TABLES  # noqa: E402
from iqaguard.errors import IqaguardError  # noqa: E402


def _tables(p):
    con = duckdb.connect(str(p), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    finally:
        con.close()


def _one_line_refusal(excinfo, p):
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, IqaguardError)
    assert "\n" not in msg and "not an iqaguard store" in msg and str(p) in msg
    assert "iqaguard bench run" in msg


def test_foreign_duckdb_file_is_refused_and_untouched(tmp_path, monkeypatch):
    attempts = no_network(monkeypatch)
    p = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE sales (id INTEGER, amount DOUBLE)")
    con.execute("INSERT INTO sales VALUES (1, 2.5)")
    con.close()
    before = p.read_bytes()
    for open_ in (lambda: Store(p), lambda: Store(p, read_only=True), lambda: store_mod.connect(p)):
        with pytest.raises(IqaguardError) as e:
            open_()
        _one_line_refusal(e, p)
    assert p.read_bytes() == before
    assert _tables(p) == ["sales"]
    assert not attempts


@pytest.mark.parametrize("kind", ["sqlite", "text", "binary", "empty"])
def test_non_duckdb_files_are_refused_offline(tmp_path, monkeypatch, kind):
    attempts = no_network(monkeypatch)
    p = tmp_path / "x.duckdb"
    if kind == "sqlite":
        db = sqlite3.connect(p)
        db.execute("CREATE TABLE t (a)")
        db.commit()
        db.close()
    elif kind == "text":
        p.write_text("dataset,image\nd,a\n")
    elif kind == "binary":
        p.write_bytes(bytes(range(256)) * 64)
    else:
        p.write_bytes(b"")
    before = p.read_bytes()
    for open_ in (lambda: Store(p), lambda: Store(p, read_only=True), lambda: store_mod.connect(p)):
        with pytest.raises(IqaguardError) as e:
            open_()
        _one_line_refusal(e, p)
    if kind == "sqlite":
        assert "SQLite" in str(e.value)
    assert p.read_bytes() == before
    assert not attempts


def test_connections_never_autoload_extensions(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        got = dict(s.query("SELECT name, value FROM duckdb_settings() WHERE name IN "
                           "('autoinstall_known_extensions', 'autoload_known_extensions')"))
    assert got == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}


def test_fresh_store_round_trips_and_is_marked(tmp_path, monkeypatch):
    attempts = no_network(monkeypatch)
    p = tmp_path / "new" / "s.duckdb"
    with Store(p) as s:
        s.insert([_row("a")])
    assert set(_tables(p)) == set(TABLES) | {META_TABLE}
    with Store(p, read_only=True) as s:
        assert s.count() == 1 and s.df()[0]["image"] == "a"
        assert s.query(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    with Store(p) as s:  # reopen for writing: nothing to add
        s.insert([_row("b")])
        assert s.count() == 2
    con = store_mod.connect(p)
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    con.close()
    assert not attempts


def test_read_only_open_of_missing_file_creates_nothing(tmp_path):
    p = tmp_path / "missing.duckdb"
    with pytest.raises(IqaguardError):
        Store(p, read_only=True)
    assert not p.exists()


def _legacy_store(p):
    """A store as the code before the marker wrote it: the iqaguard tables only."""
    con = duckdb.connect(str(p))
    for name, (cols, key) in TABLES.items():
        body = ", ".join(f"{k} {v}" for k, v in cols.items())
        con.execute(f"CREATE TABLE {name} ({body}, PRIMARY KEY ({', '.join(key)}))")
    con.execute("INSERT INTO results (dataset, image, metric, attack, attack_preset, defense, defense_preset, "
                "mode, seed, clean) VALUES ('d', 'old', 'm', 'ifgsm', 'weak', 'jpeg', '0', 'non-adaptive', 0, 1.0)")
    con.close()


def test_old_store_without_marker_still_opens(tmp_path):
    p = tmp_path / "old.duckdb"
    _legacy_store(p)
    before = p.read_bytes()
    with Store(p, read_only=True) as s:  # read: accepted as it is, nothing written
        assert [r["image"] for r in s.df()] == ["old"]
    assert p.read_bytes() == before and META_TABLE not in _tables(p)
    with Store(p) as s:  # write: the marker is added, rows are kept
        s.insert([_row("new")])
        assert s.count() == 2
    assert META_TABLE in _tables(p)
    with Store(p, read_only=True) as s:
        assert {r["image"] for r in s.df()} == {"old", "new"}


def test_partial_iqaguard_lookalike_is_refused(tmp_path):
    p = tmp_path / "half.duckdb"
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE results (dataset VARCHAR, image VARCHAR)")  # a results table, wrong columns
    con.close()
    with pytest.raises(IqaguardError) as e:
        Store(p)
    _one_line_refusal(e, p)
    assert _tables(p) == ["results"]


def test_newer_schema_version_is_refused(tmp_path):
    p = tmp_path / "future.duckdb"
    with Store(p):
        pass
    con = duckdb.connect(str(p))
    con.execute(f"UPDATE {META_TABLE} SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(IqaguardError, match="schema version"):
        Store(p)


# --- runs left "running" by a dead process -------------------------------------------------------

def _run_row(run_id, status):
    return {"run_id": run_id, "status": status, "spec_hash": "h", "executor": "local"}


def _raw_status(p):
    con = duckdb.connect(str(p), read_only=True)
    try:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    finally:
        con.close()


def test_running_rows_of_a_dead_process_read_as_interrupted(tmp_path):
    from iqaguard.bench.stats import opened

    p = tmp_path / "s.duckdb"
    with Store(p) as s:  # a run that was SIGKILLed: its row says "running" and nobody updates it
        s.log_run(_run_row("dead", "running"))
        s.log_run(_run_row("ok", "finished"))
    store_mod._LIVE_RUNS.discard("dead")  # its process is gone
    before = p.read_bytes()
    # old behaviour: "running" forever, in every reader and after every reopen
    with Store(p, read_only=True) as s:
        assert dict(s.query("SELECT run_id, status FROM runs")) == {"dead": "interrupted", "ok": "finished"}
    with opened(p) as con:  # what stats and the report use
        assert dict(con.execute("SELECT run_id, status FROM runs").fetchall())["dead"] == "interrupted"
    assert p.read_bytes() == before and _raw_status(p)["dead"] == "running"  # reading wrote nothing
    with Store(p):  # opening for writing: only one process can, so "running" means dead
        pass
    assert _raw_status(p) == {"dead": "interrupted", "ok": "finished"}


def test_a_live_run_of_this_process_is_left_running(tmp_path):
    p = tmp_path / "s.duckdb"
    with Store(p) as writer:
        writer.log_run(_run_row("live", "running"))
        with Store(p) as again:  # a second Store on the same file in the same process
            assert dict(again.query("SELECT run_id, status FROM runs")) == {"live": "running"}
        writer.log_run(_run_row("live", "finished"))
    assert "live" not in store_mod._LIVE_RUNS
