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

import numpy as np
import torch
from torch import nn

from ...errors import InputError, UnknownNameError
from ...validation import check_image

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


def _collect(model: nn.Module, units: Sequence[PrunableUnit], samples: torch.Tensor,
             forward: Forward, batch: int, scores: bool) -> tuple:
    """Spatially averaged responses ``[N, sum(n_i)]`` of every unit's filters and, when ``scores``,
    the forward outputs ``[N, K]`` (else ``None``: with given targets the output may be anything).

    A convolution that runs several times in one forward pass (builtin-fr's backbone on the image,
    then on the reference) is represented by its first call: the response to ``x``.
    """
    convs = [model.get_submodule(u.conv) for u in units]
    current: Dict[int, torch.Tensor] = {}

    def hook(k: int) -> Callable:
        def record(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            current.setdefault(k, out.detach().mean((2, 3)))  # returns None: the output is unchanged
        return record

    hooks = [c.register_forward_hook(hook(k)) for k, c in enumerate(convs)]
    modes = [m for m in model.modules() if m.training]
    feats, outputs = [], []
    device = next(model.parameters()).device
    try:
        model.eval()  # batch norm must use (and keep) its running statistics
        with torch.no_grad():
            for start in range(0, samples.shape[0], batch):
                x = samples[start:start + batch].to(device)
                current.clear()
                out = forward(model, x)
                missing = [units[k].conv for k in range(len(convs)) if k not in current]
                bad_out = scores and (not isinstance(out, torch.Tensor) or out.shape[:1] != x.shape[:1])
                if missing or bad_out or any(r.shape[0] != x.shape[0] for r in current.values()):
                    raise InputError(f"forward: must run every unit on x (missing: {missing}) and, without targets, "
                                     "return scores [B]; pass forward=lambda m, x: <scores [B]> or targets=")
                feats.append(torch.cat([current[k] for k in range(len(convs))], dim=1))
                if scores:
                    outputs.append(out.detach().reshape(x.shape[0], -1))
    finally:
        for h in hooks:
            h.remove()
        for m in modes:
            m.training = True
    return torch.cat(feats).double().cpu().numpy(), (torch.cat(outputs).double().cpu().numpy() if scores else None)


def vip(x_weights: np.ndarray, x_scores: np.ndarray, y_loadings: np.ndarray) -> np.ndarray:
    """Variable Importance in Projection of a fitted PLS model (Wold's formula).

    ``VIP_j = sqrt(p * sum_a SS_a (w_ja / ||w_a||)^2 / sum_a SS_a)`` with ``SS_a = ||q_a||^2 t_a^T t_a``
    (the share of the targets' variance that component ``a`` explains); ``sum_j VIP_j^2 = p``.
    As used to rank filters by "Pruning deep neural networks using partial least squares"
    (Jordao et al. 2019, §3).

    Args:
        x_weights: ``W`` ``[p, A]`` (sklearn ``PLSRegression.x_weights_``).
        x_scores: ``T`` ``[N, A]`` (``x_scores_``).
        y_loadings: ``Q`` ``[K, A]`` (``y_loadings_``; ``K`` targets).

    Returns:
        ``[p]`` non-negative importances (float64).
    """
    ss = (y_loadings ** 2).sum(axis=0) * (x_scores ** 2).sum(axis=0)
    norms = np.linalg.norm(x_weights, axis=0)
    if not np.isfinite(ss).all() or ss.sum() <= 0 or (norms <= 0).any():
        raise InputError("pls: the PLS fit explains none of the targets' variance (degenerate responses); "
                         "use more varied samples or method='l2'")
    w = x_weights / norms
    return np.sqrt(x_weights.shape[0] * (w ** 2 @ ss) / ss.sum())


def _pls_importance(model: nn.Module, units: Sequence[PrunableUnit], samples: Optional[torch.Tensor],
                    targets: Optional[torch.Tensor], forward: Optional[Forward], batch: int,
                    n_components: int) -> List[torch.Tensor]:
    from sklearn.cross_decomposition import PLSRegression

    if samples is None:
        raise InputError("samples: method 'pls' needs samples [N, 3, H, W] in [0, 1] (the paper uses 200); "
                         "pass samples=, or use method='l1'/'l2'")
    check_image(samples, "samples")
    n = samples.shape[0]
    if n < 2:
        raise InputError(f"samples: PLS needs at least 2 samples, got {n}; pass more images (the paper uses 200)")
    limit = min(n - 1, sum(u.n for u in units))
    if not 1 <= n_components <= limit:
        raise InputError(f"n_components: must be in [1, {limit}] (samples - 1, filters), got {n_components}; "
                         "lower it or pass more samples")
    if batch < 1:
        raise InputError(f"batch: must be >= 1, got {batch}")
    if targets is not None:
        t = torch.as_tensor(targets).detach().double().cpu()
        if t.dim() == 0 or t.shape[0] != n:
            raise InputError(f"targets: expected {n} values [N] (one per sample), got shape {list(t.shape)}")
    feats, y = _collect(model, units, samples, forward or (lambda m, x: m(x)), batch, targets is None)
    if targets is not None:
        y = t.reshape(n, -1).numpy()
    if not (np.isfinite(y).all() and np.isfinite(feats).all()) or np.ptp(y, axis=0).max() <= 0:
        raise InputError("targets: PLS needs finite, non-constant targets and responses; pass MOS or varied samples")
    pls = PLSRegression(n_components=n_components, scale=True).fit(feats, y)
    scores = torch.from_numpy(vip(pls.x_weights_, pls.x_scores_, pls.y_loadings_)).float()
    return list(torch.split(scores, [u.n for u in units]))


def filter_importance(model: nn.Module, method: str, samples: Optional[torch.Tensor] = None,
                      targets: Optional[torch.Tensor] = None, forward: Optional[Forward] = None,
                      batch: int = 16, n_components: int = 2) -> Dict[str, torch.Tensor]:
    """Importance of every filter of every prunable unit (higher = more important).

    * ``"l1"``: sum of absolute kernel weights of the filter ("Pruning filters for efficient
      ConvNets", Li et al. 2017, §3.1); ``"l2"``: their Euclidean norm. Biases are not counted.
    * ``"pls"``: one PLS regression of the targets on the spatially averaged responses (forward
      hooks on the convolution outputs, model in eval mode, no gradients) of *all* filters of all
      units together, filters ranked by :func:`vip` (Jordao et al. 2019, §3). PLS standardises
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
        scores = _pls_importance(model, units, samples, targets, forward, batch, n_components)
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
