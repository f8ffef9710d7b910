"""The time-conditioned U-Net of the diffusion defenses, in guided-diffusion's layout.

:class:`UNetModel` follows the module layout (and state-dict key names) of OpenAI's
guided-diffusion ``UNetModel`` (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image
Synthesis", NeurIPS 2021, Appendix A): ``time_embed``, ``input_blocks``, ``middle_block``,
``output_blocks``, ``out``; ResBlocks with ``in_layers`` / ``emb_layers`` / ``out_layers`` /
``skip_connection``; attention with ``norm`` / ``qkv`` / ``proj_out`` and the legacy head order.
:func:`infer_config` reads the widths off a checkpoint, so the official
``256x256_diffusion_uncond.pt`` loads at its widths. The sampler is :mod:`._diffusion`.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]``: ``cat(cos(t f), sin(t f))``, ``f_k = max_period^(-k / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (guided-diffusion's ``normalization``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            w, b = self.weight, self.bias
            return F.group_norm(x.float(), self.num_groups, None if w is None else w.float(),
                                None if b is None else b.float(), self.eps).to(x.dtype)
        return super().forward(x)


class TimestepSequential(nn.Sequential):
    """A Sequential passing the time embedding to the ResBlocks in it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (``op``) or 2x2 average pooling."""

    def __init__(self, ch: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling, then a 3x3 convolution (``conv``) when ``use_conv``."""

    def __init__(self, ch: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Norm-SiLU-conv, time embedding (added, or FiLM scale/shift with ``scale_shift``), norm-SiLU-dropout-conv."""

    def __init__(self, ch: int, emb_dim: int, out_ch: int, groups: int, scale_shift: bool,
                 up: bool = False, down: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.scale_shift, self.updown = scale_shift, up or down
        self.in_layers = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.h_upd = Upsample(ch, False) if up else Downsample(ch, False) if down else nn.Identity()
        self.x_upd = Upsample(ch, False) if up else Downsample(ch, False) if down else nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(GroupNorm32(groups, out_ch), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention; ``qkv`` channels ordered per head ``[q_h, k_h, v_h]`` (guided-diffusion legacy order)."""

    def __init__(self, ch: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(groups, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.heads, 3 * c // self.heads, -1)
        q, k, v = (s.transpose(1, 2) for s in qkv.chunk(3, dim=1))     # [B*heads, L, ch]
        a = F.scaled_dot_product_attention(q, k, v)                    # softmax(q k^T / sqrt(ch)) v
        a = a.transpose(1, 2).reshape(b, c, -1)
        return (flat + self.proj_out(a)).reshape(b, c, hh, ww)


#: the shipped small model's defaults; the official 256x256_diffusion_uncond uses model_channels=256,
#: channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attention_resolutions=(8, 16, 32),
#: num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True
UNET_DEFAULTS: Dict[str, Any] = {
    "in_channels": 3, "model_channels": 32, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 1,
    "attention_resolutions": [8], "num_heads": 2, "num_head_channels": -1, "learn_sigma": False,
    "use_scale_shift_norm": True, "resblock_updown": False, "conv_resample": True, "norm_groups": 32,
    "dropout": 0.0,
}


class UNetModel(nn.Module):
    """Time-conditioned U-Net in guided-diffusion's layout: ``net(x [B, C, H, W], t [B]) -> [B, C | 2C, H, W]``.

    ``H`` and ``W`` must be multiples of ``2^(len(channel_mult) - 1)`` (:meth:`multiple`);
    ``attention_resolutions`` lists down-sampling factors ``ds`` (guided-diffusion's
    ``image_size // res``). Heads: ``num_head_channels`` channels each when > 0, else ``num_heads``.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        c = {**UNET_DEFAULTS, **config}
        mc, groups, ss = int(c["model_channels"]), int(c["norm_groups"]), bool(c["use_scale_shift_norm"])
        mult, nres, attn = [int(m) for m in c["channel_mult"]], int(c["num_res_blocks"]), set(c["attention_resolutions"])
        self.levels, inc = len(mult), int(c["in_channels"])
        self.model_channels, emb = mc, 4 * mc

        def heads(ch: int) -> int:
            return ch // int(c["num_head_channels"]) if int(c["num_head_channels"]) > 0 else int(c["num_heads"])

        def res(i: int, o: int, **kw: bool) -> ResBlock:
            return ResBlock(i, emb, o, groups, ss, dropout=float(c["dropout"]), **kw)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(inc, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nres):
                layers: list = [res(ch, m * mc)]
                ch = m * mc
                if ds in attn:
                    layers.append(AttentionBlock(ch, heads(ch), groups))
                self.input_blocks.append(TimestepSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = res(ch, ch, down=True) if c["resblock_updown"] else Downsample(ch, bool(c["conv_resample"]))
                self.input_blocks.append(TimestepSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch, ch), AttentionBlock(ch, heads(ch), groups), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nres + 1):
                layers = [res(ch + chans.pop(), m * mc)]
                ch = m * mc
                if ds in attn:
                    layers.append(AttentionBlock(ch, heads(ch), groups))
                if level and i == nres:
                    layers.append(res(ch, ch, up=True) if c["resblock_updown"] else Upsample(ch, bool(c["conv_resample"])))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        out_ch = 2 * inc if c["learn_sigma"] else inc
        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (``2^(levels - 1)``)."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def infer_config(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The :class:`UNetModel` config of a guided-diffusion-layout state dict (``{}`` if it is not one).

    Read off the keys and shapes: widths, ``channel_mult``, ``num_res_blocks`` (output blocks per
    level minus one; the levels are the up-sampling blocks plus one), attention levels, ``learn_sigma``
    (``2C`` outputs), FiLM (``emb_layers`` twice the width), ``resblock_updown``. Head counts are not
    in the weights: ``num_head_channels=64``, the value of every ADM ImageNet model, is assumed.
    """
    if "input_blocks.0.0.weight" not in state or "out.2.weight" not in state:
        return {}
    w0 = state["input_blocks.0.0.weight"]
    mc, inc = int(w0.shape[0]), int(w0.shape[1])
    n_out = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("output_blocks."))
    ups = [k for k in range(n_out) if any(f"output_blocks.{k}.{j}.conv.weight" in state
                                          or f"output_blocks.{k}.{j}.in_layers.0.weight" in state for j in (1, 2))]
    levels = len(ups) + 1
    nres = n_out // levels - 1
    mult, attn = [], []
    for level in range(levels):
        i = 1 + level * (nres + 1)
        mult.append(int(state[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]) // mc)
        if f"input_blocks.{i}.1.qkv.weight" in state:
            attn.append(2 ** level)
    first = state["input_blocks.1.0.emb_layers.1.weight"].shape[0]
    return {
        "in_channels": inc, "model_channels": mc, "channel_mult": mult, "num_res_blocks": nres,
        "attention_resolutions": attn, "num_head_channels": 64,
        "learn_sigma": int(state["out.2.weight"].shape[0]) == 2 * inc,
        "use_scale_shift_norm": int(first) == 2 * mult[0] * mc,
        "resblock_updown": levels > 1 and f"input_blocks.{nres + 1}.0.in_layers.0.weight" in state,
    }
