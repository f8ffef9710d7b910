"""Pseudo-MOS (v2) of ``builtin-kadid``: a fixed consensus of weightless full-reference measures.

Synthetic distortions of the builtin photographs have no subjective scores, so ``builtin-kadid``
labels every distorted image with a *pseudo-MOS* on KADID-10k's 1..5 scale computed from the
pair (distorted, reference) only, with fixed maps (no normalisation over the dataset, so a label
never depends on which other images were generated); 5 = indistinguishable from the reference:

    pseudo_MOS = 1 + 4 * mean(q_ssim, q_gmsd, q_chroma),   each q in [0, 1]

* ``q_ssim   = clip(SSIM_Y, 0, 1)`` — SSIM of the BT.601 luma (Wang et al., IEEE TIP 2004,
  eq. 13, ``ssim.m`` constants) at full resolution: no automatic downsampling, which would
  average 2x2 blocks and hide 2x2 pixelation.
* ``q_gmsd   = 1 - clip(GMSD / 0.35, 0, 1)`` — gradient magnitude similarity deviation of the
  luma (Xue, Zhang, Mou & Bovik, IEEE TIP 2014, eqs. 4-8) at full resolution (without the
  paper's 2x2 pre-averaging, for the same reason).
* ``q_chroma = 1 - clip(mean dC / 10, 0, 1)`` — mean CIE Lab (D65) chroma difference
  ``sqrt(da*^2 + db*^2)`` (CIE76 without lightness): the colour term that makes colour
  diffusion, chroma noise and (de)saturation visible to the label.

The maps and their per-cell statistics live in :mod:`iqaguard.metrics.cells` (builtin-nr
predicts them). PSNR over RGB is computed and stored with every label for analysis but does not
enter it. ``docs/builtin_kadid.md`` records why this formula and what it gives per type.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab

from ..errors import InputError
from ..metrics.cells import CHROMA_MAX, GMSD_MAX, gms_map, label_stats
from ..metrics.functional import psnr
from ..validation import check_image, check_pair

#: name -> formula of each term, as documented above and in docs/builtin_kadid.md.
TERMS = {
    "psnr": "PSNR_RGB (dB; stored, not in the label)",
    "ssim": "clip(SSIM_Y full resolution, 0, 1)",
    "gmsd": "1 - clip(GMSD full resolution / 0.35, 0, 1)",
    "chroma": "1 - clip(mean dC*ab / 10, 0, 1)",
}
#: the mapped terms that enter the pseudo-MOS (``psnr`` is stored for analysis only)
MOS_TERMS = ("q_ssim", "q_gmsd", "q_chroma")


def gmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude similarity deviation (Xue et al., IEEE TIP 2014).

    Luma ``Y = 0.299 R + 0.587 G + 0.114 B`` on 0..255, 2x2 mean filter and subsampling by 2,
    Prewitt gradient magnitudes ``m`` (eq. 4, 'valid' borders), similarity map
    ``GMS = (2 m_x m_y + T) / (m_x^2 + m_y^2 + T)`` with ``T = 170`` (eq. 5), and GMSD = the
    standard deviation of the GMS map (eq. 8).

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1] (H, W >= 8).
        y: reference, same shape.

    Returns:
        ``[B]`` GMSD >= 0 (0 for identical images; lower is better).
    """
    check_pair(x, y, "x", "y")
    return _gmsd(x, y)


def _gmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` may have batch 1 (broadcast over ``x``)."""
    return gms_map(x, y).flatten(1).std(dim=1, unbiased=False)


def delta_e76(x: torch.Tensor, y: torch.Tensor, downsample: int = 2) -> torch.Tensor:
    """Mean CIE76 colour difference ``sqrt(dL^2 + da^2 + db^2)`` in CIE Lab (D65).

    Both images are first averaged over ``downsample x downsample`` blocks: the eye resolves
    chromatic detail at a lower resolution than luminance (the premise of S-CIELAB, Zhang &
    Wandell 1997), and fine luminance detail is already scored by the structural terms.

    Args:
        x: distorted ``[B, 3, H, W]`` sRGB in [0, 1].
        y: reference, same shape.
        downsample: block size of the mean filter (1 = full resolution).

    Returns:
        ``[B]`` mean dE*ab >= 0 (about 2.3 is a just-noticeable difference).
    """
    check_pair(x, y, "x", "y")
    return _delta_e(x, y, downsample)


def _delta_e(x: torch.Tensor, y: torch.Tensor, downsample: int) -> torch.Tensor:
    """``y`` may have batch 1 (broadcast over ``x``): a shared reference is converted once."""
    if downsample > 1:
        x, y = F.avg_pool2d(x, downsample), F.avg_pool2d(y, downsample)
    return (rgb_to_lab(x) - rgb_to_lab(y)).pow(2).sum(dim=1).sqrt().flatten(1).mean(dim=1)


def _check_ref(x: torch.Tensor, ref: torch.Tensor) -> None:
    """``x`` ``[B, 3, H, W]``; ``ref`` the same shape or ``[1, 3, H, W]`` (one shared reference)."""
    check_image(x, "x")
    check_image(ref, "ref")
    if ref.shape[1:] != x.shape[1:] or ref.shape[0] not in (1, x.shape[0]):
        raise InputError(
            f"ref: expected shape {list(x.shape)} or [1, {', '.join(map(str, x.shape[1:]))}] "
            f"(one reference shared by the batch), got {list(ref.shape)}"
        )


@torch.no_grad()
def quality_terms(x: torch.Tensor, ref: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Raw measures and mapped terms of the pseudo-MOS for a batch of pairs.

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], H, W >= 16.
        ref: reference, the same shape, or ``[1, 3, H, W]`` shared by the whole batch (its
            colour and gradient maps are then computed once).

    Returns:
        Dict of ``[B]`` tensors: raw ``psnr`` (dB), ``ssim``, ``gmsd``, ``chroma`` (mean dC*ab),
        and ``q_<name>`` for each mapped term of the label in [0, 1].
    """
    _check_ref(x, ref)
    return quality_terms_unchecked(x.float(), ref.float())


def quality_terms_unchecked(x: torch.Tensor, ref: torch.Tensor) -> Dict[str, torch.Tensor]:
    """:func:`quality_terms` without re-validating (callers pass checked float tensors)."""
    return terms_from_stats(x, ref, label_stats(x, ref))


def terms_from_stats(x: torch.Tensor, ref: torch.Tensor, raw: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The terms of :func:`quality_terms` from the whole-image statistics ``raw`` of
    :func:`iqaguard.metrics.cells.label_stats` (``x`` and ``ref`` give the stored PSNR)."""
    raw = dict(raw)
    raw["psnr"] = psnr(x, ref.expand_as(x), data_range=1.0, luma=False)
    q = {"q_ssim": raw["ssim"].clamp(0, 1), "q_gmsd": 1.0 - (raw["gmsd"] / GMSD_MAX).clamp(0, 1),
         "q_chroma": 1.0 - (raw["chroma"] / CHROMA_MAX).clamp(0, 1)}
    return {**raw, **q}


def mos_from_terms(terms: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``1 + 4 * mean`` of the :data:`MOS_TERMS` entries of :func:`quality_terms` -> ``[B]`` in [1, 5]."""
    q = torch.stack([terms[k] for k in MOS_TERMS])
    return 1.0 + 4.0 * q.mean(dim=0)


def pseudo_mos(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pseudo-MOS ``1 + 4 * mean(q_ssim, q_gmsd, q_chroma)`` (module docstring).

    Args:
        x: distorted ``[B, 3, H, W]`` in [0, 1], H, W >= 16.
        ref: reference, same shape or ``[1, 3, H, W]`` shared by the batch.

    Returns:
        ``[B]`` pseudo-MOS in [1, 5] (5 for identical images; higher is better).
    """
    return mos_from_terms(quality_terms(x, ref))


__all__ = ["MOS_TERMS", "TERMS", "delta_e76", "gmsd", "mos_from_terms", "pseudo_mos", "quality_terms",
           "quality_terms_unchecked", "terms_from_stats"]
