"""DuckDB result store: one row per (image, metric, attack, preset, defense, preset, mode).

Rows are inserted in small transactions with ``INSERT ... ON CONFLICT DO NOTHING`` on the
primary key, so an interrupted run never loses a committed row and re-running never duplicates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

import duckdb

from .. import __version__

KEY_COLUMNS = ("dataset", "image", "metric", "attack", "attack_preset", "defense", "defense_preset", "mode")

COLUMNS: Dict[str, str] = {
    "dataset": "VARCHAR", "image": "VARCHAR", "metric": "VARCHAR", "attack": "VARCHAR",
    "attack_preset": "VARCHAR", "defense": "VARCHAR", "defense_preset": "VARCHAR", "mode": "VARCHAR",
    "mos": "DOUBLE",
    "clean": "DOUBLE", "attacked": "DOUBLE", "defended_clean": "DOUBLE", "defended_attacked": "DOUBLE",
    "bound_worst": "DOUBLE", "bound_best": "DOUBLE", "lower_better": "BOOLEAN",
    "psnr": "DOUBLE", "ssim": "DOUBLE", "mse": "DOUBLE", "linf": "DOUBLE",
    "t_attack": "DOUBLE", "t_defense": "DOUBLE", "seed": "BIGINT",
    "version": "VARCHAR", "spec_version": "VARCHAR",
}


class Store:
    """A DuckDB file holding benchmark rows.

    Args:
        path: the ``.duckdb`` file (created with its table when missing).
    """

    table = "results"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path))
        cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({cols}, PRIMARY KEY ({', '.join(KEY_COLUMNS)}))")

    def insert(self, rows: Iterable[Dict[str, Any]]) -> int:
        """Insert rows (missing columns -> NULL; ``version`` filled in); returns rows given."""
        rows = list(rows)
        if not rows:
            return 0
        names = list(COLUMNS)
        values = [[dict(r, version=r.get("version", __version__)).get(c) for c in names] for r in rows]
        ph = ", ".join("?" for _ in names)
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.executemany(
                f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({ph}) ON CONFLICT DO NOTHING", values)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return len(rows)

    def done_keys(self) -> set:
        """Keys of the rows already stored (to skip finished work)."""
        return set(self.con.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM {self.table}").fetchall())

    def query(self, sql: str, params: Sequence[Any] = ()) -> List[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def df(self, sql: str | None = None):
        """Rows as a pandas-free list of dicts (``sql`` defaults to the whole table)."""
        cur = self.con.execute(sql or f"SELECT * FROM {self.table}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self) -> int:
        return int(self.con.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
