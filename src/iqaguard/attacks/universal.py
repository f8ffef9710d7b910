"""The universal family: one perturbation learned once, then added to every image.

A :class:`UniversalAttack` is fitted on a set of training images (:meth:`~UniversalAttack.fit`),
keeps its perturbation ``delta`` ``[1, 3, S, S]`` (``state_dict()`` / ``save`` as safetensors) and
attacks an image by resizing ``delta`` to the image (bilinear), adding it and clipping to [0, 1]
(:meth:`~UniversalAttack.apply`); the L∞ budget holds after resizing, since bilinear
interpolation never leaves the range of its inputs.
"""
from __future__ import annotations

from abc import abstractmethod

import json
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from ..errors import InputError, MissingWeightsError
from ..metrics.base import Metric, frozen
from ..validation import check_image
from .gradient import GradientAttack


class UniversalAttack(GradientAttack):
    """Base of the universal attacks (UAP, Optimized-UAP): subclasses implement :meth:`learn`."""

    delta: Optional[torch.Tensor] = None

    def fit(self, metric: Metric, images: torch.Tensor, ref: Optional[torch.Tensor] = None,
            generator: Optional[torch.Generator] = None) -> "UniversalAttack":
        """Learn the perturbation on ``images [N, 3, H, W]`` (and ``ref`` for FR metrics); returns self."""
        check_image(images, "images")
        with frozen(metric):
            delta = self.learn(metric, images.detach(), None if ref is None else ref.detach(), generator)
        self.delta = delta.detach().cpu()
        return self

    @abstractmethod
    def learn(self, metric: Metric, images: torch.Tensor, ref: Optional[torch.Tensor],
              generator: Optional[torch.Generator]) -> torch.Tensor:
        """Return the perturbation ``[1, 3, S, S]`` (called by :meth:`fit`)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``clip(x + resize(delta), 0, 1)``."""
        if self.delta is None:
            raise InputError(f"{type(self).__name__} has no perturbation yet: call fit(metric, images) "
                             "or load(path) first")
        d = self.delta.to(device=x.device, dtype=x.dtype)
        if d.shape[-2:] != x.shape[-2:]:
            d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (x + d).clamp(0.0, 1.0)

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        return self.apply(x)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        if self.delta is None:
            raise InputError(f"{type(self).__name__}: nothing to save before fit()")
        return {"delta": self.delta.contiguous()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        d = state.get("delta")
        if not isinstance(d, torch.Tensor) or d.dim() != 4 or d.shape[:2] != (1, 3):
            raise InputError("state: expected {'delta': tensor [1, 3, S, S]}")
        self.delta = d.float().cpu()

    def save(self, path: Union[str, Path]) -> Path:
        """Write the perturbation and the attack's parameters as a safetensors file."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"attack": type(self).__name__, "params": json.dumps(self.params, default=str)}
        save_file(self.state_dict(), str(path), metadata=meta)
        return path

    def load(self, path: Union[str, Path]) -> "UniversalAttack":
        """Read a perturbation written by :meth:`save`; returns self."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise MissingWeightsError(f"no universal perturbation at {path}: fit one and save() it there")
        try:
            self.load_state_dict(load_file(str(path)))
        except SafetensorError as e:
            raise InputError(f"{path} is not a safetensors perturbation file ({e})") from None
        return self
