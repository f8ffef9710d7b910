"""Random rotation as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Rotating by a random angle resamples the image on a rotated grid, so a perturbation crafted for
one view of the image meets the metric misaligned. The randomness is what makes it robust to
adaptive attacks too (Guardians of Image Quality §4: the attacker optimises for a distribution of angles, EOT,
while inference draws a new one).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators, Purification, check_float, draw

GRID = (10.0, 15.0, 20.0, 30.0, 50.0)
PADDINGS = ("zeros", "border", "reflection")


@DEFENSES.register("random-rotate")
class RandomRotate(Purification):
    """Rotate each image about its centre by an angle drawn uniformly from ``[-angle, angle]`` degrees.

    Source: Guardians of Image Quality (Table 1 "Image rotation"; Table 8). Table 8 grid: angle
    limit 10, 15, 20, 30, 50 degrees, presets weakest first. Bilinear resampling with half-pixel
    centres (``grid_sample``); positive angles turn the content counter-clockwise; the corners
    that leave the image are filled per ``padding`` (``"zeros"``: black, as torchvision's
    ``RandomRotation``). One angle per image, drawn from ``generator`` (one generator for the
    batch, or one per image). Differentiable with respect to the pixels, randomized (EOT), same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        angle: the largest absolute angle in degrees, in (0, 180] (default 20).
        padding: ``"zeros"`` (default), ``"border"`` or ``"reflection"``.
    """

    differentiable = True
    randomized = True
    presets = [{"angle": a} for a in GRID]
    defaults = {"angle": 20.0, "padding": "zeros"}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        self.angle = self.params["angle"] = check_float("angle", self.angle, 0.0, 180.0, grid=GRID)
        if self.padding not in PADDINGS:
            raise InputError(f"padding: expected one of {', '.join(PADDINGS)}, got {self.padding!r}")

    def angles(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """The ``[B]`` angles in degrees that :meth:`apply` uses with this generator state."""
        return (2.0 * draw(x, generator, (1,))[:, 0] - 1.0) * self.angle

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` rotated (one draw per image)."""
        b, _, h, w = x.shape
        a = self.angles(x, generator) * (math.pi / 180.0)
        c, s = torch.cos(a), torch.sin(a)
        zero = torch.zeros_like(c)
        # output pixel (u, v) (normalised, x right, y down) samples the input at R(-a) (u, v) in pixels
        theta = torch.stack([torch.stack([c, -s * (h / w), zero], dim=1),
                             torch.stack([s * (w / h), c, zero], dim=1)], dim=1)
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
