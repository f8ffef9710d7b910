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
