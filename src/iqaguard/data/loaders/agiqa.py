"""AGIQA-3K (Li et al., 2024): 2,982 AI-generated images with perceptual-quality and
text-alignment MOS. Seed 002 §4 uses it for the "AI-generated content" comparison (Fig. 3b).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ...errors import InputError
from ...registry import DATASETS
from ..base import Sample
from ._csv import check_unique, number, read_rows
from ._release import ReleaseDataset

_TARGETS = {"quality": ("mos_quality", "std_quality"), "align": ("mos_align", "std_align")}


@DATASETS.register("agiqa3k")
class AGIQA3K(ReleaseDataset):
    """AGIQA-3K in its official release layout (no-reference, MOS higher = better).

    ``data.csv`` (also in the official GitHub repository) lists every image with its prompt,
    the prompt's adjectives/style and two opinion scores, each normalised by the authors to
    0..5: ``mos_quality`` (perceptual quality, the default target) and ``mos_align``
    (text-image alignment).

    Args:
        root: folder holding ``data.csv`` (or its parent).
        image_dir: the image folder relative to the folder of ``data.csv``. ``None`` picks the
            first of ``images/``, ``AGIQA-3K/``, ``AGIQA-3k/`` or the folder of ``data.csv``
            itself that holds the first listed image (unpacked archives differ in this).
        target: ``"quality"`` (``mos_quality``) or ``"align"`` (``mos_align``) as ``Sample.mos``.
        limit: keep only the first ``limit`` rows of ``data.csv`` (only those are validated).

    Each sample's ``meta`` holds ``prompt``, ``adj1``, ``adj2``, ``style``, ``generator`` (the
    file-name prefix, e.g. ``sd1.5``), ``mos_quality``, ``std_quality``, ``mos_align`` and
    ``std_align``.

    Raises:
        DatasetError: missing root/``data.csv``/image folder, missing column, non-numeric score.
        ImageFileError: a row names an image that is not in the image folder.
    """

    name = "agiqa3k"
    mos_range = (0.0, 5.0)
    full_reference = False
    CSV = "data.csv"
    COLUMNS = ("name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align")
    IMAGE_DIRS: Sequence[str] = ("images", "AGIQA-3K", "AGIQA-3k", ".")
    LAYOUT = """\
<root>/
├── data.csv      name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align
└── images/       2,982 images named as in data.csv, e.g. AttnGAN_normal_000.jpg
                  (images/, AGIQA-3K/ or the images directly beside data.csv are all accepted)"""
    SOURCE = "https://github.com/lcysyzxdxc/AGIQA-3k-Database (data.csv; images via its Google Drive / Baidu links)"

    def __init__(
        self,
        root: Union[str, Path],
        image_dir: Optional[str] = None,
        target: str = "quality",
        limit: Optional[int] = None,
    ) -> None:
        super().__init__(limit)
        if target not in _TARGETS:
            raise InputError(f"target: expected one of {tuple(_TARGETS)}, got {target!r}")
        base = self._open_root(root, f"{self.CSV} and the image folder")
        table = self._locate(base, self.CSV)
        rows = self._take(read_rows(table, self.COLUMNS))
        check_unique([r.get("name") for r in rows], [r.line for r in rows], table)
        folder = self._image_folder(table.parent, image_dir, rows[0].get("name") if rows else None)
        mos_col, _ = _TARGETS[target]

        samples = []
        for r in rows:
            name = r.get("name")
            meta = {c: r.get(c) for c in ("prompt", "adj1", "adj2", "style")}
            meta["generator"] = name.split("_", 1)[0]
            meta.update({c: number(r, c, table) for c in ("mos_quality", "std_quality", "mos_align", "std_align")})
            samples.append(Sample(name=name, path=folder / name, mos=meta[mos_col], meta=meta))
        self._check_files(((s.path, r.line) for s, r in zip(samples, rows)), table)
        self._finish(samples)

    def _image_folder(self, parent: Path, image_dir: Optional[str], probe: Optional[str]) -> Path:
        if image_dir is not None:
            folder = parent / image_dir
            if not folder.is_dir():
                raise self._layout_error(f"image_dir {image_dir!r} is not a folder under {parent}.")
            return folder
        candidates = [parent / d for d in self.IMAGE_DIRS]
        existing = [c for c in candidates if c.is_dir()]
        for folder in existing:
            if probe is None or (folder / probe).is_file():
                return folder
        # No folder holds the first image: take the first plausible one, so that the per-file
        # check names the missing path(s) precisely.
        return existing[0]
