"""Structured filter pruning of convolutional IQA models (l1, l2 and PLS/VIP criteria).

"Robustness as Architecture: Designing IQA Models to Withstand Adversarial Perturbations"
(§4 "Pruning and Fine-Tuning") removes the weights whose criterion ``mu(w_i)`` is below a
threshold; §6.1 prunes 10%, §5.1 fits PLS on 200 samples and fine-tunes 5 epochs. The removal
here is structural (smaller tensors), not a zeroed mask.

A *prunable unit* is a plain ``nn.Conv2d`` (``groups == 1``) inside an ``nn.Sequential`` that is
followed, in the same Sequential, by at most one ``nn.BatchNorm2d`` and elementwise activations
and then by another plain ``nn.Conv2d``: its output channels are seen by nothing but that next
convolution, so removing filter ``i`` (output channel ``i`` of the first convolution, channel
``i`` of the batch norm, input channel ``i`` of the next convolution) changes no shape outside
the unit. In builtin-nr/-fr these are the inner filters of the four backbone stages (the stage
outputs also feed the head, so they are kept) and, in builtin-nr, the hidden units of the head.
Any other module type (a custom block, a parametrized or lazy convolution) is never a unit.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ...errors import InputError, UnknownNameError
from .pls import pls_importance

METHODS = ("l1", "l2", "pls")
#: Module types that may sit between the two convolutions of a unit (elementwise, channel-agnostic).
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.GELU, nn.Mish,
               nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity, nn.Dropout)
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PrunableUnit:
    """One prunable unit: dotted module paths (from ``model.named_modules()``) and its filter count."""

    conv: str
    bn: Optional[str]
    next_conv: str
    n: int


def _plain_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups == 1


def prunable_units(model: nn.Module) -> List[PrunableUnit]:
    """All prunable units of ``model`` in ``named_modules`` order (see the module docstring)."""
    units = []
    for path, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        children = list(seq.named_children())
        for i, (name, conv) in enumerate(children):
            if not _plain_conv(conv):
                continue
            bn = None
            for other_name, other in children[i + 1:]:
                if type(other) is nn.BatchNorm2d and bn is None and other.num_features == conv.out_channels:
                    bn = other_name
                elif _plain_conv(other) and other.in_channels == conv.out_channels:
                    prefix = f"{path}." if path else ""
                    units.append(PrunableUnit(prefix + name, prefix + bn if bn else None,
                                              prefix + other_name, conv.out_channels))
                    break
                elif not isinstance(other, ELEMENTWISE):
                    break
    return units


def filter_importance(model: nn.Module, method: str, samples: Optional[torch.Tensor] = None,
                      targets: Optional[torch.Tensor] = None, forward: Optional[Forward] = None,
                      batch: int = 16, n_components: int = 2) -> Dict[str, torch.Tensor]:
    """Importance of every filter of every prunable unit (higher = more important).

    * ``"l1"``: sum of absolute kernel weights of the filter ("Pruning filters for efficient
      ConvNets", Li et al. 2017, §3.1); ``"l2"``: their Euclidean norm. Biases are not counted.
    * ``"pls"``: one PLS regression of the targets on the spatially averaged responses (forward
      hooks on the convolution outputs, model in eval mode, no gradients) of *all* filters of all
      units together, filters ranked by :func:`~iqaguard.defenses.trained.pls.vip` (Jordao et al. 2019, §3). PLS standardises
      every response, so a following eval-mode batch norm (a per-channel affine map) does not
      change the ranking.

    Args:
        model: any ``nn.Module`` (a :class:`~iqaguard.metrics.Metric` or its ``.net``).
        method: ``"l1"``, ``"l2"`` or ``"pls"``.
        samples: ``[N, 3, H, W]`` in ``[0, 1]``, ``N >= 2`` (pls only; the paper's §5.1 uses 200).
        targets: ``[N]`` (or ``[N, K]``) MOS; ``None`` uses the model's own outputs.
        forward: ``forward(model, x)`` runs the model on a batch (default ``model(x)``; an FR
            metric needs e.g. ``lambda m, x: m(x, ref)``); must return scores ``[B]`` when
            ``targets`` is ``None``, anything otherwise (only the hooked responses are used).
            A unit run twice per call is represented by its first run.
        batch: images per forward pass while collecting responses.
        n_components: PLS latent components, ``1 <= n_components <= min(N - 1, filters)``
            (default 2: enough for a scalar target, stable on a few hundred samples).

    Returns:
        ``{conv_path: [n_filters] float tensor}`` for every unit of :func:`prunable_units`.
    """
    if method not in METHODS:
        raise UnknownNameError(f"method: unknown pruning criterion {method!r}; use one of {', '.join(METHODS)}")
    units = prunable_units(model)
    if not units:
        raise InputError(f"model: {type(model).__name__} has no prunable unit (Conv2d -> [BatchNorm2d, "
                         "activations] -> Conv2d inside an nn.Sequential); nothing to prune")
    if method == "pls":
        scores = pls_importance(model, units, samples, targets, forward, batch, n_components)
    else:
        weights = [model.get_submodule(u.conv).weight.detach().flatten(1) for u in units]
        scores = [w.abs().sum(1) if method == "l1" else w.norm(dim=1) for w in weights]
    return {u.conv: s.float().cpu() for u, s in zip(units, scores)}


def allocate(sizes: Sequence[int], share: float) -> List[int]:
    """Filters to remove per unit: ``round(share * sum(sizes))`` in total, each unit keeping >= 1.

    Every unit first gets ``floor(share * n_i)``; the remainder goes one filter at a time to the
    units with the largest fractional part ``share * n_i - floor(share * n_i)`` (ties: the earlier
    unit), repeating the pass while filters remain (only when units of one filter are full).
    """
    total = round(share * sum(sizes))
    if total > sum(sizes) - len(sizes):
        raise InputError(f"share: removing {total} of {sum(sizes)} filters would empty a unit "
                         f"(at most {sum(sizes) - len(sizes)}); lower share")
    alloc = [math.floor(share * n) for n in sizes]
    order = sorted(range(len(sizes)), key=lambda i: (-(share * sizes[i] - alloc[i]), i))
    left = total - sum(alloc)
    while left > 0:
        for i in order:
            if left > 0 and alloc[i] < sizes[i] - 1:
                alloc[i] += 1
                left -= 1
    return alloc


def _set(module: nn.Module, name: str, old: Optional[torch.Tensor], idx: torch.Tensor, dim: int) -> None:
    """Replace parameter/buffer ``name`` by ``old.index_select(dim, idx)``, keeping its memory format
    (channels-last weights stay channels-last) and ``requires_grad``; ``None`` stays ``None``."""
    if old is None:
        return
    new = old.index_select(dim, idx.to(old.device))
    if old.dim() == 4 and old.is_contiguous(memory_format=torch.channels_last) and not old.is_contiguous():
        new = new.contiguous(memory_format=torch.channels_last)
    setattr(module, name, nn.Parameter(new, old.requires_grad) if isinstance(old, nn.Parameter) else new)


def apply_pruning(model: nn.Module, kept: Dict[str, List[int]]) -> None:
    """Keep only filters ``kept[conv_path]`` of each listed unit, in place.

    The structural operation of :func:`prune`; replaying ``record["kept"]`` on a freshly built
    model gives exactly the pruned parameter shapes and the same state_dict keys, so a saved
    pruned state_dict then loads with ``strict=True``. Everything is checked before any change.

    Args:
        model: the model whose :func:`prunable_units` include every key of ``kept``.
        kept: ``{conv_path: [indices of the filters to keep]}``, unique, in ``[0, n)``, non-empty.
    """
    units = {u.conv: u for u in prunable_units(model)}
    plan = []
    for path, idx in kept.items():
        if path not in units:
            raise InputError(f"kept: {path!r} is not a prunable unit of this model; "
                             f"valid: {', '.join(units) or 'none'}")
        n = units[path].n
        ids = sorted(int(i) for i in idx)
        if not ids or len(set(ids)) != len(ids) or ids[0] < 0 or ids[-1] >= n:
            raise InputError(f"kept[{path!r}]: needs unique filter indices in [0, {n}), at least one; got {list(idx)}")
        plan.append((units[path], torch.tensor(ids, dtype=torch.long)))
    channels_last = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in model.parameters())
    with torch.no_grad():
        for unit, idx in plan:
            conv, nxt = model.get_submodule(unit.conv), model.get_submodule(unit.next_conv)
            _set(conv, "weight", conv.weight, idx, 0)
            _set(conv, "bias", conv.bias, idx, 0)
            conv.out_channels = len(idx)
            if unit.bn is not None:
                bn = model.get_submodule(unit.bn)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    _set(bn, name, getattr(bn, name), idx, 0)
                bn.num_features = len(idx)
            _set(nxt, "weight", nxt.weight, idx, 1)
            nxt.in_channels = len(idx)
    if channels_last:  # one layout for every 4-D tensor, as a model loaded and converted afresh has
        model.to(memory_format=torch.channels_last)


def prune(model: nn.Module, method: str = "l2", share: float = 0.1, samples: Optional[torch.Tensor] = None,
          targets: Optional[torch.Tensor] = None, forward: Optional[Forward] = None,
          batch: int = 16, n_components: int = 2) -> dict:
    """Remove ``round(share * total filters)`` least important filters of ``model``, in place.

    Per unit, :func:`allocate` decides how many; within a unit the lowest
    :func:`filter_importance` go (ties: the lower index). The paper prunes 10% ("Robustness as
    Architecture", §6.1) and fine-tunes afterwards (§4): a fine-tuning optimizer must be created
    after this call.

    Args:
        model: any ``nn.Module`` with prunable units (output shape unchanged by pruning).
        method: ``"l1"``, ``"l2"`` or ``"pls"`` (see :func:`filter_importance`).
        share: fraction of the filters to remove, in ``(0, 1)``.
        samples, targets, forward, batch, n_components: for ``"pls"``, as :func:`filter_importance`.

    Returns:
        JSON-able record ``{"op": "prune", "method", "share", "kept": {conv_path: [kept indices]}}``
        (replay it with :func:`apply_pruning`).
    """
    if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0.0 < float(share) < 1.0:
        raise InputError(f"share: must be a fraction in (0, 1) of the filters to remove, got {share!r}; e.g. 0.1")
    importance = filter_importance(model, method, samples, targets, forward, batch, n_components)
    paths = list(importance)
    counts = allocate([len(importance[p]) for p in paths], float(share))
    kept = {}
    for path, k in zip(paths, counts):
        order = torch.argsort(importance[path], stable=True)
        kept[path] = sorted(int(i) for i in order[k:])
    apply_pruning(model, kept)
    return {"op": "prune", "method": method, "share": float(share), "kept": kept}
