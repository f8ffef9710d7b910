"""Metric bounds calibration (Guardians of Image Quality, appendix A.3.2).

Seed 002 normalises every robustness score by the metric's range ``diam(f) = |best - worst|``
(§3.1) and fixes that range empirically (appendix A.3.2): the *best* value is the best score
reached on pristine images, the *worst* value the worst score reached on heavily compressed
(JPEG quality 10) versions of those images and on random-noise images.

For a full-reference metric every image is scored against its pristine original: the pristine
value is ``f(x, x)``; the distorted values are ``f(jpeg(x), x)`` and ``f(noise, x)``.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Tuple, Union

import torch

from ..data.io import jpeg_roundtrip
from ..errors import InputError, ScoreError
from ..validation import check_image
from .base import Bounds, Metric, frozen

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_list(images: Images) -> List[torch.Tensor]:
    """Split ``images`` into validated ``[1, 3, H, W]`` tensors (sizes may differ)."""
    if isinstance(images, torch.Tensor):
        check_image(images, "images")
        return list(images.split(1))
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise InputError(
            "images: expected a [B, 3, H, W] tensor or a non-empty list of [1, 3, H, W] tensors, "
            f"got {type(images).__name__}{' (empty)' if isinstance(images, (list, tuple)) else ''}"
        )
    out: List[torch.Tensor] = []
    for i, img in enumerate(images):
        if isinstance(img, torch.Tensor) and img.dim() == 3:
            img = img.unsqueeze(0)
        check_image(img, f"images[{i}]")
        out.extend(img.split(1))
    return out


def _batches(images: List[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Group images of equal size (first-seen order) into batches of at most ``batch_size``."""
    groups: dict = {}
    for img in images:
        groups.setdefault(tuple(img.shape[-2:]), []).append(img)
    for same in groups.values():
        for k in range(0, len(same), batch_size):
            yield torch.cat(same[k : k + batch_size])


def _make_generator(seed: Union[int, torch.Generator]) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed: expected an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _score(metric: Metric, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    out = metric(x, ref) if metric.kind == "fr" else metric(x)
    return out.detach().reshape(-1).double().cpu()


def collect_scores(
    metric: Metric,
    images: Images,
    seed: Union[int, torch.Generator] = 0,
    jpeg_quality: int = 10,
    batch_size: int = 4,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scores of the pristine and of the distorted images of the A.3.2 protocol.

    Args:
        metric: an NR or FR :class:`Metric`.
        images: pristine ``[B, 3, H, W]`` batch or list of ``[1, 3, H, W]`` tensors in [0, 1].
        seed: seed (or generator) of the uniform noise images.
        jpeg_quality: JPEG quality of the compressed versions (002: 10).
        batch_size: images per metric call.

    Returns:
        ``(pristine, distorted)``: float64 CPU tensors ``[N]`` and ``[2N]`` (JPEG then noise per
        batch). For FR metrics the pristine scores are ``f(x, x)`` and the distorted ones use
        ``x`` as the reference.
    """
    if not isinstance(metric, Metric):
        raise InputError(f"metric: expected an iqaguard Metric, got {type(metric).__name__}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size: expected a positive integer, got {batch_size}")
    gen = _make_generator(seed)
    imgs = _as_list(images)
    device = metric.device
    pristine, distorted = [], []
    with torch.no_grad(), frozen(metric):  # eval mode; BatchNorm statistics are never updated
        for x in _batches(imgs, int(batch_size)):
            x = x.to(device=device, dtype=torch.float32)
            jpeg = jpeg_roundtrip(x, jpeg_quality)
            noise = torch.rand(x.shape, generator=gen, dtype=torch.float32).to(device)
            pristine.append(_score(metric, x, x))
            distorted.append(_score(metric, jpeg, x))
            distorted.append(_score(metric, noise, x))
    return torch.cat(pristine), torch.cat(distorted)


def calibrate_bounds(
    metric: Metric,
    images: Images,
    seed: Union[int, torch.Generator] = 0,
    jpeg_quality: int = 10,
    batch_size: int = 4,
) -> Bounds:
    """Empirical metric range of Guardians of Image Quality appendix A.3.2.

    ``best`` = the best score over the pristine images (the maximum for higher-better metrics,
    the minimum for lower-better ones; for FR metrics the pristine score is ``f(x, x)``);
    non-finite pristine scores (e.g. PSNR of identical images) are skipped.
    ``worst`` = the worst score over the JPEG q=``jpeg_quality`` versions
    (:func:`iqaguard.data.io.jpeg_roundtrip`) and over as many uniform ``U[0, 1]`` noise images
    of the same sizes (drawn from ``seed``); FR metrics compare them with the pristine image.

    Args:
        metric: the metric (its ``lower_better`` and ``kind`` are used).
        images: pristine ``[B, 3, H, W]`` batch or list of ``[1, 3, H, W]`` tensors of any sizes.
        seed: seed or ``torch.Generator`` of the noise images.
        jpeg_quality: JPEG quality (1..100) of the compressed versions.
        batch_size: images per metric call (images of different sizes are never batched).

    Returns:
        ``Bounds(worst, best)`` as Python floats.

    Raises:
        ScoreError: a score is NaN, no finite pristine score exists, or the range is degenerate
            (``best == worst``) or inverted (the pristine images score worse than the distorted
            ones, which usually means ``lower_better`` is wrong).
    """
    pristine, distorted = collect_scores(metric, images, seed, jpeg_quality, batch_size)
    if torch.isnan(pristine).any() or torch.isnan(distorted).any():
        raise ScoreError(f"calibrate_bounds: metric {metric.name!r} returned NaN scores; cannot calibrate")
    good = pristine[torch.isfinite(pristine)]
    bad = distorted[torch.isfinite(distorted)]
    if good.numel() == 0 or bad.numel() == 0:
        which = "pristine" if good.numel() == 0 else "distorted"
        raise ScoreError(f"calibrate_bounds: metric {metric.name!r} gave no finite score on the {which} images")
    if metric.lower_better:
        best, worst = float(good.min()), float(bad.max())
    else:
        best, worst = float(good.max()), float(bad.min())
    if not (math.isfinite(best) and math.isfinite(worst)) or best == worst:
        raise ScoreError(
            f"calibrate_bounds: degenerate range for metric {metric.name!r}: best={best}, worst={worst}. "
            "The metric does not separate pristine from JPEG/noise images; pass Bounds explicitly."
        )
    if (best < worst) != metric.lower_better:
        raise ScoreError(
            f"calibrate_bounds: metric {metric.name!r} scores pristine images worse than distorted ones "
            f"(best={best:.6g}, worst={worst:.6g} with lower_better={metric.lower_better}). "
            "Check the metric's lower_better flag."
        )
    return Bounds(worst=worst, best=best)


__all__ = ["calibrate_bounds", "collect_scores"]
