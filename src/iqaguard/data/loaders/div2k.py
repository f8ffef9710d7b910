"""DIV2K (Agustsson & Timofte, 2017) high-resolution images.

Seed 002 appendix A.3.2 computes every metric's bounds on ``DIV2K_valid_HR`` (100 images,
0801.png..0900.png): best = best value on these pristine images, worst = worst value over
their JPEG q=10 versions and random-noise images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ...errors import InputError
from ...registry import DATASETS
from ..base import Sample
from ..io import list_images
from ._release import ReleaseDataset

_SPLITS = {"valid": "DIV2K_valid_HR", "train": "DIV2K_train_HR"}


@DATASETS.register("div2k")
class DIV2K(ReleaseDataset):
    """DIV2K HR images (no quality labels: ``mos`` is ``None``).

    Args:
        root: the ``DIV2K_valid_HR/`` folder itself, or a folder containing it (directly or
            one folder below).
        split: ``"valid"`` (``DIV2K_valid_HR``, 0801..0900, the bounds protocol of Guardians of Image Quality) or
            ``"train"`` (``DIV2K_train_HR``, 0001..0800).
        limit: keep only the first ``limit`` images in name order.

    Each sample's ``meta`` holds ``split``. Images are large (about 2040 px on the long side).

    Raises:
        DatasetError: missing root or folder, or a folder without PNG images.
    """

    name = "div2k"
    mos_range = None
    full_reference = False
    LAYOUT = """\
<root>/                  (or pass the DIV2K_valid_HR folder itself as root)
└── DIV2K_valid_HR/      0801.png ... 0900.png (DIV2K_valid_HR.zip)
    (DIV2K_train_HR/     0001.png ... 0800.png for split="train")"""
    SOURCE = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"

    def __init__(self, root: Union[str, Path], split: str = "valid", limit: Optional[int] = None) -> None:
        super().__init__(limit)
        if split not in _SPLITS:
            raise InputError(f"split: expected one of {tuple(_SPLITS)}, got {split!r}")
        folder_name = _SPLITS[split]
        base = self._open_root(root, f"the folder {folder_name}/")
        folder = base if base.name == folder_name else self._locate(base, folder_name, kind="dir")
        images = [p for p in list_images(folder) if p.suffix.lower() == ".png"]
        if not images:
            raise self._layout_error(f"folder {folder} holds no PNG images.")
        images = self._take(images)
        self.split = split
        self._finish([Sample(name=p.name, path=p, mos=None, meta={"split": split}) for p in images])
