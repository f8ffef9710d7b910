"""The Gaussian denoiser of denoised smoothing (DRS, DMS): a small DnCNN.

Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for
Image Denoising" (IEEE TIP 2017): ``D(z) = z - r(z)`` with ``r`` a stack of 3×3 convolutions
(ReLU between, no batch normalisation here) that predicts the noise. Salman et al.'s denoised
smoothing (NeurIPS 2020) and Chiang et al.'s DMS (NeurIPS 2020) put such a denoiser between the
Gaussian noise and the metric. The shipped one is trained by ``scripts/train_denoiser.py`` on the
builtin-kadid train photographs with unclipped noise of σ ~ U(0, 0.5) on the [0, 1] scale (blind:
one network for every preset's σ); ``denoiser=`` takes any other callable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..purification._neural import WEIGHTS_DIR, follow, load_frozen, per_metric_file

WEIGHTS_FILE = WEIGHTS_DIR / "dncnn.safetensors"
TRAIN_CMD = "python scripts/train_denoiser.py"
DMS_IQA_TRAIN_CMD = "python scripts/train_dms_iqa.py --metric {name}"
ARCH: Dict[str, Any] = {"depth": 6, "width": 32}


class DnCNN(nn.Module):
    """``z -> z - r(z)``: ``depth`` 3×3 convolutions of ``width`` channels, ReLU between."""

    def __init__(self, depth: int = 6, width: int = 32) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        follow(self, z)
        return z - self.body(z)


def dms_iqa_weights(metric_name: str) -> Tuple[Path, str]:
    """``(file, training command)`` of the DMS-IQA denoiser of a metric (one file per metric name)."""
    return per_metric_file("dms-iqa", metric_name), DMS_IQA_TRAIN_CMD.format(name=metric_name)


def load_denoiser(path: Optional[Union[str, Path]] = None, train_cmd: str = TRAIN_CMD) -> DnCNN:
    """The shipped (or ``path``'s) denoiser, frozen and in eval mode.

    Raises:
        MissingWeightsError: no file (the message names ``train_cmd``, the training command).
        InputError: a file of another layout.
    """
    return load_frozen(path if path is not None else WEIGHTS_FILE, lambda config: DnCNN(**{**ARCH, **config}),
                       "denoiser (DnCNN)", f"Train them with `{train_cmd}` or pass denoiser=<callable> "
                       "(any image -> image function)")
