"""Random crop (crop and rescale) as an adversarial purification (Guo et al., ICLR 2018; Guardians of Image Quality Table 8).

Guo, Rana, Cisse & van der Maaten ("Countering Adversarial Images using Input Transformations",
ICLR 2018, §3 "Image cropping-rescaling") crop a random window and rescale it to the input size:
the perturbation is shifted and stretched relative to what the attacker optimised for, by an
offset the attacker does not know.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators, Purification, check_int, draw
from ._resampling import resample

#: Table 8 crop sizes, weakest (largest window) first
GRID = (288, 256, 128, 64, 32)


@DEFENSES.register("random-crop")
class RandomCrop(Purification):
    """Crop a random window whose short side is ``size`` pixels, then rescale it to ``H x W``.

    Sources: Guo et al., "Countering Adversarial Images using Input Transformations" (ICLR 2018);
    Guardians of Image Quality (Table 1, Table 8). Table 8 grid: size 32, 64, 128, 256, 288,
    presets weakest (largest window) first. The window keeps the image's aspect ratio (its short
    side is ``min(size, min(H, W))``, so an image smaller than ``size`` is not cropped) and its
    top-left corner is uniform over the valid positions, one per image, drawn from ``generator``.
    With ``rescale=True`` (default, Guo et al.'s crop-rescale) the window is bilinearly resized back
    to ``H x W``; with ``rescale=False`` the window itself is returned (a documented size change,
    :meth:`output_size`). Differentiable with respect to the pixels, randomized (EOT).

    Args:
        preset: index 0..4 into :attr:`presets`.
        size: short side of the window in pixels, >= 1 (default 128).
        rescale: resize the window back to the input size (default True).
    """

    differentiable = True
    randomized = True
    presets = [{"size": s} for s in GRID]
    defaults = {"size": 128, "rescale": True}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("size", self.size, sorted(GRID), low=1)
        if not isinstance(self.rescale, bool):
            raise InputError(f"rescale: expected True or False, got {self.rescale!r}")

    def window(self, h: int, w: int) -> Tuple[int, int]:
        """``(h_c, w_c)`` of the crop window of an ``h x w`` image."""
        short = min(h, w)
        s = min(self.size, short)
        return min(h, max(1, int(round(h * s / short)))), min(w, max(1, int(round(w * s / short))))

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        return (h, w) if self.rescale else self.window(h, w)

    def offsets(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 2]`` integer (row, column) of every window's top-left corner for this generator state."""
        h, w = x.shape[-2:]
        hc, wc = self.window(h, w)
        span = torch.tensor([h - hc + 1, w - wc + 1], dtype=torch.float64)
        u = draw(x, generator, (2,)).double().cpu()
        return torch.minimum(torch.floor(u * span), span - 1).long()

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (or the ``[B, 3, h_c, w_c]`` windows without ``rescale``)."""
        h, w = x.shape[-2:]
        hc, wc = self.window(h, w)
        crops = torch.stack([x[i, :, r:r + hc, c:c + wc] for i, (r, c) in enumerate(self.offsets(x, generator).tolist())])
        return resample(crops, (h, w)) if self.rescale else crops
