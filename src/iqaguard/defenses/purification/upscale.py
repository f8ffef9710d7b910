"""Bilinear upscale (down, then back up) as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Downscaling by ``scale`` and interpolating back to the input size low-pass filters the image:
what survives is the content a ``scale``-times smaller image can represent.
"""
from __future__ import annotations

import torch

from ...registry import DEFENSES
from ..base import Generators
from ._resampling import Scaled, resample, scaled_size


@DEFENSES.register("upscale")
class Upscale(Scaled):
    """Bilinear downscale by ``scale`` (antialiased) and bilinear upscale back to ``H x W``.

    Source: Guardians of Image Quality (Table 1 "Resize and upscale to original size"; Table 8).
    Table 8 grid: scale 0.1, 0.25, 0.5, 0.75, 0.9, presets weakest first (index 0 -> 0.9 ...
    4 -> 0.1). Differentiable, deterministic, same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        scale: intermediate size factor in (0, 1] (default 0.5).
    """

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (``generator`` unused)."""
        h, w = x.shape[-2:]
        return resample(resample(x, scaled_size(h, w, self.scale)), (h, w))
