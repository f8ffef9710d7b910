"""KADID-10k noise (types 11-15; Lin, Hosu & Saupe, QoMEX 2019, Table 1 "Noise").

Noise is drawn from the ``rng`` passed in (numpy ``Generator``), in float32.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._core import register
from ._ops import rgb_to_ycbcr, ycbcr_to_rgb


def _normal(rng: np.random.Generator, shape: tuple, sigma: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


@register(11, "white_noise", (0.02, 0.035, 0.055, 0.08, 0.12), "sigma")
def white_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise, i.i.d. on every RGB sample."""
    return img + _normal(rng, img.shape, sigma)


@register(12, "white_noise_color", (0.02, 0.035, 0.055, 0.08, 0.12), "sigma on Cb, Cr")
def white_noise_color(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise in the colour components: added to Cb and Cr of full-range BT.601
    YCbCr, luma untouched (chroma noise)."""
    ycc = rgb_to_ycbcr(img)
    ycc[..., 1:] += _normal(rng, ycc[..., 1:].shape, sigma)
    return ycbcr_to_rgb(ycc)


@register(13, "impulse_noise", (0.005, 0.012, 0.025, 0.045, 0.08), "density")
def impulse_noise(img: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: each RGB sample is replaced, with probability ``density``, by 0 or 1
    (equally likely)."""
    u = rng.random(img.shape, dtype=np.float32)
    out = img.copy()
    out[u < density / 2] = 0.0
    out[(u >= density / 2) & (u < density)] = 1.0
    return out


@register(14, "multiplicative_noise", (0.06, 0.1, 0.16, 0.24, 0.35), "sigma")
def multiplicative_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x <- x * (1 + n)`` with ``n`` i.i.d. Gaussian of standard deviation ``sigma``."""
    return img * (1.0 + _normal(rng, img.shape, sigma))


def _wiener(x: np.ndarray, noise_var: float, size: int) -> np.ndarray:
    """Locally adaptive Wiener (Lee) filter of a 2-D array: ``mu + g (x - mu)`` with
    ``g = max(var - noise_var, 0) / max(var, noise_var)`` from the local mean/variance in a
    ``size x size`` window."""
    mu = ndimage.uniform_filter(x, size, mode="reflect")
    var = ndimage.uniform_filter(x * x, size, mode="reflect") - mu * mu
    gain = np.maximum(var - noise_var, 0.0) / np.maximum(var, noise_var)
    return mu + gain * (x - mu)


@register(15, "denoise", (0.03, 0.05, 0.075, 0.1, 0.14), "sigma of the noise removed")
def denoise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Denoising artefacts: add white Gaussian noise of ``sigma`` in YCbCr, then remove it with a
    locally adaptive Wiener filter (5x5 window on luma, 9x9 on chroma). The result shows the
    over-smoothed texture and residual blotches of a denoiser, as in KADID-10k."""
    ycc = rgb_to_ycbcr(img) + _normal(rng, img.shape, sigma)
    var = float(sigma) ** 2
    out = np.stack([_wiener(ycc[..., 0], var, 5), _wiener(ycc[..., 1], var, 9),
                    _wiener(ycc[..., 2], var, 9)], axis=-1)
    return ycbcr_to_rgb(out)
