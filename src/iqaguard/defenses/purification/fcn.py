"""FCN: a small fully convolutional neural filter against colour attacks (Guardians of Image Quality Table 8).

Gushchin, Chistyakova, Minkin, Vatolin & Antsiferova, "Adversarial purification for no-reference
image-quality metrics: applicability study and new methods" (2024), proposed it to counter the
colour attack cAdv on IQA metrics; Guardians of Image Quality (appendix A.3.5) describes it as "a
compact, fully convolutional architecture with three hidden layers of 64, 32, and 3 filters".
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators
from ._neural import NeuralPurification


class FCNet(nn.Module):
    """``conv1 -> LeakyReLU(0.2) -> conv2 [-> InstanceNorm] -> LeakyReLU(0.2) -> conv3`` (zero-padded, same size).

    ``residual=True`` (the shipped model): output ``x + conv3(...)``, ``conv3`` zero-initialised so
    a fresh network is the identity. ``residual=False`` (the official layout): output
    ``tanh(conv3(...))``. Keys ``conv1`` / ``conv2`` / ``conv3`` (``weight``, ``bias``) as in the
    official repository; the instance normalisation has no parameters.
    """

    def __init__(self, widths=(64, 32), kernel_size: int = 3, norm: str = "none", residual: bool = True) -> None:
        super().__init__()
        a, b = (int(w) for w in widths)
        k = int(kernel_size)
        self.conv1 = nn.Conv2d(3, a, k, padding=k // 2)
        self.conv2 = nn.Conv2d(a, b, k, padding=k // 2)
        self.conv3 = nn.Conv2d(b, 3, k, padding=k // 2)
        self.norm, self.residual = norm, bool(residual)
        if self.residual:
            nn.init.zeros_(self.conv3.weight)
            nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (not clamped)."""
        h = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        if self.norm == "instance":
            h = F.instance_norm(h)
        y = self.conv3(F.leaky_relu(h, 0.2))
        return x + y if self.residual else torch.tanh(y)


@DEFENSES.register("fcn")
class FCN(NeuralPurification):
    """FCN neural filter (Gushchin et al. 2024): three convolutional layers of 64, 32 and 3 filters.

    Source: Guardians of Image Quality (appendix A.3.5; Table 8 varies no parameter, so one preset).
    Architecture decisions (the paper gives only the filter counts): 3x3 kernels, LeakyReLU(0.2)
    between layers and zero-padded borders as in the official repository, and a residual output
    ``x + conv3(...)`` whose last layer starts at zero, so training starts at the identity and a
    weak filter can only make small corrections. The official code (``FCN`` of the authors'
    ``adversarial_purification`` repository) uses 64 / 16 / 3 filters, a parameter-free instance
    normalisation after the second layer and ``tanh`` as output (not residual); a checkpoint in
    that layout (``{"model": state_dict}``, keys ``conv1.*``, ``conv2.*``, ``conv3.*``) loads with
    that configuration read off its keys. The shipped weights (``defenses/weights/fcn.safetensors``,
    model card in ``MODEL_CARD.md``) are trained by ``scripts/train_fcn.py`` on pairs of cAdv-attacked
    (colour attack, as its paper does) and I-FGSM/PGD-attacked crops of the builtin photographs.
    Measured (model card, test split, once): +0.55 dB PSNR to the clean crop on I-FGSM/PGD pairs,
    +0.01 dB on cAdv pairs: this small filter, trained on both, does not undo the recolouring.
    Differentiable, deterministic, same size as the input.

    Args:
        preset: 0 (the only preset) or ``None``.
        weights: ``None`` (the shipped file) or a path to ``.safetensors`` / the official ``.pth``.

    Example:
        >>> p = FCN()
        >>> y = p(x)                              # [B, 3, H, W] -> [B, 3, H, W] in [0, 1]
    """

    presets = [{}]
    defaults = {"weights": None}
    weights_name = "fcn"
    train_command = "python scripts/train_fcn.py"
    arch = {"widths": [64, 32], "kernel_size": 3, "norm": "none", "residual": True}

    def build_network(self, config: Dict[str, Any]) -> nn.Module:
        return FCNet(config["widths"], config["kernel_size"], config["norm"], config["residual"])

    def infer_config(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """The official layout: widths and kernel read off the keys, instance norm, ``tanh`` output."""
        w1, w2 = state.get("conv1.weight"), state.get("conv2.weight")
        if w1 is None or w2 is None or w1.dim() != 4 or w2.dim() != 4:
            raise InputError(f"weights: expected the FCN keys conv1/conv2/conv3 (.weight, .bias), "
                             f"got {sorted(state)[:5]}")
        return {"widths": [int(w1.shape[0]), int(w2.shape[0])], "kernel_size": int(w1.shape[-1]),
                "norm": "instance", "residual": False}

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` filtered (``generator`` unused)."""
        self.follow(x)
        return self.network(x)
