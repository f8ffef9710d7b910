"""``defend(metric, purification)``: a metric evaluated on purified inputs, ``f(P(x))``.

The result is itself a :class:`~iqaguard.metrics.base.Metric`, so attacks on it are *adaptive*
(Guardians of Image Quality §3.3: the attacker knows the defense). Its gradient with respect to ``x`` is

* exact when the purification is differentiable (autograd through ``P``);
* BPDA — Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, "Obfuscated
  Gradients Give a False Sense of Security", ICML 2018, §4.1) — when it is not: the forward
  value is ``f(P(x))`` and the backward pass differentiates ``f(S(x))`` at the same point, where
  ``S = P.surrogate()`` is the defense's differentiable approximation (JPEG's is DiffJPEG at the
  same quality) or, when it has none, the identity (then the gradient is ``∇f`` evaluated at
  ``P(x)``);
* averaged by EOT — Expectation over Transformation (Athalye et al. 2018, §4.2; Athalye et al.,
  "Synthesizing robust adversarial examples", ICML 2018) — over ``eot_samples`` draws when it is
  randomized: the score is ``1/K Σ_k f(P_k(x))``; a randomized defense's surrogate sees the same
  draw ``k`` as the defense.

Size changes: the metric scores ``P(x)`` at the size ``P`` returns (``resize`` shrinks on
purpose); a purified image below the metric's ``min_size`` raises one ``InputError``. The identity
BPDA needs ``P`` to keep the size; a surrogate must return ``P``'s size.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError
from ..metrics.base import Metric
from .base import Purification


def _snapshot(generator: Optional[torch.Generator]) -> torch.Tensor:
    """The state of ``generator`` (torch's global CPU generator for ``None``) before a draw."""
    return generator.get_state() if generator is not None else torch.random.get_rng_state()


def _replayed(generator: Optional[torch.Generator], state: torch.Tensor) -> torch.Generator:
    """A new generator in ``state`` on ``generator``'s device: the surrogate replays the defense's draws
    while ``generator`` itself continues after them."""
    dev = generator.device if generator is not None else torch.device("cpu")
    g = torch.Generator(device=dev)
    g.set_state(state)
    return g


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
            ``[B, 3, H', W']`` (``P.output_size(H, W)``) with the value of ``P(x)`` clamped to [0, 1];
            its gradient is the exact one (differentiable ``P``), the surrogate's or the identity (BPDA).

        Raises:
            InputError: an input or a purified image too small for ``P`` or for the metric, or an
                identity BPDA of a size-changing ``P``.
        """
        p, g = self.purification, self.generator
        p.check_input(x, g)
        if p.differentiable:
            px = p.apply(x, g).clamp(0, 1)
        else:
            s = p.surrogate()
            replay = _snapshot(g) if s is not None and p.randomized else None
            with torch.no_grad():
                px = p.apply(x.detach(), g).clamp(0, 1)
            if s is None:
                if px.shape != x.shape:
                    raise InputError(
                        f"purification: BPDA with the identity needs {type(p).__name__} to keep the image shape "
                        f"{list(x.shape)}, got {list(px.shape)}; give it a surrogate() or declare it differentiable"
                    )
                # value exactly px (x - x.detach() is exactly 0), gradient d/dx = identity
                px = px + (x - x.detach())
            else:
                sx = s.apply(x, _replayed(g, replay)).clamp(0, 1) if replay is not None else s.apply(x, g).clamp(0, 1)
                if sx.shape != px.shape:
                    raise InputError(
                        f"purification: the surrogate {s!r} of {type(p).__name__} returns {list(sx.shape)}, "
                        f"the defense {list(px.shape)}; a surrogate must keep the defense's output size"
                    )
                # value exactly px, gradient d/dx of the surrogate
                px = px + (sx - sx.detach())
        h, w = px.shape[-2:]
        if min(h, w) < int(self.metric.min_size):
            raise InputError(
                f"x: {p!r} turns {x.shape[-2]}x{x.shape[-1]} images into {h}x{w}, below {self.metric.name}'s "
                f"minimum {self.metric.min_size}x{self.metric.min_size}; use a weaker preset or larger images"
            )
        return px

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
