"""The distortion table: the :class:`Distortion` record, registration and input checks.

Every distortion of the KADID-10k taxonomy (Lin, Hosu & Saupe, "KADID-10k: A Large-scale
Artificially Distorted IQA Database", QoMEX 2019, §3 and Table 1) is a function
``fn(img, param, rng) -> img`` on an ``H x W x 3`` float32 numpy image in ``[0, 1]``, registered
with :func:`register` together with its five severity parameters (level 1 = mildest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from ...errors import InputError

DistortionFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

N_LEVELS = 5
MIN_SIDE = 16

#: Every registered distortion by KADID id (filled by the group modules on import).
DISTORTIONS: Dict[int, "Distortion"] = {}


@dataclass(frozen=True)
class Distortion:
    """One KADID-10k distortion type.

    Attributes:
        id: KADID-10k type id (1..25).
        name: snake_case name (``"gaussian_blur"``).
        group: KADID category (``"blur"``, ``"color"``, ``"compression"``, ``"noise"``,
            ``"intensity"``, ``"spatial"``).
        levels: the parameter of levels 1..5 (severity grows with the level); its meaning is
            given by ``param``.
        param: what the level parameter is (``"sigma (px)"``).
        fn: ``fn(img, param, rng)`` on ``H x W x 3`` float32 in [0, 1].
    """

    id: int
    name: str
    group: str
    levels: Tuple[float, ...]
    param: str
    fn: DistortionFn

    def __call__(self, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        """Apply at ``level`` (1..5) to a checked image; output ``H x W x 3`` float32 in [0, 1]."""
        out = self.fn(img, self.levels[level - 1], rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def register(dist_id: int, name: str, levels: Tuple[float, ...], param: str
             ) -> Callable[[DistortionFn], DistortionFn]:
    """Decorator adding ``fn`` to :data:`DISTORTIONS` as type ``dist_id`` (group = module name)."""
    if len(levels) != N_LEVELS:
        raise ValueError(f"{name}: expected {N_LEVELS} level parameters, got {len(levels)}")

    def deco(fn: DistortionFn) -> DistortionFn:
        if dist_id in DISTORTIONS:
            raise ValueError(f"distortion id {dist_id} is already registered as {DISTORTIONS[dist_id].name}")
        group = fn.__module__.rsplit(".", 1)[-1]
        DISTORTIONS[dist_id] = Distortion(dist_id, name, group, tuple(levels), param, fn)
        return fn

    return deco


def get_distortion(dist: Union[int, str]) -> Distortion:
    """Look a distortion up by KADID id (``1``) or name (``"gaussian_blur"``).

    Raises:
        InputError: unknown id or name (the message lists the known ones).
    """
    if isinstance(dist, (int, np.integer)) and not isinstance(dist, bool):
        if int(dist) in DISTORTIONS:
            return DISTORTIONS[int(dist)]
    elif isinstance(dist, str):
        for d in DISTORTIONS.values():
            if d.name == dist:
                return d
    known = ", ".join(f"{d.id} {d.name}" for d in sorted(DISTORTIONS.values(), key=lambda d: d.id))
    raise InputError(f"dist: unknown distortion {dist!r}; known (id name): {known}")


def check_level(level: object) -> int:
    """``level`` must be an integer in 1..5 (raises :class:`InputError`)."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= int(level) <= N_LEVELS:
        raise InputError(f"level: expected an integer severity in 1..{N_LEVELS}, got {level!r}")
    return int(level)


def check_array_image(img: object, name: str = "img") -> np.ndarray:
    """Check an ``H x W x 3`` float image in [0, 1] (H, W >= 16); return it as float32.

    Raises:
        InputError: naming ``name``, what was expected and what was received.
    """
    if not isinstance(img, np.ndarray):
        raise InputError(
            f"{name}: expected a numpy array H x W x 3 float32 in [0, 1], got {type(img).__name__}. "
            "Convert a [1, 3, H, W] tensor with x[0].permute(1, 2, 0).numpy()."
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"{name}: expected shape H x W x 3 (RGB, channels last), got {list(img.shape)}")
    if min(img.shape[:2]) < MIN_SIDE:
        raise InputError(f"{name}: expected both sides >= {MIN_SIDE} px, got {img.shape[0]}x{img.shape[1]}")
    if not np.issubdtype(img.dtype, np.floating):
        raise InputError(f"{name}: expected a float array in [0, 1], got dtype {img.dtype}; divide uint8 by 255")
    if not np.isfinite(img).all():
        raise InputError(f"{name}: contains NaN or Inf values")
    lo, hi = float(img.min()), float(img.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise InputError(f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def as_generator(rng: Optional[Union[np.random.Generator, int]]) -> np.random.Generator:
    """A numpy Generator from a Generator (returned as is), an int seed, or ``None`` (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InputError(f"rng: expected a numpy.random.Generator or an int seed, got {type(rng).__name__}")
