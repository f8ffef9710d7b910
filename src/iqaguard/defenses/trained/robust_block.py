"""RobustBlock: square pooling, channel bottleneck and an orthogonal Fourier-domain convolution.

"Robustness as Architecture: Designing IQA Models to Withstand Adversarial Perturbations", §4
"RobustBlock" (Figure 2) and §5.1 "Implementation Details": adaptive pooling makes the map square
(``[C, H, W] -> [C, min(H, W), min(H, W)]``, the orthogonalisations need a square input), a
convolution halves the channels, an orthogonal convolution (computed through the FFT for Cayley)
mixes them, and the original channel count is restored; the output stays square. §4 "RobustBlock
Position" and §6.1 "Block position" place it before the last convolutional block ("RobustBlock N
is inserted before the N-th convolutional block", Table 1). :func:`insert_robust_block` edits a
model in place and returns the JSON-able record that replays the edit (:mod:`iqaguard.architecture`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .orthogonal import check_kind, make_orthogonal


class RobustBlock(nn.Module):
    """``[B, C, H, W] -> [B, C, s, s]`` with ``s = min(H, W)``: pool, reduce, orthogonal conv, restore.

    1. ``F.adaptive_avg_pool2d`` to ``s x s`` (skipped when ``H == W``);
    2. ``reduce``: 1x1 ``nn.Conv2d(C, c)`` with ``c = max(C // 2, 1)`` (§5.1: half the channels);
    3. ``orth``: :func:`~.orthogonal.make_orthogonal` ``(orth, c, kernel_size)``, a circular
       ``c -> c`` convolution that is orthogonal (``"cayley"``, ``"aoc"``) or 1-Lipschitz (``"aol"``);
    4. ``expand``: 1x1 ``nn.Conv2d(c, C)`` back to ``C`` channels.

    The output is **square** whatever the input's aspect ratio (intended, §5.1): the layers after
    the block must accept ``s x s`` maps (builtin-nr/-fr pool adaptively, so they do).
    Init: ``reduce`` has orthonormal rows and ``expand`` is its transpose (biases 0), so at
    initialisation the channel bottleneck ``expand o reduce`` is an orthogonal projection and the
    block's linear part after the pooling has spectral norm <= 1 (1 for Cayley/AOC). A newly
    inserted block still changes a pre-trained model's features: fine-tune afterwards (§4
    "Pruning and Fine-Tuning").

    Args:
        channels: ``C`` >= 1, input and output channels.
        orth: ``"cayley"`` (default, the paper's choice, §6.1), ``"aoc"`` or ``"aol"``.
        kernel_size: odd spatial size of the orthogonal convolution (3).
    """

    def __init__(self, channels: int, orth: str = "cayley", kernel_size: int = 3) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise InputError(f"RobustBlock: channels must be an int >= 1, got {channels!r}")
        self.channels, self.orth_kind = channels, orth
        self.hidden = max(channels // 2, 1)
        self.orth = make_orthogonal(orth, self.hidden, kernel_size)
        self.reduce = nn.Conv2d(channels, self.hidden, 1)
        self.expand = nn.Conv2d(self.hidden, channels, 1)
        with torch.no_grad():
            nn.init.orthogonal_(self.reduce.weight)
            self.expand.weight.copy_(self.reduce.weight.transpose(0, 1))
            self.reduce.bias.zero_()
            self.expand.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` float32 -> ``[B, C, min(H, W), min(H, W)]`` float32."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InputError(f"RobustBlock: expected [B, {self.channels}, H, W], got shape {tuple(x.shape)}")
        s = min(x.shape[-2:])
        h = x if x.shape[-2] == x.shape[-1] else F.adaptive_avg_pool2d(x, (s, s))
        return self.expand(self.orth(self.reduce(h)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}, orth={self.orth_kind!r}"


def _find_backbone(model: nn.Module) -> Optional[Tuple[str, nn.Module]]:
    """``(path, module)`` of the one builtin ``Backbone`` in ``model`` (``None`` if there is none)."""
    from ...metrics.builtin import Backbone

    hits = [(p, m) for p, m in model.named_modules() if isinstance(m, Backbone)]
    if len(hits) > 1:
        raise InputError(f"insert_robust_block: {type(model).__name__} holds {len(hits)} builtin backbones "
                         f"({', '.join(p for p, _ in hits)}); pass target=<one of them>")
    return hits[0] if hits else None


def _check_position(position: Any, n: int, what: str) -> int:
    if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= n:
        raise InputError(f"insert_robust_block: position must be an int in 1..{n} (insert before the N-th "
                         f"{what}, 1-based), got {position!r}")
    return position


def _last_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _first_conv(module: nn.Module) -> Optional[nn.Conv2d]:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def _sequential_channels(seq: nn.Sequential, position: int) -> int:
    """Channels entering child ``position`` (1-based): the last ``Conv2d`` before it, else the first after."""
    children = list(seq.children())
    for child in reversed(children[:position - 1]):
        conv = _last_conv(child)
        if conv is not None:
            return conv.out_channels
    for child in children[position - 1:]:
        conv = _first_conv(child)
        if conv is not None:
            return conv.in_channels
    raise InputError("insert_robust_block: the nn.Sequential has no nn.Conv2d to infer the block's channels from; "
                     "insert it into a convolutional backbone")


def _place(container: nn.Module, key: str, block: RobustBlock, reference: nn.Module) -> None:
    """Replace ``container[key]`` by ``nn.Sequential(block, old)``, ``block`` on the model's device/dtype."""
    old = container._modules[key]
    p = next(iter(reference.parameters()), None)
    if p is not None and p.is_floating_point():
        block = block.to(device=p.device, dtype=p.dtype)
    container._modules[key] = nn.Sequential(block, old)


def insert_robust_block(model: nn.Module, position: Optional[int] = None, orth: str = "cayley",
                        target: Optional[str] = None) -> Dict[str, Any]:
    """Insert a :class:`RobustBlock` before the ``position``-th block of ``model``, in place.

    Supported models (the block wraps the block it precedes: ``block -> nn.Sequential(RobustBlock,
    block)``, so every other state-dict key is unchanged):

    * a builtin metric (``iqaguard.metrics.create("builtin-nr" / "builtin-fr")``), its ``.net``
      (``NRNet`` / ``FRNet``) or its ``Backbone``: ``position`` in ``1..len(stages)`` (4), the block
      sees the stage's input channels (``in_channels`` for stage 1, ``widths[position - 2]``
      otherwise). The paper's default is ``position = len(stages)``, before the last block.
    * an ``nn.Sequential`` (the model itself, or the one at dotted path ``target``): ``position`` in
      ``1..len(seq)`` counts children; the block's channels are the ``out_channels`` of the last
      ``nn.Conv2d`` in the preceding children (searched recursively), else the ``in_channels`` of
      the first one after.

    Args:
        model: the module to edit (in place).
        position: 1-based index of the block the RobustBlock goes before; ``None``: the last
            block (the paper's default; the record holds the resolved index).
        orth: ``"cayley"``, ``"aoc"`` or ``"aol"`` (:data:`~.orthogonal.ORTHOGONAL_KINDS`).
        target: dotted path (``model.get_submodule``) of the Backbone or nn.Sequential to edit;
            ``None`` finds the builtin backbone, or uses ``model`` itself when it is an nn.Sequential.

    Returns:
        ``{"op": "robust-block", "target": <dotted path of the container, "" for model>,
        "position": position, "orth": orth, "channels": C}``: the same call (with ``target``) on a
        freshly built model gives the same structure and state-dict keys.

    Raises:
        InputError: an out-of-range position, an unsupported model or an unresolvable ``target``.
        UnknownNameError: an unknown ``orth``.
    """
    from ...metrics.builtin import Backbone

    check_kind(orth)
    if target is not None:
        try:
            found: Optional[Tuple[str, nn.Module]] = (target, model.get_submodule(target))
        except AttributeError:
            raise InputError(f"insert_robust_block: target {target!r} is not a submodule of "
                             f"{type(model).__name__}") from None
    elif isinstance(model, nn.Sequential):
        found = ("", model)
    else:
        found = _find_backbone(model)
    if found is None:
        raise InputError(f"insert_robust_block: unsupported model {type(model).__name__}: expected a builtin "
                         "metric/network/Backbone or an nn.Sequential (pass target=<dotted path> to one)")
    path, container = found
    if isinstance(container, Backbone):
        n = len(container.stages)
        position = n if position is None else _check_position(position, n, "backbone stage")
        channels = container.in_channels if position == 1 else container.widths[position - 2]
        _place(container.stages, str(position - 1), RobustBlock(channels, orth), container)
    elif isinstance(container, nn.Sequential):
        n = len(container)
        position = n if position is None else _check_position(position, n, "child of the nn.Sequential")
        channels = _sequential_channels(container, position)
        key = list(container._modules.keys())[position - 1]
        _place(container, key, RobustBlock(channels, orth), container)
    else:
        raise InputError(f"insert_robust_block: target {path!r} is a {type(container).__name__}; expected a "
                         "builtin Backbone or an nn.Sequential")
    return {"op": "robust-block", "target": path, "position": position, "orth": orth, "channels": channels}


__all__ = ["RobustBlock", "insert_robust_block"]
