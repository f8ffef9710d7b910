"""JPEG compression as an adversarial purification (Guo et al. 2018; Guardians of Image Quality Table 1 and 8).

Re-encoding an image as JPEG discards the high-frequency detail in which most adversarial
perturbations live (Guardians of Image Quality §4). The round trip is libjpeg's (via PIL), so it has no useful
gradient: adaptive attacks go through :func:`iqaguard.defend`, which uses BPDA for it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...data.io import jpeg_roundtrip
from ...errors import InputError
from ...registry import DEFENSES
from ..base import Purification


@DEFENSES.register("jpeg")
class JPEG(Purification):
    """Baseline JPEG encode/decode at quality ``q`` (PIL/libjpeg, 4:2:0 chroma subsampling).

    Presets are the five qualities of Guardians of Image Quality Table 8 (q = 10, 30, 50, 70, 90), ordered weakest
    purification first as the :class:`Purification` contract asks: index 0 -> q=90, 1 -> 70,
    2 -> 50, 3 -> 30, 4 -> 10.

    Args:
        preset: index 0..4 into :attr:`presets`.
        q: libjpeg quality, an integer in 1..100 (default 50); lower compresses harder.
    """

    differentiable = False
    randomized = False
    presets = [{"q": 90}, {"q": 70}, {"q": 50}, {"q": 30}, {"q": 10}]
    defaults = {"q": 50}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(preset, **kwargs)
        if isinstance(self.q, bool) or not isinstance(self.q, int) or not 1 <= self.q <= 100:
            raise InputError(f"q: expected an integer JPEG quality in 1..100 (Guardians of Image Quality uses 10..90), got {self.q!r}")

    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Compress and decompress every image of ``x``.

        Args:
            x: ``[B, 3, H, W]`` float in [0, 1] (any device; encoded on the CPU after rounding
                to 8 bits).
            generator: unused (deterministic).

        Returns:
            ``[B, 3, H, W]`` float32 on ``x``'s device, values multiples of 1/255.
        """
        return jpeg_roundtrip(x.detach(), self.q)
