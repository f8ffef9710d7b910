"""Training the FS-IQA head (FS-IQA §3): backbone frozen, FTN + scorer fitted with MSE under feature noise.

The backbone never changes, so the features of every training image are computed once
(:func:`dataset_features`, full size, cached on disk by the caller) and the head is trained on them
in seconds (:func:`train_head`). The subjective scores are mapped to the metric's units by the
least-squares line fitted to the metric's own clean scores on the training images
(:func:`mos_to_units`), so the smoothed metric keeps the base metric's direction and bounds
(FS-IQA trains its scorer on MOS directly; the line is iqaguard's addition for lower-is-better
metrics and foreign scales). ``scripts/train_fsiqa.py`` runs it on builtin-kadid; any
:class:`~iqaguard.data.base.Dataset` with MOS works the same way.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ...errors import InputError, ScoreError
from ...metrics.base import Metric, frozen
from ...scores import srocc
from ...training.loop import fit
from .fs_iqa import ARCH, FSHead


def dataset_features(metric: Metric, samples: Sequence[Any], batch: int = 8, progress: bool = True,
                     scores: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """``(features [N, D], clean scores [N] or None, mos [N])`` of dataset samples at full size.

    ``samples``: items with ``.image``, ``.ref`` (FR) and ``.mos`` (a Dataset or a list of its
    samples); every sample needs a MOS. Images of one batch must share a size. ``scores=False``
    skips the metric's own scores (a second forward; only :func:`mos_to_units` needs them).
    """
    feats, clean, mos = [], [], []
    items = list(samples)
    if any(s.mos is None for s in items):
        raise InputError("samples: FS-IQA training needs subjective scores (MOS) for every image")
    t0 = time.time()
    with torch.no_grad(), frozen(metric):
        for i in range(0, len(items), batch):
            part = items[i:i + batch]
            x = torch.cat([s.image for s in part]).to(metric.device)
            ref = torch.cat([s.ref for s in part]).to(metric.device) if metric.kind == "fr" else None
            metric.check_inputs(x, ref)
            feats.append(metric.feature_map(x, ref).float().cpu())
            if scores:
                clean.append(metric.score(x, ref).float().cpu())
            mos.extend(float(s.mos) for s in part)
            if progress and (i // batch) % 50 == 0:
                print(f"features: {i + len(part)}/{len(items)} images, {time.time() - t0:.0f} s", file=sys.stderr,
                      flush=True)
    return torch.cat(feats), (torch.cat(clean) if scores else None), torch.tensor(mos)


def mos_to_units(mos: torch.Tensor, clean: torch.Tensor) -> Tuple[float, float]:
    """``(a, b)`` of the least-squares line ``clean ≈ a·mos + b`` (the metric's units and orientation)."""
    a, b = np.polyfit(mos.double().numpy(), clean.double().numpy(), 1)
    return float(a), float(b)


def smoothed_head_scores(head: FSHead, feats: torch.Tensor, sigma: float, draws: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Median over ``draws`` feature-noise samples of the head's score, per row of ``feats``."""
    with torch.no_grad():
        z = head.ftn(feats)
        noise = torch.randn((draws, *z.shape), generator=generator)
        return head.score(z.unsqueeze(0) + sigma * noise).median(dim=0).values


def train_head(train: Tuple[torch.Tensor, torch.Tensor], val: Tuple[torch.Tensor, torch.Tensor], sigma: float,
               epochs: int = 300, batch: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4,
               val_draws: int = 64, seed: int = 0, width: int = ARCH["width"],
               hidden: int = ARCH["hidden"]) -> Tuple[FSHead, Dict[str, Any]]:
    """Fit an :class:`FSHead` on ``(features, targets)`` under feature noise ``sigma`` (FS-IQA §3).

    Loss: MSE between ``scorer(FTN(f) + σ_f e)`` and the target (one fresh draw per sample and
    step). The epoch kept is the one with the best SROCC of the median-smoothed score
    (:func:`smoothed_head_scores`, ``val_draws`` fixed draws) on ``val``; features are
    standardised inside the FTN's first layer (its weights absorb the train mean and std).

    Returns:
        ``(head, log)``: the head in eval mode, and ``{"best_epoch", "val_srocc", "curve", "seconds"}``.
    """
    (f_tr, y_tr), (f_va, y_va) = train, val
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = f_tr.mean(0), f_tr.std(0).clamp(min=1e-6)
    head = FSHead(f_tr.shape[1], width, hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    norm_tr, norm_va = (f_tr - mean) / std, (f_va - mean) / std
    nb = -(-norm_tr.shape[0] // batch)  # batches per epoch
    perm = torch.empty(0, dtype=torch.long)

    def batch_loss(step: int) -> torch.Tensor:
        nonlocal perm
        k = (step - 1) % nb  # the batch's place in its epoch: a new permutation at every epoch start
        if k == 0:
            perm = torch.randperm(norm_tr.shape[0], generator=g)
        idx = perm[k * batch:(k + 1) * batch]
        z = head.ftn(norm_tr[idx])
        pred = head.score(z + sigma * torch.randn(z.shape, generator=g))
        return torch.mean((pred - y_tr[idx]) ** 2)

    def evaluate() -> float:
        s = smoothed_head_scores(head, norm_va, sigma, val_draws, torch.Generator().manual_seed(seed + 1))
        try:
            return abs(srocc(s, y_va))
        except ScoreError:  # undefined (tiny or constant val set): still beats the untrained start
            return -1.0

    marks = {ep * nb for ep in range(1, epochs + 1) if ep % 10 == 0 or ep == epochs}
    res = fit(head, batch_loss, epochs * nb, opt, sched, evaluate=evaluate, eval_steps=marks, scheduler_every=nb)
    with torch.no_grad():  # fold the standardisation into the first layer: FTN(f) = sigmoid(W (f - m) / s + c)
        lin = head.ftn[0]
        w = lin.weight / std
        lin.bias.sub_((w * mean).sum(1))
        lin.weight.copy_(w)
    head.eval().requires_grad_(False)
    return head, {"best_epoch": res.best_step // nb, "val_srocc": round(res.best, 4),
                  "curve": [(st // nb, round(v, 4)) for st, v in res.curve], "seconds": round(res.seconds, 1)}

