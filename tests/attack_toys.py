"""Shared scaffolding of the attack tests: analytic linear metrics, interior images, seeded
generators, a metric that must never be differentiated, and crops of the builtin photographs.

The linear metrics score ``sum(w * x) / scale`` (FR: ``sum(w * (x - ref)) / scale``) with a weight
buffer ``w``; ``scale`` is ``w.numel()`` by default (the mean of ``w * x`` for full-size ``w``),
``"l1"`` for ``||w||_1`` or any number. Each test file passes its own sizes, seeds and scale, so
the analytic optima it computes from ``m.w`` stay exact.
"""
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

import iqaguard
from iqaguard.data.io import load_image
from iqaguard.metrics.base import Bounds, Metric

PHOTOS = Path(iqaguard.__file__).resolve().parent / "data" / "photos"


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def linear_weights(size: Union[int, Tuple[int, ...]], seed: int) -> torch.Tensor:
    """Standard normal weights ``[1, 3, size, size]`` (or of the shape ``size``) drawn from ``gen(seed)``."""
    shape = (1, 3, size, size) if isinstance(size, int) else tuple(size)
    return torch.randn(shape, generator=gen(seed))


def interior(n: int, size: int, seed: int = 0, low: float = 0.3, width: float = 0.4) -> torch.Tensor:
    """``n`` images ``[n, 3, size, size]`` uniform in ``[low, low + width]`` (away from 0 and 1: no clipping)."""
    return low + width * torch.rand(n, 3, size, size, generator=gen(seed))


def photo_crops(n: int, size: int = 64, step: int = 1, center: bool = True) -> torch.Tensor:
    """``size x size`` crops of every ``step``-th builtin photograph (sorted by name), ``n`` at most.

    ``center``: the central crop; otherwise the top-left one.
    """
    out = []
    for p in sorted(PHOTOS.glob("*.jpg"))[::step][:n]:
        x = load_image(p)
        if center:
            h, w = x.shape[-2:]
            x = x[..., h // 2 - size // 2:h // 2 + size // 2, w // 2 - size // 2:w // 2 + size // 2]
        else:
            x = x[..., :size, :size]
        out.append(x)
    return torch.cat(out)


class Linear(Metric):
    """NR, higher-better: ``sum(w * x) / scale``; the gradient is ``w / scale``."""

    name, bounds = "linear", Bounds(-1.0, 1.0)

    def __init__(self, w: torch.Tensor, scale: Union[None, str, float] = None) -> None:
        super().__init__()
        self.register_buffer("w", w)
        if scale is None:
            scale = w.numel()
        elif scale == "l1":
            scale = float(w.abs().sum())
        self.scale = scale

    @classmethod
    def random(cls, size: int = 16, seed: int = 0, scale: Union[None, str, float] = None) -> "Linear":
        """The metric on ``linear_weights(size, seed)``."""
        return cls(linear_weights(size, seed), scale)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (self.w * x).sum(dim=(1, 2, 3)) / self.scale


class LinearLower(Linear):
    """NR, lower-better: the same score; lower is better (the attack lowers it)."""

    name, lower_better, bounds = "linear-lower", True, Bounds(1.0, -1.0)


class LinearFR(Linear):
    """FR, lower-better: ``sum(w * (x - ref)) / scale`` (ref enters, x is perturbed)."""

    name, kind, lower_better, bounds = "linear-fr", "fr", True, Bounds(1.0, -1.0)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (self.w * (x - ref)).sum(dim=(1, 2, 3)) / self.scale


class LinearFRHigher(LinearFR):
    """FR, higher-better: the same score as :class:`LinearFR`; higher is better."""

    lower_better, bounds = False, Bounds(-1.0, 1.0)


class _RaiseOnBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise AssertionError("backward called on a black-box metric")


class NoBackward(Linear):
    """Linear metric whose score raises if anything differentiates it."""

    name = "no-backward"

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _RaiseOnBackward.apply(super().score(x, ref))
