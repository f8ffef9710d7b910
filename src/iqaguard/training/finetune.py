"""Fine-tuning a metric on images with subjective scores: the engine of the training-based and
architectural defenses (:mod:`iqaguard.defenses.trained`).

* :func:`load_mos_data` reads a training and a validation subset of a dataset with MOS
  (default ``builtin-kadid``; any registered dataset with a ``split`` argument works) into memory
  as 8-bit images.
* :func:`finetune` optimises the metric's network through :func:`iqaguard.training.loop.fit`
  on random ``patch x patch`` crops (random horizontal flips; an FR pair is cropped alike), with
  the MOS mapped to the metric's units by the least-squares line fitted to the metric's own clean
  scores on fixed training crops (so a lower-better metric keeps its direction and scale). The
  loss is the recipe's (``loss_fn``; default: the squared error divided by the squared score
  range).
* BatchNorm layers stay in eval mode during fine-tuning (running statistics frozen, affine
  parameters trained): batches of 8 crops give unreliable statistics, and the benchmark compares
  a fine-tuned metric with its base under the same normalisation.
* Default learning rate 5e-5, chosen on the validation split (builtin-nr, 400 train / 100 val
  images, 5 epochs: val SROCC 0.755 before, 0.740 after at 5e-5, 0.679 at 2e-4; adding a pairwise
  rank loss did not help: 0.738 at 5e-5).
* The final state is kept (``keep="last"``): selecting the checkpoint with the best validation
  SROCC would favour the least robust state of a robustness recipe. Validation SROCC/PLCC is
  logged after every epoch.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import DatasetError, InputError, ScoreError
from ..metrics.base import Metric
from ..scores import plcc, srocc
from .loop import FitResult, fit

#: ``loss_fn(metric, x, ref, target [B]) -> scalar`` (``target`` in the metric's units)
LossFn = Callable[[Metric, torch.Tensor, Optional[torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class MOSData:
    """8-bit images with MOS: ``x`` / ``ref`` lists of ``[3, H, W]`` uint8 tensors, ``y`` ``[N]`` float."""

    x: List[torch.Tensor]
    y: torch.Tensor
    ref: Optional[List[torch.Tensor]] = None
    names: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)


def _u8(img: torch.Tensor) -> torch.Tensor:
    return torch.round(img[0].clamp(0, 1) * 255).to(torch.uint8)


def load_split(dataset: str, split: str, count: int, seed: int, fr: bool,
               dataset_kwargs: Optional[Dict[str, Any]] = None, progress: bool = True) -> MOSData:
    """``count`` images of ``split`` (a seeded random subset, in dataset order) with their MOS.

    Raises:
        DatasetError: the dataset has no such split, too few images, or an image without MOS (or
            without a reference for a full-reference metric).
    """
    from .. import data

    try:
        ds = data.create(dataset, **{**(dataset_kwargs or {}), "split": split})
    except TypeError:
        raise DatasetError(f"dataset {dataset!r} has no 'split' argument: fine-tuning needs a train and a val "
                           "split (use builtin-kadid, or a dataset with splits)") from None
    if len(ds) < 2:
        raise DatasetError(f"dataset {dataset!r} split {split!r} has {len(ds)} image(s); fine-tuning needs at least 2")
    n = min(int(count), len(ds))
    idx = sorted(torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist())
    xs, refs, ys, names = [], [], [], []
    t0 = time.time()
    for j, i in enumerate(idx):
        s = ds[i]
        if s.mos is None:
            raise DatasetError(f"dataset {dataset!r} image {s.name!r} has no MOS: fine-tuning needs subjective scores")
        if fr and s.ref is None:
            raise DatasetError(f"dataset {dataset!r} image {s.name!r} has no reference; a full-reference metric "
                               "needs (distorted, reference) pairs")
        xs.append(_u8(s.image))
        if fr:
            refs.append(_u8(s.ref))
        ys.append(float(s.mos))
        names.append(s.name)
        if progress and (j + 1) % 200 == 0:
            print(f"loading {dataset}/{split}: {j + 1}/{n} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return MOSData(xs, torch.tensor(ys), refs if fr else None, names)


def load_mos_data(dataset: str = "builtin-kadid", images: int = 400, val_images: int = 100, seed: int = 0,
                  fr: bool = False, dataset_kwargs: Optional[Dict[str, Any]] = None,
                  progress: bool = True) -> Tuple[MOSData, MOSData]:
    """``(train, val)`` subsets of ``dataset`` (:func:`load_split` of ``"train"`` and ``"val"``)."""
    return (load_split(dataset, "train", images, seed, fr, dataset_kwargs, progress),
            load_split(dataset, "val", val_images, seed + 1, fr, dataset_kwargs, progress))


def crops(data: MOSData, idx: Sequence[int], patch: int, g: torch.Generator,
          flip: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Random ``patch x patch`` crops ``[B, 3, patch, patch]`` in [0, 1] of images ``idx`` (the
    reference cropped alike), horizontally flipped with probability 1/2 when ``flip``."""
    xs, rs = [], []
    for i in idx:
        h, w = data.x[i].shape[-2:]
        if min(h, w) < patch:
            raise InputError(f"patch: {patch} is larger than image {data.names[i] if data.names else i} "
                             f"({h}x{w}); use a smaller patch")
        t = int(torch.randint(0, h - patch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - patch + 1, (1,), generator=g))
        f = flip and bool(torch.rand(1, generator=g) < 0.5)
        for src, out in ((data.x, xs), (data.ref, rs)) if data.ref is not None else ((data.x, xs),):
            c = src[i][:, t:t + patch, left:left + patch]
            out.append(c.flip(-1) if f else c)
    x = torch.stack(xs).float() / 255.0
    return x, (torch.stack(rs).float() / 255.0 if rs else None)


def network(metric: Metric) -> nn.Module:
    """The module that training changes: a builtin metric's ``net``, else the metric itself."""
    net = getattr(metric, "net", None)
    return net if isinstance(net, nn.Module) else metric


def _bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def scores_of(metric: Metric, data: MOSData, batch: int = 8) -> torch.Tensor:
    """The metric's scores ``[N]`` of full images (batches of equally sized neighbours)."""
    out: List[torch.Tensor] = []
    i = 0
    dev = metric.device
    while i < len(data):
        j = i + 1
        while j < len(data) and j - i < batch and data.x[j].shape == data.x[i].shape:
            j += 1
        x = torch.stack(data.x[i:j]).to(dev).float() / 255.0
        ref = torch.stack(data.ref[i:j]).to(dev).float() / 255.0 if data.ref is not None else None
        out.append(metric.score(x, ref).float().cpu())
        i = j
    return torch.cat(out)


def correlations(metric: Metric, data: MOSData) -> Dict[str, float]:
    """``{"srocc", "plcc"}`` of the metric on ``data`` (signs flipped for a lower-better metric)."""
    s = scores_of(metric, data)
    s = -s if metric.lower_better else s
    try:
        return {"srocc": srocc(s, data.y), "plcc": plcc(s, data.y)}
    except ScoreError:
        return {"srocc": float("nan"), "plcc": float("nan")}


def units_line(metric: Metric, data: MOSData, patch: int, seed: int) -> Tuple[float, float]:
    """``(a, b)`` of ``clean score ≈ a · MOS + b``, fitted on one fixed crop per training image."""
    g = torch.Generator().manual_seed(seed)
    s = []
    with torch.no_grad():
        for i in range(0, len(data), 16):
            x, ref = crops(data, range(i, min(i + 16, len(data))), patch, g, flip=False)
            s.append(metric.score(x.to(metric.device), None if ref is None else ref.to(metric.device)).float().cpu())
    a, b = np.polyfit(data.y.double().numpy(), torch.cat(s).double().numpy(), 1)
    return float(a), float(b)


def rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise hinge rank loss of ``[B]`` predictions against ``[B]`` targets (same orientation).

    ``mean over pairs (i, j) with target_i > target_j of max(0, pred_j - pred_i)``: zero exactly
    when every such pair is ordered like its targets, differentiable almost everywhere (its
    gradient pushes the two predictions of a misordered pair apart). A batch whose targets are all
    equal has no pair and a loss of 0.
    """
    if pred.shape != target.shape or pred.dim() != 1:
        raise ValueError(f"rank_loss: expected two [B] tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    above = target.unsqueeze(1) > target.unsqueeze(0)  # [i, j]: target_i > target_j
    if not bool(above.any()):
        return pred.sum() * 0.0
    gap = pred.unsqueeze(1) - pred.unsqueeze(0)
    return torch.relu(-gap)[above].mean()


def mse_loss(metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``mean(((f(x) - target) / diam)^2)``: the squared error in units of the metric's score range."""
    d = max(metric.bounds.diam, 1e-12)
    return (((metric.score(x, ref) - target) / d) ** 2).mean()


def finetune(metric: Metric, train: MOSData, val: MOSData, *, loss_fn: LossFn = mse_loss,
             epochs: float = 5, batch: int = 8, patch: int = 128, lr: float = 5e-5,
             seed: int = 0, line: Optional[Tuple[float, float]] = None, tag: str = "finetune",
             progress: bool = True) -> Tuple[FitResult, Dict[str, Any]]:
    """Fine-tune ``metric``'s :func:`network` in place (module docstring).

    One epoch is ``ceil(len(train) / batch)`` steps of ``batch`` crops. AdamW (weight decay 1e-4),
    cosine decay of ``lr`` to 0 over the run. Returns ``(fit result, log)``; the log has the units
    line, the per-epoch validation SROCC/PLCC and the time. The metric ends in eval mode.
    """
    if not isinstance(metric, Metric):
        raise InputError(f"metric: expected an iqaguard Metric, got {type(metric).__name__}")
    if patch < metric.min_size:
        raise InputError(f"patch: {patch} is below the {metric.min_size}-pixel minimum of {metric.name}; use a larger patch")
    net = network(metric)
    a, b = line if line is not None else units_line(metric, train, patch, seed)
    per_epoch = max(1, math.ceil(len(train) / batch))
    steps = max(1, round(epochs * per_epoch))
    g = torch.Generator().manual_seed(seed)
    params = list(net.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    dev = metric.device
    t0 = time.time()

    def batch_loss(step: int) -> torch.Tensor:
        _bn_eval(net)
        idx = torch.randint(0, len(train), (batch,), generator=g).tolist()
        x, ref = crops(train, idx, patch, g)
        target = (a * train.y[idx] + b).to(dev)
        return loss_fn(metric, x.to(dev), None if ref is None else ref.to(dev), target)

    log: Dict[str, Any] = {"line": [a, b], "steps": steps, "curve": []}

    def evaluate() -> float:
        c = correlations(metric, val)
        log["curve"].append({k: round(v, 4) for k, v in c.items()})
        return c["srocc"]

    def show(step: int, v: float, losses: List[float]) -> None:
        if progress:
            done = step / steps
            eta = (time.time() - t0) * (1 - done) / max(done, 1e-9)
            print(f"[{tag}] step {step}/{steps} loss {np.mean(losses):.5f} val SROCC {v:.4f} "
                  f"({time.time() - t0:.0f} s, ETA {eta:.0f} s)", file=sys.stderr, flush=True)

    marks = {min(steps, round((e + 1) * per_epoch)) for e in range(max(1, math.ceil(epochs)))}
    res = fit(net, batch_loss, steps, opt, sched, evaluate=evaluate, eval_steps=marks, keep="last", on_eval=show)
    for p, f in zip(params, flags):
        p.requires_grad_(f)
    metric.eval()
    log["seconds"] = round(res.seconds, 1)
    log["val"] = log["curve"][-1] if log["curve"] else {}
    return res, log
