"""One registry pattern for every pluggable kind (metrics, attacks, defenses, datasets).

Usage::

    METRICS = Registry("metric")

    @METRICS.register("psnr")
    class PSNR(Metric): ...

    METRICS.create("psnr")          # -> PSNR()
    METRICS.names()                 # -> ["psnr", ...]

A name ending in ``:`` registers a *prefix* factory: ``create("pyiqa:lpips")`` calls the
factory registered as ``"pyiqa:"`` with ``"lpips"`` as its first argument.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry:
    """A name -> factory mapping for one pluggable kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class/function decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._items[name]!r}")
            self._items[name] = obj  # type: ignore[assignment]
            try:
                setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def names(self) -> List[str]:
        """Sorted registered names (prefix factories shown as ``prefix:<name>``)."""
        return sorted(n + "<name>" if n.endswith(":") else n for n in self._items)

    def __contains__(self, name: str) -> bool:
        return self._lookup(name) is not None

    def _lookup(self, name: str):
        if name in self._items:
            return self._items[name], None
        if ":" in name:
            prefix, rest = name.split(":", 1)
            if prefix + ":" in self._items:
                return self._items[prefix + ":"], rest
        return None

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name`` (raises :class:`UnknownNameError`)."""
        hit = self._lookup(name)
        if hit is None or hit[1] is not None:
            self._unknown(name)
        return hit[0]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the entry registered as ``name`` with ``kwargs``."""
        if not isinstance(name, str):
            raise UnknownNameError(f"{self.kind} name must be a string, got {type(name).__name__}")
        hit = self._lookup(name)
        if hit is None:
            self._unknown(name)
        factory, rest = hit
        return factory(rest, **kwargs) if rest is not None else factory(**kwargs)

    def _unknown(self, name: str) -> None:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}"
        )


METRICS = Registry("metric")
ATTACKS = Registry("attack")
DEFENSES = Registry("defense")
DATASETS = Registry("dataset")
#: structural edits of a network (RobustBlock insertion, pruning, activation swaps), replayed from a
#: saved model's architecture metadata (:mod:`iqaguard.architecture`)
EDITS = Registry("architecture edit")

REGISTRIES = {"metrics": METRICS, "attacks": ATTACKS, "defenses": DEFENSES, "datasets": DATASETS}
