"""Randomized smoothing of a binned score (RS) and its denoised variant (DRS).

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML
2019), applied to IQA metrics as Guardians of Image Quality appendix A.3.5 does (Table 9): the
score is binned into ordered classes over the metric's bounds — ``bins`` equal classes inside
(10 by default, Table 9's choice) plus one below and one above — and the smoothed classifier is
certified by Cohen et al.'s CERTIFY: ``n0`` selection samples choose the class ``ĉ``, ``n``
estimation samples bound its probability from below by Clopper–Pearson at level ``1 - alpha``,
it abstains when that bound is at most 1/2 and is otherwise certified within
``R = σ Φ⁻¹(p̲_A)``. The score is ``ĉ``'s bin centre and the certified interval its bin edges.
DRS (Salman, Sun, Yang, Kapoor & Kolter, "Denoised Smoothing: A Provable Defense for
Pretrained Classifiers", NeurIPS 2020) puts a denoiser before the metric.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...registry import DEFENSES
from ..base import Generators, check_int
from .base import CertifiedScore, Smoothed
from .certificates import bin_edges, class_interval, class_value, classes, clopper_pearson_lower, counts, rs_radius


@DEFENSES.register("rs")
class RandomizedSmoothing(Smoothed):
    """Randomized smoothing of the binned score (see the module docstring).

    Args:
        metric, preset, sigma, n, alpha, attack_samples, chunk, denoiser, generator: as
            :class:`~iqaguard.defenses.certified.ms.MedianSmoothing` (``eps`` is unused: the
            radius is what RS certifies).
        bins: classes inside the metric's bounds (default 10).
        n0: selection samples (default 100, Cohen et al.'s).

    ``score`` under autograd (attacks on the smoothed metric): the value is the smoothed class's
    bin centre, the gradient that of the mean of ``f(x + e)`` over ``attack_samples`` draws (a
    straight-through estimate: the vote itself has no gradient).
    """

    def __init__(self, metric: Any, bins: int = 10, n0: int = 100, **kwargs: Any) -> None:
        super().__init__(metric, **kwargs)
        self.bins = check_int("bins", bins, low=1)
        self.n0 = check_int("n0", n0, low=1)
        self.edges = bin_edges(self.bounds.lower, self.bounds.upper, self.bins)

    @property
    def params(self):
        return {**super().params, "bins": self.bins, "n0": self.n0}

    def _vote(self, samples: torch.Tensor) -> torch.Tensor:
        """``[B]`` class with most samples (ties: the lowest class)."""
        return counts(classes(samples, self.edges), self.bins + 2).argmax(dim=1)

    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        value = class_value(self._vote(samples), self.edges).to(samples.dtype)
        mean = samples.mean(dim=1)
        return value + (mean - mean.detach())  # value exact, gradient of the mean (EOT)

    def certify_samples(self, x: torch.Tensor, ref: Optional[torch.Tensor], generator: Generators) -> CertifiedScore:
        c_hat = self._vote(self.samples(x, self.n0, ref, generator))
        est = classes(self.samples(x, self.n, ref, generator), self.edges)
        n_a = (est == c_hat.unsqueeze(1)).sum(dim=1)
        p_lower = clopper_pearson_lower(n_a, self.n, self.alpha)
        radius, abstain = rs_radius(p_lower, self.sigma)
        low, high = class_interval(c_hat, self.edges)
        inf = torch.full_like(low, float("inf"))
        return CertifiedScore(class_value(c_hat, self.edges), torch.where(abstain, -inf, low),
                              torch.where(abstain, inf, high), abstain, radius=radius, samples=self.n0 + self.n)


@DEFENSES.register("drs")
class DenoisedRandomizedSmoothing(RandomizedSmoothing):
    """Randomized smoothing with a denoiser before the metric (DRS, Salman et al. 2020)."""

    denoised = True
