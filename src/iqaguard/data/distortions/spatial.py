"""KADID-10k spatial distortions (types 19-23; Lin, Hosu & Saupe, QoMEX 2019, Table 1
"Spatial distortions").

Counts of patches/blocks are given for a 384 x 512 image and scale with the image area, so
the distorted fraction of the image does not depend on its size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ._core import register
from ._ops import from_uint8, scaled_count, to_uint8

PATCH = 16
BLOCK = 32


@register(19, "jitter", (0.6, 1.0, 1.5, 2.2, 3.2), "max displacement (px)")
def jitter(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Pixel jitter: every pixel takes the value of a neighbour displaced by independent offsets
    ``dy, dx`` drawn uniformly in ``[-amount, amount]`` and rounded to whole pixels (so at small
    amounts only a fraction of the pixels move); borders are clamped."""
    h, w, _ = img.shape
    dy = np.rint(rng.uniform(-amount, amount, size=(h, w))).astype(np.intp)
    dx = np.rint(rng.uniform(-amount, amount, size=(h, w))).astype(np.intp)
    rows = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    return img[rows, cols]


@register(20, "non_eccentricity_patch", (15, 35, 70, 120, 190), "16x16 patches per 384x512")
def non_eccentricity_patch(img: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Non-eccentricity patches: copy ``count`` random 16x16 patches to a nearby position
    (offset uniform in ``[-16, 16]`` px per axis, never zero), overwriting what is there."""
    h, w, _ = img.shape
    out = img.copy()
    for _ in range(scaled_count(count, img.shape)):
        y, x = int(rng.integers(0, h - PATCH + 1)), int(rng.integers(0, w - PATCH + 1))
        while True:
            oy, ox = (int(v) for v in rng.integers(-PATCH, PATCH + 1, size=2))
            if oy or ox:
                break
        ty, tx = int(np.clip(y + oy, 0, h - PATCH)), int(np.clip(x + ox, 0, w - PATCH))
        out[ty:ty + PATCH, tx:tx + PATCH] = img[y:y + PATCH, x:x + PATCH]
    return out


@register(21, "pixelate", (2, 3, 4, 6, 9), "block size (px)")
def pixelate(img: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    """Pixelation: box-downsample by ``block`` and upsample back with nearest neighbour
    (deterministic)."""
    h, w, _ = img.shape
    b = int(block)
    small = Image.fromarray(to_uint8(img)).resize((max(1, round(w / b)), max(1, round(h / b))),
                                                  Image.Resampling.BOX)
    return from_uint8(np.asarray(small.resize((w, h), Image.Resampling.NEAREST)))


@register(22, "quantization", (24, 16, 10, 6, 4), "levels per channel")
def quantization(img: np.ndarray, levels: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform quantisation of every channel to ``levels`` evenly spaced values in [0, 1]
    (deterministic)."""
    n = float(levels) - 1.0
    return np.round(img * n) / n


@register(23, "color_block", (2, 4, 7, 11, 16), "32x32 blocks per 384x512")
def color_block(img: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Colour blocks: paste ``count`` 32x32 blocks (clipped to the image) of uniform random colour
    at random positions."""
    h, w, _ = img.shape
    out = img.copy()
    for _ in range(scaled_count(count, img.shape)):
        y, x = int(rng.integers(0, max(1, h - BLOCK + 1))), int(rng.integers(0, max(1, w - BLOCK + 1)))
        out[y:y + BLOCK, x:x + BLOCK] = rng.random(3, dtype=np.float32)
    return out
