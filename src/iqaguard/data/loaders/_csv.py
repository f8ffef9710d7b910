"""Shared CSV mechanics of the release loaders: reading a table, parsing numeric cells.

Every loader reads its annotation file through :func:`read_rows` and converts cells with
:func:`number`, so a malformed release produces the same kind of message everywhere: the
file, the line (1-based, header = line 1) and the column.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TypeVar

from ...errors import DatasetError, InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One data row of an annotation table.

    Attributes:
        line: 1-based line number in the file where the row starts (the header is line 1).
        cells: column name -> raw cell text (stripped of surrounding whitespace).
    """

    line: int
    cells: Dict[str, str]

    def get(self, column: str, default: str = "") -> str:
        """The raw text of ``column`` (``default`` when the column is absent or empty)."""
        value = self.cells.get(column)
        return default if value is None or value == "" else value


def read_rows(path: Path, required: Sequence[str], delimiter: str = ",") -> List[Row]:
    """Read a CSV table with a header line.

    A UTF-8 byte-order mark is ignored, header names are stripped, quoted fields (also quoted
    headers as in KonIQ-10k's release) are handled by :mod:`csv`, blank lines are skipped.

    Args:
        path: the CSV file.
        required: column names the release must have.
        delimiter: field separator.

    Returns:
        The data rows in file order.

    Raises:
        DatasetError: the file is unreadable, empty, or lacks a required column (the message
            lists the missing and the found columns).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header: Optional[List[str]] = None
            rows: List[Row] = []
            start = 1
            for record in reader:
                if header is None:
                    header = [h.strip() for h in record]
                    start = reader.line_num + 1
                    continue
                if not any(cell.strip() for cell in record):
                    start = reader.line_num + 1
                    continue
                cells = {h: (record[i].strip() if i < len(record) else "") for i, h in enumerate(header)}
                rows.append(Row(line=start, cells=cells))
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read annotation file {path}: {e}") from e
    if header is None:
        raise DatasetError(f"annotation file {path} is empty; expected a header line with {', '.join(required)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"annotation file {path} lacks column(s) {', '.join(missing)}; found {', '.join(header) or '(none)'}. "
            f"Expected the official header with {', '.join(required)}."
        )
    return rows


def number(row: Row, column: str, path: Path, integer: bool = False) -> float:
    """Parse one numeric cell.

    Args:
        row: the row holding the cell.
        column: the column name.
        path: the file the row came from (named in errors).
        integer: require an integer value (returned as ``int``).

    Returns:
        The finite value (``int`` when ``integer``).

    Raises:
        DatasetError: naming the file, the row (line) and the column when the cell is empty,
            not a number, NaN/Inf, or not an integer although one is required.
    """
    text = row.cells.get(column, "")
    where = f"{path}, row {row.line}, column {column!r}"
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(
            f"{where}: expected a number, got {text!r}. Fix or remove that row of the annotation file."
        ) from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: expected a finite number, got {text!r}")
    if integer:
        if value != int(value):
            raise DatasetError(f"{where}: expected an integer, got {text!r}")
        return int(value)
    return value


def check_unique(names: Sequence[str], lines: Sequence[int], path: Path) -> None:
    """Raise :class:`DatasetError` when an image name appears twice in ``path``."""
    seen: Dict[str, int] = {}
    for name, line in zip(names, lines):
        if name in seen:
            raise DatasetError(
                f"{path}: image {name!r} is listed twice (rows {seen[name]} and {line}); names must be unique"
            )
        seen[name] = line


def check_limit(limit: Optional[int]) -> Optional[int]:
    """Validate a ``limit`` argument: ``None`` or a non-negative integer.

    Raises:
        InputError: naming ``limit`` and the received value.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InputError(f"limit: expected None or an integer >= 0, got {limit!r}")
    return limit


def apply_limit(items: Sequence[T], limit: Optional[int]) -> List[T]:
    """The first ``limit`` items (all of them when ``limit`` is ``None``)."""
    return list(items) if check_limit(limit) is None else list(items[:limit])
