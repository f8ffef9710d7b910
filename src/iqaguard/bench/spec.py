"""The benchmark spec: a YAML file naming the grid of Guardians of Image Quality (DESIGN.md §Benchmark).

The format, with an example, is in ``docs/benchmark.md``; ``specs/demo.yaml`` is the builtin
demo. Names are checked against the registries (after importing the spec's ``imports``) and
presets against each attack's / defense's own presets. Any error raises :class:`SpecError`
naming the key path (``attacks[0].presets[1]``) and the allowed values.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Callable, ClassVar, Dict, List, Literal, Optional, Sequence

import torch
import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from ..errors import InputError
from ..registry import ATTACKS, DATASETS, DEFENSES, METRICS, Registry

Mode = Literal["non-adaptive", "adaptive"]
SPECS_DIR = Path(__file__).resolve().parent / "specs"
_LOADED: Dict[str, ModuleType] = {}


class SpecError(InputError):
    """A benchmark spec is malformed; the message names each key path and the allowed values."""


class _PathError(ValueError):
    """A validator error located at ``path`` below the model that raised it."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(f"{path}: {msg}")
        self.path, self.msg = path, msg


def load_plugins(imports: Sequence[str]) -> List[ModuleType]:
    """Import plugin modules (``pkg.module``) or files (``path/to/plugin.py``) that register names.

    A file already imported (under any module name) is not executed again. Workers call this
    with the spec's ``imports`` before running a task, so plugins work on a Ray cluster too
    (files must then exist at the same path on every node).

    Raises:
        SpecError: a module or file cannot be imported (the message names it).
    """
    import iqaguard  # noqa: F401  (fills the registries with the builtin plugins)

    mods = []
    for entry in imports:
        if entry in _LOADED:
            mods.append(_LOADED[entry])
            continue
        try:
            if entry.endswith(".py") or "/" in entry:
                path = Path(entry).resolve()
                mod = next((m for m in list(sys.modules.values())
                            if getattr(m, "__file__", None) and Path(m.__file__).resolve() == path), None)
                if mod is None:
                    name = "iqaguard_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
                    spec = importlib.util.spec_from_file_location(name, path)
                    if spec is None or spec.loader is None or not path.is_file():
                        raise FileNotFoundError(f"no such plugin file: {path}")
                    mod = importlib.util.module_from_spec(spec)
                    sys.modules[name] = mod
                    try:
                        spec.loader.exec_module(mod)
                    except BaseException:
                        del sys.modules[name]
                        raise
            else:
                mod = importlib.import_module(entry)
        except Exception as e:
            raise SpecError(f"imports: cannot import {entry!r}: {type(e).__name__}: {e}") from e
        _LOADED[entry] = mod
        mods.append(mod)
    return mods


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise _PathError(str(key), f"unknown key; allowed keys: {', '.join(cls.model_fields)}")
        return data


class _Entry(_Strict):
    """A registered name, its constructor kwargs and the label used in result rows."""

    registry: ClassVar[Registry]
    name: StrictStr
    kwargs: Dict[str, Any] = {}
    label: Optional[StrictStr] = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        reg = cls.registry
        if name not in reg or not cls._accepts(reg, name):
            what = f"unknown {reg.kind}" if name not in reg else f"{reg.kind} not supported by the engine:"
            allowed = ", ".join(cls._allowed(reg)) or "(none registered)"
            raise ValueError(f"{what} {name!r}; allowed: {allowed}")
        return name

    @model_validator(mode="after")
    def _known_kwargs(self) -> "_Entry":
        allowed = _kwarg_names(self.registry, self.name)
        for key in self.kwargs if allowed is not None else ():
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ";"
                raise _PathError("kwargs", f"unknown key {key!r} for {self.registry.kind} {self.name!r}{hint} "
                                 f"allowed: {', '.join(allowed) or '(none)'}")
        return self

    @classmethod
    def _accepts(cls, reg: Registry, name: str) -> bool:
        return True

    @classmethod
    def _allowed(cls, reg: Registry) -> List[str]:
        return [n for n in reg.names() if n.endswith("<name>") or cls._accepts(reg, n)]

    @property
    def key(self) -> str:
        """The value written in result rows: ``label`` or ``name``."""
        return self.label or self.name


def _kwarg_names(reg: Registry, name: str) -> Optional[List[str]]:
    """Keyword arguments the factory of ``name`` accepts; None when any key may be valid.

    None for factories taking ``**kwargs`` or whose signature cannot be read. A prefix factory
    (``piq:<name>``) gets the name's rest as its first argument, which is not a spec kwarg.
    """
    hit = reg._lookup(name)
    if hit is None:
        return None
    factory, rest = hit
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if rest is not None and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    if any(q.kind is q.VAR_KEYWORD for q in params):
        return None
    # ``preset`` is the spec's own ``presets:`` key, never a kwarg
    return [q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) and q.name != "preset"]


class MetricEntry(_Entry):
    """``{name, kwargs, label}``; ``kwargs`` go to ``iqaguard.metrics.create``."""

    registry: ClassVar[Registry] = METRICS
    #: optional cap on the images of every dataset this metric is run on (e.g. a slow FR model)
    limit: Optional[int] = Field(None, ge=1)


class SubsetSpec(_Strict):
    """Image selection: Guardians of Image Quality A.3.1 KMeans sampling and/or the first ``limit`` images.

    ``seed`` None uses the run seed, so ``seeds: [0..9]`` repeats the sampling (002 Table 5).
    """

    method: Optional[Literal["kmeans"]] = None
    k_per_cluster: int = Field(5, ge=1)
    n_clusters: int = Field(10, ge=1)
    seed: Optional[int] = Field(None, ge=0)
    limit: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _something(self) -> "SubsetSpec":
        if self.method is None and self.limit is None:
            raise _PathError("method", "give method: kmeans and/or limit: N (omit subset to use every image)")
        return self


class DatasetEntry(_Entry):
    """``{name, kwargs, label, subset, mode_limits}``; ``mode_limits`` caps images per mode."""

    registry: ClassVar[Registry] = DATASETS
    subset: Optional[SubsetSpec] = None
    mode_limits: Dict[Mode, int] = {}

    @field_validator("mode_limits")
    @classmethod
    def _positive(cls, v: Dict[str, int]) -> Dict[str, int]:
        for mode, n in v.items():
            if n < 1:
                raise _PathError(mode, f"expected a positive image count, got {n}")
        return v


class FitDataset(_Entry):
    """The dataset a universal attack is fitted on: ``{name, kwargs, label}`` (or just its name)."""

    registry: ClassVar[Registry] = DATASETS


class FitSpec(_Strict):
    """How a universal attack is fitted: on the first ``images`` images of ``dataset`` taken at
    evenly spaced indices (so they spread over its photographs), once per (metric, attack, preset)."""

    dataset: FitDataset
    images: int = Field(16, ge=1)


#: what a spec writes to fit a universal attack (shown in the error when ``fit`` is missing)
FIT_EXAMPLE = "fit: {dataset: {name: builtin-kadid, kwargs: {split: train}}, images: 16}"


class AttackEntry(_Entry):
    """``{name, presets, kwargs, label, fit}``; ``presets`` is a list of preset names or ``all``.

    ``fit`` (universal attacks only, and required for them) names the training images: the
    perturbation is fitted once per (metric, attack, preset) and cached in the store.
    """

    registry: ClassVar[Registry] = ATTACKS
    presets: Optional[List[StrictStr]] = None
    fit: Optional[FitSpec] = None

    @field_validator("presets", mode="before")
    @classmethod
    def _all(cls, v: Any) -> Any:
        return None if v == "all" else v

    @property
    def universal(self) -> bool:
        """Whether the attack is universal (fitted once on ``fit``'s images)."""
        from ..attacks.universal import UniversalAttack

        factory = ATTACKS.get(self.name)
        return isinstance(factory, type) and issubclass(factory, UniversalAttack)

    @model_validator(mode="after")
    def _check_presets(self) -> "AttackEntry":
        factory = ATTACKS.get(self.name)
        if self.universal and self.fit is None:
            raise ValueError(f"{self.name!r} is a universal attack: it is fitted once on training images; "
                             f"add {FIT_EXAMPLE} (a split the benchmark does not evaluate)")
        if self.fit is not None and not self.universal:
            raise _PathError("fit", f"{self.name!r} is a per-image attack; only universal attacks are fitted "
                             "(remove fit:)")
        allowed = list(getattr(factory, "presets", {}))
        if self.presets is None:
            self.presets = allowed
        _check_choices(self.presets, allowed or self.presets, "presets",
                       lambda p: f"unknown preset {p!r} for attack {self.name!r}; allowed: {', '.join(allowed)}")
        return self


class DefenseEntry(_Entry):
    """``{name, presets, adaptive_presets, kwargs, label, eot_samples}``.

    ``presets`` (indices or ``all``) are evaluated non-adaptively; ``adaptive_presets`` (default:
    the same) are the presets attacked adaptively — Guardians of Image Quality attacks one selected preset per
    defense adaptively, which is 5x cheaper than all five.

    A purification (``P(x)``), a certified smoothing defense (``docs/certified.md``: it wraps the
    metric; its kwargs are the smoothing parameters, e.g. ``{n: 200}``, never ``metric``) or a
    trained metric (``docs/trained.md``: ``adv-training``, ``nt``, ``robust-block``; kwargs are the
    recipe and training parameters, e.g. ``{epochs: 1, images: 64}``; trained once and cached).
    """

    registry: ClassVar[Registry] = DEFENSES
    presets: Optional[List[StrictInt]] = None
    adaptive_presets: Optional[List[StrictInt]] = None
    eot_samples: int = Field(1, ge=1)

    @classmethod
    def _accepts(cls, reg: Registry, name: str) -> bool:
        from ..defenses.base import Purification
        from ..defenses.certified.base import Smoothed
        from ..defenses.trained.base import TrainedMetric

        factory = reg.get(name) if ":" not in name else None
        return isinstance(factory, type) and issubclass(factory, (Purification, Smoothed, TrainedMetric))

    @field_validator("presets", "adaptive_presets", mode="before")
    @classmethod
    def _all(cls, v: Any, info: ValidationInfo) -> Any:
        if v == "all" and info.data.get("name") is not None:
            return list(range(len(DEFENSES.get(info.data["name"]).presets)))
        return v

    @model_validator(mode="after")
    def _check_presets(self) -> "DefenseEntry":
        n = len(DEFENSES.get(self.name).presets)
        if self.presets is None:
            self.presets = list(range(n))
        if self.adaptive_presets is None:
            self.adaptive_presets = list(self.presets)
        for field in ("presets", "adaptive_presets"):
            _check_choices(getattr(self, field), range(n), field, lambda p: f"preset index {p} out of range for "
                           f"defense {self.name!r}; allowed: 0..{n - 1} or all")
        return self

    def presets_for(self, mode: str) -> List[int]:
        """The preset indices used in ``mode`` (``non-adaptive`` or ``adaptive``)."""
        return list(self.adaptive_presets if mode == "adaptive" else self.presets)


def _check_choices(values: Sequence[Any], allowed: Sequence[Any], path: str, why: Callable[[Any], str]) -> None:
    """Every value in ``allowed`` (else ``_PathError(path[i], why(value))``) and no duplicates."""
    for i, v in enumerate(values):
        if v not in allowed:
            raise _PathError(f"{path}[{i}]", why(v))
    _no_duplicates(values, path)


def _no_duplicates(values: Sequence[Any], path: str) -> None:
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise _PathError(f"{path}[{i}]", f"duplicate value {v!r}")
        seen.add(v)


class Spec(_Strict):
    """A validated benchmark spec; build it with :func:`load_spec` or :meth:`model_validate`."""

    version: StrictStr = "1"
    imports: List[StrictStr] = []
    metrics: List[MetricEntry] = Field(min_length=1)
    datasets: List[DatasetEntry] = Field(min_length=1)
    attacks: List[AttackEntry] = Field(min_length=1)
    defenses: List[DefenseEntry] = []
    modes: List[Mode] = Field(["non-adaptive"], min_length=1)
    seeds: List[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)
    batch_size: int = Field(4, ge=1)
    device: StrictStr = "cpu"
    num_threads: int = Field(1, ge=1)
    #: score every metric's non-adaptive adversarial images with every other metric of the spec
    #: (and its non-adaptive defense presets): the transfer matrix of the report
    transfer: bool = False

    @model_validator(mode="before")
    @classmethod
    def _plugins(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("imports", []), list):
            load_plugins([str(i) for i in data.get("imports", [])])
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            torch.device(v)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {v!r}; allowed: cpu, cuda, cuda:N") from None
        return v

    @model_validator(mode="after")
    def _unique(self) -> "Spec":
        for field in ("metrics", "datasets", "attacks", "defenses"):
            keys = [e.key for e in getattr(self, field)]
            for i, k in enumerate(keys):
                if k in keys[:i]:
                    raise _PathError(f"{field}[{i}].label", f"duplicate {field[:-1]} {k!r}; give a distinct label")
        _no_duplicates(self.modes, "modes")
        _no_duplicates(self.seeds, "seeds")
        evaluated = {(d.name, json.dumps(d.kwargs, sort_keys=True)): d.key for d in self.datasets}
        for i, a in enumerate(self.attacks):
            hit = a.fit and evaluated.get((a.fit.dataset.name, json.dumps(a.fit.dataset.kwargs, sort_keys=True)))
            if hit:
                raise _PathError(f"attacks[{i}].fit.dataset", f"is the evaluated dataset {hit!r}: fit a universal "
                                 "attack on other images (e.g. kwargs: {split: train}), never on the test images")
        return self

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "Spec":  # type: ignore[override]
        """Validate a dict; raises :class:`SpecError` (never a raw pydantic error).

        ``context={"source": name}`` names the spec's origin in error messages.
        """
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise SpecError(format_errors(e, (kwargs.get("context") or {}).get("source", ""))) from None

    @property
    def hash(self) -> str:
        """16-hex-digit SHA-256 of the canonical JSON of the spec (recorded in every row)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _loc_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_errors(err: ValidationError, source: str = "") -> str:
    """One line per pydantic error: ``key.path[i]: message (allowed values)``."""
    lines = []
    for e in err.errors():
        path, msg = _loc_path(e["loc"]), e["msg"]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _PathError):
            path, msg = ".".join(p for p in (path, cause.path) if p), cause.msg
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"  {path or '(top level)'}: {msg}")
    where = f" {source}" if source else ""
    return f"invalid benchmark spec{where}:\n" + "\n".join(lines)


def builtin_spec(name: str) -> Path:
    """Path of a spec shipped with iqaguard (``"demo"`` -> ``bench/specs/demo.yaml``)."""
    path = SPECS_DIR / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))
        raise SpecError(f"no builtin spec {name!r}; allowed: {', '.join(shipped)}")
    return path


def _yaml_kind(data: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(data),
                                                                                            type(data).__name__)


def _yaml_error(e: yaml.YAMLError) -> str:
    """The parser's problem with its line/column (1-based) and the offending lines' text, on one line."""
    def at(mark: Any) -> str:
        lines = (getattr(mark, "buffer", None) or "").rstrip("\0").splitlines()
        text = lines[mark.line].strip() if mark.line < len(lines) else ""
        return f"line {mark.line + 1}, column {mark.column + 1}" + (f" ({text!r})" if text else " (end of file)")

    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if not problem:
        return " ".join(str(e).split())
    out = f"{problem} at {at(mark)}" if mark is not None else str(problem)
    if context:
        out += f", {context}" + (f" started at {at(cmark)}" if cmark is not None and cmark is not mark else "")
    return " ".join(out.split())


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec (a builtin name like ``"demo"`` also works).

    Relative ``.py`` entries of ``imports`` are resolved against the spec file's folder.

    Raises:
        SpecError: missing/unparsable file or invalid content (the message names the file, each
            key path and the allowed values).
    """
    p = Path(path)
    if not p.is_file() and p.suffix == "" and "/" not in str(path):
        p = builtin_spec(str(path))
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
        bad = raw.find(b"\x00")
    except UnicodeDecodeError as e:
        bad = e.start
    if bad >= 0:
        raise SpecError(f"{p} is not a text YAML file (binary content at byte {bad}); pass a benchmark spec such "
                        f"as {SPECS_DIR / 'demo.yaml'} (or the builtin name 'demo')")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"invalid benchmark spec {p}: not valid YAML: {_yaml_error(e)}") from None
    if data is None:
        raise SpecError(f"invalid benchmark spec {p}: the file is empty; give a mapping with metrics, datasets, "
                        f"attacks (see {SPECS_DIR / 'demo.yaml'})")
    if not isinstance(data, dict):
        raise SpecError(f"invalid benchmark spec {p}: the top level is a {_yaml_kind(data)}, expected a mapping "
                        f"with metrics, datasets, attacks (see {SPECS_DIR / 'demo.yaml'})")
    if isinstance(data.get("imports"), list):
        data["imports"] = [str((p.parent / i).resolve()) if str(i).endswith(".py") and not Path(i).is_absolute()
                           else i for i in data["imports"]]
    return Spec.model_validate(data, context={"source": str(p)})
