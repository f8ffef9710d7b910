"""Builtin offline IQA models: ``builtin-nr`` and ``builtin-fr``.

Both are small CNNs in the spirit of the seeds' models (Guardians of Image Quality Table 6: a convolutional
backbone, pooled features and an MLP regression head; FS-IQA §3: backbone features feed a
scorer). They are trained from scratch by ``scripts/train_builtin.py`` on ``builtin-kadid`` and
their weights ship in ``iqaguard/metrics/weights`` (safetensors, about 1 MB each) together with
``MODEL_CARD.md``.

* ``builtin-nr`` — no-reference, higher is better, predicts the builtin-kadid pseudo-MOS v2
  (1..5 for real images). Backbone: four stride-2 stages; a per-cell MLP head on the
  multi-scale features of every 16x16 cell (plus global context) predicts the local SSIM, GMS
  and chroma statistics that the pseudo-MOS pools, and the same pooling formula *without its
  clips* gives the score (:class:`NRNet`): an unbounded regression output, differentiable
  everywhere, as the seeds' models (no saturation that would hide an attack's gain).
* ``builtin-fr`` — full-reference deep-feature distance in the manner of DISTS (Ding et al.,
  TPAMI 2020): the same backbone on the distorted image and the reference, SSIM-style local
  luminance and structure similarities of every channel of the image and of every stage, and a
  learned non-negative weighting of their complements. Lower is better (a distance, 0 for
  identical images).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..architecture import apply_edits, edits_of
from ..errors import MissingWeightsError
from ..registry import METRICS
from .base import Bounds, Metric
from .cells import CHROMA_MAX, N_STATS, chroma_map, luma, mos_from_cells

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
DEFAULT_WIDTHS: Tuple[int, ...] = (16, 32, 64, 96)
#: Smallest H and W (pixels) that builtin-nr accepts (``Metric.min_size``).
#: builtin-nr needs one 16x16 cell to run at all, but at 16x16 the deepest stage is 1x1, so its
#: global standard deviation (part of every cell's context) is 0 and the score is meaningless
#: (a tiny image scored 4.99, an 8x8 flat grey above real photographs). At 64x64 the deepest
#: stage is 4x4 (a 4x4 grid of cells with a non-degenerate global context) and the scores are
#: sensible. Measured on 64x64 central crops of 8 builtin photographs with the shipped weights:
#: photo 4.50 +- 0.27 (min 3.97), the same crops plus Gaussian noise (sigma 0.2) 1.37, uniform
#: noise -0.93 (max -0.45), flat grey 4.11 (below the photographs' mean). Below 64 (17, 24, 31,
#: 33 pixels) the photo and flat-grey scores scatter more and noise scores reach 1.1-1.6.
#: H and W need not be multiples of 16 (the stride-2 stages round up: 65x64, 100x77 work).
MIN_SIZE = 64
#: Smallest H and W that builtin-fr accepts: 32, the deepest stage is then 2x2 (every stage has
#: spatial variation for the 7x7-window luminance/structure statistics, edge-replicated on maps
#: smaller than the window). Measured on 32x32 crops of 8 builtin photographs: 0 for identical
#: pairs, 0.86 with Gaussian noise sigma 0.2 (0.84 at 64x64, 0.83 at 128x128): the distance is
#: already stable there. 16x16 would leave a 1x1 deepest stage with no structure term.
FR_MIN_SIZE = 32


def gaussian_blur(z: torch.Tensor, sigma: float, radius: int = 3) -> torch.Tensor:
    """Per-channel separable Gaussian filter (``2 * radius + 1`` taps), same size.

    Borders are reflected; maps too small to reflect (a side <= ``radius``, e.g. the deepest
    stage of a small input) replicate their edge instead.
    """
    return ops.gaussian_blur(z, sigma, 2 * radius + 1, "reflect" if min(z.shape[-2:]) > radius else "replicate")


def mscn(x: torch.Tensor, sigma: float = 7 / 6, c: float = 1 / 255) -> torch.Tensor:
    """Mean-subtracted contrast-normalised luma (Mittal et al., BRISQUE, IEEE TIP 2012, eq. 1).

    ``(Y - mu) / (sigma_local + c)`` with a 7x7 Gaussian window (sigma 7/6, reflect borders);
    ``[B, 3, H, W]`` in [0, 1] -> ``[B, 1, H, W]``. Differentiable. It removes local luminance
    and contrast, leaving the statistics that distortions (noise, blur, blocking) disturb.
    """
    y = luma(x)
    mu = gaussian_blur(y, sigma)
    var = (gaussian_blur(y * y, sigma) - mu * mu).clamp(min=0)
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
        mean = flat.mean(-1)
        # two-pass variance, written out: torch's var() is ~10x slower on CPU for these long rows
        feats.append(mean)
        feats.append(((flat - mean.unsqueeze(-1)).square().mean(-1) + 1e-8).sqrt())
    return torch.cat(feats, dim=1)


def global_context(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Spatial mean, standard deviation, maximum and minimum of every channel of ``maps``: ``[B, 4 * sum(C)]``."""
    feats = []
    for m in maps:
        flat = m.flatten(2)
        feats += [mean_std_pool([m]), flat.amax(-1), flat.amin(-1)]
    return torch.cat(feats, dim=1)


class NRNet(nn.Module):
    """Blind predictor of the local pseudo-MOS statistics -> ``[B]`` quality on the 1..5 scale.

    BIECON-style (Kim & Lee, IEEE JSTSP 2017): the backbone's stage maps are average-pooled onto
    the stride-16 grid of the last stage and concatenated; every cell also receives the image's
    global context (:func:`global_context` of the two deepest stages: whether edges anywhere in
    the image are sharp is what tells a blurred texture from a flat region). A per-cell MLP
    (1x1 convolutions) predicts the cell's mean SSIM, mean GMS, GMS standard deviation and mean
    chroma difference (:func:`iqaguard.metrics.cells.quality_cells`), and the score is the
    pseudo-MOS formula without clips applied to those predictions
    (:func:`iqaguard.metrics.cells.mos_from_cells`).
    The network itself runs for H, W >= 16 (one cell; any H, W, not only multiples of 16: the
    stride-2 stages round up); the metric :class:`BuiltinNR` accepts ``H, W >= MIN_SIZE`` (64).
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, hidden: int = 64, use_mscn: bool = False) -> None:
        super().__init__()
        self.backbone = Backbone(widths, use_mscn)
        d = sum(widths) + 4 * sum(widths[-2:])
        self.head = nn.Sequential(nn.Conv2d(d, hidden, 1), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Conv2d(hidden, N_STATS, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return mean_std_pool(self.backbone(x))

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted per-cell ``(s, m, d, c)`` ``[B, 4, H / 16, W / 16]`` (``d, c > 0`` by a softplus)."""
        maps = self.backbone(x)
        grid = maps[-1].shape[-2:]
        ctx = global_context(maps[-2:])[:, :, None, None].expand(-1, -1, *grid)
        h = torch.cat([F.adaptive_avg_pool2d(m, grid) for m in maps[:-1]] + [maps[-1], ctx], dim=1)
        out = self.head(h)
        # the chroma channel is predicted in units of CHROMA_MAX (all four outputs then share a scale)
        return torch.cat([out[:, :2], F.softplus(out[:, 2:3]), CHROMA_MAX * F.softplus(out[:, 3:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mos_from_cells(self.cells(x))


def local_similarity(a: torch.Tensor, b: torch.Tensor, c1: float, c2: float,
                     sigma: float = 1.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Spatial means of SSIM's luminance and structure maps, per channel (Wang et al. 2004, eqs. 6, 9).

    Local statistics use a 7x7 Gaussian window (sigma 1.5): ``l = (2 mu_a mu_b + c1) /
    (mu_a^2 + mu_b^2 + c1)`` and ``s = (2 sigma_ab + c2) / (sigma_a^2 + sigma_b^2 + c2)``, as
    DISTS (Ding et al., TPAMI 2020, eqs. 4-5) does with global statistics of deep features.
    Returns two ``[B, C]`` tensors, each 1 for identical inputs.
    """
    ma, mb = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
    va = (gaussian_blur(a * a, sigma) - ma * ma).clamp(min=0)
    vb = (gaussian_blur(b * b, sigma) - mb * mb).clamp(min=0)
    cov = gaussian_blur(a * b, sigma) - ma * mb
    lum = (2 * ma * mb + c1) / (ma * ma + mb * mb + c1)
    struct = (2 * cov + c2) / (va + vb + c2)
    return lum.mean((2, 3)), struct.mean((2, 3))


class FRNet(nn.Module):
    """DISTS-style learned deep-feature distance -> ``[B]`` (0 for identical inputs).

    Stage 0 is the image itself (RGB and BT.601 luma at full resolution, so that 2x2 pixelation
    and chroma changes are seen), stages 1-4 are the backbone maps. For every channel
    of every stage, :func:`local_similarity` gives a luminance and a structure similarity; the
    distance is ``exp(log_scale) * sum_k w_k (1 - sim_k)`` over all those terms with softmax-
    normalised learned weights ``w`` (non-negative, summing to 1; Ding et al. 2020, eq. 6, with
    local instead of global statistics). SSIM's constants ``(0.01)^2, (0.03)^2`` are used on the
    image, ``1e-6`` on deep features (as DISTS). One more term compares colour, which luminance and
    structure similarities of RGB channels barely see when the chroma of a whole image changes
    (saturation): ``exp(-mean dC / 10)`` of the CIE Lab chroma difference map
    (:func:`iqaguard.metrics.cells.chroma_map`), 1 for identical colours, as colour-aware FR
    measures (FSIMc, VSI) add a chromatic similarity to a structural one.
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, use_mscn: bool = False) -> None:
        super().__init__()
        self.backbone = Backbone(widths, use_mscn)
        self.stage_channels = (4,) + tuple(widths)
        self.logits = nn.Parameter(torch.zeros(2 * sum(self.stage_channels) + 1))
        self.log_scale = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _stage0(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, luma(x)], dim=1)

    def similarities(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """All luminance and structure similarities and the colour similarity,
        ``[B, 2 * sum(stage_channels) + 1]`` (1 = identical)."""
        terms = [torch.cat(local_similarity(self._stage0(x), self._stage0(ref), 1e-4, 9e-4), dim=1)]
        for a, b in zip(self.backbone(x), self.backbone(ref)):
            terms.append(torch.cat(local_similarity(a, b, 1e-6, 1e-6), dim=1))
        terms.append(torch.exp(-chroma_map(x, ref).flatten(1).mean(dim=1, keepdim=True) / CHROMA_MAX))
        return torch.cat(terms, dim=1)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.logits, dim=0)
        return self.log_scale.exp() * ((1.0 - self.similarities(x, ref)) * w).sum(dim=1)


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

    Inputs must be at least ``min_size`` x ``min_size`` pixels (builtin-nr 64, :data:`MIN_SIZE`;
    builtin-fr 32, :data:`FR_MIN_SIZE`; see there why); :meth:`Metric.forward` rejects smaller
    ones with an :class:`InputError`.

    Args:
        weights: path of a safetensors file (default: the shipped ``<name>.safetensors``).
        pretrained: load weights (``False`` gives a randomly initialised network for training).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or ``None`` (stay on CPU).
    """

    net_cls: type = nn.Module
    min_size = MIN_SIZE

    def __init__(self, weights: Optional[Path] = None, pretrained: bool = True, device: object = None) -> None:
        super().__init__()
        self.config: dict = {}
        if not pretrained:
            net = self.net_cls()
        else:
            state, self.config = load_weights(self.name, weights)
            net = self.net_cls(widths=tuple(self.config.get("widths", DEFAULT_WIDTHS)),
                               use_mscn=bool(self.config.get("use_mscn", False)))
            apply_edits(net, edits_of(self.config))  # a RobustBlock, pruning, ... recorded at save time
            net.load_state_dict(state)
            if "bounds" in self.config:
                self.bounds = Bounds(float(self.config["bounds"][0]), float(self.config["bounds"][1]))
        # channels-last convolution weights: ~15% faster forward+backward on CPU (the attacks'
        # inner loop) with identical outputs up to float rounding; inputs stay as given.
        self.net = net.to(memory_format=torch.channels_last).eval()
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

    def feature_map(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean/std-pooled backbone features ``[B, 2 * sum(widths)]`` (416 at the shipped widths)."""
        return self.net.features(x)

    def _feature_dim(self) -> int:
        return 2 * sum(self.net.backbone.widths)


@METRICS.register("builtin-fr")
class BuiltinFR(_BuiltinMetric):
    """Full-reference learned deep-feature distance (lower is better; 0 for identical images)."""

    kind = "fr"
    lower_better = True
    name = "builtin-fr"
    net_cls = FRNet
    bounds = Bounds(1.0, 0.0)
    min_size = FR_MIN_SIZE

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(x, ref)

    def feature_map(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The pair's features: every luminance, structure and colour similarity of ``x`` to the fixed
        ``ref`` (:meth:`FRNet.similarities`, ``[B, 2 * (4 + sum(widths)) + 1]``), what the distance weighs."""
        return self.net.similarities(x, ref)

    def _feature_dim(self) -> int:
        return 2 * sum(self.net.stage_channels) + 1
