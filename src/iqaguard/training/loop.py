"""The one optimisation loop of the package: builtin models, denoisers, FS-IQA heads and the
training-based defenses all step through :func:`fit`.

:func:`fit` runs ``steps`` optimiser steps on ``batch_loss(step)``, evaluates ``evaluate()``
(higher is better) at the requested steps, keeps the state with the best value (or, with
``keep="last"``, the final one) and restores it into the model. Two thin front ends keep the
call shapes the scripts use: :func:`fit_epochs` (AdamW + one-cycle, evaluation after the last
epochs: the builtin models) and :func:`fit_steps` (a given optimiser and scheduler, evaluation
every ``eval_every`` steps and before the first: the denoisers).

A non-finite loss stops the run with one :class:`~iqaguard.errors.ScoreError` line naming the
step and the fix; the best state so far stays in the model.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, List, Optional, Tuple

import torch

from ..errors import ScoreError


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        best: the kept state's evaluation (``nan`` when nothing was evaluated).
        best_step: its step (0: the starting state).
        curve: ``(step, evaluation)`` at every evaluation.
        losses: the loss of every step.
        seconds: wall time of the loop.
    """

    best: float
    best_step: int
    curve: List[Tuple[int, float]] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0


def fit(model: torch.nn.Module, batch_loss: Callable[[int], torch.Tensor], steps: int,
        optimizer: torch.optim.Optimizer, scheduler: Optional[object] = None, *,
        evaluate: Optional[Callable[[], float]] = None, eval_steps: Collection[int] = (),
        eval_start: bool = False, keep: str = "best", scheduler_every: int = 1,
        on_eval: Optional[Callable[[int, float, List[float]], None]] = None) -> FitResult:
    """Optimise ``model`` for ``steps`` steps (module docstring).

    Args:
        model: switched to train mode for the steps and to eval mode for every evaluation and at
            the end.
        batch_loss: ``step -> scalar loss`` (steps count from 1); it draws its own batch.
        steps: number of optimiser steps (>= 0).
        optimizer, scheduler: the scheduler (if any) steps every ``scheduler_every`` steps.
        evaluate: ``() -> float``, higher is better (e.g. validation SROCC).
        eval_steps: the steps after which ``evaluate`` runs.
        eval_start: also evaluate before the first step (the starting state can be kept).
        keep: ``"best"`` (the best evaluated state) or ``"last"`` (the final state; evaluations
            are then only logged).
        on_eval: called as ``on_eval(step, value, losses since the last evaluation)``.

    Raises:
        ScoreError: the loss became NaN or infinite.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep: expected 'best' or 'last', got {keep!r}")
    t0 = time.time()
    result = FitResult(float("nan"), 0)
    best_state: Optional[Dict[str, torch.Tensor]] = None
    since: List[float] = []

    def check(step: int) -> None:
        nonlocal best_state
        model.eval()
        v = float(evaluate())
        result.curve.append((step, v))
        if on_eval is not None:
            on_eval(step, v, since)
        if keep == "best" and (best_state is None or v > result.best or math.isnan(result.best)):
            result.best, result.best_step = v, step
            best_state = copy.deepcopy(model.state_dict())
        elif keep == "last":
            result.best, result.best_step = v, step
        since.clear()

    if evaluate is not None and eval_start:
        check(0)
    for step in range(1, steps + 1):
        model.train()
        loss = batch_loss(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            if best_state is not None:
                model.load_state_dict(best_state)
            model.eval()
            raise ScoreError(f"training loss is {value} at step {step}: lower the learning rate or check the "
                             "data for NaN images or scores")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and step % scheduler_every == 0:
            scheduler.step()
        result.losses.append(value)
        since.append(value)
        if evaluate is not None and step in eval_steps:
            check(step)
    if keep == "best" and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.time() - t0
    return result


def fit_epochs(model: torch.nn.Module, step: Callable[[torch.Generator], torch.Tensor],
               evaluate: Callable[[], float], epochs: int, iters: int, lr: float, seed: int, tag: str,
               params=None, val_last: Optional[int] = None) -> Tuple[torch.nn.Module, float, List[dict]]:
    """AdamW (weight decay 1e-4) + one-cycle over ``epochs x iters`` steps of ``step(generator)``;
    keeps the state with the best ``evaluate()``, run after each of the last ``val_last`` epochs
    (default: every epoch; the one-cycle schedule reaches its best states at the end, so early
    checks only cost time). Returns ``(model, best value, one log row per epoch)``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * iters, pct_start=0.1)
    first = 0 if val_last is None else max(epochs - val_last, 0)
    log: List[dict] = []
    t0 = time.time()

    def epoch_end(s: int, v: float, losses: List[float]) -> None:
        ep = s // iters
        log.append({"epoch": ep, "loss": float(sum(losses) / max(len(losses), 1)), "val_srocc": v,
                    "elapsed_s": round(time.time() - t0, 1)})
        print(f"[{tag}] epoch {ep}/{epochs} loss {log[-1]['loss']:.4f} val SROCC {v:.4f} ({time.time() - t0:.0f}s)",
              flush=True)

    res = fit(model, lambda s: step(g), epochs * iters, opt, sched, evaluate=evaluate,
              eval_steps={iters * (e + 1) for e in range(first, epochs)}, on_eval=epoch_end)
    return model, res.best, log


def fit_steps(net: torch.nn.Module, opt: torch.optim.Optimizer, sched, steps: int,
              batch_loss: Callable[[], torch.Tensor], val_score: Callable[[], float], eval_every: int,
              unit: str = "", digits: int = 4) -> Tuple[float, int, List[str], float]:
    """``steps`` steps on ``batch_loss()`` with ``val_score()`` (higher is better) before the first
    step, every ``eval_every`` steps and at the end; the best state is restored into ``net``.
    Returns ``(best score, its step, the curve as "step: score" strings, seconds)``."""
    t0 = time.time()

    def show(step: int, v: float, losses: List[float]) -> None:
        if step:
            print(f"step {step} loss {losses[-1]:.5f} val {v:.{digits}f}{unit} {(time.time() - t0) / 60:.1f} min",
                  file=sys.stdout, flush=True)

    marks = set(range(eval_every, steps + 1, eval_every)) | {steps}
    res = fit(net, lambda s: batch_loss(), steps, opt, sched, evaluate=val_score, eval_steps=marks,
              eval_start=True, on_eval=show)
    return res.best, res.best_step, [f"{s}: {v:.{digits}f}" for s, v in res.curve if s], res.seconds
