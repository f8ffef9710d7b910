"""PLS filter importance for structured pruning (Jordao et al. 2019, "Pruning deep neural networks
using partial least squares", §3): the spatially averaged responses of every filter of every
prunable unit to N samples, one scikit-learn ``PLSRegression`` of the targets on all of them, and
Wold's Variable Importance in Projection (:func:`vip`) as each filter's importance. Used by
:func:`iqaguard.defenses.trained.pruning.filter_importance`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...validation import check_image

if TYPE_CHECKING:
    from .pruning import PrunableUnit

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


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


def pls_importance(model: nn.Module, units: Sequence[PrunableUnit], samples: Optional[torch.Tensor],
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
