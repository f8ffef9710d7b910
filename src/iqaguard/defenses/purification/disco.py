"""DISCO as an adversarial purification (Guardians of Image Quality Tables 1 and 8).

Ho & Vasconcelos, "DISCO: Adversarial Defense with Local Implicit Functions", NeurIPS 2022. An
encoder turns the (attacked) image into a grid of latent codes; a local implicit function — an
MLP in the style of LIIF (Chen, Liu & Wang, CVPR 2021) — maps each output pixel's coordinate and
the codes around it to the clean RGB value. A perturbation that does not fit the local image
structure the function learnt is not reproduced. The package ships a small network trained by
``scripts/train_disco.py`` on attacked/clean pairs of the builtin photographs (model card in
``defenses/weights/MODEL_CARD.md``); an official DISCO / LIIF checkpoint (``encoder.*`` /
``imnet.*`` inside ``ckpt["model"]["sd"]``) loads through ``weights=`` at its own widths.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators
from ._neural import NeuralPurification


class ResBlock(nn.Module):
    """EDSR residual block ``x + conv(relu(conv(x)))`` (``body.0`` / ``body.2`` as in the official keys)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EDSREncoder(nn.Module):
    """EDSR-baseline without up-sampling: ``head`` conv, ``n_resblocks`` blocks and a conv, global skip."""

    def __init__(self, n_colors: int, n_feats: int, n_resblocks: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(n_feats) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return x + self.body(x)


class MLP(nn.Module):
    """``layers``: Linear / ReLU pairs for ``hidden_list``, then a Linear to ``out_dim`` (last dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_list: List[int]) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for h in hidden_list:
            layers += [nn.Linear(in_dim, h), nn.ReLU()]
            in_dim = h
        self.layers = nn.Sequential(*layers, nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def pixel_centres(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``[h, w, 2]`` (row, column) coordinates of the pixel centres in ``[-1, 1]`` (LIIF's ``make_coord``)."""
    rows = -1 + 1 / h + (2 / h) * torch.arange(h, device=like.device, dtype=like.dtype)
    cols = -1 + 1 / w + (2 / w) * torch.arange(w, device=like.device, dtype=like.dtype)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


def sample(grid: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Nearest value of ``grid`` ``[B, C, h, w]`` at (row, column) ``coord`` ``[h', w', 2]`` -> ``[B, C, h', w']``."""
    xy = coord.flip(-1).unsqueeze(0).expand(grid.shape[0], *coord.shape)
    return F.grid_sample(grid, xy, mode="nearest", align_corners=False)


class LIIF(nn.Module):
    """Encoder + local implicit function queried at every pixel centre of an ``out_size`` grid.

    The official DISCO options (their ``models/liif.py`` defaults): ``feat_unfold`` (each code is
    concatenated with its 3x3 neighbours), ``local_ensemble`` (the four codes around the query,
    each prediction weighted by the area of the rectangle opposite to it) and ``cell_decode``
    (the query cell size is an MLP input). Inputs and outputs live in ``[-1, 1]`` (the official
    ``data_norm`` of 0.5 / 0.5). With ``residual`` the input pixel is added to the prediction.
    """

    def __init__(self, n_colors: int = 3, n_feats: int = 64, n_resblocks: int = 16,
                 hidden_list: Tuple[int, ...] = (256, 256, 256, 256), feat_unfold: bool = True,
                 local_ensemble: bool = True, cell_decode: bool = True, residual: bool = False) -> None:
        super().__init__()
        self.feat_unfold, self.local_ensemble, self.cell_decode = feat_unfold, local_ensemble, cell_decode
        self.residual = residual
        self.encoder = EDSREncoder(n_colors, n_feats, n_resblocks)
        in_dim = n_feats * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
        self.imnet = MLP(in_dim, n_colors, list(hidden_list))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in [-1, 1] -> ``[B, C, H, W]`` queried at the input's own pixel grid."""
        feat = self.encoder(inp)
        b, c, h, w = feat.shape
        if self.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        coord = pixel_centres(h, w, feat)
        feat_coord = coord.permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
        scale = feat.new_tensor([h, w])
        shifts = [(vx, vy) for vx in (-1, 1) for vy in (-1, 1)] if self.local_ensemble else [(0, 0)]
        eps = 1e-6 if self.local_ensemble else 0.0
        preds, areas = [], []
        for vx, vy in shifts:
            q = (coord + feat.new_tensor([vx / h + eps, vy / w + eps])).clamp(-1 + 1e-6, 1 - 1e-6)
            q_feat = sample(feat, q).permute(0, 2, 3, 1)                        # [B, H, W, C']
            rel = (coord.unsqueeze(0) - sample(feat_coord, q).permute(0, 2, 3, 1)) * scale
            parts = [q_feat, rel]
            if self.cell_decode:  # the cell of a same-size query is one latent pixel: 2/H x 2/W, times (H, W)
                parts.append(feat.new_full((b, h, w, 2), 2.0))
            preds.append(self.imnet(torch.cat(parts, dim=-1)))
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        if self.local_ensemble:  # each prediction is weighted by the area diagonally opposite
            areas = areas[::-1]
        total = torch.stack(areas).sum(0)
        out = sum(p * (a / total).unsqueeze(-1) for p, a in zip(preds, areas)).permute(0, 3, 1, 2)
        return out + inp if self.residual else out


@DEFENSES.register("disco")
class DISCO(NeuralPurification):
    """DISCO purification: the local implicit function's image at the input's own size.

    Source: Guardians of Image Quality (Table 1 "Enc.+loc. implicit module denoising"; Table 8:
    no parameters) and the official DISCO code: EDSR-baseline encoder without up-sampling
    (official: 16 residual blocks, 64 features), MLP ``imnet`` (official: hidden 256 x 4) with
    feature unfolding, local ensemble and cell decoding; input normalised ``(x - 0.5) / 0.5``,
    queried at every pixel centre of the ``H x W`` grid with cell ``2/H x 2/W``, output
    ``0.5 * y + 0.5`` clipped to [0, 1]. The shipped network is smaller (see the model card) and
    residual: ``y = x + LIIF(x)`` with a zero-initialised last ``imnet`` layer (training starts
    at the identity); the official networks predict the image directly (``residual=False``).
    DISCO's random choice among several trained functions per query batch (their ``INR`` wrapper
    with a list of checkpoints) is not used: one network, deterministic. Differentiable (exact
    gradients for adaptive attacks), same size, any ``H, W >= 1``.

    Args:
        preset: ``0`` (the single Table 8 row).
        weights: ``None`` (the shipped ``disco.safetensors``) or a file: a safetensors file saved by
            the training script, or an official DISCO checkpoint (``.pth``; the state dict
            ``ckpt["model"]["sd"]``) whose widths, depth and MLP inputs are read off its shapes.

    Example:
        >>> p = DISCO()
        >>> y = p(x)                              # [B, 3, H, W] -> [B, 3, H, W]
    """

    presets = [{}]
    defaults = {"weights": None}
    weights_name = "disco"
    train_command = "python scripts/train_disco.py"
    arch = {"n_colors": 3, "n_feats": 64, "n_resblocks": 16, "hidden_list": [256, 256, 256, 256],
            "feat_unfold": True, "local_ensemble": True, "cell_decode": True, "residual": False}

    def build_network(self, config: Dict[str, Any]) -> nn.Module:
        try:
            return LIIF(**{k: config[k] for k in self.arch})
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"weights: DISCO architecture config {config} is not valid ({e})") from None

    def convert_state_dict(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Drop EDSR's ``sub_mean`` / ``add_mean`` (in the official state dict, unused by its forward)."""
        return {k: v for k, v in state.items() if not re.match(r"encoder\.(sub|add)_mean\.", k)}

    def infer_config(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Architecture of an official checkpoint from its keys and shapes (``{}`` if not DISCO/LIIF)."""
        head = state.get("encoder.head.0.weight")
        linear = sorted((int(m.group(1)), v) for k, v in state.items()
                        for m in [re.fullmatch(r"imnet\.layers\.(\d+)\.weight", k)] if m)
        if head is None or head.dim() != 4 or not linear:
            return {}
        n_feats = int(head.shape[0])
        blocks = {int(m.group(1)) for k in state for m in [re.match(r"encoder\.body\.(\d+)\.body\.", k)] if m}
        extra = int(linear[0][1].shape[1])
        unfold = extra >= 9 * n_feats + 2
        extra -= n_feats * (9 if unfold else 1)
        return {"n_colors": int(head.shape[1]), "n_feats": n_feats, "n_resblocks": len(blocks),
                "hidden_list": [int(v.shape[0]) for _, v in linear[:-1]], "feat_unfold": unfold,
                "local_ensemble": True, "cell_decode": extra == 4, "residual": False}

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` purified (``generator`` unused)."""
        self.follow(x)
        return self.network((x - 0.5) / 0.5) * 0.5 + 0.5
