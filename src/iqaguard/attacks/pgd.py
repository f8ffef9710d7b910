"""PGD: projected gradient ascent on the objective under an L∞ or L2 budget.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018: from a random point of the ε-ball around the image, repeat a steepest-ascent
step on the normalised objective ``sign · f(x') / diam(f)`` (Guardians of Image Quality §3.1) and a
projection back onto the ball and onto [0, 1]. Robustness as Architecture evaluates IQA models with
PGD at 1 and 8 iterations. The feasible set (:class:`~.budgets.Ball`) and the per-image best-iterate
bookkeeping (:func:`~.gradient.keep_best`) are shared with the other attacks.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import Ball, MAX_L2_EPS, Restriction, check_budget, check_count, check_norm_eps, linf_presets
from .gradient import BallAttack, keep_best


@ATTACKS.register("pgd")
class PGD(BallAttack):
    """PGD (Madry et al. 2018) raising the predicted quality within an L∞ or L2 ball.

    Distance measure: L∞ (default) or L2, chosen by ``norm``; an instance's ``restriction``
    follows it (the class attribute is L∞). Varied parameter (the presets): ``eps``, the L∞
    budgets of Guardians of Image Quality appendix A.3.4: ``weak`` ε = 2/255, ``medium`` 4/255,
    ``strong`` 8/255, each with 10 steps. Robustness as Architecture's PGD-1 and PGD-8 (step
    1/255) are ``PGD(eps=e, steps=1, alpha=1/255)`` and ``PGD(eps=e, steps=8, alpha=1/255)``.

    Each image keeps its best iterate: the one with the highest objective seen, the start included.

    Args:
        eps: budget on the [0, 1] scale (default 4/255). L∞: ``0 < eps <= 64/255`` (~0.251).
            L2 (the norm of an image's whole perturbation): ``0 < eps <= 10``.
        steps: number of gradient steps, >= 1 (default 10).
        alpha: step size; ``None`` (default) uses ``2.5 * eps / steps`` (Madry et al.'s rule).
            Plausible range ``0 < alpha <= 1`` (L∞) or ``<= 10`` (L2). L2 steps are
            ``alpha * g / ||g||_2`` per image, L∞ steps ``alpha * sign(g)``.
        norm: ``"linf"`` (default) or ``"l2"``.
        random_start: start from a random point of the ball drawn from ``generator`` (default
            True): uniform in the L∞ ball, or a random direction scaled by ``eps * U(0, 1)`` (L2).
        restarts: independent random starts, >= 1 (default 1); each image keeps its best result.
            More than one needs ``random_start=True``.
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape.

    Example:
        >>> x_adv = PGD(preset="medium")(metric, x, generator=torch.Generator().manual_seed(1))
        >>> x_adv = PGD(eps=0.5, norm="l2", steps=20)(metric, x)   # ||x_adv - x||_2 <= 0.5
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(steps=10)

    def __init__(self, eps: float = 4 / 255, steps: int = 10, alpha: Optional[float] = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1) -> None:
        self.restriction = check_norm_eps(norm, eps)
        check_count("steps", steps)
        check_count("restarts", restarts)
        if alpha is not None:
            upper = 1.0 if self.restriction is Restriction.LINF else MAX_L2_EPS
            check_budget("alpha", alpha, upper, f"{upper:g}", ", or None (2.5 * eps / steps)")
        self.check_starts(random_start, restarts)

    @property
    def step_size(self) -> float:
        """The step ``alpha`` actually used: ``alpha`` or ``2.5 * eps / steps``."""
        return float(self.alpha) if self.alpha is not None else 2.5 * float(self.eps) / self.steps

    def ascend(self, metric: Metric, x_adv: torch.Tensor, ref: Optional[torch.Tensor],
                ball: Ball) -> Tuple[torch.Tensor, torch.Tensor]:
        """``steps`` projected steps from ``x_adv``: ``(best iterate, its objective)`` per image."""
        best_x = best_obj = None
        step = self.step_size
        for _ in range(self.steps):
            obj, grad = self.gradient(metric, x_adv, ref)
            best_x, best_obj = keep_best(best_x, best_obj, x_adv, obj)
            if ball.norm is Restriction.LINF:  # ball.project(x_adv + step * sign(grad)), in one new tensor
                lo, hi = ball.box
                z = torch.add(x_adv, torch.sign(grad, out=grad), alpha=step)  # step * ±1 is exact
                x_adv = torch.minimum(torch.maximum(z, lo, out=z), hi, out=z)
            else:
                x_adv = ball.project(x_adv + step * ball.direction(grad))
        with torch.no_grad():
            return keep_best(best_x, best_obj, x_adv, self.objective(metric, x_adv, ref))
