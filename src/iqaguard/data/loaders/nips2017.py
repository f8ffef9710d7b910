"""NIPS 2017 Adversarial Learning Development Set: 1,000 ImageNet-compatible 299x299 images.

Designed for attacks on classifiers; it has no quality labels. Seed 002 §4 uses it as a
content-diverse clean set (``mos`` is ``None``; correlations with MOS are not computed on it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

from ...registry import DATASETS
from ..base import Sample
from ._csv import check_unique, number, read_rows
from ._release import ReleaseDataset


@DATASETS.register("nips2017")
class NIPS2017(ReleaseDataset):
    """The NIPS 2017 adversarial competition development set (Kaggle release layout).

    Args:
        root: folder holding ``images.csv`` and ``images/`` (or its parent).
        limit: keep only the first ``limit`` rows of ``images.csv`` (only those are validated).

    ``mos`` is ``None``. Each sample's ``meta`` holds ``image_id``, ``true_label`` and
    ``target_class`` (ImageNet labels 1..1000 of the TF-Slim Inception models, 0 = background),
    ``bbox`` (x1, y1, x2, y2 relative to the image, 0..1), ``url``, ``license``, ``author`` and,
    when ``categories.csv`` is present, ``true_name`` / ``target_name``.

    Raises:
        DatasetError: missing root/``images.csv``/``images/``, missing column, non-numeric label.
        ImageFileError: a row's ``images/<ImageId>.png`` does not exist.
    """

    name = "nips2017"
    mos_range = None
    full_reference = False
    CSV = "images.csv"
    COLUMNS = ("ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass",
               "OriginalLandingURL", "License", "Author", "AuthorProfileURL")
    LAYOUT = """\
<root>/
├── images.csv       ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL
├── categories.csv   CategoryId,CategoryName (optional: class names)
└── images/          <ImageId>.png, 1,000 PNGs of 299x299"""
    SOURCE = "https://www.kaggle.com/datasets/google-brain/nips-2017-adversarial-learning-development-set"

    def __init__(self, root: Union[str, Path], limit: Optional[int] = None) -> None:
        super().__init__(limit)
        table, folder = self._table_and_images(root)
        classes = self._categories(table.parent / "categories.csv")

        rows = self._take(read_rows(table, self.COLUMNS))
        check_unique([r.get("ImageId") for r in rows], [r.line for r in rows], table)
        samples = []
        for r in rows:
            image_id = r.get("ImageId")
            true_label = number(r, "TrueLabel", table, integer=True)
            target = number(r, "TargetClass", table, integer=True)
            meta = {
                "image_id": image_id,
                "true_label": true_label,
                "target_class": target,
                "bbox": tuple(number(r, c, table) for c in ("x1", "y1", "x2", "y2")),
                "url": r.get("URL"),
                "license": r.get("License"),
                "author": r.get("Author"),
            }
            if classes:
                meta["true_name"] = classes.get(true_label, "")
                meta["target_name"] = classes.get(target, "")
            samples.append(Sample(name=f"{image_id}.png", path=folder / f"{image_id}.png", mos=None, meta=meta))
        self._check_files(((s.path, r.line) for s, r in zip(samples, rows)), table)
        self._finish(samples)

    @staticmethod
    def _categories(path: Path) -> Dict[int, str]:
        """``CategoryId -> CategoryName`` from the optional ``categories.csv`` (empty if absent)."""
        if not path.is_file():
            return {}
        rows = read_rows(path, ("CategoryId", "CategoryName"))
        return {number(r, "CategoryId", path, integer=True): r.get("CategoryName") for r in rows}
