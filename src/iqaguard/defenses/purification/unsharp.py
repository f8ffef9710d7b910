"""Unsharp masking as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Unsharp masking adds back a multiple of the image's high-pass detail ``x - G * x`` (the classic
photographic sharpening; Gonzalez & Woods, "Digital Image Processing", §3.6 "Unsharp masking
and highboost filtering"). Guardians of Image Quality lists it among the preprocessing defenses of Guo et al. and
Table 8 varies the Gaussian's kernel size.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ... import ops
from ...registry import DEFENSES
from ..base import Generators, Purification, check_float, check_int

GRID = (3, 5, 7, 9, 11)


@DEFENSES.register("unsharp")
class Unsharp(Purification):
    """``x + amount * (x - G(x))`` with a ``kernel_size``-tap Gaussian of ``sigma``, reflected borders.

    Source: Guardians of Image Quality (Table 1 "Unsharp mask"; Table 8). Table 8 grid: kernel
    size 3, 5, 7, 9, 11 with fixed ``sigma = 1``, ``amount = 1`` (presets weakest first: a 3-tap
    Gaussian truncates the sigma-1 bell, so its high-pass and the sharpening are the smallest).
    Differentiable (linear before the final clip to [0, 1]), deterministic, same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        kernel_size: odd number of taps of the Gaussian (default 3).
        sigma: standard deviation of the Gaussian in pixels (default 1).
        amount: gain of the detail added back (default 1; 0 = identity).
    """

    differentiable = True
    presets = [{"kernel_size": k} for k in GRID]
    defaults = {"kernel_size": 3, "sigma": 1.0, "amount": 1.0}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("kernel_size", self.kernel_size, GRID, low=1, odd=True)
        self.sigma = check_float("sigma", self.sigma, 0.0, 1e3)
        self.amount = check_float("amount", self.amount, 0.0, 1e3, low_open=False)

    @property
    def min_size(self) -> int:
        return self.kernel_size // 2 + 1

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` sharpened, not yet clipped (``generator`` unused)."""
        return ops.unsharp_mask(x, self.sigma, self.kernel_size, self.amount, "reflect")
