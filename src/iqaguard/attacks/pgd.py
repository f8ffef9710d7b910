"""PGD: projected gradient ascent on the objective under an L∞ or L2 budget.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018: from a random point of the ε-ball around the image, repeat a steepest-ascent
step on the normalised objective ``sign · f(x') / diam(f)`` (Guardians of Image Quality §3.1) and a
projection back onto the ball and onto [0, 1]. Robustness as Architecture evaluates IQA models with
PGD at 1 and 8 iterations. The feasible set (:class:`Ball`) and the per-image best-iterate
bookkeeping (:func:`keep_best`) are shared with APGD (:mod:`.apgd`).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .budgets import (MAX_LINF_EPS, PRESET_BUDGETS, Restriction, check_budget, check_count, linf_box, measure,
                      project_l2, project_linf)
from .gradient import GradientAttack

_LINF = PRESET_BUDGETS[Restriction.LINF]

#: the largest plausible L2 budget (norm of the whole perturbation on the [0, 1] scale): 10.0, the
#: L2 norm of a 4/255 perturbation on every value of a ~512x384 RGB image
MAX_L2_EPS = 10.0


def check_norm_eps(norm: Any, eps: Any) -> Restriction:
    """The restriction named by ``norm`` (``"linf"`` | ``"l2"``) after checking ``eps`` against it."""
    if norm not in (Restriction.LINF, Restriction.L2):
        raise InputError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    r = Restriction(norm)
    if r is Restriction.LINF:
        check_budget("eps", eps, MAX_LINF_EPS, "0.251 (64/255)")
    else:
        check_budget("eps", eps, MAX_L2_EPS, "10 (an L2 norm over the whole image)")
    return r


def default_generator(generator: Optional[torch.Generator]) -> torch.Generator:
    """``generator``, or a CPU generator seeded with 0 (deterministic results by default)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


class Ball:
    """The feasible set of a batch: the L∞ or L2 ball of radius ``eps`` around each image, in [0, 1].

    Args:
        x: clean images ``[B, 3, H, W]`` in [0, 1].
        eps: the budget (L∞: per value; L2: norm of the whole perturbation of an image).
        norm: ``Restriction.LINF`` or ``Restriction.L2``.
    """

    def __init__(self, x: torch.Tensor, eps: float, norm: Restriction) -> None:
        self.x, self.eps, self.norm = x, float(eps), Restriction(norm)
        self.box = linf_box(x, self.eps) if self.norm is Restriction.LINF else None

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (self.x.dim() - 1)))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` projected onto the set; the budget holds exactly as :func:`~.budgets.measure` computes it."""
        if self.norm is Restriction.LINF:
            return project_linf(z, self.box)
        out = project_l2(z, self.x, self.eps)
        for _ in range(64):  # float rounding of x + d can overshoot eps by ~1e-7: shrink those images
            m = measure(Restriction.L2, out, self.x)
            over = m > self.eps
            if not bool(over.any()):
                return out
            shrink = torch.where(over, self.eps / m.clamp_min(1e-300) * (1 - 1e-6), torch.ones_like(m))
            fixed = (self.x + (out - self.x) * self._view(shrink).to(out.dtype)).clamp(0.0, 1.0)
            out = torch.where(self._view(over), fixed, out)
        raise RuntimeError(f"Ball.project: could not fit the L2 budget eps={self.eps!r} in {out.dtype}")

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit norm: ``sign(g)`` (L∞) or ``g / ||g||_2`` per image (L2)."""
        if self.norm is Restriction.LINF:
            return g.sign()
        return g / self._view(g.flatten(1).norm(dim=1).clamp_min(1e-12))

    def random_point(self, generator: torch.Generator) -> torch.Tensor:
        """A random point of the set: uniform in the L∞ ball, or a uniformly scaled random direction (L2).

        Random numbers are drawn on the generator's device and moved to the images' device.
        """
        shape, dev = self.x.shape, generator.device
        if self.norm is Restriction.LINF:
            u = torch.rand(shape, generator=generator, device=dev) * 2 - 1
            return self.project(self.x + self.eps * u.to(self.x))
        d = torch.randn(shape, generator=generator, device=dev)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        r = torch.rand(shape[0], generator=generator, device=dev).view(-1, 1, 1, 1)
        return self.project(self.x + (self.eps * r * d).to(self.x))


def keep_best(best_x: Optional[torch.Tensor], best_obj: Optional[torch.Tensor], x: torch.Tensor,
              obj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image, the iterate with the higher objective (``best_x`` may be ``None``: take ``x``)."""
    if best_x is None or best_obj is None:
        return x.clone(), obj.clone()
    better = obj > best_obj
    return torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, best_x), torch.where(better, obj, best_obj)


@ATTACKS.register("pgd")
class PGD(GradientAttack):
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
    presets = {name: {"eps": eps, "steps": 10} for name, eps in _LINF.items()}

    def __init__(self, eps: float = 4 / 255, steps: int = 10, alpha: Optional[float] = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1) -> None:
        self.restriction = check_norm_eps(norm, eps)
        check_count("steps", steps)
        check_count("restarts", restarts)
        if alpha is not None:
            upper = 1.0 if self.restriction is Restriction.LINF else MAX_L2_EPS
            check_budget("alpha", alpha, upper, f"{upper:g}", ", or None (2.5 * eps / steps)")
        if not isinstance(random_start, bool):
            raise InputError(f"random_start: expected True or False, got {random_start!r}")
        if restarts > 1 and not random_start:
            raise InputError(f"restarts={restarts} needs random_start=True (restarts from x are identical)")

    @property
    def step_size(self) -> float:
        """The step ``alpha`` actually used: ``alpha`` or ``2.5 * eps / steps``."""
        return float(self.alpha) if self.alpha is not None else 2.5 * float(self.eps) / self.steps

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """``restarts`` runs of ``steps`` projected steps; per image the best iterate of all runs.

        Args:
            metric: the metric to attack (in eval mode).
            x: clean images ``[B, 3, H, W]`` in [0, 1], detached.
            ref: reference images for FR metrics (never perturbed), else ``None``.
            generator: source of the random starts (``None``: a generator seeded with 0).

        Returns:
            ``[B, 3, H, W]`` within the budget of ``restriction`` around ``x``, in [0, 1].
        """
        gen, ball = default_generator(generator), Ball(x, float(self.eps), self.restriction)
        best_x = best_obj = None
        for _ in range(self.restarts):
            x_adv = ball.random_point(gen) if self.random_start else x.clone()
            for _ in range(self.steps):
                obj, grad = self.gradient(metric, x_adv, ref)
                best_x, best_obj = keep_best(best_x, best_obj, x_adv, obj)
                x_adv = ball.project(x_adv + self.step_size * ball.direction(grad))
            with torch.no_grad():
                best_x, best_obj = keep_best(best_x, best_obj, x_adv, self.objective(metric, x_adv, ref))
        return best_x
