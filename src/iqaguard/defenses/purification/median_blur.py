"""Median blur as an adversarial purification (Xu, Evans & Qi, "Feature Squeezing"; Guardians of Image Quality Table 8).

A median filter replaces each pixel by the median of its window: isolated outliers (salt and
pepper, many L0 attacks) disappear while edges survive better than under a linear blur. Xu et
al. ("Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks", NDSS 2018,
§IV-B "local smoothing") use it as a squeezer against adversarial examples.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ... import ops
from ...registry import DEFENSES
from ..base import Generators, Purification, check_int

GRID = (3, 5, 7, 9, 11)


@DEFENSES.register("median-blur")
class MedianBlur(Purification):
    """``kernel_size x kernel_size`` median filter of every channel, replicated borders.

    Sources: Xu et al., "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks" (NDSS 2018); Guardians of Image Quality (Table 1, Table 8). Table 8 grid: kernel
    size 3, 5, 7, 9, 11 (presets weakest first). Borders as OpenCV ``medianBlur``
    (``BORDER_REPLICATE``). Differentiable almost everywhere (each output's gradient goes to the
    input pixel that is its window's median; exact, not an approximation), deterministic, same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        kernel_size: odd window side (default 3).
    """

    differentiable = True
    presets = [{"kernel_size": k} for k in GRID]
    defaults = {"kernel_size": 3}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("kernel_size", self.kernel_size, GRID, low=1, odd=True)

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` median-filtered (``generator`` unused)."""
        return ops.median_blur(x, self.kernel_size, "replicate")
