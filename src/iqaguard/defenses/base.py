"""Purification defense base class (DESIGN.md §Defense).

A purification ``P`` maps images to images. It declares whether it is differentiable (exact
gradients for adaptive attacks) or not (BPDA), whether it is randomized (then it takes a
``torch.Generator``; EOT for adaptive attacks), and its five presets (Guardians of Image Quality Table 8).
"""
from __future__ import annotations

import abc

from typing import Any, ClassVar, Dict, List, Optional

import torch

from ..errors import InputError
from ..validation import check_image


class Purification(abc.ABC):
    """``p(x, generator=None) -> x'`` with ``x``, ``x'`` ``[B, 3, H, W]`` in [0, 1]."""

    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    #: the five presets of Guardians of Image Quality Table 8, weakest first, as kwargs dicts
    presets: ClassVar[List[Dict[str, Any]]] = []
    defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        params = dict(self.defaults)
        if preset is not None:
            if not isinstance(preset, int) or not 0 <= preset < len(self.presets):
                raise InputError(
                    f"preset: expected an index 0..{len(self.presets) - 1} into {self.presets}, got {preset!r}"
                )
            params.update(self.presets[preset])
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise InputError(
                f"unknown argument(s) {sorted(unknown)} for defense {type(self).__name__}; "
                f"allowed: {sorted(self.defaults)}"
            )
        params.update(kwargs)
        self.preset = preset
        self.params = params
        for k, v in params.items():
            setattr(self, k, v)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        check_image(x, "x")
        return self.apply(x, generator).clamp(0, 1)

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Unchecked purification (abstract: a defense class without it cannot be built)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
