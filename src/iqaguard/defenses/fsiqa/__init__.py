"""FS-IQA: certified feature-space smoothing (``docs/fsiqa.md``): the ``fs-iqa`` defense
(:mod:`.fs_iqa`) and the training of its heads (:mod:`.training`)."""
from __future__ import annotations

from . import fs_iqa  # noqa: F401  (registers fs-iqa)
