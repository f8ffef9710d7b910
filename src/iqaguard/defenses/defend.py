"""``defend(metric, purification)``: a metric evaluated on purified inputs, ``f(P(x))``.

The result is itself a :class:`~iqaguard.metrics.base.Metric`, so attacks on it are *adaptive*
(Guardians of Image Quality §3.3: the attacker knows the defense). Its gradient with respect to ``x`` is

* exact when the purification is differentiable (autograd through ``P``);
* BPDA — Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, "Obfuscated
  gradients give a false sense of security", ICML 2018, §4.1) with the identity as the backward
  approximation of ``P`` — when it is not: the forward value is ``f(P(x))`` and the gradient is
  ``∇f`` evaluated at ``P(x)``;
* averaged by EOT — Expectation over Transformation (Athalye et al. 2018, §4.2; Athalye et al.,
  "Synthesizing robust adversarial examples", ICML 2018) — over ``eot_samples`` draws when it is
  randomized: the score is ``1/K Σ_k f(P_k(x))``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError
from ..metrics.base import Metric
from .base import Purification


class DefendedMetric(Metric):
    """``f(P(x))`` as a Metric (same kind, direction and bounds as ``f``); see :func:`defend`.

    The wrapped metric is a submodule, so ``.to(device)``, ``.eval()`` and ``.parameters()``
    reach it (and the purification too when it is itself an ``nn.Module``). Like every metric it
    is in eval mode from construction (the wrapped metric, as ``create()`` returns it, already is),
    and attacks on it run under :func:`iqaguard.metrics.base.frozen`: adaptive attacks never put
    the wrapped metric's BatchNorm layers in training mode nor change their statistics.
    """

    def __init__(self, metric: Metric, purification: Purification, eot_samples: int = 1,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.metric = metric
        self.purification = purification
        self.eot_samples = eot_samples
        self.generator = generator
        self.kind = metric.kind
        self.lower_better = metric.lower_better
        self.bounds = metric.bounds
        self.name = f"{metric.name}+{type(purification).__name__}"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of ``P(x)`` that carries the gradient rule of the module docstring.

        Args:
            x: ``[B, 3, H, W]`` in [0, 1] (may require grad).

        Returns:
            ``[B, 3, H, W]`` with the value of ``P(x)`` clamped to [0, 1]; its gradient is the
            exact one (differentiable ``P``) or the identity (BPDA).
        """
        p = self.purification
        if p.differentiable:
            return p.apply(x, self.generator).clamp(0, 1)
        with torch.no_grad():
            px = p.apply(x.detach(), self.generator).clamp(0, 1)
        if px.shape != x.shape:
            raise InputError(
                f"purification: BPDA (identity backward) needs {type(p).__name__} to keep the image shape "
                f"{list(x.shape)}, got {list(px.shape)}; declare it differentiable so gradients flow exactly"
            )
        # value exactly px (x - x.detach() is exactly 0), gradient d/dx = identity
        return px + (x - x.detach())

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B]`` scores ``f(P(x), ref)``, averaged over ``eot_samples`` draws if ``P`` is randomized.

        ``ref`` (FR metrics) is passed to ``f`` unpurified: the defense protects the input.
        """
        draws = self.eot_samples if self.purification.randomized else 1
        total = self.metric.score(self.purify(x), ref)
        for _ in range(draws - 1):
            total = total + self.metric.score(self.purify(x), ref)
        return total / draws

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, purification={self.purification!r}, eot_samples={self.eot_samples}"


def defend(metric: Metric, purification: Purification, eot_samples: int = 1,
           generator: Optional[torch.Generator] = None) -> DefendedMetric:
    """Wrap ``metric`` so that it scores purified inputs: ``defend(f, P)(x) = f(P(x))``.

    Args:
        metric: any iqaguard Metric (NR or FR).
        purification: a :class:`~iqaguard.defenses.base.Purification`.
        eot_samples: draws of a randomized purification averaged per call (EOT), >= 1; ignored
            (one draw) for deterministic purifications.
        generator: the ``torch.Generator`` a randomized purification draws from (successive
            calls continue its stream); ``None`` uses torch's global RNG.

    Returns:
        A :class:`DefendedMetric` named ``f"{metric.name}+{type(purification).__name__}"``.

    Raises:
        InputError: wrong argument types or ``eot_samples < 1``.

    Example:
        >>> dm = defend(metric, JPEG(q=50))
        >>> x_adv = IFGSM(preset="medium")(dm, x)   # adaptive attack through BPDA
    """
    if not isinstance(metric, Metric):
        raise InputError(f"metric: expected an iqaguard Metric, got {type(metric).__name__}")
    if not isinstance(purification, Purification):
        raise InputError(
            f"purification: expected an iqaguard Purification (e.g. iqaguard.defenses.create('jpeg')), "
            f"got {type(purification).__name__}"
        )
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise InputError(f"eot_samples: expected a positive integer, got {eot_samples!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return DefendedMetric(metric, purification, eot_samples, generator)
