"""Base class of the loaders for official dataset releases.

It owns what every loader repeats otherwise: checking the root, locating the release's files
(the root may be the release folder itself or the folder it was unpacked into), the
"expected layout / where to download" error message, and the cheap existence check of every
listed image at construction time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar, Union

from ...errors import DatasetError, ImageFileError
from ..base import Dataset, Sample
from ._csv import apply_limit, check_limit

T = TypeVar("T")

PathLike = Union[str, Path]


class ReleaseDataset(Dataset):
    """A :class:`~iqaguard.data.base.Dataset` read from an official release folder.

    Subclasses set ``name``, ``mos_range``, ``full_reference``, ``LAYOUT`` (a tree of the
    expected files) and ``SOURCE`` (where the release is officially distributed), then call
    ``super().__init__(limit)`` (validates ``limit``), then :meth:`_open_root`, :meth:`_locate`,
    :meth:`_take`, :meth:`_check_files` and :meth:`_finish` from ``__init__``.
    """

    LAYOUT: str = ""
    SOURCE: str = ""
    CSV: str = ""  # the release's label table, for loaders that have one

    def __init__(self, limit: Optional[int] = None) -> None:
        super().__init__()
        self.limit = check_limit(limit)
        self.root: Optional[Path] = None

    def _layout_error(self, problem: str) -> DatasetError:
        """A :class:`DatasetError` that states ``problem``, the expected layout and the source."""
        source = f"\nThe dataset is officially distributed at {self.SOURCE}" if self.SOURCE else ""
        return DatasetError(f"{self.name}: {problem}\nExpected layout:\n{self.LAYOUT.rstrip()}{source}")

    def _open_root(self, root: PathLike, expected: str) -> Path:
        """Check that ``root`` is an existing folder; ``expected`` names what should be in it."""
        if root is None or (isinstance(root, str) and not root.strip()):
            raise self._layout_error(f"root is required: the folder that contains {expected}.")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise self._layout_error(
                f"dataset root {path} does not exist or is not a folder; it should contain {expected}."
            )
        self.root = path
        return path

    def _locate(self, root: Path, relative: str, kind: str = "file", required: bool = True) -> Optional[Path]:
        """Find ``relative`` in ``root`` or in one of its immediate sub-folders.

        Args:
            root: the dataset root.
            relative: a file or folder name (may contain ``/``), e.g. ``"dmos.csv"``.
            kind: ``"file"`` or ``"dir"``.
            required: raise when not found (else return ``None``).

        Returns:
            The first match: ``root/relative``, then ``root/<sub>/relative`` with sub-folders
            in sorted order (so an archive unpacked into its own folder is accepted too).

        Raises:
            DatasetError: naming ``relative`` and the layout, when required and not found.
        """
        test = Path.is_file if kind == "file" else Path.is_dir
        candidates = [root / relative]
        try:
            subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        except OSError:
            subdirs = []
        candidates += [d / relative for d in subdirs]
        for c in candidates:
            if test(c):
                return c
        if required:
            what = "file" if kind == "file" else "folder"
            raise self._layout_error(f"expected {what} {relative!r} in {root} (or one folder below), not found.")
        return None

    def _table_and_images(self, root: PathLike) -> Tuple[Path, Path]:
        """Open ``root`` and find ``CSV`` with an ``images/`` folder beside it (KADID, NIPS 2017)."""
        base = self._open_root(root, f"{self.CSV} and images/")
        table = self._locate(base, self.CSV)
        folder = table.parent / "images"
        if not folder.is_dir():
            raise self._layout_error(f"expected folder 'images/' next to {table}, not found.")
        return table, folder

    def _check_files(self, listed: Iterable[Tuple[Path, int]], table: Path) -> None:
        """Check that every listed file exists (one directory listing per folder, no image reads).

        Args:
            listed: ``(path, line)`` pairs, ``line`` being the row of ``table`` that names ``path``.
            table: the annotation file (named in the error).

        Raises:
            ImageFileError: naming the first missing path, its row and how many are missing.
        """
        cache: Dict[Path, Set[str]] = {}
        missing: List[Tuple[Path, int]] = []
        for path, line in listed:
            folder = path.parent
            if folder not in cache:
                try:
                    cache[folder] = set(os.listdir(folder))
                except OSError:
                    cache[folder] = set()
            if path.name not in cache[folder]:
                missing.append((path, line))
        if missing:
            path, line = missing[0]
            raise ImageFileError(
                f"{self.name}: image file not found: {path} (listed in {table}, row {line}); "
                f"{len(missing)} listed file(s) are missing. Check that the release was unpacked "
                f"completely into {self.root}, or pass limit=... to use a prefix of the table."
            )

    def _take(self, items: Sequence[T]) -> List[T]:
        """The first ``self.limit`` items (all when ``limit`` is ``None``)."""
        return apply_limit(items, self.limit)

    def _finish(self, samples: List[Sample]) -> None:
        """Store ``samples``; an empty release is an error (unless ``limit=0`` asked for none)."""
        if not samples and self.limit != 0:
            raise self._layout_error(f"no images found under {self.root}.")
        self.samples = samples
