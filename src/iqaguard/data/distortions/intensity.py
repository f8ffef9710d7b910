"""KADID-10k brightness, sharpness and contrast changes (types 16-18, 24, 25; Lin, Hosu &
Saupe, QoMEX 2019, Table 1 "Brightness change" and "Sharpness & contrast")."""
from __future__ import annotations

import numpy as np

from ._core import register
from ._ops import blur, lab_to_rgb, luma, rgb_to_lab


def _lightness_gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    """Tone curve on CIE L*: ``L <- 100 (L / 100) ** gamma`` (a*, b* kept)."""
    lab = rgb_to_lab(img)
    lab[..., 0] = 100.0 * np.clip(lab[..., 0] / 100.0, 0.0, 1.0) ** gamma
    return lab_to_rgb(lab)


@register(16, "brighten", (0.8, 0.65, 0.5, 0.38, 0.28), "gamma on L*")
def brighten(img: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Brightening: a concave tone curve (gamma < 1) on the Lab lightness."""
    return _lightness_gamma(img, gamma)


@register(17, "darken", (1.25, 1.5, 1.9, 2.4, 3.1), "gamma on L*")
def darken(img: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Darkening: a convex tone curve (gamma > 1) on the Lab lightness."""
    return _lightness_gamma(img, gamma)


@register(18, "mean_shift", (0.04, 0.08, 0.12, 0.17, 0.23), "shift magnitude")
def mean_shift(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Mean shift: add the same constant ``+amount`` or ``-amount`` (sign drawn from ``rng``) to
    every RGB sample, then clip."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return img + np.float32(sign * amount)


@register(24, "high_sharpen", (1.0, 2.0, 3.2, 5.0, 8.0), "unsharp-mask amount")
def high_sharpen(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Over-sharpening: unsharp masking of the luma, ``x <- x + amount (Y - G_1.5 * Y)``, the same
    detail added to R, G and B (no colour fringes), then clip (halos, ringing)."""
    y = luma(img)
    detail = y - blur(y, 1.5)
    return img + amount * detail[..., None]


@register(25, "contrast_change", (0.78, 0.62, 0.47, 0.34, 0.22), "contrast factor")
def contrast_change(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction: ``x <- m + factor (x - m)`` around the mean luma ``m`` of the image."""
    m = float(luma(img).mean())
    return m + factor * (img - m)
