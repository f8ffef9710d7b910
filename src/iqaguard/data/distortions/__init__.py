"""The 25 KADID-10k distortion types with five severity levels each.

Re-implemented from the type descriptions of Lin, Hosu & Saupe, "KADID-10k: A Large-scale
Artificially Distorted IQA Database", QoMEX 2019 (§3, Table 1); the level parameters are this
package's own choice (see ``docs/builtin_kadid.md``), picked so that the pseudo-MOS of
``builtin-kadid`` spans the 1..5 scale and decreases with the level for every type.

Images are **numpy arrays** ``H x W x 3`` (channels last), float in ``[0, 1]``, RGB, both sides
at least 16 px. Convert a ``[1, 3, H, W]`` tensor with ``x[0].permute(1, 2, 0).numpy()`` and
back with ``torch.from_numpy(y).permute(2, 0, 1)[None]``.

Example::

    from iqaguard.data.distortions import DISTORTIONS, apply_distortion
    y = apply_distortion(img, "jpeg", level=3, rng=np.random.default_rng(0))
    [(d.id, d.name) for d in DISTORTIONS.values()]

| id | name | id | name |
|---|---|---|---|
| 1 | gaussian_blur | 14 | multiplicative_noise |
| 2 | lens_blur | 15 | denoise |
| 3 | motion_blur | 16 | brighten |
| 4 | color_diffusion | 17 | darken |
| 5 | color_shift | 18 | mean_shift |
| 6 | color_quantization | 19 | jitter |
| 7 | color_saturation_hsv | 20 | non_eccentricity_patch |
| 8 | color_saturation_lab | 21 | pixelate |
| 9 | jpeg2000 (needs OpenJPEG in Pillow) | 22 | quantization |
| 10 | jpeg | 23 | color_block |
| 11 | white_noise | 24 | high_sharpen |
| 12 | white_noise_color | 25 | contrast_change |
| 13 | impulse_noise | | |
"""
from __future__ import annotations

from typing import List, Optional, Union

import numpy as np

from . import blur, color, compression, intensity, noise, spatial  # noqa: F401  (registration)
from ._core import (DISTORTIONS, N_LEVELS, Distortion, as_generator, check_array_image, check_level,
                    get_distortion)
from .compression import HAS_JPEG2000

# Keep the public table ordered by KADID id whatever the import order.
_ordered = dict(sorted(DISTORTIONS.items()))
DISTORTIONS.clear()
DISTORTIONS.update(_ordered)


def apply_distortion(img: np.ndarray, dist: Union[int, str], level: int,
                     rng: Optional[Union[np.random.Generator, int]] = None) -> np.ndarray:
    """Distort one image with a KADID-10k type at a severity level.

    Args:
        img: ``H x W x 3`` float (float32/float64) numpy array in ``[0, 1]``, RGB, H, W >= 16.
        dist: KADID type id (1..25) or name (``"gaussian_blur"``), see :data:`DISTORTIONS`.
        level: severity 1 (mildest) .. 5 (strongest).
        rng: numpy ``Generator`` (consumed), an int seed, or ``None`` for seed 0. The output is a
            deterministic function of ``(img, dist, level)`` and the generator's state.

    Returns:
        ``H x W x 3`` float32 array in ``[0, 1]`` (a new array; ``img`` is not modified).

    Raises:
        InputError: bad image, unknown type, level outside 1..5, or a bad ``rng``.
    """
    x = check_array_image(img, "img")
    d = get_distortion(dist)
    lv = check_level(level)
    return d(x, lv, as_generator(rng))


def distortion_names() -> List[str]:
    """Names of the available types, in KADID id order."""
    return [d.name for d in DISTORTIONS.values()]


__all__ = ["DISTORTIONS", "Distortion", "HAS_JPEG2000", "N_LEVELS", "apply_distortion",
           "distortion_names", "get_distortion"]
