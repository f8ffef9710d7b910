"""Flip (mirror) as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Mirroring moves every perturbation pixel to another place: a perturbation crafted for the
metric's view of the unflipped image no longer lines up with it. It has no randomness, so an
adaptive attack that knows the flip simply optimises through it (Guardians of Image Quality finds it effective
only against non-adaptive attacks, §4).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators, Purification

AXES = ("horizontal", "vertical")


@DEFENSES.register("flip")
class Flip(Purification):
    """Mirror image: left-right (``axis="horizontal"``, the default) or top-bottom.

    Source: Guardians of Image Quality (Table 1 "Mirror the image"; Table 8). Table 8 varies no
    parameter for Flip ("—"), so it has a single preset (the left-right mirror); a grid of five
    identical presets would only repeat benchmark rows. Differentiable (a permutation of
    pixels), deterministic, same size.

    Args:
        preset: 0 (the only preset).
        axis: ``"horizontal"`` (mirror left-right) or ``"vertical"`` (top-bottom).
    """

    differentiable = True
    presets = [{"axis": "horizontal"}]
    defaults = {"axis": "horizontal"}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        if self.axis not in AXES:
            raise InputError(f"axis: expected one of {', '.join(AXES)}, got {self.axis!r}")

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` mirrored (``generator`` unused)."""
        return torch.flip(x, dims=(-1,) if self.axis == "horizontal" else (-2,))
