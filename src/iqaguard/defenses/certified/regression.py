"""Probabilistic certificates of regression smoothing: RS-Reg (mean) and Cert-Reg (α-trimmed mean).

Rekavandi, Ohrimenko & Rubinstein, "RS-Reg: Probabilistic and Robust Certified Regression Through
Randomized Smoothing" (TMLR 2025), and Miri Rekavandi, Farokhi, Ohrimenko & Rubinstein,
"Certified Adversarial Robustness via Randomized α-Smoothing for Regression Models" (NeurIPS
2024), as FS-IQA (Related Work, Tables 1-2) compares them. Both certify a *radius*: within it the
smoothed output stays within ``tolerance`` of the base model's clean output ``f(x)`` with
probability at least ``p_valid`` over the smoothing noise. With ``e ~ N(0, σ² I)``:

* a noisy sample is *valid* when ``|f(x + e) - f(x)| < tolerance``; its probability ``p_A`` is
  bounded from below from ``n`` samples by Clopper–Pearson at level ``1 - alpha`` (``p̲_A``);
* by the Gaussian shift argument of randomized smoothing (Cohen et al. 2019, Lemma 4), at
  ``x + δ`` a sample is valid with probability at least ``Φ(Φ⁻¹(p̲_A) - ||δ||_2 / σ)``;
* the smoothed output of ``m`` samples is within the tolerance when few enough of its samples are
  invalid: ``k_max`` of them. ``p_s`` solves ``P(Binom(m, 1 - p_s) <= k_max) = p_valid`` (the
  per-sample validity needed), and the certified radius is ``R = σ (Φ⁻¹(p̲_A) - Φ⁻¹(p_s))``
  (abstain when ``R <= 0``).

``k_max``: **Cert-Reg** trims ``⌊α_t m⌋`` samples from each end, so with at most ``⌊α_t m⌋``
invalid samples every invalid one is trimmed and the trimmed mean is within the tolerance:
``k_max = ⌊α_t m⌋`` (the authors' code rounds ``α_t m`` to the nearest integer, which can exceed
what is trimmed; the floor is the sound count). **RS-Reg** averages all ``m`` samples of an output
bounded in ``[L, U]`` (the metric's bounds); it assumes, as the paper does for its bounded-output
certificate, that the valid samples' mean lies within ``tau < tolerance`` of ``f(x)``, so that
``k`` invalid samples, each at most ``U - f(x)`` (or ``f(x) - L``) away, keep the mean within the
tolerance when ``k <= m (tolerance - tau) / (D - tau)`` with ``D`` the larger of the two
distances: ``k_max`` is the floor of that (the authors' code takes the ceiling).

The Clopper–Pearson bound is the standard one of ``n_A`` successes (the authors' code solves
``P(Binom(n, p) > n_A) = alpha / 2``, the bound of ``n_A + 1`` successes, slightly optimistic).
"""
from __future__ import annotations

import abc
import math
from typing import Any, Optional

import numpy as np
import torch
from scipy import optimize, stats

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Generators, check_float, check_int
from .base import CertifiedScore, Smoothed
from .certificates import clopper_pearson_lower


def needed_validity(m: int, k_max: int, p_valid: float) -> float:
    """``p_s`` with ``P(Binom(m, 1 - p_s) <= k_max) = p_valid`` (1 when even ``p_s -> 1`` is not enough)."""
    if k_max >= m:
        return 0.0
    f = lambda p: stats.binom.cdf(k_max, m, 1.0 - p) - p_valid  # noqa: E731  (increasing in p)
    if f(1.0 - 1e-15) < 0:
        return 1.0
    if f(0.0) >= 0:
        return 0.0
    return float(optimize.brentq(f, 0.0, 1.0 - 1e-15, xtol=1e-14))


def radius(p_lower: float, p_s: float, sigma: float) -> float:
    """``σ (Φ⁻¹(p̲_A) - Φ⁻¹(p_s))`` (``-inf`` when ``p̲_A = 0`` or ``p_s = 1``)."""
    if p_lower <= 0.0 or p_s >= 1.0:
        return -math.inf
    return float(sigma * (stats.norm.ppf(min(p_lower, 1 - 1e-16)) - stats.norm.ppf(max(p_s, 1e-300))))


class _RegressionSmoothing(Smoothed):
    """Common part: validity counts, ``p̲_A``, ``p_s`` and the radius (subclasses give the statistic and ``k_max``)."""

    def __init__(self, metric: Any, tolerance: float = 0.05, p_valid: float = 0.9, m: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(metric, **kwargs)
        self.tolerance = check_float("tolerance", tolerance, 0.0, 1.0)  # as a fraction of diam(f)
        self.p_valid = check_float("p_valid", p_valid, 0.0, 1.0, low_open=True)
        if self.p_valid >= 1.0:
            raise InputError("p_valid: expected a probability below 1, e.g. 0.9")
        self.m = self.n if m is None else check_int("m", m, low=1)

    @property
    def params(self):
        return {**super().params, "tolerance": self.tolerance, "p_valid": self.p_valid, "m": self.m}

    @abc.abstractmethod
    def k_max(self, f_clean: float) -> int:
        """Invalid samples (of ``m``) the smoothed output tolerates, given the clean output ``f_clean``."""

    def certify_samples(self, x: torch.Tensor, ref: Optional[torch.Tensor], generator: Generators) -> CertifiedScore:
        with torch.no_grad():
            f = self.metric.score(x, ref).double()
        s = self.samples(x, self.n, ref, generator).double()
        tol = self.tolerance * self.bounds.diam
        n_valid = ((s - f.unsqueeze(1)).abs() < tol).sum(dim=1)
        p_low = clopper_pearson_lower(n_valid, self.n, self.alpha)
        radii = []
        for i in range(x.shape[0]):
            p_s = needed_validity(self.m, self.k_max(float(f[i])), self.p_valid)
            radii.append(radius(float(p_low[i]), p_s, self.sigma))
        r = torch.tensor(radii, dtype=torch.float64, device=x.device)
        abstain = ~(r > 0)
        inf = torch.full_like(f, math.inf)
        return CertifiedScore(self.statistic(s), torch.where(abstain, -inf, f - tol), torch.where(abstain, inf, f + tol),
                              abstain, radius=torch.where(abstain, torch.zeros_like(r), r), samples=self.n)


@DEFENSES.register("rs-reg")
class RSReg(_RegressionSmoothing):
    """RS-Reg: mean smoothing with the bounded-output probabilistic certificate (module docstring).

    Args:
        metric, preset, sigma, n, alpha, attack_samples, chunk, denoiser, generator: as
            :class:`~iqaguard.defenses.certified.ms.MedianSmoothing`.
        tolerance: the output tolerance as a fraction of the metric's range (default 0.05).
        p_valid: the probability of a valid smoothed output the radius guarantees (default 0.9).
        m: samples of the smoothed output the guarantee is about (default ``n``).
        tau: the assumed deviation of the valid samples' mean, as a fraction of the range, below
            ``tolerance`` (default ``tolerance / 2``).
    """

    def __init__(self, metric: Any, tau: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(metric, **kwargs)
        self.tau = self.tolerance / 2 if tau is None else check_float("tau", tau, 0.0, 1.0, low_open=False)
        if self.tau >= self.tolerance:
            raise InputError(f"tau: expected a value below tolerance {self.tolerance}, got {self.tau}")

    @property
    def params(self):
        return {**super().params, "tau": self.tau}

    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.mean(dim=1)

    def k_max(self, f_clean: float) -> int:
        b, diam = self.bounds, self.bounds.diam
        far = max(b.upper - f_clean, f_clean - b.lower, 0.0) / diam
        if far <= self.tau:
            return self.m
        return int(np.floor(self.m * (self.tolerance - self.tau) / (far - self.tau)))


@DEFENSES.register("cert-reg")
class CertReg(_RegressionSmoothing):
    """Cert-Reg: α-trimmed-mean smoothing with its probabilistic certificate (module docstring).

    Args:
        metric, preset, sigma, n, alpha, attack_samples, chunk, denoiser, generator, tolerance,
            p_valid, m: as :class:`RSReg`.
        trim: the trimmed fraction at each end, ``0 <= trim < 0.5`` (default 0.1).
    """

    def __init__(self, metric: Any, trim: float = 0.1, **kwargs: Any) -> None:
        super().__init__(metric, **kwargs)
        self.trim = check_float("trim", trim, 0.0, 0.4999, low_open=False)

    @property
    def params(self):
        return {**super().params, "trim": self.trim}

    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        n = samples.shape[1]
        k = int(self.trim * n)
        s = samples.sort(dim=1).values
        return s[:, k:n - k].mean(dim=1)

    def k_max(self, f_clean: float) -> int:
        return int(self.trim * self.m)
