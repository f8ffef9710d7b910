"""Certificates of randomized smoothing: the exact order-statistic and binomial arithmetic.

Everything here is a pure function of sample scores (``[B, N]`` tensors) and the smoothing
parameters; the sampler (:mod:`iqaguard.defenses.certified.sampler`) produces the samples.

* **Classification-based** (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
  Randomized Smoothing", ICML 2019, Algorithm CERTIFY and Theorem 1), applied to IQA as
  Guardians of Image Quality appendix A.3.5 does: the score is binned into ordered classes over
  the metric's bounds (``bins`` inside plus one below and one above); the class ``ĉ`` with most of
  the ``N0`` selection samples is taken, its count ``n_A`` among ``N`` fresh samples gives the
  one-sided Clopper–Pearson lower bound ``p̲_A = Beta.ppf(α; n_A, N - n_A + 1)``, the smoothed
  classifier abstains when ``p̲_A <= 1/2`` and is otherwise certified within the L2 radius
  ``R = σ Φ⁻¹(p̲_A)``: inside it the smoothed score stays in the bin of ``ĉ``.
* **Median smoothing** (Chiang, Curry, Abdelkader, Kumar, Dickerson & Goldstein, "Detection as
  Regression: Certified Object Detection by Median Smoothing", NeurIPS 2020, Theorem 1 and its
  empirical version): for ``||δ||_2 <= ε`` the median of ``f(x + δ + e)`` lies between the
  ``p_l = Φ(-ε/σ)`` and ``p_u = Φ(ε/σ)`` percentiles of ``f(x + e)``. From ``N`` sorted samples
  ``y_(1) <= ... <= y_(N)`` the bounds are ``y_(q_l)`` and ``y_(q_u)`` with the **1-based**
  indices ``q_l = binom.ppf(α, N, p_l)`` and ``q_u = binom.ppf(1 - α, N, p_u) + 1``, each holding
  with probability at least ``1 - α``; an index outside ``1..N`` gives ``-inf`` / ``+inf``. (Public
  copies of this code read ``y[q_l]`` 0-based, one order statistic too high, which can leave the
  true percentile below the "lower bound"; the tests check the indices at their boundary cases.)
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
from scipy import stats

from ...errors import InputError


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 0.5) (the failure probability of a certificate)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 0.5:
        raise InputError(f"alpha: expected a failure probability in (0, 0.5), e.g. 0.001, got {alpha!r}")
    return float(alpha)


def clopper_pearson_lower(successes: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """One-sided ``1 - alpha`` Clopper–Pearson lower bound of a binomial proportion, per entry.

    ``Beta.ppf(alpha; k, n - k + 1)`` (0 for ``k = 0``), as ``statsmodels``' ``proportion_confint``
    with ``method="beta"`` at level ``2 alpha`` and Cohen et al.'s ``lowerConfBound``.
    """
    k = successes.detach().cpu().numpy().astype(np.float64)
    low = np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    return torch.as_tensor(low, dtype=torch.float64, device=successes.device)


def order_indices(n: int, sigma: float, eps: float, alpha: float) -> Tuple[int, int]:
    """The 1-based order-statistic indices ``(q_l, q_u)`` of median smoothing (module docstring).

    ``q_l`` may be 0 and ``q_u`` may be ``n + 1``: the bound is then infinite.
    """
    p_l, p_u = stats.norm.cdf(-eps / sigma), stats.norm.cdf(eps / sigma)
    q_l = int(stats.binom.ppf(alpha, n, p_l))
    q_u = int(stats.binom.ppf(1.0 - alpha, n, p_u)) + 1
    return q_l, q_u


def pick(sorted_scores: torch.Tensor, q: int) -> torch.Tensor:
    """``[B]`` 1-based order statistic ``q`` of ``[B, N]`` sorted scores; ``-inf`` for ``q < 1``,
    ``+inf`` for ``q > N``."""
    n = sorted_scores.shape[1]
    if q < 1:
        return torch.full_like(sorted_scores[:, 0], -math.inf)
    if q > n:
        return torch.full_like(sorted_scores[:, 0], math.inf)
    return sorted_scores[:, q - 1]


def median_interval(samples: torch.Tensor, sigma: float, eps: float, alpha: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` ``[B]`` of median smoothing from ``[B, N]`` sample scores (module docstring)."""
    s = samples.detach().sort(dim=1).values
    q_l, q_u = order_indices(s.shape[1], sigma, eps, alpha)
    return pick(s, q_l), pick(s, q_u)


def sample_median(samples: torch.Tensor) -> torch.Tensor:
    """``[B]`` median of ``[B, N]`` samples: the mean of the two middle order statistics for even
    ``N`` (differentiable: the gradient reaches the middle samples)."""
    n = samples.shape[1]
    s = samples.sort(dim=1).values
    return s[:, n // 2] if n % 2 else (s[:, n // 2 - 1] + s[:, n // 2]) / 2


def bin_edges(lower: float, upper: float, bins: int) -> torch.Tensor:
    """``bins + 1`` edges of the inside classes over ``[lower, upper]`` (float64)."""
    return torch.linspace(float(lower), float(upper), int(bins) + 1, dtype=torch.float64)


def classes(scores: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Class of each score: 0 below ``edges[0]``, ``1..bins`` inside (right-open bins, the last
    closed), ``bins + 1`` above ``edges[-1]``."""
    s = scores.detach().to(torch.float64)
    bins = edges.numel() - 1
    inside = torch.bucketize(s, edges.to(s.device), right=True).clamp(1, bins)
    return torch.where(s < edges[0], torch.zeros_like(inside),
                       torch.where(s > edges[-1], torch.full_like(inside, bins + 1), inside))


def class_interval(c: torch.Tensor, edges: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` score range of each class (``-inf`` / ``+inf`` outside the bounds)."""
    e = edges.to(c.device)
    ext = torch.cat([e.new_tensor([-math.inf]), e, e.new_tensor([math.inf])])
    # class 0 -> (-inf, e0); class k in 1..bins -> [e_{k-1}, e_k]; class bins+1 -> (e_bins, inf)
    return ext[c], ext[c + 1]


def class_value(c: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The score reported for a class: its bin centre inside the bounds, the bound outside."""
    e = edges.to(c.device)
    bins = e.numel() - 1
    centres = torch.cat([e[:1], (e[:-1] + e[1:]) / 2, e[-1:]])
    return centres[c.clamp(0, bins + 1)]


def counts(c: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``[B, n_classes]`` class counts of ``[B, N]`` class labels."""
    out = torch.zeros(c.shape[0], n_classes, dtype=torch.long, device=c.device)
    return out.scatter_add_(1, c, torch.ones_like(c))


def rs_radius(p_lower: torch.Tensor, sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(radius, abstain)``: ``σ Φ⁻¹(p̲_A)`` where ``p̲_A > 1/2``, else abstain (radius 0)."""
    p = p_lower.detach().cpu().numpy()
    abstain = p <= 0.5
    r = np.where(abstain, 0.0, sigma * stats.norm.ppf(np.clip(p, 0.5, 1.0)))
    dev = p_lower.device
    return torch.as_tensor(r, dtype=torch.float64, device=dev), torch.as_tensor(abstain, device=dev)
