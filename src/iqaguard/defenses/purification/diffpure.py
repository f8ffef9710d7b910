"""DiffPure: adversarial purification with a diffusion model (Guardians of Image Quality Tables 1 and 8).

Nie, Guo, Huang, Xiao, Vahdat & Anandkumar, "Diffusion Models for Adversarial Purification",
ICML 2022: diffuse the input a little with the forward process (which drowns the perturbation in
Gaussian noise) and run the reverse process back to a clean image, which recovers the content
but not the perturbation. The diffusion core is :mod:`._diffusion`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ...registry import DEFENSES
from ..base import Generators, check_int
from ._diffusion import Diffusion, pad_to
from ._unet import UNET_DEFAULTS, UNetModel, infer_config
from ._neural import NeuralPurification

GRID = (5, 10, 20, 30, 50)


@DEFENSES.register("diffpure")
class DiffPure(NeuralPurification):
    """Diffuse ``t`` DDPM steps, then sample back ``t`` reverse steps (DiffPure's DDPM / guided-diffusion path).

    Source: Guardians of Image Quality (Table 1; appendix A.3.5, Table 8): ``t`` in 5, 10, 20, 30,
    50 with ``t_delta=15, diffusion.type=ddpm, sample_step=1``. As DiffPure's guided-diffusion
    runner: ``x`` is mapped to [-1, 1], noised in one draw to step index ``t - 1`` of the linear
    1000-step schedule (``ᾱ[t-1]``; a noise level ``sqrt((1 - ᾱ)/ᾱ)/2`` of 0.013 at ``t=5``,
    0.086 at ``t=50`` on the [0, 1] scale), then ``t`` ancestral DDPM steps ``p(x_{i-1} | x_i)``, ``i = t-1 .. 0``, with the predicted ``x̂0``
    clipped to [-1, 1]; ``sample_step=1`` is one such pass. ``t_delta`` only randomises ``t``
    under DiffPure's ``rand_t`` option (off by default), so it has no effect here. Presets weakest
    first: index ``i`` -> ``t = GRID[i]``.

    Network: the shipped weights are a small guided-diffusion-layout U-Net (ε-prediction, fixed
    reverse variance β̃_t) trained by ``scripts/train_diffusion.py`` on the builtin-kadid train
    photographs (``MODEL_CARD.md``), not the 552M-parameter ImageNet ADM model the paper used.
    ``weights=`` accepts a user's safetensors file or an official guided-diffusion checkpoint
    (e.g. ``256x256_diffusion_uncond.pt``; its widths are read off the keys and its learned
    variance is used as DiffPure does). Inputs of any size are reflect-padded to a multiple of
    ``2^(levels-1)`` (8 for the shipped model) and cropped back.

    Randomized (one ``torch.Generator``, or one per image: image ``i`` then equals its
    single-image result); differentiable (adaptive attacks backpropagate through all ``t``
    steps, each checkpointed, so memory grows with ``t`` only by one image per step; see
    :func:`~iqaguard.defenses.purification._diffusion.peak_memory_adaptive`). Same size.

    Args:
        preset: index 0..4 into :attr:`presets`.
        t: number of diffusion steps, 1..1000 (default 10).
        weights: a weight file (default: the shipped ``diffpure.safetensors``).

    Example:
        >>> p = DiffPure(preset=1)                                   # t = 10
        >>> y = p(x, generator=torch.Generator().manual_seed(0))     # [B, 3, H, W] -> [B, 3, H, W]
    """

    randomized = True
    presets = [{"t": t} for t in GRID]
    defaults = {"t": 10, "weights": None}
    weights_name = "diffpure"
    train_command = "python scripts/train_diffusion.py"
    arch: Dict[str, Any] = dict(UNET_DEFAULTS)

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_int("t", self.t, GRID, low=1, high=1000)
        self.diffusion = Diffusion(self.network)

    def build_network(self, config: Dict[str, Any]) -> nn.Module:
        return UNetModel(**config)

    def infer_config(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        return infer_config(state)

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` purified (noise drawn at the padded size)."""
        self.follow(x)
        xp, (h, w) = pad_to(x, self.network.multiple)
        return self.diffusion.purify(xp, self.t, generator)[..., :h, :w]
