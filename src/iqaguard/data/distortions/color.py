"""KADID-10k colour distortions (types 4-8; Lin, Hosu & Saupe, QoMEX 2019, Table 1 "Color
distortions")."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ._core import register
from ._ops import blur, from_uint8, lab_to_rgb, rgb_to_lab, shift, to_uint8


@register(4, "color_diffusion", (2.0, 4.0, 7.0, 12.0, 20.0), "sigma of the a*/b* blur (px)")
def color_diffusion(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Colour bleeding: Gaussian-blur the chroma channels a*, b* of CIE Lab, keep L*."""
    lab = rgb_to_lab(img)
    lab[..., 1:] = blur(lab[..., 1:], sigma)
    return lab_to_rgb(lab)


@register(5, "color_shift", (1.0, 2.0, 4.0, 6.0, 9.0), "green-channel shift (px)")
def color_shift(img: np.ndarray, dist: float, rng: np.random.Generator) -> np.ndarray:
    """Channel misregistration: translate the green channel by ``dist`` px in a random direction
    (rounded to whole pixels; borders replicated); red and blue stay in place."""
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    dy, dx = int(round(dist * np.sin(angle))), int(round(dist * np.cos(angle)))
    if dy == 0 and dx == 0:
        dx = 1
    out = img.copy()
    out[..., 1] = shift(img[..., 1], dy, dx)
    return out


@register(6, "color_quantization", (64, 32, 18, 11, 6), "palette size (colours)")
def color_quantization(img: np.ndarray, colors: float, rng: np.random.Generator) -> np.ndarray:
    """Palette reduction to ``colors`` colours without dithering (deterministic; ``rng`` unused).

    The palette is found by median cut on a box-downsampled copy (about 12k pixels, for speed),
    then every pixel of the 8-bit image is mapped to its nearest palette colour.
    """
    im = Image.fromarray(to_uint8(img))
    f = max(1, int(round(np.sqrt(img.shape[0] * img.shape[1] / 12288))))
    small = im.resize((max(1, im.width // f), max(1, im.height // f)), Image.Resampling.BOX)
    pal = small.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return from_uint8(np.asarray(im.quantize(palette=pal, dither=Image.Dither.NONE).convert("RGB")))


@register(7, "color_saturation_hsv", (0.7, 0.5, 0.3, 0.15, 0.0), "HSV saturation factor")
def color_saturation_hsv(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Desaturation in HSV: ``S <- factor * S`` with H and V unchanged.

    With H and V fixed, each channel moves linearly towards V = max(R, G, B), so the HSV
    round trip reduces to ``c <- V + factor * (c - V)`` (exact, no conversion needed).
    """
    v = img.max(axis=-1, keepdims=True)
    return v + factor * (img - v)


@register(8, "color_saturation_lab", (1.6, 2.2, 3.0, 4.0, 5.5), "a*/b* gain")
def color_saturation_lab(img: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Over-saturation in CIE Lab: multiply a*, b* by ``gain`` (L* kept), clip to the sRGB gamut."""
    lab = rgb_to_lab(img)
    lab[..., 1:] *= gain
    return lab_to_rgb(lab)

