"""Calibrating an attack's presets to budgets: the protocol of Guardians of Image Quality, A.3.4.

*Guardians of Image Quality* (appendix A.3.4, Fig. 7) aligns attacks by strength: each attack
has a restriction (SSIM, PSNR or L∞) with three target budgets (:data:`~.budgets.PRESET_BUDGETS`:
L∞ 2/4/8 /255, SSIM 0.9/0.8/0.75, PSNR 35/30/25 dB), and its single strength parameter
(``Attack.varied``, Table 7) is chosen by computing "the mean attack strength ... for 10 values of
this parameter" and "a linear approximation to match the target strength values".

:func:`calibrate` does exactly that on the images it is given: it sweeps ``varied`` over 10
values, runs the attack on ``images`` for each, measures the mean budget with
:func:`~.budgets.measure` under the chosen restriction (the attack's own by default; an L∞ attack
may be calibrated to SSIM or PSNR targets), fits ``budget ~ a + b * value`` by least squares and
solves for the value reaching each target, clipped to the swept range. A target whose solution
falls outside the sweep is kept at the nearest end and marked ``reached: False``. :func:`verify`
runs the calibrated presets on other (held-out) images and reports the achieved budget.

Example::

    table = calibrate("ifgsm", metric, crops, restriction="ssim")
    table.fit                                   # {'a': ..., 'b': ..., 'r2': ...}
    attack = attacks.create("ifgsm", **table.presets()["medium"])
    verify(table, "ifgsm", metric, held_out)    # {'medium': {'achieved': ..., 'rel_error': ...}, ...}
"""
from __future__ import annotations

import inspect
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch

from ..errors import InputError, UnknownNameError
from ..metrics.base import Metric
from ..registry import ATTACKS
from ..validation import check_image
from .base import Attack
from .budgets import PRESET_BUDGETS, Restriction

#: number of parameter values swept (Guardians of Image Quality A.3.4: "10 values of this parameter")
SWEEP = 10
#: the default sweep spans ``default / SPAN .. default * SPAN`` geometrically (within the valid range)
SPAN = 8.0

AttackSpec = Union[str, Type[Attack]]


@dataclass
class CalibrationTable:
    """The result of :func:`calibrate`.

    Attributes:
        attack: the attack's registry name (or class name for an unregistered class).
        varied: the parameter that was swept (``Attack.varied``).
        restriction: the restriction whose budget was measured (``"linf"``, ``"ssim"``, ...).
        fixed: the other parameters the attack ran with (``**fixed`` of :func:`calibrate`).
        rows: the sweep, one ``{"value", "budget", "gain"}`` per value (means over the images;
            ``gain`` is the mean increase of :meth:`Attack.objective`).
        fit: ``{"a", "b", "r2"}`` of the least-squares line ``budget ~ a + b * value``.
        entries: preset name -> ``{varied: value, "target": t, "predicted": a + b * value,
            "reached": bool}`` (``reached`` is False when the solution left the swept range, or the
            fitted line is flat, and ``value`` was clipped to the range).
        n_images: how many images the sweep averaged over.
    """

    attack: str
    varied: str
    restriction: str
    fixed: Dict[str, Any] = field(default_factory=dict)
    rows: List[Dict[str, float]] = field(default_factory=list)
    fit: Dict[str, float] = field(default_factory=dict)
    entries: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    n_images: int = 0

    def presets(self) -> Dict[str, Dict[str, Any]]:
        """``{name: {varied: value}}``, e.g. ``attacks.create(name, **table.presets()["medium"])``."""
        return {name: {self.varied: e[self.varied]} for name, e in self.entries.items()}

    def to_json(self, path: Union[str, Path]) -> Path:
        """Write the table as JSON to ``path``; returns the path."""
        p = Path(path)
        p.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "CalibrationTable":
        """Read a table written by :meth:`to_json` (a bad file is a one-line InputError)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"{p}: not a calibration table ({type(e).__name__}: {e})".splitlines()[0]) from None


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


def _varied_default(cls: Type[Attack]) -> Tuple[str, Any]:
    """The varied parameter's name and default, or an InputError when it is not a numeric parameter."""
    name = cls.varied
    params = inspect.signature(cls).parameters
    p = params.get(name)
    default = None if p is None else p.default
    if p is None or isinstance(default, bool) or not isinstance(default, numbers.Real):
        raise InputError(f"attack {cls.__name__}: its varied parameter {name!r} has no numeric default "
                         f"(got {default!r}), so it cannot be calibrated")
    return name, default


def _valid(cls: Type[Attack], name: str, value: Any, fixed: Dict[str, Any]) -> bool:
    try:
        cls(**{**fixed, name: value})
    except InputError:
        return False
    return True


def _edge(cls: Type[Attack], name: str, default: float, far: float, fixed: Dict[str, Any],
          integer: bool) -> float:
    """The valid value closest to ``far`` on the geometric segment from ``default`` (bisection in log),
    pulled 2% of that log-distance back inside when the constructor's limit was hit (an attack may
    accept its extreme value but not quite reach it)."""
    conv = (lambda v: int(round(v))) if integer else float
    if _valid(cls, name, conv(far), fixed):
        return far
    lo, hi = 0.0, 1.0  # fraction of the log-distance from default towards far
    for _ in range(40):
        mid = (lo + hi) / 2
        v = default * (far / default) ** mid
        lo, hi = (mid, hi) if _valid(cls, name, conv(v), fixed) else (lo, mid)
    return default * (far / default) ** (0.98 * lo)


def sweep_values(attack: AttackSpec, n: int = SWEEP, span: float = SPAN, **fixed: Any) -> List[float]:
    """The default sweep: ``n`` values geometrically from ``default / span`` to ``default * span``,
    each end pulled in to the range the attack's constructor accepts (integers for an integer
    parameter, duplicates dropped)."""
    _, cls = _attack_class(attack)
    name, default = _varied_default(cls)
    integer = isinstance(default, numbers.Integral)
    d = float(default)
    if d <= 0:
        raise InputError(f"attack {cls.__name__}: default {name}={default!r} is not positive; pass values=")
    lo = _edge(cls, name, d, d / span, fixed, integer)
    hi = _edge(cls, name, d, d * span, fixed, integer)
    vals = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    if integer:
        vals = sorted({int(round(v)) for v in vals})
    return vals


def _check_inputs(metric: Any, images: Any, ref: Any) -> None:
    if not isinstance(metric, Metric):
        raise InputError(f"metric: expected an iqaguard Metric, got {type(metric).__name__}")
    check_image(images, "images")
    if metric.kind == "fr" and ref is None:
        raise InputError("ref: calibrating on a full-reference metric needs ref= (the reference images)")


def _restriction(restriction: Any, cls: Type[Attack]) -> Restriction:
    if restriction is None:
        return Restriction(cls.restriction)
    try:
        return Restriction(restriction)
    except ValueError:
        raise InputError(f"restriction: expected one of {[r.value for r in Restriction]}, "
                         f"got {restriction!r}") from None


def _run(cls: Type[Attack], name: str, value: Any, fixed: Dict[str, Any], metric: Metric,
         images: torch.Tensor, ref: Optional[torch.Tensor], generator: Optional[torch.Generator],
         restriction: Restriction) -> Tuple[float, float]:
    """Mean budget and mean objective gain of the attack at ``name=value`` on ``images``."""
    from .budgets import measure

    attack = cls(**{**fixed, name: value})
    gen = None
    if generator is not None:  # every value sees the same random stream
        gen = torch.Generator(device=generator.device)
        gen.set_state(generator.get_state())
    x_adv = attack(metric, images, ref=ref, generator=gen)
    budget = measure(restriction, x_adv, images)
    with torch.no_grad():
        gain = Attack.objective(metric, x_adv, ref) - Attack.objective(metric, images, ref)
    return float(budget.mean()), float(gain.double().mean())


def _least_squares(xs: Sequence[float], ys: Sequence[float]) -> Dict[str, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx > 0 else 0.0
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {"a": a, "b": b, "r2": r2}


def calibrate(attack: AttackSpec, metric: Metric, images: torch.Tensor,
              target_budgets: Optional[Dict[str, float]] = None, values: Optional[Sequence[float]] = None,
              ref: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
              restriction: Union[None, str, Restriction] = None, **fixed: Any) -> CalibrationTable:
    """Calibrate ``attack``'s varied parameter to target budgets (Guardians of Image Quality A.3.4).

    Args:
        attack: a registered attack name (``"ifgsm"``), or an :class:`Attack` subclass.
        metric: the metric attacked during the sweep.
        images: ``[N, 3, H, W]`` in [0, 1]; budgets and gains are means over them.
        target_budgets: preset name -> target budget; default ``PRESET_BUDGETS[restriction]``
            (weak / medium / strong).
        values: the values of the varied parameter to sweep (at least 2 distinct); default
            :func:`sweep_values` (10 geometric values around the attack's default).
        ref: reference images for a full-reference metric.
        generator: randomness of randomised attacks; every sweep value starts from its state.
        restriction: the restriction whose budget is measured and targeted; default the attack's own.
        **fixed: other parameters of the attack, the same for every run (e.g. ``steps=10``).

    Returns:
        A :class:`CalibrationTable`.
    """
    name_, cls = _attack_class(attack)
    name, default = _varied_default(cls)
    if name in fixed:
        raise InputError(f"{name}: it is the swept parameter of {cls.__name__}; pass values= instead")
    r = _restriction(restriction, cls)
    _check_inputs(metric, images, ref)
    if target_budgets is None:
        if r not in PRESET_BUDGETS:
            raise InputError(f"target_budgets: restriction {r.value!r} has no preset budgets; pass "
                             f"target_budgets={{'weak': ..., 'medium': ..., 'strong': ...}}")
        target_budgets = dict(PRESET_BUDGETS[r])
    if not isinstance(target_budgets, dict) or not target_budgets:
        raise InputError(f"target_budgets: expected a non-empty dict name -> budget, got {target_budgets!r}")
    for k, t in target_budgets.items():
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)):
            raise InputError(f"target_budgets[{k!r}]: expected a finite number, got {t!r}")
    integer = isinstance(default, numbers.Integral)
    if values is None:
        vals = sweep_values(cls, **fixed)
    else:
        try:
            vals = sorted({(int(round(float(v))) if integer else float(v)) for v in values})
        except (TypeError, ValueError):
            raise InputError(f"values: expected numbers for {name}, got {values!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"values: expected finite numbers for {name}, got {list(values)!r}")
    if len(vals) < 2:
        raise InputError(f"values: need at least 2 distinct values of {name} to fit a line, got {len(vals)}")
    for v in vals:  # a bad value fails here, before any attack runs
        cls(**{**fixed, name: v})

    rows = []
    for v in vals:
        budget, gain = _run(cls, name, v, fixed, metric, images, ref, generator, r)
        rows.append({"value": v, "budget": budget, "gain": gain})
    fit = _least_squares([float(row["value"]) for row in rows], [row["budget"] for row in rows])
    a, b = fit["a"], fit["b"]
    lo, hi = float(vals[0]), float(vals[-1])
    entries: Dict[str, Dict[str, Any]] = {}
    for preset, t in target_budgets.items():
        t = float(t)
        if b != 0:
            solved = (t - a) / b
            reached = lo <= solved <= hi
            value: Any = min(max(solved, lo), hi)
        else:
            reached, value = False, (lo + hi) / 2
        if integer:
            value = int(round(value))
        entries[preset] = {name: value, "target": t, "predicted": a + b * float(value), "reached": reached}
    return CalibrationTable(attack=name_, varied=name, restriction=r.value, fixed=dict(fixed), rows=rows,
                            fit=fit, entries=entries, n_images=int(images.shape[0]))


def verify(table: CalibrationTable, attack: Optional[AttackSpec], metric: Metric, images: torch.Tensor,
           ref: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None
           ) -> Dict[str, Dict[str, Any]]:
    """Run each calibrated preset of ``table`` on ``images`` (held out from the calibration).

    ``attack``: the attack the table was made for (``None``: ``table.attack``); it runs with
    ``table.fixed`` and the preset's value. Returns preset name -> ``{"value", "target",
    "achieved" (mean budget under ``table.restriction``), "rel_error" (``|achieved - target| /
    |target|``), "gain" (mean objective increase), "reached" (the table's flag)}``.
    """
    if not isinstance(table, CalibrationTable):
        raise InputError(f"table: expected a CalibrationTable, got {type(table).__name__}")
    name_, cls = _attack_class(table.attack if attack is None else attack)
    if name_ != table.attack:
        raise InputError(f"attack: the table was calibrated for {table.attack!r}, not {name_!r}")
    _check_inputs(metric, images, ref)
    r = Restriction(table.restriction)
    out: Dict[str, Dict[str, Any]] = {}
    for preset, e in table.entries.items():
        value = e[table.varied]
        achieved, gain = _run(cls, table.varied, value, table.fixed, metric, images, ref, generator, r)
        t = float(e["target"])
        out[preset] = {"value": value, "target": t, "achieved": achieved,
                       "rel_error": abs(achieved - t) / max(abs(t), 1e-300), "gain": gain,
                       "reached": bool(e.get("reached", True))}
    return out


__all__ = ["CalibrationTable", "SWEEP", "calibrate", "sweep_values", "verify"]
