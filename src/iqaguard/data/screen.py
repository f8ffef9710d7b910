"""Screening the images of a dataset before a benchmark uses them.

A folder of real images often holds a truncated download, a file that is not an image, or a
thumbnail smaller than a metric accepts. The benchmark screens every candidate image once, when
it fixes the image selection of a run (:func:`iqaguard.bench.runner.select_images`): usable images
go on, the others are recorded with the reason (the store's ``skipped`` table, listed in the
report) instead of aborting the run half-way through.

An image is usable when it (and, for full-reference datasets, its reference) decodes with
:func:`~iqaguard.data.io.load_image` and its shorter side is at least the largest ``min_size``
of the metrics that will score it, so every metric is compared on the same images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import IqaguardError
from .base import Dataset


class Screened(NamedTuple):
    """The outcome of :func:`screen`: usable indices (order kept) and ``(index, name, reason)`` rows."""

    usable: List[int]
    skipped: List[Tuple[int, str, str]]


def min_side_of(metrics: Iterable[Tuple[str, int]]) -> Tuple[int, str]:
    """The largest minimum input side over ``(metric name, min_size)`` pairs and the metric that sets it."""
    best, who = 1, ""
    for name, size in metrics:
        if int(size) > best:
            best, who = int(size), name
    return best, who


def _problem(load: Callable[[], object], what: str, min_side: int, who: str) -> Optional[str]:
    """Why the image ``load()`` returns cannot be used, or ``None``."""
    try:
        x = load()
    except (IqaguardError, OSError, ValueError) as e:
        return str(e).replace("\n", " ")
    h, w = (int(v) for v in x.shape[-2:])  # type: ignore[attr-defined]
    if min(h, w) < min_side:
        return (f"{what} is {w}x{h} pixels, smaller than the {min_side}-pixel minimum side of metric {who}"
                if who else f"{what} is {w}x{h} pixels, smaller than the {min_side}-pixel minimum side")
    return None


def screen(dataset: Dataset, indices: Sequence[int], min_side: int = 1, who: str = "",
           need: Optional[int] = None, on_image: Optional[Callable[[int], None]] = None) -> Screened:
    """Split ``indices`` of ``dataset`` into usable images and skipped ones (with a one-line reason).

    Args:
        dataset: any :class:`~iqaguard.data.base.Dataset`.
        indices: candidate sample indices, in the order to keep.
        min_side: smallest accepted ``min(H, W)`` in pixels.
        who: the metric that requires ``min_side`` (named in the reason).
        need: stop once this many usable images are found (``limit`` without sampling).
        on_image: called with the number of images screened so far (progress).

    Returns:
        :class:`Screened`. A reference image is decoded once however many samples share it.
    """
    usable: List[int] = []
    skipped: List[Tuple[int, str, str]] = []
    refs: Dict[Path, Optional[str]] = {}
    for n, i in enumerate(indices, 1):
        if need is not None and len(usable) >= need:
            break
        s = dataset[i]
        why = _problem(lambda: s.image, "the image", min_side, who)
        if why is None and s.ref_path is not None:
            key = Path(s.ref_path)
            if key not in refs:
                refs[key] = _problem(lambda: s.ref, f"its reference {key.name}", min_side, who)
            why = refs[key]
        if why is None:
            usable.append(i)
        else:
            skipped.append((i, s.name, why))
        if on_image is not None:
            on_image(n)
    return Screened(usable, skipped)
