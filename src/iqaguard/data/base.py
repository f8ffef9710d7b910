"""Dataset base class shared by every loader.

A dataset is an indexable collection of :class:`Sample` records. Images are read lazily
(``sample.image`` loads on first access) so a 10k-image dataset costs nothing until used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from .io import load_image


@dataclass
class Sample:
    """One dataset item.

    Attributes:
        name: unique identifier inside the dataset (usually the file name).
        path: image file, or ``None`` when ``loader`` produces the image.
        mos: subjective (or pseudo-) quality, higher = better, on the dataset's own scale; ``None``
            when the dataset has no quality labels (NIPS 2017, DIV2K).
        ref_path: pristine reference for FR datasets (KADID), else ``None``.
        meta: extra columns (distortion type/level, source photograph, split, ...).
    """

    name: str
    path: Optional[Path] = None
    mos: Optional[float] = None
    ref_path: Optional[Path] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    loader: Optional[Callable[[], torch.Tensor]] = None

    @property
    def image(self) -> torch.Tensor:
        """``[1, 3, H, W]`` float32 in [0, 1]."""
        if self.loader is not None:
            return self.loader()
        assert self.path is not None
        return load_image(self.path)

    @property
    def ref(self) -> Optional[torch.Tensor]:
        """Reference image ``[1, 3, H, W]`` or ``None``."""
        return None if self.ref_path is None else load_image(self.ref_path)


class Dataset:
    """A sequence of samples with a name, a MOS scale and an optional FR flag.

    Subclasses fill ``self.samples`` in ``__init__``.
    """

    name: str = "dataset"
    mos_range: Optional[tuple] = None  # (low, high) of the MOS scale, or None
    full_reference: bool = False

    def __init__(self, samples: Optional[Sequence[Sample]] = None) -> None:
        self.samples: List[Sample] = list(samples or [])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def subset(self, indices: Sequence[int]) -> "Dataset":
        """A dataset of the same kind restricted to ``indices`` (order kept)."""
        out = Dataset([self.samples[i] for i in indices])
        out.name, out.mos_range, out.full_reference = self.name, self.mos_range, self.full_reference
        return out

    def mos_array(self) -> List[Optional[float]]:
        return [s.mos for s in self.samples]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self)} samples>"
