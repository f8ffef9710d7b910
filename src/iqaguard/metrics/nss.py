"""Natural-scene-statistics (NSS) operations shared by ``niqe``, ``brisque`` and ``piqe``.

All functions are vectorised torch code, differentiable with respect to their input (see each
docstring for the places that are piecewise), and follow the conventions of the original
MATLAB releases so that the metrics reproduce the authors' published outputs:

* :func:`rgb2gray` -- MATLAB ``rgb2gray`` (Rec. 601 weights as MATLAB rounds them), on the
  0..255 scale; ``quantize=True`` rounds to 8 bits as ``rgb2gray`` on ``uint8`` input does.
* :func:`mscn` -- mean-subtracted contrast-normalised coefficients (Mittal, Moorthy & Bovik,
  BRISQUE, IEEE TIP 2012, eq. 1-3): 7x7 Gaussian window, sigma 7/6, ``C = 1`` on 0..255.
* :func:`fit_ggd`, :func:`fit_aggd` -- moment-ratio fits of the generalised Gaussian (BRISQUE
  §III-A, eq. 4-5; Sharifi & Leon-Garcia 1995) and of the asymmetric generalised Gaussian
  (BRISQUE §III-B, eq. 6-8; Lasmar, Stitou & Berthoumieu 2009). The releases pick the shape
  by an argmin over the grid ``0.2:0.001:10``; here the shape is the exact root of the same
  monotone moment-ratio equation (see :func:`solve_shape`), which is within the grid's
  resolution of the grid pick and differentiable.
* :func:`paired_products` -- products of neighbouring MSCN coefficients along the four
  orientations of BRISQUE §III-B (H, V, D1, D2), with MATLAB ``circshift`` (circular) borders.
* :func:`imresize_half` -- MATLAB ``imresize(I, 0.5)`` (bicubic, antialiasing on, as both
  releases call it between their two scales).
"""
from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path
from typing import Tuple

import torch

from ..errors import MissingDependencyError
from ..ops.filters import correlate1d, gaussian_taps, pad2d
from .functional import symmetric_index

#: MATLAB ``rgb2gray`` weights for R, G, B (Rec. 601 luma as MATLAB stores them).
GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
#: MSCN window: ``fspecial('gaussian', 7, 7/6)`` (BRISQUE §III-A: "sampled out to 3 standard deviations").
MSCN_WINDOW = 7
MSCN_SIGMA = 7.0 / 6.0
#: MSCN stabilising constant on the 0..255 scale (``structdis = (im - mu) ./ (sigma + 1)``).
MSCN_C = 1.0
#: Shape grid of the releases' ``estimateggdparam.m`` / ``estimateaggdparam.m``: ``0.2:0.001:10``.
SHAPE_MIN, SHAPE_MAX, SHAPE_STEP = 0.2, 10.0, 0.001


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``round`` (half away from zero, for ``x >= 0``) with a straight-through gradient.

    The forward value is ``floor(x + 0.5)``; the backward pass treats the rounding as the
    identity (Bengio et al. 2013), so ``d round_ste(x) / dx = 1``.
    """
    return x + (torch.floor(x + 0.5) - x).detach()


def rgb2gray(x: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """MATLAB ``rgb2gray`` of an RGB batch on the 0..255 scale.

    Args:
        x: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
        quantize: round to integers (8 bits) as ``rgb2gray`` does on ``uint8`` images, which is
            what the published reference outputs were computed on. The rounding is applied in the
            forward pass only; its gradient is the identity (straight-through), so attacks see
            the gradient of the unrounded conversion. With ``False`` the conversion is exact and
            smooth.

    Returns:
        ``[B, 1, H, W]`` gray levels in ``[0, 255]``.
    """
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    g = (x * w).sum(dim=1, keepdim=True) * 255.0
    return round_ste(g) if quantize else g


def gaussian_filter(x: torch.Tensor, padding: str) -> torch.Tensor:
    """7x7 Gaussian (sigma 7/6) filtering of ``[..., H, W]`` maps, output the same size.

    Args:
        x: maps to filter (the window is separable: rows then columns).
        padding: ``"zeros"`` for MATLAB ``filter2(w, x, 'same')`` (BRISQUE), ``"replicate"``
            for ``imfilter(x, w, 'replicate')`` (NIQE, PIQE).
    """
    r = (MSCN_WINDOW - 1) // 2
    taps = gaussian_taps(MSCN_WINDOW, MSCN_SIGMA, torch.float64).tolist()
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    y = pad2d(y, r, "zeros" if padding == "zeros" else "replicate")
    y = correlate1d(correlate1d(y, taps, -1), taps, -2)
    return y.reshape(shape)


def safe_sqrt(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``sqrt(|v|)`` with a finite gradient at 0 (values below ``eps`` count as ``eps``)."""
    return v.abs().clamp(min=eps).sqrt()


def mscn(img: torch.Tensor, padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """MSCN coefficients of BRISQUE eq. (1)-(3) on a 0..255 gray batch.

    ``mscn = (I - mu) / (sigma + 1)`` with ``mu = w * I`` and ``sigma = sqrt(|w * I^2 - mu^2|)``
    for the 7x7 Gaussian window ``w`` (the ``abs`` is the releases' guard against negative
    rounding residue).

    Args:
        img: ``[B, 1, H, W]`` gray on the 0..255 scale.
        padding: see :func:`gaussian_filter`.

    Returns:
        ``(mscn, sigma)``, both ``[B, 1, H, W]``.
    """
    mu, m2 = gaussian_filter(torch.cat([img, img * img], dim=1), padding).split(1, dim=1)
    sigma = safe_sqrt(m2 - mu * mu)
    return (img - mu) / (sigma + MSCN_C), sigma


def paired_products(m: torch.Tensor) -> torch.Tensor:
    """Products of each MSCN coefficient with its neighbour along H, V, D1 and D2.

    BRISQUE §III-B eq. (6): ``H(i,j) = m(i,j) m(i,j+1)``, ``V = m(i,j) m(i+1,j)``,
    ``D1 = m(i,j) m(i+1,j+1)``, ``D2 = m(i,j) m(i+1,j-1)``, computed as in the releases with
    ``circshift`` (circular wrap) over the last two dimensions, so every map keeps the input size.

    Args:
        m: ``[..., H, W]`` MSCN coefficients (an image or a stack of blocks).

    Returns:
        ``[..., 4, H, W]`` in the order H, V, D1, D2.
    """
    shifts = ((0, 1), (1, 0), (1, 1), (-1, 1))
    return torch.stack([m * torch.roll(m, s, dims=(-2, -1)) for s in shifts], dim=-3)


# --- shape fits ------------------------------------------------------------------------------

def _log_rho(a: torch.Tensor) -> torch.Tensor:
    """``log rho(a)`` for ``rho(a) = Gamma(1/a) Gamma(3/a) / Gamma(2/a)^2`` (decreasing in ``a``)."""
    return torch.lgamma(1 / a) + torch.lgamma(3 / a) - 2 * torch.lgamma(2 / a)


def _dlog_rho(a: torch.Tensor) -> torch.Tensor:
    """``d log rho / da = -(psi(1/a) + 3 psi(3/a) - 4 psi(2/a)) / a^2`` (negative)."""
    return -(torch.digamma(1 / a) + 3 * torch.digamma(3 / a) - 4 * torch.digamma(2 / a)) / (a * a)


_TABLE: dict = {}


def _table(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Coarse float64 table ``(a, -log rho(a))`` on ``[0.2, 10]`` (step 0.01) for initial guesses."""
    key = str(device)
    if key not in _TABLE:
        a = torch.linspace(SHAPE_MIN, SHAPE_MAX, 981, dtype=torch.float64, device=device)
        _TABLE[key] = (a, -_log_rho(a))
    return _TABLE[key]


def solve_shape(log_target: torch.Tensor, newton_steps: int = 4) -> torch.Tensor:
    """Shape ``a`` in ``[0.2, 10]`` with ``log rho(a) = log_target``, differentiable.

    This is the smooth replacement of the releases' grid search ``argmin_k |rho_hat -
    rho(a_k)|`` over ``a_k = 0.2:0.001:10`` (BRISQUE §III-A: "the parameters ... are estimated
    using the moment-matching approach"). ``rho`` is strictly decreasing on the grid's range, so
    the equation has one root, which lies between the two grid points that bracket the target;
    the grid returns one of them, hence ``|a - a_grid| <= 0.001`` (the grid's resolution).

    Forward: a table look-up on a 0.01 grid with linear interpolation, then ``newton_steps``
    Newton steps on ``log rho`` in float64 (converged to ~1e-12), all without gradient.
    Backward: implicit differentiation, ``da / d log_target = 1 / (d log rho / da)`` at the root,
    implemented as one detached Newton step so that the value is unchanged. Targets outside
    ``[log rho(10), log rho(0.2)]`` give the clamped end of the grid (as the argmin does) and a
    zero gradient.

    Args:
        log_target: any shape, ``log`` of the target moment ratio (``rho_hat`` for the GGD,
            ``1 / r_hat_norm`` for the AGGD).

    Returns:
        Shapes ``a``, same shape and dtype as ``log_target``.
    """
    t64 = log_target.detach().to(torch.float64)
    with torch.no_grad():
        grid, neg = _table(t64.device)
        y = (-t64).clamp(min=float(neg[0]), max=float(neg[-1]))
        k = torch.searchsorted(neg, y.reshape(-1).contiguous()).clamp(1, grid.numel() - 1).reshape(y.shape)
        y0, y1 = neg[k - 1], neg[k]
        a = grid[k - 1] + (grid[k] - grid[k - 1]) * (y - y0) / (y1 - y0)
        for _ in range(newton_steps):
            a = (a - (_log_rho(a) + y) / _dlog_rho(a)).clamp(SHAPE_MIN, SHAPE_MAX)
        inside = (t64 < -neg[0]) & (t64 > -neg[-1])
        slope = torch.where(inside, 1.0 / _dlog_rho(a), torch.zeros_like(a))
    a = a.to(log_target.dtype)
    slope = slope.to(log_target.dtype)
    return a + slope * (log_target - log_target.detach())


def fit_ggd(v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generalised Gaussian fit by moment matching (BRISQUE §III-A eq. 4-5, ``estimateggdparam.m``).

    ``rho_hat = E[v^2] / E[|v|]^2`` and the shape ``alpha`` solves ``rho(alpha) = rho_hat``
    (:func:`solve_shape`); the scale feature is ``sigma = sqrt(E[v^2])``.

    Args:
        v: ``[..., N]`` samples (the last dimension is reduced).

    Returns:
        ``(alpha, sigma)``, each ``[...]``.
    """
    m2 = (v * v).mean(dim=-1)
    m1 = v.abs().mean(dim=-1)
    alpha = solve_shape(torch.log(m2.clamp(min=1e-30)) - 2 * torch.log(m1.clamp(min=1e-30)))
    return alpha, safe_sqrt(m2)


def fit_aggd(v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric generalised Gaussian fit (BRISQUE §III-B eq. 6-8, ``estimateaggdparam.m``).

    ``sigma_l^2 = mean(v^2 | v < 0)``, ``sigma_r^2 = mean(v^2 | v > 0)``, ``gamma_hat =
    sigma_l / sigma_r``, ``r_hat = E[|v|]^2 / E[v^2]``, ``R_hat = r_hat (gamma_hat^3 + 1)
    (gamma_hat + 1) / (gamma_hat^2 + 1)^2`` and the shape ``alpha`` solves
    ``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) = R_hat`` (:func:`solve_shape` with target
    ``1 / R_hat``).

    Piecewise: the side statistics use the integer counts of negative and positive samples (exact
    zeros belong to neither side), as the releases do. For a fixed sign pattern of ``v`` the fit is
    smooth and the gradient exact; when a sample crosses zero, ``sigma_l``/``sigma_r`` step by a
    relative ``O(1/N)``, which the gradient does not see.

    Args:
        v: ``[..., N]`` samples (the last dimension is reduced).

    Returns:
        ``(alpha, sigma_l, sigma_r, valid)``: ``[...]`` each; ``valid`` is False where one side has
        no sample (MATLAB returns NaN there); the other values are then finite placeholders.
    """
    neg, pos = (v < 0).to(v.dtype), (v > 0).to(v.dtype)
    sq = v * v
    n_l, n_r = neg.sum(dim=-1), pos.sum(dim=-1)
    a_l, a_r = (sq * neg).sum(dim=-1), (sq * pos).sum(dim=-1)
    valid = (n_l > 0) & (n_r > 0)
    one = torch.ones_like(a_l)
    s_l = torch.where(valid, a_l / n_l.clamp(min=1), one).sqrt()
    s_r = torch.where(valid, a_r / n_r.clamp(min=1), one).sqrt()
    g = s_l / s_r
    m2 = torch.where(valid, (a_l + a_r) / v.shape[-1], one)
    m1 = torch.where(valid, v.abs().mean(dim=-1), one)
    r_norm = (m1 * m1 / m2) * (g**3 + 1) * (g + 1) / (g * g + 1) ** 2
    alpha = solve_shape(-torch.log(r_norm))
    return alpha, s_l, s_r, valid


def gamma_ratio(a: torch.Tensor, p: float, q: float) -> torch.Tensor:
    """``Gamma(p / a) / Gamma(q / a)`` via ``lgamma`` (differentiable in ``a``)."""
    return torch.exp(torch.lgamma(p / a) - torch.lgamma(q / a))


# --- MATLAB imresize(I, 0.5) -------------------------------------------------------------------

def _cubic(d: torch.Tensor) -> torch.Tensor:
    """Keys' cubic kernel with ``a = -0.5`` (MATLAB ``imresize``'s ``cubic``)."""
    d = d.abs()
    d2, d3 = d * d, d * d * d
    return torch.where(
        d <= 1, 1.5 * d3 - 2.5 * d2 + 1,
        torch.where(d <= 2, -0.5 * d3 + 2.5 * d2 - 4 * d + 2, torch.zeros_like(d)),
    )


def _half_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """8 taps of ``imresize(.., 0.5)``: antialiased cubic ``0.5 * cubic(0.5 * d)`` at ``d = 3.5..-3.5``.

    Output sample ``j`` (0-based) sits at input coordinate ``2 j + 0.5`` (MATLAB's
    ``u = x / s + 0.5 (1 - 1 / s)``), so it reads inputs ``2j - 3 .. 2j + 4``; the stretched
    kernel (width 8) is zero beyond distance 4 and these 8 weights sum to 1.
    """
    d = torch.arange(8, dtype=torch.float64) - 3.5
    return (0.5 * _cubic(0.5 * d)).to(dtype=dtype, device=device)


def imresize_half(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiasing) of ``[..., H, W]`` float maps.

    Output ``ceil(H / 2) x ceil(W / 2)``, no clipping (double input in the releases). Separable:
    mirror-pad 3 samples before and 3 (even size) or 4 (odd size) after, then the 8-tap kernel of
    :func:`_half_kernel` with stride 2, rows then columns. Linear, hence differentiable.
    """
    taps = _half_kernel(torch.float64, torch.device("cpu")).tolist()
    for dim in (-2, -1):
        n = x.shape[dim]
        x = x.index_select(dim, symmetric_index(n, 3, 3 + n % 2, x.device))
        x = correlate1d(x, taps, dim, stride=2)
    return x


def blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping ``size x size`` blocks of ``[B, 1, H, W]`` (H, W multiples of ``size``).

    Returns ``[B, nblocks, size, size]`` (row-major block order, as ``blkproc`` visits them
    column-major; the order does not matter for the pooled statistics).
    """
    b, _, h, w = x.shape
    t = x.reshape(b, h // size, size, w // size, size).permute(0, 1, 3, 2, 4)
    return t.reshape(b, (h // size) * (w // size), size, size)


def package_file(dist: str, rel: str, install: str) -> Path:
    """Path of the data file ``rel`` shipped inside the installed distribution ``dist``.

    The file is found through the distribution's metadata (``importlib.metadata``), so the
    package is never imported.

    Raises:
        MissingDependencyError: ``dist`` is not installed or lacks ``rel``; the message names
            the install command ``install``.
    """
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(f"{rel}: needs the {dist!r} package; run `{install}`") from None
    for f in d.files or ():
        if f.as_posix() == rel:
            path = Path(d.locate_file(f))
            if path.is_file():
                return path
    raise MissingDependencyError(f"{rel}: not found in the installed {dist!r} package; reinstall it: `{install}`")


__all__ = [
    "GRAY_WEIGHTS", "MSCN_WINDOW", "MSCN_SIGMA", "MSCN_C", "round_ste", "rgb2gray",
    "correlate1d", "gaussian_filter", "mscn", "paired_products", "solve_shape", "fit_ggd", "fit_aggd",
    "gamma_ratio", "imresize_half", "blocks", "safe_sqrt", "package_file",
]
