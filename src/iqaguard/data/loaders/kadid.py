"""KADID-10k (Lin, Hosu & Saupe, 2019): 81 pristine images x 25 distortions x 5 levels.

A full-reference dataset: every distorted image has its pristine reference. Seed 002
appendix A.3.1 uses all 125 distortions of 8 of the 81 references (1000 images).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

from ...errors import DatasetError
from ...registry import DATASETS
from ..base import Sample
from ._csv import check_unique, number, read_rows
from ._release import ReleaseDataset

#: Distortion type index (1..25, the middle field of ``I01_<type>_<level>.png``) -> name,
#: in the order of the KADID-10k paper's distortion table.
DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_1", "color_saturation_2", "jpeg2000", "jpeg",
    "white_noise", "white_noise_color_component", "impulse_noise", "multiplicative_noise",
    "denoise", "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch",
    "pixelate", "quantization", "color_block", "high_sharpen", "contrast_change",
)

_NAME = re.compile(r"^I(\d+)_(\d+)_(\d+)\.[A-Za-z0-9]+$")


@DATASETS.register("kadid10k")
class KADID10k(ReleaseDataset):
    """KADID-10k in its official release layout (full-reference, DMOS higher = better).

    The release calls its score "dmos", but it is a mean opinion score on the 1..5
    degradation category scale (5 = imperceptible, 1 = very annoying), so higher is better
    and it is stored unchanged as ``Sample.mos``.

    Args:
        root: the unpacked ``kadid10k/`` folder (holding ``dmos.csv`` and ``images/``) or its
            parent.
        limit: keep only the first ``limit`` rows of ``dmos.csv`` (only those are validated).

    Each sample has ``ref_path`` set and ``meta`` with ``ref`` (reference file name),
    ``ref_id`` (1..81), ``dist_type`` (1..25), ``dist_name`` (see :data:`DISTORTIONS`),
    ``level`` (1..5, 5 = strongest) and ``var`` (rating variance).

    Raises:
        DatasetError: missing root/``dmos.csv``/``images/`` (message shows the layout and
            source), a missing column, a non-numeric score or a file name that does not follow
            ``I<ref>_<type>_<level>.png``.
        ImageFileError: a row names a distorted or reference image that does not exist.
    """

    name = "kadid10k"
    mos_range = (1.0, 5.0)
    full_reference = True
    CSV = "dmos.csv"
    COLUMNS = ("dist_img", "ref_img", "dmos", "var")
    LAYOUT = """\
<root>/                 (the unpacked kadid10k/ folder, or its parent)
├── dmos.csv            dist_img,ref_img,dmos,var   e.g. I01_01_01.png,I01.png,4.57,0.496
└── images/
    ├── I01.png ... I81.png                          81 pristine references
    └── I01_01_01.png ... I81_25_05.png              I<ref>_<distortion 01-25>_<level 01-05>.png"""
    SOURCE = "https://database.mmsp-kn.de/kadid-10k-database.html"

    def __init__(self, root: Union[str, Path], limit: Optional[int] = None) -> None:
        super().__init__(limit)
        table, folder = self._table_and_images(root)

        rows = self._take(read_rows(table, self.COLUMNS))
        check_unique([r.get("dist_img") for r in rows], [r.line for r in rows], table)
        samples, listed = [], []
        for r in rows:
            dist, ref = r.get("dist_img"), r.get("ref_img")
            match = _NAME.match(dist)
            if match is None or not ref:
                raise DatasetError(
                    f"{table}, row {r.line}: expected dist_img like 'I01_01_01.png' and a ref_img, "
                    f"got dist_img={dist!r}, ref_img={ref!r}"
                )
            ref_id, dist_type, level = (int(g) for g in match.groups())
            if not 1 <= dist_type <= len(DISTORTIONS):
                raise DatasetError(f"{table}, row {r.line}: distortion type {dist_type} outside 1..25 in {dist!r}")
            meta = {
                "ref": ref,
                "ref_id": ref_id,
                "dist_type": dist_type,
                "dist_name": DISTORTIONS[dist_type - 1],
                "level": level,
                "var": number(r, "var", table),
            }
            sample = Sample(name=dist, path=folder / dist, mos=number(r, "dmos", table),
                            ref_path=folder / ref, meta=meta)
            samples.append(sample)
            listed += [(sample.path, r.line), (sample.ref_path, r.line)]
        self._check_files(listed, table)
        self._finish(samples)
