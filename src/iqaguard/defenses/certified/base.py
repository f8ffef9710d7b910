"""Smoothed metrics: the base of the certified defenses (DESIGN.md §Defense).

``c = iqaguard.defenses.create("ms", metric=m, sigma=0.12, eps=0.05, n=1000, alpha=0.001)`` is a
:class:`~iqaguard.metrics.base.Metric` (same kind, direction and bounds as ``m``) with

* ``c.predict(x, ref=None, generator=None)`` -> ``[B]`` smoothed scores (``N`` noise samples);
* ``c.certify(x, ref=None, generator=None)`` -> :class:`CertifiedScore` of ``[B]`` tensors;
* ``c(x)`` / ``c.score(x)``: :meth:`predict` when gradients are off (what the benchmark scores);
  under autograd (an attack on the smoothed metric) the smoothing statistic of
  ``attack_samples`` fresh draws, differentiable through the metric: Expectation over
  Transformation over the noise (Athalye et al., ICML 2018, §4.2).

Presets (``preset=i``): Guardians of Image Quality appendix A.3.5 (σ = 0.12, ε = 0.05, N = 1000,
α = 0.001), then FS-IQA §4's σ ∈ {0.1, 0.25, 0.5} with N = 2000 and confidence 0.999. σ and ε are
on the [0, 1] pixel scale, in the L2 norm over all ``3·H·W`` values.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Dict, List, Optional

import torch

from ...errors import InputError
from ...metrics.base import Metric, frozen
from ..base import Generators, check_float, check_int, preset_entry
from .certificates import check_alpha
from .sampler import noisy_scores

PRESETS: List[Dict[str, Any]] = [
    {"sigma": 0.12, "n": 1000, "eps": 0.05, "alpha": 0.001},
    {"sigma": 0.1, "n": 2000, "eps": 0.1, "alpha": 0.001},
    {"sigma": 0.25, "n": 2000, "eps": 0.25, "alpha": 0.001},
    {"sigma": 0.5, "n": 2000, "eps": 0.5, "alpha": 0.001},
]


@dataclass
class CertifiedScore:
    """What :meth:`Smoothed.certify` returns, every field ``[B]`` (float64 / bool).

    Attributes:
        score: the smoothed score.
        lower, upper: the certified interval: for every perturbation within ``radius`` (or
            ``eps``) in L2, the smoothed score stays in ``[lower, upper]`` with probability at
            least ``1 - alpha`` over the sampling (``-inf`` / ``+inf`` where the samples
            cannot bound it).
        abstain: no certificate for that image (its ``lower``/``upper`` are ``-inf``/``+inf``).
        radius: certified L2 radius (classification-based smoothing); ``None`` otherwise.
        eps: the L2 perturbation size the interval is certified for (regression smoothing).
        samples: noise samples spent per image.
    """

    score: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    abstain: torch.Tensor
    radius: Optional[torch.Tensor] = None
    eps: Optional[torch.Tensor] = None
    samples: int = 0

    def as_rows(self) -> List[Dict[str, Any]]:
        """One plain dict per image (floats, bools; ``None`` for absent fields)."""
        b = self.score.shape[0]
        out = []
        for i in range(b):
            row: Dict[str, Any] = {}
            for f in fields(self):
                v = getattr(self, f.name)
                row[f.name] = v if not isinstance(v, torch.Tensor) else (
                    bool(v[i]) if v.dtype == torch.bool else float(v[i]))
            out.append(row)
        return out


class Smoothed(Metric):
    """A metric smoothed by Gaussian input noise (see the module docstring).

    Subclasses implement :meth:`statistic` (the smoothed value of ``[B, N]`` sample scores,
    differentiable) and :meth:`certify_samples`, and may set ``denoised = True`` (a denoiser runs
    on every noisy sample before the metric: DRS, DMS, DMS-IQA).
    """

    presets: ClassVar[List[Dict[str, Any]]] = PRESETS
    #: a denoiser runs before the metric (the ``denoiser`` argument is required or shipped)
    denoised: ClassVar[bool] = False

    def __init__(self, metric: Metric, preset: Optional[int] = None, sigma: Optional[float] = None,
                 n: Optional[int] = None, eps: Optional[float] = None, alpha: Optional[float] = None,
                 attack_samples: int = 16, chunk: Optional[int] = None,
                 denoiser: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if not isinstance(metric, Metric):
            raise InputError(f"metric: expected an iqaguard Metric (iqaguard.metrics.create(...)), got "
                             f"{type(metric).__name__}")
        base = {**self.presets[0], **preset_entry(self.presets, preset)}
        given = {"sigma": sigma, "n": n, "eps": eps, "alpha": alpha}
        base.update({k: v for k, v in given.items() if v is not None})
        self.sigma = check_float("sigma", base["sigma"], 0.0, 10.0)
        self.n = check_int("n", base["n"], low=1)
        self.eps = check_float("eps", base["eps"], 0.0, 100.0)
        self.alpha = check_alpha(base["alpha"])
        self.attack_samples = check_int("attack_samples", attack_samples, low=1)
        self.chunk = None if chunk is None else check_int("chunk", chunk, low=1)
        if self.denoised and denoiser is None:
            denoiser = self.default_denoiser(metric)
        if denoiser is not None and not callable(denoiser):
            raise InputError(f"denoiser: expected a callable image -> image (e.g. a purification), got "
                             f"{type(denoiser).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        self.metric, self.denoiser, self.generator = metric, denoiser, generator
        self.preset = preset
        self.kind, self.lower_better, self.bounds = metric.kind, metric.lower_better, metric.bounds
        self.min_size = metric.min_size
        self.name = f"{metric.name}+{type(self).__name__}"

    @property
    def params(self) -> Dict[str, Any]:
        """The smoothing parameters (stored with benchmark rows)."""
        return {"sigma": self.sigma, "n": self.n, "eps": self.eps, "alpha": self.alpha,
                "attack_samples": self.attack_samples, "denoiser": None if self.denoiser is None
                else getattr(self.denoiser, "name", type(self.denoiser).__name__)}

    def default_denoiser(self, metric: Metric) -> Callable[[torch.Tensor], torch.Tensor]:
        """The denoiser of a denoised variant of ``metric`` when none is given: the shipped DnCNN
        (:mod:`iqaguard.defenses.certified.denoiser`; ``MissingWeightsError`` without its file)."""
        from .denoiser import load_denoiser

        return load_denoiser()

    # ------------------------------------------------------------------ sampling
    def samples(self, x: torch.Tensor, n: int, ref: Optional[torch.Tensor] = None,
                generator: Generators = None) -> torch.Tensor:
        """``[B, n]`` scores of noisy copies (:func:`~iqaguard.defenses.certified.sampler.noisy_scores`)."""
        with frozen(self.metric):
            return noisy_scores(self.metric, x, self.sigma, n, generator, ref, self.chunk, self.denoiser)

    # ------------------------------------------------------------------ public API
    @abc.abstractmethod
    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        """``[B]`` smoothed value of ``[B, N]`` sample scores (differentiable)."""

    @abc.abstractmethod
    def certify_samples(self, x: torch.Tensor, ref: Optional[torch.Tensor], generator: Generators) -> CertifiedScore:
        """The certificate of validated inputs (subclasses)."""

    def predict(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None, generator: Generators = None) -> torch.Tensor:
        """``[B]`` smoothed scores from :attr:`n` samples (no certification work)."""
        self.check_inputs(x, ref)
        with torch.no_grad():
            return self.statistic(self.samples(x, self.n, ref, generator)).to(torch.float32)

    def certify(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None, generator: Generators = None) -> CertifiedScore:
        """The certified score of every image (see :class:`CertifiedScore`)."""
        self.check_inputs(x, ref)
        with torch.no_grad():
            return self.certify_samples(x, ref, generator)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`predict` without autograd; under autograd the EOT estimate of ``attack_samples`` draws."""
        if not torch.is_grad_enabled():
            return self.statistic(self.samples(x, self.n, ref, self.generator)).to(torch.float32)
        return self.statistic(self.samples(x, self.attack_samples, ref, self.generator)).to(torch.float32)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())
