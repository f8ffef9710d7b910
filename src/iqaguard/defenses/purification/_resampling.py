"""Bilinear resampling shared by the resizing purifications (resize, upscale, random crop)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from ..base import Purification, check_float

#: Table 8 scales of Resize and Bilinear Upscale, weakest (closest to 1) first
SCALE_GRID = (0.9, 0.75, 0.5, 0.25, 0.1)


def scaled_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """``(round(h * scale), round(w * scale))``, each at least 1."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def resample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, H, W]`` to ``size`` (half-pixel centres; antialiased when shrinking).

    Antialiasing (a triangle filter widened by the scale, as Pillow's ``BILINEAR`` resize) keeps
    a downscale from aliasing the very high frequencies the defense means to remove.
    Differentiable.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class Scaled(Purification):
    """Base of the purifications with one ``scale`` in (0, 1] on the :data:`SCALE_GRID` presets
    (Resize, Bilinear Upscale): differentiable, deterministic."""

    differentiable = True
    presets = [{"scale": s} for s in SCALE_GRID]
    defaults = {"scale": 0.5}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        self.scale = self.params["scale"] = check_float("scale", self.scale, 0.0, 1.0, grid=sorted(SCALE_GRID))
