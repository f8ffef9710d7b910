"""Attack base class (DESIGN.md §Attack).

Attacks always *improve* predicted quality: they maximise ``sign * f(x') / diam(f)``, the
normalised objective of Guardians of Image Quality §3.1 (``L(f(x')) = f(x') / diam(f)``).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch

from ..errors import InputError
from ..metrics.base import Metric, frozen
from ..validation import check_image, check_pair

PRESET_NAMES = ("weak", "medium", "strong")

#: the largest plausible L∞ budget on the [0, 1] image scale: 64/255 (~0.251); Guardians of Image Quality uses
#: 2/255, 4/255 and 8/255, so anything above is almost surely a value on the 0..255 scale
MAX_LINF_EPS = 64 / 255


def check_budget(name: str, value: Any, upper: float, upper_text: str, alt: str = "") -> float:
    """``value`` as a float if ``0 < value <= upper`` (a budget on the [0, 1] image scale).

    Otherwise an :class:`InputError` with a one-line message naming ``name``, the value, the
    plausible range (``upper_text`` spells ``upper``; ``alt`` adds other accepted values) and
    the likely intent: a value in ``[1, 255]`` was most probably meant on the 0..255 scale, so
    ``value/255`` is suggested when that is plausible.
    """
    rng = f"expected 0 < {name} <= {upper_text} on the [0, 1] image scale{alt}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: {rng} (e.g. {name}=4/255), got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name}={v!r} is not finite: {rng} (e.g. {name}=4/255)")
    if v <= 0:
        raise InputError(f"{name}={value!r} is not positive: {rng} (e.g. {name}=4/255)")
    if v > upper:
        if 1 <= v <= 255 and v / 255 <= upper:
            raise InputError(f"{name}={value!r} is on the 0..255 scale? pass {name}={value!r}/255 "
                             f"(={v / 255:.4g}); {rng}")
        if 1 <= v <= 255:
            raise InputError(f"{name}={value!r} is on the 0..255 scale? even {name}={value!r}/255 "
                             f"(={v / 255:.4g}) is too large; {rng} (e.g. {name}=8/255)")
        what = f"(={v * 255:.4g}/255) " if v < 1 else ""
        raise InputError(f"{name}={value!r} {what}is outside the plausible range: {rng} (e.g. {name}=4/255)")
    return v


def linf_box(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds ``(lo, hi)`` of the L∞ ball of radius ``eps`` around ``x``, within [0, 1].

    ``x + eps`` rounds in float arithmetic, so ``hi - x`` can exceed ``eps`` by an ulp. Each bound that does is moved towards ``x`` by its excess (at least
    one float), until ``hi - x <= eps`` and ``x - lo <= eps`` hold as computed in ``x``'s dtype
    (compared with ``eps`` in double precision), not just in exact arithmetic.
    """
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    for _ in range(64):  # one or two rounds in practice: every round removes the whole excess
        over_hi, over_lo = (hi - x).double() - eps, (x - lo).double() - eps
        if not bool((over_hi > 0).any() or (over_lo > 0).any()):
            return lo, hi
        hi = torch.where(over_hi > 0, torch.minimum(torch.nextafter(hi, x), (hi.double() - over_hi).to(x.dtype)), hi)
        lo = torch.where(over_lo > 0, torch.maximum(torch.nextafter(lo, x), (lo.double() + over_lo).to(x.dtype)), lo)
    raise RuntimeError(f"linf_box: could not fit the bounds within eps={eps!r} in {x.dtype}")


class Attack:
    """Base attack: ``a(metric, x, ref=None) -> x_adv`` (``[B, 3, H, W]`` in [0, 1]).

    Subclasses define ``restriction``, ``presets`` (``weak``/``medium``/``strong`` -> kwargs),
    ``defaults`` and :meth:`run`.
    """

    restriction: ClassVar[str] = "linf"
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}
    defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, preset: Optional[str] = None, **kwargs: Any) -> None:
        params = dict(self.defaults)
        if preset is not None:
            if preset not in self.presets:
                raise InputError(
                    f"preset: unknown preset {preset!r} for attack {type(self).__name__}; "
                    f"allowed: {', '.join(self.presets)}"
                )
            params.update(self.presets[preset])
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise InputError(
                f"unknown argument(s) {sorted(unknown)} for attack {type(self).__name__}; "
                f"allowed: {sorted(self.defaults)}"
            )
        params.update(kwargs)
        self.preset = preset
        self.params = params
        for k, v in params.items():
            setattr(self, k, v)

    def __call__(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Attack ``metric`` on ``x`` (and ``ref`` for FR metrics); returns ``x_adv``."""
        if not isinstance(metric, Metric):
            raise InputError(f"metric: expected an iqaguard Metric, got {type(metric).__name__}")
        if metric.kind == "fr":
            if ref is None:
                raise InputError("ref: attacking a full-reference metric needs ref= (the reference image)")
            check_pair(x, ref)
        else:
            check_image(x, "x")
        # eval mode and no parameter gradients for the attack, without ever calling train():
        # each submodule's own flag is restored, BatchNorm statistics stay as they are
        with frozen(metric):
            out = self.run(metric, x.detach(), None if ref is None else ref.detach(), generator)
        return out.detach().clamp(0, 1)

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError  # abstractmethod: every registered attack overrides it

    @staticmethod
    def objective(metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-image objective ``[B]`` to maximise: ``sign * f(x) / diam(f)``."""
        s = metric.score(x, ref)
        return metric.improvement_sign() * s / max(metric.bounds.diam, 1e-12)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(preset={self.preset!r}, {args})"
