"""Colour quantisation as an adversarial purification (Xu et al., NDSS 2018; Guardians of Image Quality Table 8).

Reducing every channel to a few levels (Xu, Evans & Qi, "Feature Squeezing: Detecting
Adversarial Examples in Deep Neural Networks", NDSS 2018, §IV-A "colour bit depth") maps small
perturbations back onto the level they started from, unless they cross a level boundary.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...registry import DEFENSES
from ..base import Generators, Purification, check_int

#: Table 8 "npp" values, weakest (most levels) first
GRID = (25, 20, 16, 5, 2)


@DEFENSES.register("color-quantization")
class ColorQuantization(Purification):
    """Uniform quantisation of every channel to ``npp`` levels: ``round(x (npp - 1)) / (npp - 1)``.

    Sources: Xu et al., "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks" (NDSS 2018) — their bit depth ``i`` is ``npp = 2**i`` levels, ``npp`` generalises it
    to any level count; Guardians of Image Quality (Table 1, Table 8). Table 8 grid: npp = 2, 5,
    16, 20, 25, read as levels per channel; presets weakest first (index 0 -> 25 levels ...
    4 -> 2 levels, i.e. 1 bit). Not differentiable (a staircase: zero gradient almost
    everywhere): BPDA with the identity, as Athalye et al. (ICML 2018, §4.1) attack bit-depth
    reduction. Deterministic, same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        npp: number of levels per channel, an integer >= 2 (default 16).
    """

    differentiable = False
    presets = [{"npp": n} for n in GRID]
    defaults = {"npp": 16}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("npp", self.npp, sorted(GRID), low=2, high=65536)

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` with values ``k / (npp - 1)`` (``generator`` unused)."""
        n = self.npp - 1
        return torch.round(x.detach() * n) / n
