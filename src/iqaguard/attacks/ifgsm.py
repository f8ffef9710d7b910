"""I-FGSM: the iterative fast gradient sign method under an L∞ budget.

Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR workshop 2017
(the "basic iterative method"), used on IQA metrics by Guardians of Image Quality (§3.2, Table 7): each step moves
every pixel by ``alpha`` in the sign direction of the gradient of the normalised objective
``sign · f(x') / diam(f)`` (Guardians of Image Quality §3.1, eq. 1) and projects back onto the ε-ball around the
original image and onto the valid range [0, 1].
"""
from __future__ import annotations

from typing import Optional

import torch

from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import Restriction, check_budget, check_count, check_linf_eps, linf_box, linf_presets, project_linf
from .gradient import GradientAttack



@ATTACKS.register("ifgsm")
class IFGSM(GradientAttack):
    """I-FGSM (Kurakin et al. 2017) raising the predicted quality within an L∞ ball.

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the budgets of Guardians of
    Image Quality appendix A.3.4: ``weak`` ε = 2/255, ``medium`` 4/255, ``strong`` 8/255, each with
    10 steps.

    Args:
        eps: L∞ budget on the [0, 1] scale (default 4/255); plausible range
            ``0 < eps <= 64/255`` (~0.251, eight times Guardians of Image Quality's largest budget 8/255).
        steps: number of iterations, >= 1 (default 10).
        alpha: step size on the [0, 1] scale; ``None`` uses ``eps / steps``, so that the last
            step can exactly reach the ball's surface and no step is wasted beyond it.
            Plausible range ``0 < alpha <= 1``: a step above ``eps`` is allowed (the projection
            clips it onto the ball, as in one-step FGSM), one above the whole range is not.
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Budgets outside these ranges raise :class:`~iqaguard.errors.InputError` with a one-line
    message; 0, negative, NaN and infinite values are rejected, and a value in ``[1, 255]``
    (e.g. ``eps=4``) is taken as the 0..255 scale and the message suggests ``eps=4/255``.
    The check runs in the constructor, so ``attacks.create`` and benchmark spec ``kwargs``
    (built by the worker through the registry) get it too.

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape.

    Example:
        >>> x_adv = IFGSM(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(steps=10)

    def __init__(self, eps: float = 4 / 255, steps: int = 10, alpha: Optional[float] = None) -> None:
        check_linf_eps(eps)
        check_count("steps", steps)
        if alpha is not None:
            check_budget("alpha", alpha, 1.0, "1 (the whole range)", ", or None (eps / steps)")

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
        box = linf_box(x, float(self.eps))
        x_adv = x.clone()
        for _ in range(self.steps):
            _, grad = self.gradient(metric, x_adv, ref)
            x_adv = project_linf(x_adv + self.step_size * grad.sign(), box)
        return x_adv
