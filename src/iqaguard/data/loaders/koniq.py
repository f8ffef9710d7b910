"""KonIQ-10k (Hosu et al., 2020): 10,073 in-the-wild photographs with crowd-sourced MOS.

Seed 002 §4 / appendix A.3.1 evaluates on a 1000-image KonIQ subset sampled by K-Means over
SI, CF and MOS (see :mod:`iqaguard.data.sampling`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ...errors import InputError
from ...registry import DATASETS
from ..base import Sample
from ._csv import check_unique, number, read_rows
from ._release import ReleaseDataset

_SCALES = {"mos": ("MOS", (1.0, 5.0)), "zscore": ("MOS_zscore", (0.0, 100.0))}


@DATASETS.register("koniq10k")
class KonIQ10k(ReleaseDataset):
    """KonIQ-10k in its official release layout (no-reference, MOS higher = better).

    Args:
        root: folder holding ``koniq10k_scores_and_distributions.csv`` and the image folder
            ``1024x768/`` and/or ``512x384/`` (each may also sit one folder below ``root``,
            e.g. ``koniq10k_1024x768/1024x768/`` as unpacked from the official zip).
        resolution: ``"1024x768"`` (full release), ``"512x384"`` (half-size release, the one
            Guardians of Image Quality Table 4 uses) or ``None``: the first of the two that is present.
        scale: ``"mos"``: column ``MOS`` on the 1..5 ACR scale (default); ``"zscore"``: column
            ``MOS_zscore`` on 0..100.
        limit: keep only the first ``limit`` rows of the table (only those are validated).

    Each sample's ``meta`` holds ``votes`` (counts c1..c5), ``c_total``, ``sd``, ``mos_1to5``,
    ``mos_zscore`` and ``resolution``.

    Raises:
        DatasetError: missing root/table/image folder (message shows the layout and source),
            a missing column, or a non-numeric score (file, row, column named).
        ImageFileError: a row names an image that is not in the image folder.
    """

    name = "koniq10k"
    mos_range = (1.0, 5.0)
    full_reference = False
    CSV = "koniq10k_scores_and_distributions.csv"
    RESOLUTIONS = ("1024x768", "512x384")
    COLUMNS = ("image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore")
    LAYOUT = """\
<root>/
├── koniq10k_scores_and_distributions.csv   image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore
├── 1024x768/                               10,073 JPEGs, e.g. 10004473376.jpg (koniq10k_1024x768.zip)
└── 512x384/                                optional half-size copies (koniq10k_512x384.zip)"""
    SOURCE = "https://database.mmsp-kn.de/koniq-10k-database.html"

    def __init__(
        self,
        root: Union[str, Path],
        resolution: Optional[str] = None,
        scale: str = "mos",
        limit: Optional[int] = None,
    ) -> None:
        super().__init__(limit)
        if resolution is not None and resolution not in self.RESOLUTIONS:
            raise InputError(f"resolution: expected one of {self.RESOLUTIONS} or None, got {resolution!r}")
        if scale not in _SCALES:
            raise InputError(f"scale: expected one of {tuple(_SCALES)}, got {scale!r}")
        base = self._open_root(root, f"{self.CSV} and an image folder {' or '.join(r + '/' for r in self.RESOLUTIONS)}")
        table = self._locate(base, self.CSV)
        folder = self._image_folder(base, resolution)
        column, self.mos_range = _SCALES[scale]
        self.resolution = folder.name

        rows = self._take(read_rows(table, self.COLUMNS))
        check_unique([r.get("image_name") for r in rows], [r.line for r in rows], table)
        samples = []
        for r in rows:
            name = r.get("image_name")
            meta = {
                "votes": [number(r, c, table, integer=True) for c in ("c1", "c2", "c3", "c4", "c5")],
                "c_total": number(r, "c_total", table, integer=True),
                "sd": number(r, "SD", table),
                "mos_1to5": number(r, "MOS", table),
                "mos_zscore": number(r, "MOS_zscore", table),
                "resolution": self.resolution,
            }
            samples.append(Sample(name=name, path=folder / name, mos=number(r, column, table), meta=meta))
        self._check_files(((s.path, r.line) for s, r in zip(samples, rows)), table)
        self._finish(samples)

    def _image_folder(self, base: Path, resolution: Optional[str]) -> Path:
        wanted = [resolution] if resolution else list(self.RESOLUTIONS)
        for res in wanted:
            found = self._locate(base, res, kind="dir", required=False)
            if found is not None:
                return found
        raise self._layout_error(
            f"expected image folder {' or '.join(repr(w + '/') for w in wanted)} in {base} (or one folder below), "
            "not found."
        )
