"""KADID-10k blurs (types 1-3; Lin, Hosu & Saupe, QoMEX 2019, Table 1 "Blurs")."""
from __future__ import annotations

import numpy as np

from ._core import register
from ._ops import blur, convolve, disk_kernel, line_kernel


@register(1, "gaussian_blur", (0.6, 1.2, 2.0, 3.5, 6.0), "sigma (px)")
def gaussian_blur(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Low-pass filter every channel with an isotropic Gaussian of standard deviation ``sigma``."""
    return blur(img, sigma)


@register(2, "lens_blur", (1.0, 2.0, 3.5, 5.5, 8.0), "disk radius (px)")
def lens_blur(img: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Defocus: convolve with a uniform disk (circular aperture) of the given radius."""
    return convolve(img, disk_kernel(radius))


@register(3, "motion_blur", (3.0, 6.0, 10.0, 15.0, 22.0), "line length (px)")
def motion_blur(img: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Linear camera motion: convolve with a line of ``length`` px at a random angle in [0, pi)."""
    angle = float(rng.uniform(0.0, np.pi))
    return convolve(img, line_kernel(length, angle))
