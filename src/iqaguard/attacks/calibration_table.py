"""Calibration tables (:class:`CalibrationTable`), the tables shipped for the builtin metrics and
preset resolution through them (:func:`resolve_preset`); see :mod:`iqaguard.attacks.calibrate`."""
from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, Union

from ..errors import InputError, UnknownNameError
from ..metrics.base import Metric
from ..registry import ATTACKS
from .base import Attack

#: the shipped calibrated tables (package data)
TABLES = Path(__file__).resolve().parent / "tables"

AttackSpec = Union[str, Type[Attack]]


def _attack_class(attack: AttackSpec) -> Tuple[str, Type[Attack]]:
    if isinstance(attack, type) and issubclass(attack, Attack):
        return getattr(attack, "registry_name", attack.__name__), attack
    if not isinstance(attack, str):
        raise InputError(f"attack: expected an attack name (one of iqaguard.attacks.names()), got {attack!r}")
    try:
        cls = ATTACKS.get(attack)
    except UnknownNameError as e:
        raise InputError(f"attack: {e}".splitlines()[0]) from None
    return attack, cls


@dataclass
class CalibrationTable:
    """The result of :func:`calibrate` (and :func:`calibrate_two`, :func:`calibrate_dataset`).

    Attributes:
        attack: the attack's registry name (or class name for an unregistered class).
        varied: the parameter that was swept (``Attack.varied``).
        restriction: the restriction whose budget was measured (``"linf"``, ``"ssim"``, ...).
        fixed: the other parameters the attack ran with (``**fixed`` of :func:`calibrate`).
        rows: the sweep, one ``{"value", "budget", "gain"}`` per value (means over the images;
            ``gain`` is the mean increase of :meth:`Attack.objective`).
        fit: ``{"a", "b", "r2"}`` of the least-squares line ``budget ~ a + b * value``.
        entries: preset name -> ``{varied: value, "target": t, "predicted": a + b * value,
            "gain": predicted gain, "reached": bool}`` (``reached`` is False when the solution left
            the swept range or the measured budgets, or the fitted line is flat, and ``value`` was
            clipped to the range); two-parameter tables add ``second: value`` and ``"level"``.
        n_images: how many images the sweep averaged over.
        gain_fit: ``{"a", "b", "r2"}`` of ``gain ~ a + b * value``.
        probe: the rows of the ``values="auto"`` probe (empty otherwise).
        second: the second parameter of :func:`calibrate_two` (``None``: one parameter).
        levels: :func:`calibrate_two`'s calibrations, one ``{"value" (of ``second``), "rows",
            "fit", "gain_fit", "probe", "reached"}`` per level; ``rows`` / ``fit`` above are level 0's.
        metric, dataset, split, size, seed: what :func:`calibrate_dataset` calibrated on (crop
            ``size`` px; ``None`` / ``""`` when not recorded).
        images, held_out_images: ``{"name", "top", "left"}`` of every calibration / held-out crop.
        n_held_out: held-out images of ``verification``.
        verification: :func:`verify` on the held-out images (preset -> achieved, rel_error, gain...).
        meta: free-form provenance (iqaguard version, wall time, command).
        local: 0 when one line solved every target, else the window of :func:`calibrate`'s ``local``.
    """

    attack: str
    varied: str
    restriction: str
    fixed: Dict[str, Any] = field(default_factory=dict)
    rows: List[Dict[str, float]] = field(default_factory=list)
    fit: Dict[str, float] = field(default_factory=dict)
    entries: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    n_images: int = 0
    gain_fit: Dict[str, float] = field(default_factory=dict)
    probe: List[Dict[str, float]] = field(default_factory=list)
    second: Optional[str] = None
    levels: List[Dict[str, Any]] = field(default_factory=list)
    metric: str = ""
    dataset: Optional[str] = None
    split: Optional[str] = None
    size: Optional[int] = None
    seed: Optional[int] = None
    images: List[Dict[str, Any]] = field(default_factory=list)
    held_out_images: List[Dict[str, Any]] = field(default_factory=list)
    n_held_out: int = 0
    verification: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    local: int = 0

    def presets(self) -> Dict[str, Dict[str, Any]]:
        """``{name: {varied: value}}`` (and ``second: value`` for two parameters)."""
        keys = [self.varied] + ([self.second] if self.second else [])
        return {name: {k: e[k] for k in keys if k in e} for name, e in self.entries.items()}

    def kwargs(self, preset: str) -> Dict[str, Any]:
        """Every attack argument of ``preset``: ``{**fixed, **presets()[preset]}``, e.g.
        ``attacks.create(table.attack, **table.kwargs("medium"))``."""
        if preset not in self.entries:
            raise InputError(f"preset: {preset!r} is not in the calibration table of {self.attack!r}; "
                             f"it has: {', '.join(self.entries) or '(none)'}")
        return {**self.fixed, **self.presets()[preset]}

    def to_json(self, path: Union[str, Path]) -> Path:
        """Write the table as JSON to ``path`` (parent folders are created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "CalibrationTable":
        """Read a table written by :meth:`to_json` (a bad file is a one-line InputError)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            table = cls(**data)
            if not isinstance(table.entries, dict) or not all(table.varied in e for e in table.entries.values()):
                raise ValueError(f"entries without the varied parameter {table.varied!r}")
            return table
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"{p}: not a calibration table ({type(e).__name__}: {e})".splitlines()[0]) from None


# ---- shipped tables and preset resolution ----------------------------------------------------------------------

def table_filename(attack: str, metric: str) -> str:
    """``<attack>__<metric>.json`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{attack}__{metric}") + ".json"


@functools.lru_cache(maxsize=None)
def _shipped_index(folder: str) -> Dict[Tuple[str, str], Path]:
    index: Dict[Tuple[str, str], Path] = {}
    for p in sorted(Path(folder).glob("*.json")):
        t = CalibrationTable.from_json(p)
        index[(t.attack, t.metric)] = p
    return index


def shipped_tables() -> Dict[Tuple[str, str], Path]:
    """``{(attack, metric): path}`` of every calibrated table shipped in ``iqaguard/attacks/tables/``."""
    return dict(_shipped_index(str(TABLES)))


def find_table(attack: str, metric: Union[None, str, Metric]) -> Optional[Path]:
    """The shipped table of ``(attack, metric)``, or None."""
    if metric is None:
        return None
    name = metric if isinstance(metric, str) else getattr(metric, "name", "")
    return _shipped_index(str(TABLES)).get((attack, name))


def resolve_preset(attack: str, preset: str, metric: Union[None, str, Metric] = None,
                   table: Union[None, str, Path, CalibrationTable] = None) -> Dict[str, Any]:
    """The attack arguments of ``preset`` for ``metric``: ``attacks.create(attack, **resolve_preset(...))``.

    Resolution order: ``table`` (a :class:`CalibrationTable` or the path of its JSON) when given;
    else the shipped table of ``(attack, metric)`` (:func:`find_table`); else the class's own
    ``presets[preset]``. A table's arguments are the class preset's overridden by
    ``table.kwargs(preset)`` (its fixed parameters plus the calibrated value(s)), so a preset
    parameter the table does not set stays (cAdv's per-preset ``ssim_floor``).

    Args:
        attack: registered attack name.
        preset: ``"weak"``, ``"medium"``, ``"strong"`` (or any preset of the table / class).
        metric: the metric's registry name (or the Metric); ``None`` skips the shipped tables.
        table: a user's calibration table; it must be for ``attack`` (and for ``metric`` when
            both name one).

    Returns:
        A new dict of keyword arguments.

    Raises:
        InputError: unknown attack or preset, a bad table file, or a table for another attack / metric.
    """
    _, cls = _attack_class(attack)
    if table is not None and not isinstance(table, CalibrationTable):
        table = CalibrationTable.from_json(table)
    elif table is None:
        found = find_table(attack, metric)
        table = CalibrationTable.from_json(found) if found is not None else None
    if table is None:
        if preset not in cls.presets:
            raise InputError(f"preset: unknown preset {preset!r} for attack {cls.__name__}; "
                             f"allowed: {', '.join(cls.presets) or '(none)'}")
        return dict(cls.presets[preset])
    if table.attack != attack:
        raise InputError(f"table: it was calibrated for attack {table.attack!r}, not {attack!r}")
    mname = metric if isinstance(metric, str) or metric is None else getattr(metric, "name", "")
    if mname and table.metric and table.metric != mname:
        raise InputError(f"table: it was calibrated on metric {table.metric!r}, not {mname!r}; "
                         f"calibrate one for {mname!r} (iqaguard attack calibrate --metric {mname} ...)")
    return {**cls.presets.get(preset, {}), **table.kwargs(preset)}
