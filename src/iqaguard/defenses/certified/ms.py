"""Median smoothing (MS) and denoised median smoothing (DMS) of an IQA metric.

Chiang, Curry, Abdelkader, Kumar, Dickerson & Goldstein, "Detection as Regression: Certified
Object Detection by Median Smoothing" (NeurIPS 2020): the smoothed score is the median of
``f(x + e)``, ``e ~ N(0, σ² I)``; for every ``||δ||_2 <= ε`` it stays between the ``Φ(-ε/σ)`` and
``Φ(ε/σ)`` percentiles of the samples, bounded from ``N`` samples by order statistics
(:func:`iqaguard.defenses.certified.certificates.median_interval`). DMS puts a denoiser between the
noise and the metric (Chiang et al. §5; FS-IQA, Related Work). Used on IQA metrics by Guardians
of Image Quality (appendix A.3.5, Table 3) and FS-IQA (Tables 1-2).
"""
from __future__ import annotations

from typing import Optional

import torch

from ...registry import DEFENSES
from ..base import Generators
from .base import CertifiedScore, Smoothed
from .certificates import median_interval, sample_median


@DEFENSES.register("ms")
class MedianSmoothing(Smoothed):
    """Median smoothing: ``score = median f(x + e)``, interval certified for ``||δ||_2 <= eps``.

    Args:
        metric: the base metric (NR or FR; the reference is not noised).
        preset: index into :data:`iqaguard.defenses.certified.base.PRESETS`.
        sigma: noise level on the [0, 1] scale (default 0.12).
        n: noise samples (default 1000).
        eps: the L2 perturbation the interval is certified for (default 0.05).
        alpha: failure probability of each bound (default 0.001).
        attack_samples: draws per call under autograd (EOT attacks), default 16.
        chunk: samples per image per forward (default: a 256 MB noise budget).
        denoiser: callable applied to the noisy images before the metric (DMS).
        generator: the generator of :meth:`score` (``predict``/``certify`` take their own).

    Example:
        >>> c = MedianSmoothing(metric=m, sigma=0.12, eps=0.05)
        >>> r = c.certify(x, generator=torch.Generator().manual_seed(0))
        >>> r.lower <= r.score <= r.upper
    """

    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        return sample_median(samples)

    def certify_samples(self, x: torch.Tensor, ref: Optional[torch.Tensor], generator: Generators) -> CertifiedScore:
        s = self.samples(x, self.n, ref, generator).double()
        lower, upper = median_interval(s, self.sigma, self.eps, self.alpha)
        abstain = torch.isinf(lower) | torch.isinf(upper)
        eps = torch.full_like(lower, self.eps)
        return CertifiedScore(sample_median(s), lower, upper, abstain, eps=eps, samples=self.n)


@DEFENSES.register("dms")
class DenoisedMedianSmoothing(MedianSmoothing):
    """Median smoothing with a denoiser before the metric (DMS); ``denoiser`` is required here.

    The denoiser sees the noisy image ``x + e`` and returns an image for the metric; the
    certificate is that of median smoothing of the composite ``f ∘ D`` (Chiang et al. §5).
    """

    denoised = True
