"""Attack base class and its one parameter mechanism (DESIGN.md §Attack).

Attacks always *improve* predicted quality: they maximise ``sign * f(x') / diam(f)``, the
normalised objective of Guardians of Image Quality §3.1 (``L(f(x')) = f(x') / diam(f)``).

Parameters are the typed keyword arguments of each attack's ``__init__`` (what ``help()`` and an
IDE show). :class:`Attack` wraps every subclass's ``__init__`` once, when the class is defined, so
that all attacks share the same mechanics without repeating them:

* ``preset="medium"`` fills the parameters the class's ``presets`` table names, under any value
  passed explicitly (``PGD(preset="medium", steps=20)``);
* an unknown parameter or preset is one :class:`~iqaguard.errors.InputError` line listing the
  allowed ones (the benchmark spec checks kwargs against the same signature);
* every parameter is set as an attribute before the subclass's ``__init__`` body runs (which then
  only validates), and the resolved values are kept in ``params`` (stored with benchmark rows).

The three families (:mod:`.gradient`, :mod:`.query`, :mod:`.universal`) build on it.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
import inspect
from typing import Any, ClassVar, Dict, Optional

import torch

from ..errors import InputError
from ..metrics.base import Metric, frozen
from ..validation import check_image, check_pair
from .budgets import Restriction


def _wrap_init(cls: type, init: Any) -> None:
    """Give ``cls`` an ``__init__`` that runs ``init`` with the shared ``preset=`` / unknown-argument
    / ``params`` handling (``init``: the class's own ``__init__`` or the one it inherits, unwrapped)."""
    sig = inspect.signature(init)
    names = [p.name for p in list(sig.parameters.values())[1:] if p.kind is not p.VAR_KEYWORD]

    @functools.wraps(init)
    def __init__(self, *args: Any, preset: Optional[str] = None, **kwargs: Any) -> None:
        if type(self) is not cls:  # a subclass's __init__ calling super().__init__(...): plain call
            init(self, *args, **kwargs)
            return
        values: Dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise InputError(f"preset: unknown preset {preset!r} for attack {cls.__name__}; "
                                 f"allowed: {', '.join(cls.presets) or '(none)'}")
            values.update(cls.presets[preset])
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise InputError(f"unknown argument(s) {unknown} for attack {cls.__name__}; allowed: {names}")
        try:
            explicit = sig.bind_partial(self, *args, **kwargs).arguments
        except TypeError as e:
            raise InputError(f"attack {cls.__name__}: {e}; its arguments: {names}") from None
        explicit.pop(next(iter(sig.parameters)), None)
        values.update(explicit)
        bound = sig.bind(self, **values)
        bound.apply_defaults()
        params = {k: v for k, v in bound.arguments.items() if k in names}
        self.preset, self.params = preset, params
        for k, v in params.items():
            setattr(self, k, v)
        init(self, **values)

    params = list(sig.parameters.values())
    shown = params[1:] + [inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Optional[str])]
    # keyword-only after the positional ones, as Python requires
    shown = [p for p in shown if p.kind is not p.KEYWORD_ONLY] + [p for p in shown if p.kind is p.KEYWORD_ONLY]
    __init__.__signature__ = sig.replace(parameters=[params[0]] + shown)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[assignment]
    cls.__signature__ = sig.replace(parameters=shown)  # what inspect.signature(cls) and the spec see


def seeded(generator: Optional[torch.Generator]) -> torch.Generator:
    """``generator``, or a fresh CPU generator seeded with 0: every attack is deterministic by default."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


class Attack(ABC):
    """Base attack: ``a(metric, x, ref=None, generator=None) -> x_adv`` (``[B, 3, H, W]`` in [0, 1]).

    Subclasses declare ``restriction`` (a :class:`~.budgets.Restriction`), ``varied`` (the single
    strength parameter the presets vary, Guardians of Image Quality Table 7), ``presets``
    (``weak``/``medium``/``strong`` -> parameter values), a typed ``__init__`` whose body only
    validates, and :meth:`run`.
    """

    restriction: ClassVar[Restriction] = Restriction.LINF
    varied: ClassVar[str] = "eps"
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}
    preset: Optional[str] = None
    params: Dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__init__")
        init = own if own is not None else getattr(cls.__init__, "__wrapped__", None)
        if init is not None:
            _wrap_init(cls, init)
        for name, values in cls.presets.items():
            init = inspect.signature(cls.__init__)
            bad = sorted(set(values) - set(init.parameters))
            if bad:
                raise TypeError(f"{cls.__name__}.presets[{name!r}] names unknown parameters {bad}")

    def __call__(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Attack ``metric`` on ``x`` (and ``ref`` for FR metrics); returns ``x_adv`` in [0, 1]."""
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

    @abstractmethod
    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """The attack proper, on validated, detached inputs (abstract: a class without it cannot
        be instantiated)."""

    @staticmethod
    def objective(metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-image objective ``[B]`` to maximise: ``sign * f(x) / diam(f)``."""
        s = metric.score(x, ref)
        return metric.improvement_sign() * s / max(metric.bounds.diam, 1e-12)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(preset={self.preset!r}, {args})"
