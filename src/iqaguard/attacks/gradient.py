"""The white-box family: attacks that follow the gradient of the objective.

:func:`objective_gradient` (behind :meth:`GradientAttack.gradient`) is the one place the package
differentiates the attack objective ``sign * f(x') / diam(f)`` (Guardians of Image Quality §3.1)
with respect to the image: the "metric is not differentiable" error lives here, and
``create_graph=True`` keeps the graph for callers that differentiate the gradient again
(gradient-norm regularised training, :mod:`iqaguard.defenses.trained.nt`).
"""
from __future__ import annotations

from abc import abstractmethod

from typing import Callable, Optional, Tuple

import torch

from ..errors import InputError
from ..metrics.base import Metric
from .base import Attack, seeded
from .budgets import Ball


Objective = Callable[[Metric, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def objective_gradient(metric: Metric, x_adv: torch.Tensor, ref: Optional[torch.Tensor],
                       objective: Objective = Attack.objective,
                       create_graph: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(objective [B], d objective / d x_adv [B, 3, H, W])`` at ``x_adv`` (default objective:
    ``sign * f / diam(f)``).

    Each image's objective depends on its own pixels only, so the gradient of the sum is the
    per-image gradient. The objective is returned detached unless ``create_graph``.

    Raises:
        InputError: the metric's score does not depend differentiably on the image.
    """
    leaf = x_adv if x_adv.requires_grad else x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        obj = objective(metric, leaf, ref)
        if not obj.requires_grad:
            raise InputError(
                f"metric: {metric.name!r} is not differentiable with respect to x; use a differentiable "
                "metric, a query (black-box) attack, or wrap non-differentiable preprocessing with "
                "iqaguard.defend()")
        (grad,) = torch.autograd.grad(obj.sum(), leaf, create_graph=create_graph)
    return (obj if create_graph else obj.detach()), grad


class GradientAttack(Attack):
    """Base of the gradient attacks (I-FGSM, PGD, APGD, ...): :meth:`gradient` plus :meth:`run`."""

    def gradient(self, metric: Metric, x_adv: torch.Tensor, ref: Optional[torch.Tensor],
                 create_graph: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`objective_gradient` of this attack's :meth:`objective` at ``x_adv``."""
        return objective_gradient(metric, x_adv, ref, self.objective, create_graph)


def keep_best(best_x: Optional[torch.Tensor], best_obj: Optional[torch.Tensor], x: torch.Tensor,
              obj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image, the iterate with the higher objective (``best_x`` may be ``None``: take ``x``).

    The result never shares memory with ``x`` (a caller may update ``x`` in place afterwards).
    When every image or none improved (always so for one image) the whole batch is copied or
    kept instead of selected elementwise: the same values without a full-size ``torch.where``.
    """
    if best_x is None or best_obj is None:
        return x.clone(), obj.clone()
    better = obj > best_obj
    if bool(better.all()):
        return x.clone(), obj.clone()
    if not bool(better.any()):
        return best_x, best_obj
    return torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, best_x), torch.where(better, obj, best_obj)


def take(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per image (dim 0), ``new`` where ``better`` else ``old``: ``torch.where`` over the batch, but
    ``new`` / ``old`` themselves (no copy) when every image or none is better."""
    if bool(better.all()):
        return new
    if not bool(better.any()):
        return old
    return torch.where(better.view(-1, *([1] * (new.dim() - 1))), new, old)


class BallAttack(GradientAttack):
    """A gradient attack that ascends inside the ``eps``-ball of ``self.restriction`` (L∞ or L2)
    from ``restarts`` starts, keeping each image's best iterate (PGD, APGD).

    Subclasses take ``eps``, ``random_start`` and ``restarts`` parameters, call
    :meth:`check_starts` in ``__init__`` and implement :meth:`ascend`.
    """

    @staticmethod
    def check_starts(random_start: object, restarts: int) -> None:
        """One-line errors for a non-boolean ``random_start`` or several restarts from ``x``."""
        if not isinstance(random_start, bool):
            raise InputError(f"random_start: expected True or False, got {random_start!r}")
        if restarts > 1 and not random_start:
            raise InputError(f"restarts={restarts} needs random_start=True (restarts from x are identical)")

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """``restarts`` runs of :meth:`ascend`; per image the best iterate of all runs.

        Args:
            metric: the metric to attack (in eval mode).
            x: clean images ``[B, 3, H, W]`` in [0, 1], detached.
            ref: reference images for FR metrics (never perturbed), else ``None``.
            generator: source of the random starts (``None``: a generator seeded with 0).

        Returns:
            ``[B, 3, H, W]`` within the budget of ``restriction`` around ``x``, in [0, 1].
        """
        return self.best_of_restarts(metric, x, ref, generator, self.ascend)

    @abstractmethod
    def ascend(self, metric: Metric, start: torch.Tensor, ref: Optional[torch.Tensor],
               ball: Ball) -> Tuple[torch.Tensor, torch.Tensor]:
        """One run from ``start``: ``(best iterate [B, 3, H, W], its objective [B])``."""

    def best_of_restarts(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
                         generator: Optional[torch.Generator],
                         ascend: Callable[[Metric, torch.Tensor, Optional[torch.Tensor], Ball],
                                          Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Per image, the best of ``self.restarts`` runs of ``ascend(metric, start, ref, ball)``.

        Each run starts at a random point of the ``eps``-ball of ``self.restriction`` (drawn from
        ``generator``) when ``self.random_start``, else at ``x``; ``ascend`` returns its best
        iterate and that iterate's objective.
        """
        gen, ball = seeded(generator), Ball(x, float(self.eps), self.restriction)
        best_x = best_obj = None
        for _ in range(self.restarts):
            start = ball.random_point(gen) if self.random_start else x.clone()
            run_x, run_obj = ascend(metric, start, ref, ball)
            best_x, best_obj = keep_best(best_x, best_obj, run_x, run_obj)
        return best_x
