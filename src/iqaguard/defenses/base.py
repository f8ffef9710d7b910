"""Purification defense base class (DESIGN.md §Defense; the contract is in ``docs/defenses.md``).

A purification ``P`` maps images to images. What it declares, read on an *instance* (a subclass
may compute any of them from its parameters with a property):

* ``differentiable`` — autograd through :meth:`Purification.apply` gives the gradient adaptive
  attacks should use (exact gradients); when False, :func:`iqaguard.defend` uses BPDA;
* :meth:`Purification.surrogate` — the differentiable approximation BPDA differentiates instead
  (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018,
  §4.1); ``None`` means the identity;
* ``randomized`` — it draws from a ``torch.Generator`` (EOT for adaptive attacks);
* :meth:`Purification.output_size` — the ``(H', W')`` it returns for an ``H x W`` input (the
  input size unless it resizes on purpose) and ``min_size``, the smallest input side it accepts;
* ``presets`` — its parameter grid, weakest first (Guardians of Image Quality Table 8).

Randomness: ``generator`` is ``None`` (torch's global CPU generator), one ``torch.Generator``
for the whole batch, or a sequence of ``B`` generators, one per image: image ``i`` then draws
exactly what ``p(x[i:i+1], generator=generators[i])`` would, so a batch is purified at once
with per-image seeds (clean and attacked images of one pair get the same draw).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..validation import check_image

#: what the ``generator`` argument of a purification accepts
Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


class Purification(abc.ABC):
    """``p(x, generator=None) -> x'`` with ``x`` ``[B, 3, H, W]`` and ``x'`` ``[B, 3, H', W']`` in [0, 1].

    ``(H', W') = p.output_size(H, W)``: the input size for every defense but those that resize on
    purpose (``resize``; ``random-crop`` with ``rescale=False``).
    """

    #: autograd through :meth:`apply` is the gradient to attack with (else BPDA); may be a property
    differentiable: bool = False
    #: draws from a generator (EOT for adaptive attacks); may be a property
    randomized: bool = False
    #: the presets of Guardians of Image Quality Table 8, weakest first, as kwargs dicts
    presets: ClassVar[List[Dict[str, Any]]] = []
    defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        params = {**self.defaults, **preset_entry(self.presets, preset)}
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

    # ------------------------------------------------------------------ contract
    @property
    def min_size(self) -> int:
        """Smallest ``H`` and ``W`` the defense accepts (1 unless a filter or crop needs more)."""
        return 1

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        """``(H', W')`` of the output for an ``h x w`` input (the input size by default)."""
        return h, w

    def surrogate(self) -> Optional["Purification"]:
        """The differentiable approximation BPDA uses for a non-differentiable defense; ``None`` = identity.

        The surrogate must return the same output size as the defense; a randomized defense's
        surrogate is given a generator replaying the defense's own draws.
        """
        return None

    def __call__(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Purify ``x`` (validated): ``[B, 3, H, W]`` in [0, 1] -> ``[B, 3, H', W']`` in [0, 1]."""
        check_image(x, "x")
        self.check_input(x, generator)
        return self.apply(x, generator).clamp(0, 1)

    def check_input(self, x: torch.Tensor, generator: Generators = None) -> None:
        """Raise :class:`InputError` for an image below :attr:`min_size` or a bad ``generator``."""
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise InputError(f"x: {self!r} needs images of at least {self.min_size}x{self.min_size} pixels, "
                             f"got {h}x{w}; use larger images or a weaker preset")
        check_generator(generator, x.shape[0])

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Unchecked purification (abstract: a defense class without it cannot be built)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def check_generator(generator: Generators, batch: int) -> None:
    """Raise :class:`InputError` unless ``generator`` is None, a Generator or ``batch`` Generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch:
            raise InputError(f"generator: expected one torch.Generator per image ({batch}), got {len(generator)}")
        return
    raise InputError(f"generator: expected None, a torch.Generator or a list of {batch} generators, "
                     f"got {type(generator).__name__}")


def draw(x: torch.Tensor, generator: Generators, shape: Sequence[int], normal: bool = False) -> torch.Tensor:
    """``[B, *shape]`` samples of U[0, 1) (or N(0, 1) with ``normal``) in ``x``'s dtype, on ``x``'s device.

    Drawn on the generator's device (the global CPU generator for ``None``); with a sequence of
    generators row ``i`` comes from ``generator[i]``.
    """
    fn = torch.randn if normal else torch.rand
    b, shape = x.shape[0], tuple(int(s) for s in shape)
    if generator is None or isinstance(generator, torch.Generator):
        dev = generator.device if generator is not None else torch.device("cpu")
        return fn((b, *shape), generator=generator, device=dev, dtype=x.dtype).to(x.device)
    return torch.stack([fn(shape, generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator])


def match_size(px: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``px`` resized (bilinear, antialiased when shrinking) to the ``H x W`` of ``like``; unchanged if equal.

    For fidelity between a size-changing defense's output and its input (docs/defenses.md).
    """
    if px.shape[-2:] == like.shape[-2:]:
        return px
    return F.interpolate(px, size=like.shape[-2:], mode="bilinear", align_corners=False,
                         antialias=px.shape[-2] > like.shape[-2] or px.shape[-1] > like.shape[-1])


def preset_entry(presets: Sequence[Dict[str, Any]], preset: Optional[int]) -> Dict[str, Any]:
    """The parameters of preset index ``preset`` (``{}`` for ``None``); one InputError line otherwise."""
    if preset is None:
        return {}
    if isinstance(preset, bool) or not isinstance(preset, int) or not 0 <= preset < len(presets):
        raise InputError(f"preset: expected an index 0..{len(presets) - 1} into {list(presets)}, got {preset!r}")
    return dict(presets[preset])


def check_int(name: str, value: Any, allowed: Sequence[int] = (), low: int = 1, high: Optional[int] = None,
              odd: bool = False) -> int:
    """A validated integer parameter (``InputError`` naming it, the range and the Table 8 grid otherwise)."""
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= low and (high is None or value <= high)
    if ok and odd and value % 2 == 0:
        ok = False
    if not ok:
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        grid = f" (Guardians of Image Quality Table 8 uses {', '.join(map(str, allowed))})" if allowed else ""
        raise InputError(f"{name}: expected {'an odd' if odd else 'an'} integer {rng}{grid}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float, high: float, low_open: bool = True,
                grid: Sequence[float] = ()) -> float:
    """A validated real parameter in ``(low, high]`` (``[low, high]`` with ``low_open=False``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        g = f" (Guardians of Image Quality Table 8 uses {', '.join(f'{v:g}' for v in grid)})" if grid else ""
        raise InputError(f"{name}: expected a number in {'(' if low_open else '['}{low:g}, {high:g}]{g}, got {value!r}")
    return value
