"""Builtin offline IQA models: ``builtin-nr`` and ``builtin-fr``.

Both are small CNNs in the spirit of the seeds' models (seed 002 Table 6: a convolutional
backbone, pooled features and an MLP regression head; seed 000 §3: backbone features feed a
scorer). They are trained from scratch by ``scripts/train_builtin.py`` on ``builtin-kadid`` and
their weights ship in ``iqaguard/metrics/weights`` (safetensors, a few hundred KB) together with
``MODEL_CARD.md``.

* ``builtin-nr`` — no-reference, higher is better, predicts the builtin-kadid pseudo-MOS (1..5).
  Backbone: four stride-2 stages; each stage's map is pooled by mean and standard deviation
  (mean/std pooling keeps noise- and blur-sensitive statistics), the pooled vectors of all stages
  are concatenated (``features``) and an MLP maps them to a score.
* ``builtin-fr`` — full-reference deep-feature distance (as LPIPS, Zhang et al. 2018): the same
  backbone on the distorted image and the reference, channel-unit-normalised features, squared
  differences weighted per channel by learned non-negative weights, averaged over space and
  summed over stages. Lower is better (a distance, 0 for identical images).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingWeightsError
from ..registry import METRICS
from .base import Bounds, Metric

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
DEFAULT_WIDTHS: Tuple[int, ...] = (16, 32, 64, 96)


def mscn(x: torch.Tensor, sigma: float = 7 / 6, c: float = 1 / 255) -> torch.Tensor:
    """Mean-subtracted contrast-normalised luma (Mittal et al., BRISQUE, IEEE TIP 2012, eq. 1).

    ``(Y - mu) / (sigma_local + c)`` with a 7x7 Gaussian window (sigma 7/6, reflect borders);
    ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1, H, W]``. Differentiable. It removes local luminance
    and contrast, leaving the statistics that distortions (noise, blur, blocking) disturb.
    """
    y = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    a = torch.arange(7, dtype=x.dtype, device=x.device) - 3
    g = torch.exp(-a * a / (2 * sigma * sigma))
    g = g / g.sum()

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = F.pad(z, (3, 3, 3, 3), mode="reflect")
        return F.conv2d(F.conv2d(z, g.view(1, 1, 1, 7)), g.view(1, 1, 7, 1))

    mu = blur(y)
    var = (blur(y * y) - mu * mu).clamp(min=0)
    return (y - mu) / ((var + 1e-10).sqrt() + c)


class Backbone(nn.Module):
    """Four stride-2 stages of two 3x3 convolutions (+ batch norm) each.

    Input ``[B, 3, H, W]`` in [0, 1] (normalised RGB, plus the MSCN luma as a fourth channel when
    ``use_mscn``); returns the list of stage maps (strides 2, 4, 8, 16).
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, use_mscn: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.use_mscn = bool(use_mscn)
        stages, c_in = [], 4 if self.use_mscn else 3
        for c in widths:
            stages.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.1, inplace=True),
            ))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.widths = tuple(widths)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The network input: ImageNet-normalised RGB (+ MSCN luma) ``[B, 3 or 4, H, W]``."""
        h = (x - self.mean) / self.std
        return torch.cat([h, mscn(x)], dim=1) if self.use_mscn else h

    @property
    def in_channels(self) -> int:
        return 4 if self.use_mscn else 3

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = self.prepare(x)
        maps = []
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps


def mean_std_pool(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate spatial mean and standard deviation of every map: ``[B, 2 * sum(C)]``."""
    feats = []
    for m in maps:
        flat = m.flatten(2)
        feats.append(flat.mean(-1))
        feats.append((flat.var(-1, unbiased=False) + 1e-8).sqrt())
    return torch.cat(feats, dim=1)


class NRNet(nn.Module):
    """Backbone + mean/std pooling + normalised MLP head -> ``[B]`` quality.

    The head predicts a standardised score; ``target_mean``/``target_std`` (buffers stored with
    the weights, set from the training labels) map it back to the MOS scale.
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, hidden: int = 128, use_mscn: bool = False) -> None:
        super().__init__()
        self.backbone = Backbone(widths, use_mscn)
        d = 2 * sum(widths)
        self.head = nn.Sequential(nn.BatchNorm1d(d), nn.Linear(d, hidden), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Dropout(0.1), nn.Linear(hidden, 1))
        self.register_buffer("target_mean", torch.tensor(3.0))
        self.register_buffer("target_std", torch.tensor(1.0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return mean_std_pool(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_mean + self.target_std * self.head(self.features(x)).squeeze(1)


class FRNet(nn.Module):
    """LPIPS-style learned deep-feature distance -> ``[B]`` (0 for identical inputs).

    Sum over the backbone stages of the channel-weighted squared difference of channel-unit-
    normalised features (Zhang et al. 2018, eq. 1), plus the same weighted squared difference of
    the network input itself (RGB and MSCN luma, not unit-normalised), which keeps the
    pixel-level structure that SSIM-like measures see.
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, use_mscn: bool = False) -> None:
        super().__init__()
        self.backbone = Backbone(widths, use_mscn)
        # raw weights; softplus keeps the per-channel weights non-negative
        self.input_weights = nn.Parameter(torch.zeros(self.backbone.in_channels))
        self.channel_weights = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in widths])

    @staticmethod
    def _weighted(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ((a - b).pow(2) * F.softplus(w).view(1, -1, 1, 1)).sum(1).mean((1, 2))

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        px, pr = self.backbone.prepare(x), self.backbone.prepare(ref)
        d = self._weighted(px, pr, self.input_weights)
        for a, b, w in zip(self.backbone(x), self.backbone(ref), self.channel_weights):
            a = a / (a.pow(2).sum(1, keepdim=True) + 1e-10).sqrt()
            b = b / (b.pow(2).sum(1, keepdim=True) + 1e-10).sqrt()
            d = d + self._weighted(a, b, w)
        return d


def weights_path(name: str) -> Path:
    """Where the shipped weights of builtin model ``name`` live (``$IQAGUARD_WEIGHTS`` overrides)."""
    root = Path(os.environ.get("IQAGUARD_WEIGHTS", WEIGHTS_DIR))
    return root / f"{name}.safetensors"


def load_weights(name: str, path: Optional[Path] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Load ``(state_dict, metadata)`` of builtin model ``name`` from safetensors (no pickle)."""
    from safetensors import safe_open

    p = Path(path) if path is not None else weights_path(name)
    if not p.is_file():
        raise MissingWeightsError(
            f"weights for {name!r} not found: {p}. Put {p.name} into {p.parent} "
            "(train them with `python scripts/train_builtin.py`), or set IQAGUARD_WEIGHTS to the folder holding it."
        )
    state = {}
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():
            state[k] = f.get_tensor(k)
    cfg = json.loads(meta.get("config", "{}"))
    return state, cfg


class _BuiltinMetric(Metric):
    """Shared construction of the builtin models: network, weights, config and bounds.

    Args:
        weights: path of a safetensors file (default: the shipped ``<name>.safetensors``).
        pretrained: load weights (``False`` gives a randomly initialised network for training).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or ``None`` (stay on CPU).
    """

    net_cls: type = nn.Module

    def __init__(self, weights: Optional[Path] = None, pretrained: bool = True, device: object = None) -> None:
        super().__init__()
        self.config: dict = {}
        if not pretrained:
            net = self.net_cls()
        else:
            state, self.config = load_weights(self.name, weights)
            net = self.net_cls(widths=tuple(self.config.get("widths", DEFAULT_WIDTHS)),
                               use_mscn=bool(self.config.get("use_mscn", False)))
            net.load_state_dict(state)
            if "bounds" in self.config:
                self.bounds = Bounds(float(self.config["bounds"][0]), float(self.config["bounds"][1]))
        self.net = net.eval()
        if device is not None:
            from ..validation import resolve_device

            self.to(resolve_device(device))


@METRICS.register("builtin-nr")
class BuiltinNR(_BuiltinMetric):
    """No-reference builtin model (higher is better; pseudo-MOS scale 1..5); args as :class:`_BuiltinMetric`."""

    kind = "nr"
    lower_better = False
    name = "builtin-nr"
    net_cls = NRNet
    bounds = Bounds(1.0, 5.0)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean/std-pooled backbone features ``[B, 416]``."""
        return self.net.features(x)


@METRICS.register("builtin-fr")
class BuiltinFR(_BuiltinMetric):
    """Full-reference learned deep-feature distance (lower is better; 0 for identical images)."""

    kind = "fr"
    lower_better = True
    name = "builtin-fr"
    net_cls = FRNet
    bounds = Bounds(1.0, 0.0)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(x, ref)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean/std-pooled backbone features ``[B, 416]`` of one image."""
        return mean_std_pool(self.net.backbone(x))
