"""Gaussian blur as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Low-pass filtering removes part of the high-frequency energy in which additive adversarial
perturbations mostly live, and some of the image's detail with it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ... import ops
from ...registry import DEFENSES
from ..base import Generators, Purification, check_float, check_int

GRID = (3, 5, 7, 9, 11)


@DEFENSES.register("gaussian-blur")
class GaussianBlur(Purification):
    """Separable Gaussian filter of every channel, ``kernel_size`` taps, reflected borders.

    Source: Guardians of Image Quality (Table 1 "Smooth with a Gaussian filter"; Table 8). Table 8
    grid: kernel size 3, 5, 7, 9, 11 with ``sigma = 0.15 * kernel_size + 0.35`` — OpenCV's
    ``getGaussianKernel`` default ``0.3 ((k - 1) / 2 - 1) + 0.8`` — and OpenCV's default border
    ``BORDER_REFLECT_101`` (mirror without repeating the edge pixel). Presets weakest first:
    index ``i`` -> kernel ``GRID[i]``. Differentiable (a linear filter), deterministic, same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        kernel_size: odd number of taps (default 3).
        sigma: standard deviation in pixels; ``None`` (default) = ``0.15 * kernel_size + 0.35``.

    Example:
        >>> p = GaussianBlur(preset=2)            # 7 taps, sigma 1.4
        >>> y = p(x)                              # [B, 3, H, W] -> [B, 3, H, W]
    """

    differentiable = True
    presets = [{"kernel_size": k} for k in GRID]
    defaults = {"kernel_size": 3, "sigma": None}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("kernel_size", self.kernel_size, GRID, low=1, odd=True)
        if self.sigma is None:
            self.sigma = round(0.15 * self.kernel_size + 0.35, 6)
        self.sigma = self.params["sigma"] = check_float("sigma", self.sigma, 0.0, 1e3)

    @property
    def min_size(self) -> int:
        return self.kernel_size // 2 + 1  # reflected borders need H, W > radius

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` blurred (``generator`` unused)."""
        return ops.gaussian_blur(x, self.sigma, self.kernel_size, "reflect")
