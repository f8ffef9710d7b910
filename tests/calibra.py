"""The five TID2013 calibration pairs (I03, I04, I06, I08, I19) that ship inside the pyiqa wheel.

pyiqa 0.1.16's wheel carries them at its root, ``ResultsCalibra/{dist_dir,ref_dir}/*.bmp``;
``pip install pyiqa`` therefore puts them in ``site-packages/ResultsCalibra``. Tests find them,
in this order: ``$IQAGUARD_CALIBRA`` (a folder or the wheel), an installed ``ResultsCalibra``,
or a downloaded wheel in ``.cache-test/wheels`` (``.ci/run`` puts it there with
``pip download --no-deps pyiqa==0.1.16 -d .cache-test/wheels``). When none is there the tests
that need them skip, unless ``IQAGUARD_REQUIRE_CALIBRA=1`` (CI), where they fail.
"""
from __future__ import annotations

import io
import os
import sysconfig
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pytest
from PIL import Image

NAMES = ("I03", "I04", "I06", "I08", "I19")
ROOT = Path(__file__).resolve().parents[1]
HINT = "pip download --no-deps pyiqa==0.1.16 -d .cache-test/wheels"


def _source() -> Optional[Path]:
    env = os.environ.get("IQAGUARD_CALIBRA")
    cands = [Path(env)] if env else []
    cands.append(Path(sysconfig.get_paths()["purelib"]) / "ResultsCalibra")
    cands += sorted((ROOT / ".cache-test" / "wheels").glob("pyiqa-*.whl"))
    for c in cands:
        if c.is_dir() and (c / "dist_dir").is_dir():
            return c
        if c.is_file() and c.suffix == ".whl":
            return c
    return None


def _read(src: Path, rel: str) -> np.ndarray:
    if src.is_dir():
        with Image.open(src / rel) as im:
            return np.asarray(im.convert("RGB"))
    with zipfile.ZipFile(src) as z, Image.open(io.BytesIO(z.read("ResultsCalibra/" + rel))) as im:
        return np.asarray(im.convert("RGB"))


def calibration_pairs() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{name: (distorted, reference)}`` as ``H x W x 3`` uint8 RGB arrays; skips (or fails in CI)
    when the pairs are not available."""
    src = _source()
    if src is None:
        msg = f"TID2013 calibration pairs not found; run `{HINT}`"
        if os.environ.get("IQAGUARD_REQUIRE_CALIBRA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return {n: (_read(src, f"dist_dir/{n}.bmp"), _read(src, f"ref_dir/{n}.bmp")) for n in NAMES}


def rgb2gray_uint8(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` on uint8 input: ``0.298936 R + 0.587043 G + 0.114021 B`` (the
    Rec. 601 weights as MATLAB rounds them), rounded to uint8."""
    w = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return np.clip(np.round(img.astype(np.float64) @ w), 0, 255).astype(np.uint8)
