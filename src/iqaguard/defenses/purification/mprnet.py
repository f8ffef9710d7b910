"""MPRNet, Multi-Stage Progressive Image Restoration, as an adversarial purification (Guardians Table 8).

Zamir, Arora, Khan, Hayat, Khan, Yang & Shao, "Multi-Stage Progressive Image Restoration",
CVPR 2021. Three stages restore the image progressively: stages 1 and 2 are encoder-decoders
(three scales of channel attention blocks, CAB) run on 4 and 2 non-overlapping patches of the image
(the multi-patch hierarchy); a supervised attention module (SAM) after each of them turns its
features into an intermediate restored image and attention-gated features for the next stage;
cross-stage feature fusion (CSFF) adds stage 1's encoder and decoder features into stage 2's
encoder; stage 3 (ORSNet) works at full resolution with original-resolution blocks (ORB) fed by
stage 2's multi-scale features. Each stage's image is a residual on the input.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators
from ._neural import NeuralPurification

Feats = List[torch.Tensor]


def conv(cin: int, cout: int, k: int, bias: bool = False) -> nn.Conv2d:
    """Same-size ``k x k`` convolution (zero padding)."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention: global average -> 1x1 (``c // reduction``) -> ReLU -> 1x1 -> sigmoid gate."""

    def __init__(self, c: int, reduction: int, bias: bool) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(c, c // reduction, 1, bias=bias), nn.ReLU(),
                                     nn.Conv2d(c // reduction, c, 1, bias=bias), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean((2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(PReLU(conv(x))))``.

    The official network passes one ``nn.PReLU`` module to every block (one shared slope); here each
    block has its own (``body.1.weight``), so an official checkpoint, whose state dict repeats the
    shared slope under every block's key, loads exactly and training may tune them apart.
    """

    def __init__(self, c: int, k: int, reduction: int, bias: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(c, c, k, bias), nn.PReLU(), conv(c, c, k, bias))
        self.CA = CALayer(c, reduction, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.CA(self.body(x))


def cabs(n: int, c: int, k: int, reduction: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(*(CAB(c, k, reduction, bias) for _ in range(n)))


class Rescale(nn.Module):
    """Bilinear resize by ``factor`` then a 1x1 convolution ``cin -> cout`` (no bias); ``skip`` adds a tensor.

    Stored under the official attribute (``down`` for the encoder's, ``up`` for the others).
    """

    def __init__(self, cin: int, cout: int, factor: float, attr: str) -> None:
        super().__init__()
        self.attr = attr
        setattr(self, attr, nn.Sequential(nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False),
                                          nn.Conv2d(cin, cout, 1, bias=False)))

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = getattr(self, self.attr)(x)
        return y if skip is None else y + skip


class SAM(nn.Module):
    """Supervised attention: ``img = conv2(f) + x_img``; features ``f + conv1(f) * sigmoid(conv3(img))``."""

    def __init__(self, c: int, k: int, bias: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = conv(c, c, k, bias), conv(c, 3, k, bias), conv(3, c, k, bias)

    def forward(self, f: torch.Tensor, x_img: torch.Tensor):
        img = self.conv2(f) + x_img
        return f + self.conv1(f) * torch.sigmoid(self.conv3(img)), img


class Encoder(nn.Module):
    """Three scales of 2 CABs, widths ``n, n + s, n + 2s``; with ``csff`` it adds 1x1-mapped previous-stage features."""

    def __init__(self, n: int, k: int, reduction: int, bias: bool, s: int, csff: bool) -> None:
        super().__init__()
        widths = (n, n + s, n + 2 * s)
        for i, c in enumerate(widths, 1):
            setattr(self, f"encoder_level{i}", cabs(2, c, k, reduction, bias))
        self.down12 = Rescale(n, n + s, 0.5, "down")
        self.down23 = Rescale(n + s, n + 2 * s, 0.5, "down")
        self.csff = csff
        if csff:
            for i, c in enumerate(widths, 1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(c, c, 1, bias=bias))
                setattr(self, f"csff_dec{i}", nn.Conv2d(c, c, 1, bias=bias))

    def forward(self, x: torch.Tensor, enc: Optional[Feats] = None, dec: Optional[Feats] = None) -> Feats:
        outs: Feats = []
        for i in (1, 2, 3):
            if i > 1:
                x = getattr(self, f"down{i - 1}{i}")(x)
            x = getattr(self, f"encoder_level{i}")(x)
            if self.csff and enc is not None and dec is not None:
                x = x + getattr(self, f"csff_enc{i}")(enc[i - 1]) + getattr(self, f"csff_dec{i}")(dec[i - 1])
            outs.append(x)
        return outs


class Decoder(nn.Module):
    """Three scales of 2 CABs, coarse to fine; upsampled features plus CAB-attended encoder skips."""

    def __init__(self, n: int, k: int, reduction: int, bias: bool, s: int) -> None:
        super().__init__()
        for i, c in enumerate((n, n + s, n + 2 * s), 1):
            setattr(self, f"decoder_level{i}", cabs(2, c, k, reduction, bias))
        self.skip_attn1 = CAB(n, k, reduction, bias)
        self.skip_attn2 = CAB(n + s, k, reduction, bias)
        self.up21 = Rescale(n + s, n, 2.0, "up")
        self.up32 = Rescale(n + 2 * s, n + s, 2.0, "up")

    def forward(self, enc: Feats) -> Feats:
        d3 = self.decoder_level3(enc[2])
        d2 = self.decoder_level2(self.up32(d3, self.skip_attn2(enc[1])))
        d1 = self.decoder_level1(self.up21(d2, self.skip_attn1(enc[0])))
        return [d1, d2, d3]


class ORB(nn.Module):
    """Original-resolution block: ``x + conv(CAB^num_cab(x))``."""

    def __init__(self, c: int, k: int, reduction: int, bias: bool, num_cab: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*cabs(num_cab, c, k, reduction, bias), conv(c, c, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ORSNet(nn.Module):
    """Stage 3: three ORBs at width ``n + s_ors``, each followed by stage 2's encoder and decoder
    features of one scale (upsampled to full resolution, 1x1-mapped) added in."""

    def __init__(self, n: int, s_ors: int, k: int, reduction: int, bias: bool, s: int, num_cab: int) -> None:
        super().__init__()
        c = n + s_ors
        for i in (1, 2, 3):
            setattr(self, f"orb{i}", ORB(c, k, reduction, bias, num_cab))
            setattr(self, f"conv_enc{i}", nn.Conv2d(n, c, 1, bias=bias))
            setattr(self, f"conv_dec{i}", nn.Conv2d(n, c, 1, bias=bias))
        for kind in ("enc", "dec"):
            setattr(self, f"up_{kind}1", Rescale(n + s, n, 2.0, "up"))
            setattr(self, f"up_{kind}2", nn.Sequential(Rescale(n + 2 * s, n + s, 2.0, "up"),
                                                        Rescale(n + s, n, 2.0, "up")))

    def forward(self, x: torch.Tensor, enc: Feats, dec: Feats) -> torch.Tensor:
        for i in (1, 2, 3):
            x = getattr(self, f"orb{i}")(x)
            e, d = enc[i - 1], dec[i - 1]
            if i > 1:
                e, d = getattr(self, f"up_enc{i - 1}")(e), getattr(self, f"up_dec{i - 1}")(d)
            x = x + getattr(self, f"conv_enc{i}")(e) + getattr(self, f"conv_dec{i}")(d)
        return x


def _split(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The two halves of ``t`` along ``dim`` stacked on the batch: ``[first; second]``."""
    return torch.cat(t.chunk(2, dim), 0)


def _merge(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`_split`."""
    return torch.cat(t.chunk(2, 0), dim)


class MPRNetwork(nn.Module):
    """The 3-stage MPRNet; ``forward`` returns ``[stage3, stage2, stage1]`` restored images.

    The official forward runs stage 1 on each quadrant and stage 2 on each half separately; here
    the patches are stacked on the batch dimension (the same computation: every layer, channel
    attention's pooling included, sees one patch). ``H`` and ``W`` must be multiples of 8.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, num_cab: int = 8, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False) -> None:
        super().__init__()
        n, s, so, k, r = n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size, reduction
        for i in (1, 2, 3):
            setattr(self, f"shallow_feat{i}", nn.Sequential(conv(in_c, n, k, bias), CAB(n, k, r, bias)))
        self.stage1_encoder = Encoder(n, k, r, bias, s, csff=False)
        self.stage1_decoder = Decoder(n, k, r, bias, s)
        self.stage2_encoder = Encoder(n, k, r, bias, s, csff=True)
        self.stage2_decoder = Decoder(n, k, r, bias, s)
        self.stage3_orsnet = ORSNet(n, so, k, r, bias, s, num_cab)
        self.sam12 = SAM(n, 1, bias)
        self.sam23 = SAM(n, 1, bias)
        self.concat12 = conv(2 * n, n, k, bias)
        self.concat23 = conv(2 * n, n + so, k, bias)
        self.tail = conv(n + so, out_c, k, bias)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        halves = _split(x, 2)                    # [top; bottom]: stage 2's patches
        quarters = _split(halves, 3)             # [left; right] of each half: stage 1's patches
        feat1 = [_merge(f, 3) for f in self.stage1_encoder(self.shallow_feat1(quarters))]
        res1 = self.stage1_decoder(feat1)        # per half
        sam1, img1 = self.sam12(res1[0], halves)
        f2 = self.concat12(torch.cat([self.shallow_feat2(halves), sam1], 1))
        feat2 = [_merge(f, 2) for f in self.stage2_encoder(f2, feat1, res1)]
        res2 = self.stage2_decoder(feat2)        # whole image
        sam2, img2 = self.sam23(res2[0], x)
        f3 = self.concat23(torch.cat([self.shallow_feat3(x), sam2], 1))
        img3 = self.tail(self.stage3_orsnet(f3, feat2, res2)) + x
        return [img3, img2, _merge(img1, 2)]


#: the official Denoising/MPRNet.py widths (the SIDD model)
OFFICIAL_DENOISING = {"in_c": 3, "out_c": 3, "n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32,
                      "num_cab": 8, "kernel_size": 3, "reduction": 4, "bias": False}


@DEFENSES.register("mprnet")
class MPRNet(NeuralPurification):
    """MPRNet denoiser (Zamir et al., CVPR 2021) as a purification: the stage-3 restored image.

    Source: Guardians of Image Quality (appendix A.3.5, "3-stage CNN for denoising"; Table 8 varies no
    parameter, so one preset). The network is the full 3-stage architecture (:class:`MPRNetwork`:
    CAB encoder-decoders, SAM, CSFF, ORSNet) with the official state-dict key names
    (``shallow_feat1``, ``stage1_encoder``, ``sam12``, ``concat12``, ``stage3_orsnet``, ``tail``, ...),
    so the official denoising checkpoint (``{"state_dict": ...}``, widths n_feat 80, scale_unetfeats 48,
    scale_orsnetfeats 32, 8 CABs per ORB) loads with ``weights=<file>.pth``, its widths read off the
    keys. The shipped weights (``defenses/weights/mprnet.safetensors``) are a SMALL version (n_feat 16,
    scale_unetfeats 8, scale_orsnetfeats 8, 2 CABs per ORB) trained by ``scripts/train_mprnet.py`` on
    I-FGSM/PGD-attacked crops of the builtin photographs (model card: ``MODEL_CARD.md``). As the
    official inference does, the input is reflect-padded to a multiple of 8 and the output cropped
    back, so any size of at least 8x8 works. Measured (model card, test split, once): +1.29 dB PSNR to
    the clean crop on I-FGSM/PGD pairs (42.21 -> 43.50 dB). Differentiable, deterministic, same size.

    Args:
        preset: 0 (the only preset) or ``None``.
        weights: ``None`` (the shipped file) or a path to ``.safetensors`` / the official ``.pth``.

    Example:
        >>> p = MPRNet()
        >>> y = p(x)                              # [B, 3, H, W] -> [B, 3, H, W] in [0, 1]
    """

    presets = [{}]
    defaults = {"weights": None}
    weights_name = "mprnet"
    train_command = "python scripts/train_mprnet.py"
    arch = dict(OFFICIAL_DENOISING, n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)

    def build_network(self, config: Dict[str, Any]) -> nn.Module:
        return MPRNetwork(**{k: config[k] for k in OFFICIAL_DENOISING})

    def infer_config(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Widths of an official checkpoint, read off its keys."""
        need = ("shallow_feat1.0.weight", "stage1_encoder.encoder_level2.0.body.0.weight", "tail.weight",
                "shallow_feat1.1.CA.conv_du.0.weight")
        if any(k not in state or state[k].dim() != 4 for k in need):
            raise InputError(f"weights: expected the official MPRNet keys ({', '.join(need)}, ...), "
                             f"got {sorted(state)[:5]}")
        w0, tail = state[need[0]], state["tail.weight"]
        n = int(w0.shape[0])
        cabs_in_orb = {int(k.split(".")[3]) for k in state if k.startswith("stage3_orsnet.orb1.body.")}
        return {"in_c": int(w0.shape[1]), "out_c": int(tail.shape[0]), "n_feat": n,
                "scale_unetfeats": int(state[need[1]].shape[0]) - n, "scale_orsnetfeats": int(tail.shape[1]) - n,
                "num_cab": max(cabs_in_orb, default=0), "kernel_size": int(w0.shape[-1]),
                "reduction": n // int(state[need[3]].shape[0]), "bias": "shallow_feat1.0.bias" in state}

    @property
    def min_size(self) -> int:
        return 8  # reflect padding to a multiple of 8 needs pads (< 8) smaller than the side

    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` restored (``generator`` unused)."""
        self.follow(x)
        h, w = x.shape[-2:]
        ph, pw = -h % 8, -w % 8
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        return self.network(xp)[0][..., :h, :w]
