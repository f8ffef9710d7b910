"""The builtin photographs: pristine, redistributable images shipped inside the package.

``photos/`` holds the JPEG files made by ``scripts/make_photos.py`` (short side 512 px, or the
native size when smaller), ``sources.json`` (package, original path, author, licence of each
file) and ``DATA_CARD.md``. The ``builtin`` dataset lists them; ``builtin-kadid``
(:mod:`iqaguard.data.kadid_builtin`) distorts them.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import DatasetError
from ..registry import DATASETS
from .base import Dataset, Sample

PHOTOS_DIR = Path(__file__).resolve().parent / "photos"
SOURCES_FILE = PHOTOS_DIR / "sources.json"


@lru_cache(maxsize=1)
def _sources() -> Dict[str, Dict[str, str]]:
    if not SOURCES_FILE.is_file():
        raise DatasetError(
            f"the builtin photographs are missing: {SOURCES_FILE} not found. Reinstall iqaguard or "
            "regenerate them with `python scripts/make_photos.py`."
        )
    return json.loads(SOURCES_FILE.read_text(encoding="utf-8"))


def photo_info() -> Dict[str, Dict[str, str]]:
    """Provenance of every builtin photograph.

    Returns:
        ``{stem: {"file", "package", "path", "author", "licence", "original_size",
        "processing"}}`` sorted by stem (e.g. ``"aqua"``).
    """
    return {Path(f).stem: {"file": f, **meta} for f, meta in sorted(_sources().items())}


def photo_paths() -> List[Path]:
    """Absolute paths of the builtin photographs, sorted by file name.

    Raises:
        DatasetError: the package was installed without its photographs (a file listed in
            ``sources.json`` is missing).
    """
    paths = [PHOTOS_DIR / f for f in sorted(_sources())]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"builtin photographs missing from {PHOTOS_DIR}: {', '.join(missing)}. Reinstall iqaguard "
            "or regenerate them with `python scripts/make_photos.py`."
        )
    return paths


def photo_names() -> List[str]:
    """Stems of the builtin photographs (``["aqua", "astronaut", ...]``), sorted."""
    return [p.stem for p in photo_paths()]


@DATASETS.register("builtin")
class BuiltinPhotos(Dataset):
    """The pristine builtin photographs (no quality labels).

    Each sample has ``name`` = file name (``"aqua.jpg"``), ``path``, ``mos=None`` and ``meta`` with
    ``source`` (the stem), ``package``, ``original_path``, ``author`` and ``licence``. Images are
    RGB, 8-bit JPEG q95, short side 512 px (or their native size when smaller); ``sample.image``
    loads ``[1, 3, H, W]`` float32 in [0, 1]. Sizes differ between photographs.

    Args:
        names: optional subset of stems (``["aqua", "kite"]``) or file names; default all.

    Raises:
        DatasetError: an unknown name (the message lists the known ones).
    """

    name = "builtin"
    mos_range = None
    full_reference = False

    def __init__(self, names: Optional[Sequence[str]] = None) -> None:
        info = photo_info()
        paths = {p.stem: p for p in photo_paths()}
        stems = sorted(paths)
        if names is not None:
            wanted = [Path(n).stem for n in names]
            unknown = [n for n in wanted if n not in paths]
            if unknown:
                raise DatasetError(
                    f"names: unknown builtin photograph(s) {unknown}; known: {', '.join(stems)}"
                )
            stems = wanted
        samples = []
        for stem in stems:
            meta = info[stem]
            samples.append(Sample(
                name=paths[stem].name, path=paths[stem], mos=None,
                meta={"source": stem, "package": meta["package"], "original_path": meta["path"],
                      "author": meta["author"], "licence": meta["licence"]},
            ))
        super().__init__(samples)


__all__ = ["BuiltinPhotos", "PHOTOS_DIR", "photo_info", "photo_names", "photo_paths"]
