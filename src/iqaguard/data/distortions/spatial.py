"""KADID-10k spatial distortions (types 19-23; Lin, Hosu & Saupe, QoMEX 2019, Table 1
"Spatial distortions").

Patch and block sides are given for a 384 x 512 image and scale with the square root of the
image area, so a given count covers the same fraction of an image of any size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ._core import register
from ._ops import from_uint8, scaled_side, to_uint8

PATCH = 16
BLOCK = 32


@register(19, "jitter", (0.6, 1.0, 1.6, 2.5, 4.0), "max displacement (px)")
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


@register(20, "non_eccentricity_patch", (20, 45, 90, 150, 240), "number of 16x16 patches")
def non_eccentricity_patch(img: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Non-eccentricity patches: copy ``count`` random patches (16x16 at 384x512) to a nearby
    position (offset uniform in ``[-side, side]`` px per axis, never zero), overwriting what is
    there."""
    h, w, _ = img.shape
    p = scaled_side(PATCH, img.shape, minimum=4)
    out = img.copy()
    for _ in range(int(count)):
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        while True:
            oy, ox = (int(v) for v in rng.integers(-p, p + 1, size=2))
            if oy or ox:
                break
        ty, tx = int(np.clip(y + oy, 0, h - p)), int(np.clip(x + ox, 0, w - p))
        out[ty:ty + p, tx:tx + p] = img[y:y + p, x:x + p]
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


@register(23, "color_block", (2, 4, 7, 11, 16), "number of 32x32 blocks")
def color_block(img: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Colour blocks: paste ``count`` square blocks (32x32 at 384x512) of uniform random colour at
    random positions."""
    h, w, _ = img.shape
    b = min(scaled_side(BLOCK, img.shape), h, w)
    out = img.copy()
    for _ in range(int(count)):
        y, x = int(rng.integers(0, h - b + 1)), int(rng.integers(0, w - b + 1))
        out[y:y + b, x:x + b] = rng.random(3, dtype=np.float32)
    return out
