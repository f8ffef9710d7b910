"""I-FGSM: the iterative fast gradient sign method under an L∞ budget.

Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR workshop 2017
(the "basic iterative method"), used on IQA metrics by Guardians of Image Quality (§3.2, Table 7): each step moves
every pixel by ``alpha`` in the sign direction of the gradient of the normalised objective
``sign · f(x') / diam(f)`` (Guardians of Image Quality §3.1, eq. 1) and projects back onto the ε-ball around the
original image and onto the valid range [0, 1].
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .base import MAX_LINF_EPS, Attack, check_budget, linf_box


@ATTACKS.register("ifgsm")
class IFGSM(Attack):
    """I-FGSM (Kurakin et al. 2017) raising the predicted quality within an L∞ ball.

    Presets follow the L∞ budgets of Guardians of Image Quality appendix A.3.4: ``weak`` ε = 2/255, ``medium``
    4/255, ``strong`` 8/255, each with 10 steps.

    Args:
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (overridden by explicit kwargs).
        eps: L∞ budget on the [0, 1] scale (default 4/255); plausible range
            ``0 < eps <= 64/255`` (~0.251, eight times Guardians of Image Quality's largest budget 8/255).
        steps: number of iterations, >= 1 (default 10).
        alpha: step size on the [0, 1] scale; ``None`` uses ``eps / steps``, so that the last
            step can exactly reach the ball's surface and no step is wasted beyond it.
            Plausible range ``0 < alpha <= 1``: a step above ``eps`` is allowed (the projection
            clips it onto the ball, as in one-step FGSM), one above the whole range is not.

    Budgets outside these ranges raise :class:`~iqaguard.errors.InputError` with a one-line
    message; 0, negative, NaN and infinite values are rejected, and a value in ``[1, 255]``
    (e.g. ``eps=4``) is taken as the 0..255 scale and the message suggests ``eps=4/255``.
    The check runs in the constructor, so ``attacks.create`` and benchmark spec ``kwargs``
    (built by the worker through the registry) get it too.

    Example:
        >>> x_adv = IFGSM(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = "linf"
    presets = {
        "weak": {"eps": 2 / 255, "steps": 10},
        "medium": {"eps": 4 / 255, "steps": 10},
        "strong": {"eps": 8 / 255, "steps": 10},
    }
    defaults = {"eps": 4 / 255, "steps": 10, "alpha": None}

    def __init__(self, preset: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        check_budget("eps", self.eps, MAX_LINF_EPS, "0.251 (64/255)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InputError(f"steps: expected a positive integer number of iterations, got {self.steps!r}")
        if self.alpha is not None:
            check_budget("alpha", self.alpha, 1.0, "1 (the whole range)", ", or None (eps / steps)")

    @property
    def step_size(self) -> float:
        """The step ``alpha`` actually used: ``alpha`` or ``eps / steps``."""
        return float(self.alpha) if self.alpha is not None else float(self.eps) / self.steps

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Run ``steps`` signed-gradient ascent steps from ``x`` (validated by ``__call__``).

        Args:
            metric: the metric to attack (in eval mode); its parameters' ``.grad`` stay untouched.
            x: clean images ``[B, 3, H, W]`` in [0, 1], detached.
            ref: reference images for FR metrics (never perturbed), else ``None``.
            generator: unused (I-FGSM is deterministic).

        Returns:
            ``[B, 3, H, W]`` with ``||x_adv - x||_inf <= eps`` and values in [0, 1].
        """
        eps, alpha = float(self.eps), self.step_size
        lo, hi = linf_box(x, eps)
        x_adv = x.clone()
        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                total = self.objective(metric, x_adv, ref).sum()
                if not total.requires_grad:
                    raise InputError(
                        f"metric: {metric.name!r} is not differentiable with respect to x; use a "
                        "differentiable metric or wrap non-differentiable preprocessing with iqaguard.defend()"
                    )
                (grad,) = torch.autograd.grad(total, x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), lo), hi)
        return x_adv
