"""Tables of ``iqaguard list KIND``: the details of every registered metric, attack, defense or dataset.

The details come from the registered classes' attributes (``kind``, ``lower_better``,
``bounds``, ``min_size``, ``restriction``, ``presets``, ``differentiable``, ``randomized``,
``full_reference``, ``mos_range``, a ``root`` argument) and the first line of their docstrings;
:data:`DESCRIBE` maps each kind of :data:`KINDS` to its ``() -> (header, rows)`` builder, which
:func:`iqaguard.cli.list_cmd` prints as a table.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Dict, List, Sequence, Tuple

KINDS = ("metrics", "attacks", "defenses", "datasets")


def _summary(obj: Any) -> str:
    """The first line of ``obj``'s docstring, without reST markup (double backticks, ``:role:`x```)."""
    doc = (inspect.getdoc(obj) or "").strip()
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc.splitlines()[0]).replace("``", "") if doc else ""


def _value(v: Any, per_255: bool) -> str:
    """A parameter value; with ``per_255`` a float that is a whole number of 8-bit levels reads ``k/255``."""
    if per_255 and isinstance(v, float) and 0 < v < 1 and abs(v * 255 - round(v * 255)) < 1e-6:
        return f"{round(v * 255)}/255"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def kwargs_text(params: Dict[str, Any], per_255: bool = False) -> str:
    """``{"eps": 2/255, "steps": 10}`` -> ``"eps=2/255, steps=10"``."""
    return ", ".join(f"{k}={_value(v, per_255)}" for k, v in params.items())


def _entries(kind: str) -> List[Tuple[str, Any]]:
    """``(listed name, factory)`` of every entry of a registry (prefix factories as ``prefix:<name>``)."""
    from .registry import REGISTRIES

    reg = REGISTRIES[kind]
    return [(n, reg._lookup(n)[0]) for n in reg.names()]


def _extra_note(extra: str) -> str:
    """Whether iqaguard's optional extra ``extra`` is installed (``""`` when there is no such extra)."""
    from importlib import metadata

    try:
        reqs = metadata.requires("iqaguard") or []
    except metadata.PackageNotFoundError:
        return ""
    marker = re.compile(r"extra\s*==\s*['\"]" + re.escape(extra) + r"['\"]")
    dists = [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in reqs if marker.search(r)]
    if not dists:
        return ""
    try:
        for d in dists:
            metadata.version(d)
    except metadata.PackageNotFoundError:
        return f'needs the [{extra}] extra: pip install "iqaguard[{extra}]"'
    return f"[{extra}] extra installed"


def _declared(cls: Any, attr: str) -> Any:
    """``attr`` as a subclass of Metric declares it (``None`` when only the base class default exists)."""
    from .metrics.base import Metric

    for c in getattr(cls, "__mro__", ()):
        if c is Metric:
            return None
        if attr in vars(c):
            return vars(c)[attr]
    return None


def _metric_rows() -> Tuple[Sequence[str], List[List[str]]]:
    from . import metrics

    rows = []
    for name, factory in _entries("metrics"):
        notes = [_summary(factory)]
        m: Any = None
        if name.endswith("<name>"):
            notes.insert(0, _extra_note(name.split(":", 1)[0]))
        else:
            try:
                m = metrics.create(name)  # cheap: bounds and sizes may be set by the constructor
            except Exception as e:  # noqa: BLE001 - listed as a note; `score` reports it as an error
                notes.insert(0, f"cannot be built here: {e}".replace("\n", " "))
        kind = m.kind if m is not None else _declared(factory, "kind")
        lower = m.lower_better if m is not None else _declared(factory, "lower_better")
        size = m.min_size if m is not None else _declared(factory, "min_size")
        b = m.bounds if m is not None else _declared(factory, "bounds")
        rows.append([name, kind.upper() if kind else "per name",
                     "per name" if lower is None else ("lower better" if lower else "higher better"),
                     f"({b.worst:.4g}, {b.best:.4g})" if b is not None else "per name",
                     f"{size}x{size}" if size is not None else "per name", "; ".join(n for n in notes if n)])
    return ("metric", "type", "direction", "bounds (worst, best)", "min size", "notes"), rows


def _family(factory: Any) -> str:
    from .attacks import GradientAttack, QueryAttack, UniversalAttack

    for base, text in ((UniversalAttack, "universal"), (QueryAttack, "query (black-box)"),
                       (GradientAttack, "gradient (white-box)")):
        if isinstance(factory, type) and issubclass(factory, base):
            return text
    return "other"


def _attack_rows() -> Tuple[Sequence[str], List[List[str]]]:
    from .attacks.calibrate import shipped_tables

    tables: Dict[str, List[str]] = {}
    for attack, metric in shipped_tables():
        tables.setdefault(attack, []).append(metric)
    rows = []
    for name, factory in _entries("attacks"):
        norm = str(getattr(factory, "restriction", "?"))
        presets = getattr(factory, "presets", {}) or {}
        text = "\n".join(f"{p}: {kwargs_text(kw, per_255=norm == 'linf')}" for p, kw in presets.items())
        calibrated = (f"(presets calibrated for {', '.join(sorted(tables[name]))} (shipped tables; the class "
                      "presets above apply to other metrics))") if name in tables else ""
        rows.append([name, _family(factory), norm, str(getattr(factory, "varied", "?")), text or "(none)",
                     " ".join(t for t in (_summary(factory).rstrip("."), calibrated) if t)])
    return ("attack", "family", "restriction", "varied", "presets (budgets)", "notes"), rows


def _defense_family(factory: Any) -> str:
    """The defenses sub-package a defense lives in (``purification``, ``certified``, ...), else its base class."""
    parts = getattr(factory, "__module__", "").split(".")
    if len(parts) >= 4 and parts[:2] == ["iqaguard", "defenses"]:
        return parts[2]
    bases = [c.__name__ for c in getattr(factory, "__mro__", ())[1:] if c.__module__.startswith("iqaguard.defenses")]
    return bases[0].lower() if bases else "?"


def _adaptive_gradient(p: Any) -> str:
    """How adaptive attacks differentiate the purification ``p`` (an instance: the flags may depend on its parameters)."""
    if p.differentiable:
        grad = "exact"
    else:
        s = p.surrogate()
        grad = f"BPDA through {getattr(s, 'registry_name', type(s).__name__)}" if s is not None else "BPDA (identity)"
    return f"{grad}; {'randomized (EOT)' if p.randomized else 'deterministic'}"


def _defense_rows() -> Tuple[Sequence[str], List[List[str]]]:
    from .defenses.base import Purification
    from .defenses.certified.base import Smoothed
    from .defenses.trained.base import TrainedMetric

    rows = []
    for name, factory in _entries("defenses"):
        presets = getattr(factory, "presets", []) or []
        text = "\n".join(f"{i}: {kwargs_text(kw)}" for i, kw in enumerate(presets))
        notes = [_summary(factory)]
        if isinstance(factory, type) and issubclass(factory, Purification):
            try:
                built = [factory(preset=i) for i in range(len(presets))] or [factory()]
                grads = list(dict.fromkeys(_adaptive_gradient(p) for p in built))
                adaptive = grads[0] if len(grads) == 1 else "per preset: " + " | ".join(grads)
                resized = [p for p in built if p.output_size(384, 512) != (384, 512)]
                if resized:
                    notes.append("changes the image size (384x512 -> "
                                 + ", ".join("x".join(map(str, p.output_size(384, 512))) for p in resized) + ")")
            except Exception as e:  # noqa: BLE001 - listed as a note, as for metrics
                adaptive = f"cannot be built here: {e}".replace("\n", " ")
        elif isinstance(factory, type) and issubclass(factory, Smoothed):
            adaptive = ("no gradient (certified non-adaptively)" if name == "densepure" else
                        "EOT over the smoothing noise (attack_samples draws per step); randomized")
            notes.append("wraps a metric: create(name, metric=m, ...); certify() / predict()")
        elif isinstance(factory, type) and issubclass(factory, TrainedMetric):
            adaptive = "exact (white-box on the trained weights); deterministic"
            notes.append("trains a copy of the metric: create(name, metric=m, ...); trained once, cached")
        else:
            grad = "exact" if getattr(factory, "differentiable", False) is True else "BPDA (not differentiable)"
            adaptive = f"{grad}; {'randomized (EOT)' if getattr(factory, 'randomized', False) is True else 'deterministic'}"
        rows.append([name, _defense_family(factory), text or "(none)", adaptive, "; ".join(n for n in notes if n)])
    return ("defense", "family", "presets", "adaptive gradient", "notes"), rows


def _dataset_source(factory: Any) -> str:
    """builtin, or the folder / download a dataset needs (a required ``root`` argument)."""
    try:
        root = inspect.signature(factory).parameters.get("root")
    except (TypeError, ValueError):
        root = None
    if root is None:
        return "builtin" if getattr(factory, "__module__", "").startswith("iqaguard.") else "plugin (no root argument)"
    if root.default is not inspect.Parameter.empty:
        return "builtin (generated into the cache on first use)"
    source = getattr(factory, "SOURCE", "")
    return f"download, then root=FOLDER: {source}" if source else "your folder: root=FOLDER"


def _dataset_rows() -> Tuple[Sequence[str], List[List[str]]]:
    rows = []
    for name, factory in _entries("datasets"):
        fr = getattr(factory, "full_reference", None)
        mos = getattr(factory, "mos_range", None)
        rows.append([name, "?" if fr is None else ("FR" if fr else "NR"),
                     f"{mos[0]:g}..{mos[1]:g}" if mos else "none", _dataset_source(factory), _summary(factory)])
    return ("dataset", "type", "MOS", "source", "notes"), rows


DESCRIBE: Dict[str, Callable[[], Tuple[Sequence[str], List[List[str]]]]] = {
    "metrics": _metric_rows, "attacks": _attack_rows, "defenses": _defense_rows, "datasets": _dataset_rows}
