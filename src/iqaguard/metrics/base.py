"""The IQA metric interface (DESIGN.md §Metric).

A metric is a ``torch.nn.Module``: ``m(x)`` (NR) or ``m(x, ref)`` (FR) returns ``[B]`` scores,
differentiable with respect to ``x``. ``bounds`` follow seed 002 appendix A.3.2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..errors import InputError
from ..validation import check_image, check_pair


@dataclass(frozen=True)
class Bounds:
    """Metric range of seed 002 appendix A.3.2.

    Attributes:
        worst: lowest quality value (the metric's value on JPEG q=10 / noise images).
        best: best quality value (the metric's best value on pristine images).
    """

    worst: float
    best: float

    @property
    def diam(self) -> float:
        """``diam(f) = |best - worst|`` (seed 002 §3.1)."""
        return abs(self.best - self.worst)

    @property
    def lower(self) -> float:
        return min(self.worst, self.best)

    @property
    def upper(self) -> float:
        return max(self.worst, self.best)


class Metric(nn.Module):
    """Base class of every IQA metric.

    Subclasses set ``kind`` (``"nr"``/``"fr"``), ``lower_better`` and ``bounds`` and implement
    :meth:`score` (inputs already validated). ``__call__`` validates at the public boundary.
    """

    kind: str = "nr"
    lower_better: bool = False
    bounds: Bounds = Bounds(0.0, 1.0)
    name: str = "metric"

    def forward(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores ``[B]`` of ``x`` (``[B, 3, H, W]`` in [0, 1]); FR metrics need ``ref``."""
        if self.kind == "fr":
            if ref is None:
                raise InputError(f"ref: full-reference metric {self.name!r} needs a reference image: m(x, ref)")
            check_pair(x, ref, "x", "ref")
        else:
            check_image(x, "x")
            if ref is not None:
                raise InputError(f"ref: no-reference metric {self.name!r} takes no reference; call m(x)")
        return self.score(x, ref)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unchecked scoring; override in subclasses."""
        raise NotImplementedError  # abstractmethod: every registered metric overrides it

    @property
    def has_features(self) -> bool:
        return type(self).features is not Metric.features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, D]`` (optional, used by FS-IQA)."""
        raise InputError(f"metric {self.name!r} does not expose backbone features")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def improvement_sign(self) -> float:
        """+1 if higher scores mean better quality, -1 otherwise (attacks maximise sign*score)."""
        return -1.0 if self.lower_better else 1.0

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, lower_better={self.lower_better}, bounds={self.bounds}"
