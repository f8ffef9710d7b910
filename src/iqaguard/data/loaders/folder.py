"""Any folder of images, optionally with a CSV of opinion scores."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

from ...errors import DatasetError, InputError
from ...registry import DATASETS
from ..base import Sample
from ..io import IMAGE_EXTENSIONS, list_images
from ._csv import check_unique, number, read_rows
from ._release import ReleaseDataset


@DATASETS.register("folder")
class ImageFolder(ReleaseDataset):
    """Images of a folder, with MOS from an optional CSV (no-reference).

    Without ``csv`` every image of ``root`` (extensions :data:`~iqaguard.data.io.IMAGE_EXTENSIONS`,
    sorted by path) is a sample with ``mos=None``. With ``csv`` the table decides: one sample
    per row, in row order; images of the folder that the table does not name are ignored and
    their number is reported in a :class:`UserWarning`.

    Args:
        root: the image folder.
        csv: annotation file, absolute or relative to ``root``; its ``image_column`` holds
            paths relative to ``root`` (e.g. ``a.png`` or ``sub/a.png``).
        image_column: CSV column with the image path.
        mos_column: CSV column with the opinion score (higher = better), or ``None`` to use the
            CSV only to select images.
        mos_range: ``(low, high)`` of the MOS scale, stored as ``dataset.mos_range``.
        recursive: list images in sub-folders too (no-CSV mode and the unused-image count).
        delimiter: CSV field separator.
        dataset_name: the dataset's ``name`` (default ``"folder"``), used in reports and errors.
        limit: keep only the first ``limit`` images / rows.

    Raises:
        DatasetError: missing root or CSV, missing column, non-numeric MOS, duplicate rows, or
            a folder without images.
        ImageFileError: a CSV row names an image file that does not exist (path named).
    """

    name = "folder"
    mos_range = None
    full_reference = False
    LAYOUT = """\
<root>/
├── a.png, b.jpg, ...    any of .png .jpg .jpeg .bmp .tif .tiff .webp
└── scores.csv           optional: header with the image and MOS columns, e.g. image,mos"""

    def __init__(
        self,
        root: Union[str, Path],
        csv: Optional[Union[str, Path]] = None,
        image_column: str = "image",
        mos_column: Optional[str] = "mos",
        mos_range: Optional[Tuple[float, float]] = None,
        recursive: bool = False,
        delimiter: str = ",",
        dataset_name: str = "folder",
        limit: Optional[int] = None,
    ) -> None:
        super().__init__(limit)
        if not isinstance(dataset_name, str) or not dataset_name:
            raise InputError(f"dataset_name: expected a non-empty string, got {dataset_name!r}")
        self.name = dataset_name
        if mos_range is not None:
            if len(mos_range) != 2 or not float(mos_range[0]) < float(mos_range[1]):
                raise InputError(f"mos_range: expected (low, high) with low < high, got {mos_range!r}")
            self.mos_range = (float(mos_range[0]), float(mos_range[1]))
        base = self._open_root(root, f"image files ({' '.join(IMAGE_EXTENSIONS)})")
        found = list_images(base, recursive=recursive)
        if csv is None:
            if not found:
                raise self._layout_error(f"no image files in {base}" + ("" if recursive else " (try recursive=True)"))
            samples = [self._sample(base, p, None, {}) for p in self._take(found)]
        else:
            samples = self._from_csv(base, Path(csv), image_column, mos_column, delimiter, found)
        self._finish(samples)

    def _from_csv(self, base: Path, csv: Path, image_column: str, mos_column: Optional[str],
                  delimiter: str, found: list) -> list:
        table = csv if csv.is_absolute() else base / csv
        if not table.is_file():
            raise DatasetError(
                f"{self.name}: annotation file {table} not found. Pass csv= as a path relative to {base} "
                f"or an absolute path; it needs a header with columns {image_column!r}"
                + (f" and {mos_column!r}." if mos_column else ".")
            )
        required = (image_column,) + ((mos_column,) if mos_column else ())
        all_rows = read_rows(table, required, delimiter=delimiter)
        for r in all_rows:
            if not r.get(image_column):
                raise DatasetError(f"{table}, row {r.line}, column {image_column!r}: empty image path")
        check_unique([r.get(image_column) for r in all_rows], [r.line for r in all_rows], table)
        named = {(base / r.get(image_column)).resolve() for r in all_rows}
        unused = sum(1 for p in found if p.resolve() not in named)
        if unused:
            warnings.warn(
                f"{self.name}: {unused} image(s) in {base} are not listed in {table} and are ignored",
                UserWarning, stacklevel=3,
            )
        rows = self._take(all_rows)
        samples = []
        for r in rows:
            mos = number(r, mos_column, table) if mos_column else None
            extra = {c: v for c, v in r.cells.items() if c not in required}
            samples.append(self._sample(base, base / r.get(image_column), mos, extra))
        self._check_files(((s.path, r.line) for s, r in zip(samples, rows)), table)
        return samples

    @staticmethod
    def _sample(base: Path, path: Path, mos: Optional[float], meta: dict) -> Sample:
        try:
            name = path.relative_to(base).as_posix()
        except ValueError:
            name = path.name
        return Sample(name=name, path=path, mos=mos, meta=meta)
