"""Random noise as an adversarial purification (Guardians of Image Quality Table 1 and 8).

Adding fresh Gaussian noise drowns a small crafted perturbation in random noise of comparable
energy; the defended metric must tolerate the noise itself (the same idea, averaged over many
draws, underlies randomized smoothing: Cohen, Rosenfeld & Kolter, "Certified Adversarial
Robustness via Randomized Smoothing", ICML 2019).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...registry import DEFENSES
from ..base import Generators, Purification, check_float, draw

#: our grid (Table 8 gives none): Guardians of Image Quality's L-inf budgets 2, 4, 8 /255 and up to twice the strongest
GRID = (2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255)


@DEFENSES.register("random-noise")
class RandomNoise(Purification):
    """Add i.i.d. Gaussian noise ``N(0, sigma^2)`` to every pixel and channel, then clip to [0, 1].

    Source: Guardians of Image Quality (Table 1 "Add random noise"; Table 8, which varies no
    parameter: "—"). Our five presets vary ``sigma`` over 2, 4, 8, 12, 16 /255 (weakest first):
    the noise scale of Guardians of Image Quality's L-inf attack budgets 2/4/8 /255 and up to twice the strongest
    (PSNR to the clean image about 42, 36, 30, 27 and 24 dB). Noise drawn from ``generator``
    (one for the batch, or one per image). Differentiable (additive), randomized (EOT), same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        sigma: standard deviation on the [0, 1] scale, in (0, 1] (default 8/255).
    """

    differentiable = True
    randomized = True
    presets = [{"sigma": s} for s in GRID]
    defaults = {"sigma": 8 / 255}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        self.sigma = self.params["sigma"] = check_float("sigma", self.sigma, 0.0, 1.0)

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` noisy, not yet clipped."""
        return x + self.sigma * draw(x, generator, x.shape[1:], normal=True)
