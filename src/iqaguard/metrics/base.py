"""The IQA metric interface (DESIGN.md §Metric).

A metric is a ``torch.nn.Module``: ``m(x)`` (NR) or ``m(x, ref)`` (FR) returns ``[B]`` scores,
differentiable with respect to ``x``. ``bounds`` follow Guardians of Image Quality appendix A.3.2.

Eval mode: every metric leaves its constructor in eval mode, itself and every submodule
(DESIGN.md: "create() returns a metric in eval mode; nothing in the package changes its
BatchNorm statistics"). Code that runs a metric as a fixed function (attacks, bounds
calibration) wraps it in :func:`frozen`, which never switches a module to training mode.
"""
from __future__ import annotations

import abc

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..errors import InputError
from ..validation import check_image, check_pair


@dataclass(frozen=True)
class Bounds:
    """Metric range of Guardians of Image Quality appendix A.3.2.

    Attributes:
        worst: lowest quality value (the metric's value on JPEG q=10 / noise images).
        best: best quality value (the metric's best value on pristine images).
    """

    worst: float
    best: float

    @property
    def diam(self) -> float:
        """``diam(f) = |best - worst|`` (Guardians of Image Quality §3.1)."""
        return abs(self.best - self.worst)

    @property
    def lower(self) -> float:
        return min(self.worst, self.best)

    @property
    def upper(self) -> float:
        return max(self.worst, self.best)


class _EvalOnConstruction(abc.ABCMeta):
    """Metaclass of :class:`Metric`: a metric is in eval mode when its constructor returns.

    ``nn.Module.__init__`` starts in training mode and submodules that a subclass assigns later
    keep their own flag, so ``Metric.__init__`` alone cannot do it: the whole module tree is put
    in eval mode once, after the outermost ``__init__`` has returned.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        obj.eval()
        return obj


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` as a fixed function: every submodule in eval mode, no parameter gradients.

    Each submodule still in training mode gets ``training = False`` and each parameter with
    ``requires_grad`` gets ``False``; on exit exactly those flags are restored. A metric in eval
    mode (as ``create()`` returns it) keeps every flag as it is, no ``train()`` call is ever
    made, so BatchNorm never runs on batch statistics nor updates its running statistics, and
    no parameter ``.grad`` is computed or accumulated (gradients with respect to the input
    still flow).
    """
    modes = [m for m in module.modules() if m.training]
    params = [p for p in module.parameters() if p.requires_grad]
    for m in modes:
        m.training = False
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for m in modes:
            m.training = True
        for p in params:
            p.requires_grad_(True)


class Metric(nn.Module, metaclass=_EvalOnConstruction):
    """Base class of every IQA metric (in eval mode from construction, see :func:`frozen`).

    Subclasses set ``kind`` (``"nr"``/``"fr"``), ``lower_better``, ``bounds`` and ``min_size``
    and implement :meth:`score` (inputs already validated). ``__call__`` validates at the public
    boundary, including the minimum input size: an image with ``min(H, W) < min_size`` raises a
    one-line :class:`InputError` naming the metric, the minimum and the received size (a metric
    without a meaningful minimum keeps the default 1).
    """

    kind: str = "nr"
    lower_better: bool = False
    bounds: Bounds = Bounds(0.0, 1.0)
    name: str = "metric"
    #: smallest ``H`` and ``W`` (pixels) the metric accepts; smaller inputs raise :class:`InputError`.
    min_size: int = 1

    def forward(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores ``[B]`` of ``x`` (``[B, 3, H, W]`` in [0, 1]); FR metrics need ``ref``."""
        self.check_inputs(x, ref)
        return self.score(x, ref)

    def check_inputs(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> None:
        """The public-boundary validation of :meth:`forward`: shapes, range, dtype, the reference of an
        FR metric (none for an NR one) and :attr:`min_size`; one :class:`InputError` line otherwise."""
        if self.kind == "fr":
            if ref is None:
                raise InputError(f"ref: full-reference metric {self.name!r} needs a reference image: m(x, ref)")
            check_pair(x, ref, "x", "ref", dtype=torch.float32)
        else:
            check_image(x, "x", dtype=torch.float32)
            if ref is not None:
                raise InputError(f"ref: no-reference metric {self.name!r} takes no reference; call m(x)")
        self.check_min_size(x)

    def check_min_size(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` naming the metric when ``min(H, W) < self.min_size``."""
        minimum = int(self.min_size)
        h, w = x.shape[-2:]
        if min(h, w) < minimum:
            raise InputError(f"x: {self.name} needs images of at least {minimum}x{minimum} pixels, got {h}x{w}")

    @abc.abstractmethod
    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unchecked scoring ``[B]`` (abstract: a metric class without it cannot be built)."""

    @property
    def has_features(self) -> bool:
        """Whether :meth:`features` is implemented (FS-IQA needs it)."""
        return type(self).feature_map is not Metric.feature_map

    def features(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Backbone features ``[B, feature_dim]`` of ``x`` (validated like :meth:`forward`).

        For an FR metric, the features of the pair ``(x, ref)`` with the reference fixed (FS-IQA §3
        perturbs the distorted image only); differentiable with respect to ``x``. Metrics without
        features raise a one-line :class:`InputError`.
        """
        if not self.has_features:
            Metric.feature_map(self, x, ref)  # raises the no-features error
        self.check_inputs(x, ref)
        return self.feature_map(x, ref)

    def feature_map(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unchecked :meth:`features`; subclasses that expose features override it. This default
        raises the one-line :class:`InputError` of a metric without features."""
        raise InputError(f"metric {self.name!r} does not expose backbone features; FS-IQA needs a metric "
                         "with features (builtin-nr, builtin-fr, or an adapter given feature_layer=...)")

    @property
    def feature_dim(self) -> int:
        """Length ``D`` of :meth:`features`' rows (``InputError`` without features)."""
        if not self.has_features:
            Metric.feature_map(self, torch.empty(0))  # raises the no-features error
        return int(self._feature_dim())

    def _feature_dim(self) -> int:
        """``D`` by one forward of a minimal input (subclasses with a known ``D`` override it)."""
        side = max(int(self.min_size), 32)
        x = torch.full((1, 3, side, side), 0.5, device=self.device)
        with torch.no_grad():
            return self.feature_map(x, x if self.kind == "fr" else None).shape[1]

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
