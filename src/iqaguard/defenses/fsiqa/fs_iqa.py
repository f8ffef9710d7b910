"""FS-IQA: certified feature-space median smoothing of an IQA metric.

Shumitskaya, Vatolin & Antsiferova, "FS-IQA: Certified Feature Smoothing for Robust Image Quality
Assessment" (2025). The metric's frozen backbone ``b`` (:meth:`~iqaguard.metrics.base.Metric.features`;
for an FR metric the pair's features with the reference fixed, §3) feeds a feature transform
network ``FTN`` (fully connected to 512 dims, squashed to [0, 1] by a sigmoid); Gaussian noise
``N(0, σ_f² I)`` is added to those features and a fully connected scorer maps each noisy sample to
a score (:class:`FSHead`). The smoothed score is the median over ``N`` samples (§3, Algorithm 1).

Certificate (Theorem 1, Algorithm 1): with ``J = J_{FTN∘b}(x)``, an input perturbation of L2 norm
``<= ε_x = σ_f / ‖J‖₂`` moves the features by at most ``σ_f`` to first order, so median smoothing
in feature space at ``ε_f = σ_f`` bounds the score: ``(S^l, S^u)`` are the order statistics of the
samples at ``p = Φ(∓ε_f/σ_f) = Φ(∓1)`` with confidence ``1 − α`` (the 1-based indices of
:func:`~iqaguard.defenses.certified.certificates.median_interval`). The image abstains when
``‖J‖₂ < τ`` (τ = 0.001: a vanishing Jacobian makes ``ε_x`` meaningless) or a bound is infinite.
``‖J‖₂`` comes from :mod:`~iqaguard.ops.jacobian`: ``mode="fast"`` (Lanczos, the
default) divides by the safe upper value of the iteration, ``mode="exact"`` by the exact norm.
The guarantee is the paper's: Theorem 1 linearises the backbone around ``x``; iqaguard does not
strengthen it (``benchmarks/fsiqa_speed.py`` measures the coverage under attack).

The head is trained per (metric, σ_f) by ``scripts/train_fsiqa.py`` (backbone frozen, MSE to the
subjective scores mapped to the metric's units, under feature noise σ_f); the smoothed metric keeps
the base metric's kind, direction and bounds. ``predict()`` costs one backbone forward and ``N``
scorer passes, drawn in the scorer's hidden space (:meth:`FSHead.noisy_scores`: the same
distribution as noise on the 512 features, at a quarter of the work).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ...errors import InputError
from ...metrics.base import Metric, frozen
from ...registry import DEFENSES
from ..base import Generators, check_float, check_int
from ..purification._neural import follow, load_frozen, per_metric_file
from ...ops.jacobian import MODES, JacobianNorm, jacobian_norm
from ..certified.base import CertifiedScore, Smoothed
from ..certified.certificates import median_interval, sample_median
from ..certified.sampler import feature_noise

#: FS-IQA §4: σ_f ∈ {0.1, 0.25, 0.5}, N = 2000, confidence 0.999 (α = 0.001); ε_f = σ_f
PRESETS: List[Dict[str, Any]] = [{"sigma": s, "n": 2000, "eps": s, "alpha": 0.001} for s in (0.1, 0.25, 0.5)]
TRAIN_CMD = "python scripts/train_fsiqa.py --metric {name} --sigma {sigma}"
ARCH: Dict[str, Any] = {"width": 512, "hidden": 128}


class FSHead(nn.Module):
    """FTN (``Linear(in_dim, width)`` + sigmoid) and scorer (``Linear(width, hidden)``, ReLU, ``Linear(hidden, 1)``)."""

    def __init__(self, in_dim: int, width: int = 512, hidden: int = 128) -> None:
        super().__init__()
        self.ftn = nn.Sequential(nn.Linear(in_dim, width), nn.Sigmoid())
        self.scorer = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.config = {"in_dim": int(in_dim), "width": int(width), "hidden": int(hidden)}

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """``[..., width]`` transformed (noisy) features -> ``[...]`` scores."""
        return self.scorer(z).squeeze(-1)

    def noise_factor(self) -> torch.Tensor:
        """``L`` ``[hidden, hidden]`` with ``L Lᵀ = W₁ W₁ᵀ`` (``W₁`` the scorer's first layer; symmetric square
        root from an eigendecomposition in float64, so a rank-deficient ``W₁`` is fine), cached per weight version."""
        w = self.scorer[0].weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if getattr(self, "_factor_key", None) != key:
            evals, evecs = torch.linalg.eigh(w.detach().double() @ w.detach().double().T)
            self._factor = (evecs * evals.clamp(min=0).sqrt()).to(w.dtype)
            self._factor_key = key
        return self._factor

    def noisy_scores(self, z: torch.Tensor, sigma: float, n: int, generator: Generators = None) -> torch.Tensor:
        """``[B, n]`` scores ``scorer(z + σ e)``, ``e ~ N(0, I_width)``, of ``[B, width]`` features.

        The scorer's first layer is linear, so ``W₁(z + σe) = W₁z + σW₁e`` with ``W₁e ~ N(0, W₁W₁ᵀ)``: the
        samples are drawn as ``W₁z + σ L e'`` with ``e' ~ N(0, I_hidden)`` and ``L Lᵀ = W₁W₁ᵀ``
        (:meth:`noise_factor`) — the same distribution of ``scorer(z + σe)``, exactly, with
        ``hidden / width`` of the random numbers and of the first layer's work (FS-IQA's
        ``predict`` is then within the backbone's time). Differentiable in ``z``.
        """
        first, act, last = self.scorer
        h = first(z)
        e = feature_noise(torch.zeros_like(h), 1.0, n, generator)  # [B, n, hidden], standard normal
        return last(act(h.unsqueeze(1) + sigma * (e @ self.noise_factor().T))).squeeze(-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.score(self.ftn(feats))


def head_file(metric_name: str, sigma: float) -> Tuple[Path, str]:
    """``(shipped file, training command)`` of the head of a (metric, σ_f)."""
    return (per_metric_file("fs-iqa", metric_name, f"-{sigma:g}"),
            TRAIN_CMD.format(name=metric_name, sigma=f"{sigma:g}"))


def load_head(path: Union[str, Path], train_cmd: str, in_dim: int) -> FSHead:
    """The head of a weights file, frozen (``MissingWeightsError`` naming ``train_cmd`` without it;
    ``InputError`` for a head of another feature size)."""
    def build(config: Dict[str, Any]) -> FSHead:
        cfg = {**ARCH, "in_dim": in_dim, **config}
        if int(cfg["in_dim"]) != in_dim:
            raise InputError(f"weights: {path} is an FS-IQA head for {cfg['in_dim']} features, but the metric "
                             f"has {in_dim}; train one for this metric with `{train_cmd}`")
        return FSHead(int(cfg["in_dim"]), int(cfg["width"]), int(cfg["hidden"]))

    return load_frozen(path, build, "FS-IQA head", f"Train them with `{train_cmd}` or pass weights=<file>")


@DEFENSES.register("fs-iqa")
class FSIQA(Smoothed):
    """Feature-space median smoothing with a certified input radius ``ε_x`` (module docstring).

    Args:
        metric: the base metric; it must expose features (``metric.has_features``).
        preset: index into :data:`PRESETS` (σ_f 0.1 / 0.25 / 0.5, N = 2000, α = 0.001).
        sigma: the feature noise σ_f (features live in [0, 1]^512).
        n: noise samples per image (default 2000).
        alpha: failure probability of each bound (default 0.001).
        eps: the feature-space radius ε_f the interval holds for (default σ_f, as Algorithm 1).
        mode: ``"fast"`` (Lanczos, default) or ``"exact"`` Jacobian norm.
        tau: abstain when ``‖J‖₂ < tau`` (default 0.001).
        tol, max_iter: the ``fast`` estimator's relative tolerance and step limit.
        head: an :class:`FSHead` (overrides ``weights``).
        weights: a head file (default: the shipped one of (metric, σ_f)).
        attack_samples, generator: as :class:`~iqaguard.defenses.certified.ms.MedianSmoothing`
            (``chunk`` is accepted and unused: feature noise is small, see
            :func:`~iqaguard.defenses.certified.sampler.feature_noise`).

    ``certify`` returns ``eps`` = ``ε_x`` (the input L2 radius) per image.
    """

    presets = PRESETS

    def __init__(self, metric: Metric, preset: Optional[int] = None, sigma: Optional[float] = None,
                 n: Optional[int] = None, alpha: Optional[float] = None, eps: Optional[float] = None,
                 mode: str = "fast", tau: float = 1e-3, tol: float = 1e-3, max_iter: int = 64,
                 head: Optional[FSHead] = None, weights: Optional[Union[str, Path]] = None,
                 attack_samples: int = 16, chunk: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        if isinstance(metric, Metric) and not metric.has_features:
            raise InputError(f"metric: FS-IQA needs a metric with backbone features; {metric.name!r} has none "
                             "(builtin-nr, builtin-fr, or an adapter given feature_layer=...)")
        if eps is None and sigma is not None:
            eps = sigma
        super().__init__(metric, preset=preset, sigma=sigma, n=n, eps=eps, alpha=alpha,
                         attack_samples=attack_samples, chunk=chunk, generator=generator)
        if mode not in MODES:
            raise InputError(f"mode: expected one of {MODES}, got {mode!r}")
        self.mode, self.tau = mode, check_float("tau", tau, 0.0, 1e6)
        self.tol, self.max_iter = check_float("tol", tol, 1e-12, 1.0), check_int("max_iter", max_iter, low=1)
        if head is None:
            path, cmd = head_file(metric.name, self.sigma)
            head = load_head(weights if weights is not None else path, cmd, metric.feature_dim)
        elif not isinstance(head, FSHead):
            raise InputError(f"head: expected an FSHead, got {type(head).__name__}")
        self.head = head.requires_grad_(False).eval()

    @property
    def params(self) -> Dict[str, Any]:
        return {"sigma": self.sigma, "n": self.n, "eps": self.eps, "alpha": self.alpha, "mode": self.mode,
                "tau": self.tau, "attack_samples": self.attack_samples, "denoiser": None}

    # ------------------------------------------------------------------ features
    def transformed(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``FTN(b(x))`` ``[B, width]`` in [0, 1] (unchecked inputs; differentiable in ``x``)."""
        f = self.metric.feature_map(x, ref)
        follow(self.head, f)
        return self.head.ftn(f)

    def samples(self, x: torch.Tensor, n: int, ref: Optional[torch.Tensor] = None,
                generator: Generators = None) -> torch.Tensor:
        """``[B, n]`` scorer outputs of ``n`` noisy copies of the transformed features."""
        with frozen(self.metric):
            return self.head.noisy_scores(self.transformed(x, ref), self.sigma, n, generator)

    def statistic(self, samples: torch.Tensor) -> torch.Tensor:
        return sample_median(samples)

    def jacobian(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None, generator: Generators = None) -> JacobianNorm:
        """:class:`~iqaguard.ops.jacobian.JacobianNorm` of ``FTN∘b`` at every image."""
        g = generator[0] if isinstance(generator, (list, tuple)) else generator
        with frozen(self.metric), torch.enable_grad():
            return jacobian_norm(self.transformed, x, self.mode, self.tol, self.max_iter,
                                 generator=g if g is None or g.device == x.device else None,
                                 aux=() if ref is None else (ref,))

    def certify_samples(self, x: torch.Tensor, ref: Optional[torch.Tensor], generator: Generators) -> CertifiedScore:
        s = self.samples(x, self.n, ref, generator).double()
        lower, upper = median_interval(s, self.sigma, self.eps, self.alpha)
        jn = self.jacobian(x, ref, generator)
        norm, upper_norm = jn.norm.to(lower.device), jn.upper.to(lower.device)
        eps_x = self.eps / upper_norm.clamp(min=1e-300)
        abstain = (norm < self.tau) | torch.isinf(lower) | torch.isinf(upper)
        return CertifiedScore(sample_median(s), lower, upper, abstain, eps=eps_x, samples=self.n)
