"""The sweep, the fit and the held-out check of Guardians of Image Quality A.3.4 (one and two
parameters); see :mod:`iqaguard.attacks.calibrate`."""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch

from ..errors import InputError
from ..metrics.base import Metric
from ..validation import check_image
from .base import Attack
from .budgets import PRESET_BUDGETS, Restriction
from .calibration_table import AttackSpec, CalibrationTable, _attack_class

#: number of parameter values swept (Guardians of Image Quality A.3.4: "10 values of this parameter")
SWEEP = 10
#: the default sweep spans ``default / SPAN .. default * SPAN`` geometrically (within the valid range)
SPAN = 8.0
#: ``values="auto"``: the probe spans ``default / PROBE_SPAN .. default * PROBE_SPAN`` (valid range)
PROBE_SPAN = 256.0
#: ``values="auto"``: probe values and the most images the probe runs on
PROBE_VALUES, PROBE_IMAGES = 9, 16
#: ``values="auto"``: the sweep extends this factor beyond the probe's estimates of the extreme targets
MARGIN = 1.3
#: the candidates of :func:`calibrate_two`'s second parameter, in this order
SECOND_CANDIDATES = ("steps", "max_queries", "epochs")

Progress = Optional[Callable[[str], None]]


# ---- the attack class, its parameters, the sweep ------------------------------------------------------------

def _numeric_default(cls: Type[Attack], name: str, role: str) -> Any:
    p = inspect.signature(cls).parameters.get(name)
    default = None if p is None else p.default
    if p is None or isinstance(default, bool) or not isinstance(default, numbers.Real):
        raise InputError(f"attack {cls.__name__}: its {role} parameter {name!r} has no numeric default "
                         f"(got {default!r}), so it cannot be calibrated")
    return default


def _varied_default(cls: Type[Attack]) -> Tuple[str, Any]:
    """The varied parameter's name and default, or an InputError when it is not a numeric parameter."""
    return cls.varied, _numeric_default(cls, cls.varied, "varied")


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


def fmt_budget(restriction: Union[str, Restriction], value: float) -> str:
    """A budget as people write it: L∞ in /255, SSIM to 4 digits, PSNR in dB."""
    r = Restriction(restriction)
    if r is Restriction.LINF:
        return f"{255 * value:.3f}/255"
    if r is Restriction.PSNR:
        return f"{value:.2f} dB"
    return f"{value:.4f}" if r is Restriction.SSIM else f"{value:.4g}"


def _run(cls: Type[Attack], params: Dict[str, Any], metric: Metric, images: torch.Tensor,
         ref: Optional[torch.Tensor], generator: Optional[torch.Generator], restriction: Restriction,
         batch: Optional[int] = None) -> Tuple[float, float]:
    """Mean budget and mean objective gain of ``cls(**params)`` on ``images`` (in batches of ``batch``)."""
    from .budgets import measure

    attack = cls(**params)
    gen = None
    if generator is not None:  # every value sees the same random stream
        gen = torch.Generator(device=generator.device)
        gen.set_state(generator.get_state())
    step = int(batch) if batch else images.shape[0]
    budgets, gains = [], []
    for i in range(0, images.shape[0], step):
        x = images[i:i + step]
        r = None if ref is None else ref[i:i + step]
        x_adv = attack(metric, x, ref=r, generator=gen)
        budgets.append(measure(restriction, x_adv, x))
        with torch.no_grad():
            gains.append((Attack.objective(metric, x_adv, r) - Attack.objective(metric, x, r)).double())
    return float(torch.cat(budgets).mean()), float(torch.cat(gains).mean())


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


def _targets(target_budgets: Optional[Dict[str, float]], r: Restriction) -> Dict[str, float]:
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
    return {k: float(t) for k, t in target_budgets.items()}


def _auto_values(cls: Type[Attack], name: str, integer: bool, targets: Dict[str, float], fixed: Dict[str, Any],
                 measure_at: Callable[[Any], float], progress: Progress,
                 r: Restriction) -> Tuple[List[Any], List[Dict[str, float]]]:
    """``values="auto"``: probe the valid range geometrically, then 10 linear values over the part
    that brackets every target (each target's value interpolated between the probe values around
    it, or the probe value closest to it when none brackets it), widened by :data:`MARGIN`."""
    probe_vals = sweep_values(cls, n=PROBE_VALUES, span=PROBE_SPAN, **fixed)
    probe = []
    for i, v in enumerate(probe_vals):
        probe.append({"value": v, "budget": measure_at(v)})
        if progress:
            progress(f"probe {i + 1}/{len(probe_vals)}: {name}={v:.6g} -> {r.value} "
                     f"{fmt_budget(r, probe[-1]['budget'])}")
    vs, bs = [float(p["value"]) for p in probe], [p["budget"] for p in probe]
    estimates = []
    for t in targets.values():
        est = None
        for i in range(len(vs) - 1):
            b0, b1 = bs[i], bs[i + 1]
            if min(b0, b1) <= t <= max(b0, b1):
                est = vs[i] if b1 == b0 else vs[i] + (t - b0) * (vs[i + 1] - vs[i]) / (b1 - b0)
                break
        estimates.append(est if est is not None else vs[min(range(len(vs)), key=lambda i: abs(bs[i] - t))])
    lo, hi = max(vs[0], min(estimates) / MARGIN), min(vs[-1], max(estimates) * MARGIN)
    if not hi > lo:  # every target beyond the same end: sweep the last probe interval there
        k = vs.index(min(vs, key=lambda v: abs(v - lo)))
        lo, hi = (vs[k - 1], vs[k]) if k > 0 else (vs[0], vs[1])
    vals: List[Any] = [lo + (hi - lo) * i / (SWEEP - 1) for i in range(SWEEP)]
    if integer:
        vals = sorted({int(round(v)) for v in vals})
        if len(vals) < 2:
            vals = sorted({int(round(lo)), int(round(lo)) + 1})
    return vals, probe


def _window(rows: List[Dict[str, float]], t: float, k: int) -> List[Dict[str, float]]:
    """The ``k`` consecutive sweep rows around the first pair whose budgets bracket ``t`` (the ``k``
    rows at the end whose budget is closest to ``t`` when no pair brackets it)."""
    b = [row["budget"] for row in rows]
    k = min(max(k, 2), len(rows))
    i = next((j for j in range(len(b) - 1) if min(b[j], b[j + 1]) <= t <= max(b[j], b[j + 1])), None)
    if i is None:
        i = 0 if abs(b[0] - t) <= abs(b[-1] - t) else len(rows) - 2
    start = min(max(0, i - (k - 2) // 2), len(rows) - k)
    return rows[start:start + k]


def _entries(rows: List[Dict[str, float]], name: str, integer: bool, targets: Dict[str, float],
             fit: Dict[str, float], gain_fit: Dict[str, float], local: int = 0) -> Dict[str, Dict[str, Any]]:
    lo, hi = float(rows[0]["value"]), float(rows[-1]["value"])
    budgets = [row["budget"] for row in rows]
    bmin, bmax = min(budgets), max(budgets)
    slack = 0.02 * (bmax - bmin)  # a target a hair outside the measured budgets still counts as reached
    entries: Dict[str, Dict[str, Any]] = {}
    for preset, t in targets.items():
        line, gline = fit, gain_fit
        if local:
            win = _window(rows, t, local)
            xs = [float(row["value"]) for row in win]
            line = _least_squares(xs, [row["budget"] for row in win])
            gline = _least_squares(xs, [row["gain"] for row in win])
        a, b = line["a"], line["b"]
        if b != 0:
            solved = (t - a) / b
            reached = lo <= solved <= hi and bmin - slack <= t <= bmax + slack
            value: Any = min(max(solved, lo), hi)
        else:
            reached, value = False, (lo + hi) / 2
        if integer:
            value = int(round(value))
        entries[preset] = {name: value, "target": t, "predicted": a + b * float(value),
                           "gain": gline["a"] + gline["b"] * float(value), "reached": bool(reached)}
        if local:
            entries[preset]["fit"] = line
    return entries


def calibrate(attack: AttackSpec, metric: Metric, images: torch.Tensor,
              target_budgets: Optional[Dict[str, float]] = None,
              values: Union[None, str, Sequence[float]] = None,
              ref: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
              restriction: Union[None, str, Restriction] = None, progress: Progress = None,
              batch: Optional[int] = None, local: int = 0, **fixed: Any) -> CalibrationTable:
    """Calibrate ``attack``'s varied parameter to target budgets (Guardians of Image Quality A.3.4).

    Args:
        attack: a registered attack name (``"ifgsm"``), or an :class:`Attack` subclass.
        metric: the metric attacked during the sweep.
        images: ``[N, 3, H, W]`` in [0, 1]; budgets and gains are means over them.
        target_budgets: preset name -> target budget; default ``PRESET_BUDGETS[restriction]``
            (weak / medium / strong).
        values: the values of the varied parameter to sweep (at least 2 distinct); default
            :func:`sweep_values` (10 geometric values around the attack's default); ``"auto"``:
            probe the valid range first and sweep 10 linear values around the targets.
        ref: reference images for a full-reference metric.
        generator: randomness of randomised attacks; every sweep value starts from its state.
        restriction: the restriction whose budget is measured and targeted; default the attack's own.
        progress: called with one line of text per probe and sweep value.
        batch: run the attack on at most this many images at once (default all).
        local: 0 (default): one line over the whole sweep solves every target, as in Guardians
            A.3.4; ``k >= 2``: each target is solved on the line through the ``k`` consecutive
            sweep values around it (recorded as the entry's ``fit``), which follows a curved
            budget (e.g. stAdv's L∞ against ``max_flow``) where one line is off by up to ~10%.
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
    targets = _targets(target_budgets, r)
    integer = isinstance(default, numbers.Integral)
    if isinstance(local, bool) or not isinstance(local, int) or local < 0 or local == 1:
        raise InputError(f"local: expected 0 (one line over the sweep) or a window of >= 2 sweep values, got {local!r}")
    cls(**fixed)  # a bad fixed parameter fails here, before any attack runs

    def measure_at(v: Any, x: torch.Tensor = images, rf: Optional[torch.Tensor] = ref) -> Tuple[float, float]:
        return _run(cls, {**fixed, name: v}, metric, x, rf, generator, r, batch)

    probe: List[Dict[str, float]] = []
    if isinstance(values, str):
        if values != "auto":
            raise InputError(f"values: expected a list of numbers or 'auto', got {values!r}")
        k = min(PROBE_IMAGES, images.shape[0])
        few = None if ref is None else ref[:k]
        vals, probe = _auto_values(cls, name, integer, targets, fixed,
                                   lambda v: measure_at(v, images[:k], few)[0], progress, r)
    elif values is None:
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
    for i, v in enumerate(vals):
        budget, gain = measure_at(v)
        rows.append({"value": v, "budget": budget, "gain": gain})
        if progress:
            progress(f"sweep {i + 1}/{len(vals)}: {name}={v:.6g} -> {r.value} {fmt_budget(r, budget)}, "
                     f"gain {gain:+.4f}")
    xs = [float(row["value"]) for row in rows]
    fit = _least_squares(xs, [row["budget"] for row in rows])
    gain_fit = _least_squares(xs, [row["gain"] for row in rows])
    entries = _entries(rows, name, integer, targets, fit, gain_fit, local)
    return CalibrationTable(attack=name_, varied=name, restriction=r.value, fixed=dict(fixed), rows=rows,
                            fit=fit, entries=entries, n_images=int(images.shape[0]), gain_fit=gain_fit,
                            probe=probe, local=local)


def default_second(attack: AttackSpec) -> Optional[str]:
    """The parameter :func:`calibrate_two` adds by default: the first of :data:`SECOND_CANDIDATES`
    (``steps``, ``max_queries``, ``epochs``) that the attack has with a numeric default, else None."""
    _, cls = _attack_class(attack)
    params = inspect.signature(cls).parameters
    for name in SECOND_CANDIDATES:
        p = params.get(name)
        if name != cls.varied and p is not None and isinstance(p.default, numbers.Real) \
                and not isinstance(p.default, bool):
            return name
    return None


def second_values(attack: AttackSpec, second: str, start: Any, levels: int = 5, **fixed: Any) -> List[Any]:
    """``start, 2 start, 4 start, ...`` (``levels`` values, integers for an integer parameter),
    stopping before the first value the attack's constructor refuses."""
    _, cls = _attack_class(attack)
    integer = isinstance(_numeric_default(cls, second, "second"), numbers.Integral)
    out: List[Any] = []
    for i in range(levels):
        v = int(round(start * 2 ** i)) if integer else float(start) * 2 ** i
        if not _valid(cls, second, v, fixed):
            break
        out.append(v)
    return out


def calibrate_two(attack: AttackSpec, metric: Metric, images: torch.Tensor, second: Optional[str] = None,
                  second_values_: Optional[Sequence[Any]] = None, levels: int = 5,
                  target_budgets: Optional[Dict[str, float]] = None,
                  values: Union[None, str, Sequence[float]] = "auto", ref: Optional[torch.Tensor] = None,
                  generator: Optional[torch.Generator] = None,
                  restriction: Union[None, str, Restriction] = None, progress: Progress = None,
                  batch: Optional[int] = None, local: int = 0, **fixed: Any) -> CalibrationTable:
    """Calibrate the varied parameter, adding ``second`` where it alone cannot reach a target.

    Level 0 is :func:`calibrate` with ``fixed`` as given. While some target is not reached, the
    calibration is rerun with the next value of ``second`` (``second_values_``, default
    :func:`second_values`: the fixed or default value doubled ``levels - 1`` times). Each preset
    takes the first level that reaches its target (its entry records ``varied``, ``second`` and
    ``level``); a preset that no level reaches keeps the last level's clipped entry (``reached:
    False``). The table's ``rows`` / ``fit`` are level 0's, ``levels`` holds every level.

    Args:
        second: the second parameter (default :func:`default_second`, e.g. ``steps``).
        second_values_: its values in increasing strength (first = the level-0 value).
        levels: how many values :func:`second_values` makes when ``second_values_`` is None.
        other arguments: as :func:`calibrate` (``values`` defaults to ``"auto"`` here).
    """
    name_, cls = _attack_class(attack)
    second = second or default_second(cls)
    if second is None:
        raise InputError(f"second: attack {cls.__name__} has none of {list(SECOND_CANDIDATES)}; name its "
                         f"second parameter (one of {list(inspect.signature(cls).parameters)})")
    if second == cls.varied or second not in inspect.signature(cls).parameters:
        raise InputError(f"second: {second!r} is not a parameter of {cls.__name__} other than its varied "
                         f"{cls.varied!r}; choose one of {[p for p in inspect.signature(cls).parameters if p != cls.varied]}")
    start = fixed.pop(second, None)
    if second_values_ is None:
        if start is None:
            start = _numeric_default(cls, second, "second")
        svals = second_values(cls, second, start, levels, **fixed)
    else:
        svals = list(second_values_)
    if not svals:
        raise InputError(f"second_values: no valid value of {second} to calibrate with")
    tables: List[CalibrationTable] = []
    for i, s in enumerate(svals):
        if progress:
            progress(f"level {i + 1}/{len(svals)}: {second}={s}")
        t = calibrate(cls, metric, images, target_budgets, values, ref, generator, restriction, progress,
                      batch, local, **{**fixed, second: s})
        tables.append(t)
        if all(e["reached"] for e in t.entries.values()):
            break
    entries: Dict[str, Dict[str, Any]] = {}
    for preset in tables[0].entries:
        level = next((i for i, t in enumerate(tables) if t.entries[preset]["reached"]), len(tables) - 1)
        entries[preset] = {**tables[level].entries[preset], second: svals[level], "level": level}
    base = tables[0]
    return CalibrationTable(
        attack=name_, varied=base.varied, restriction=base.restriction, fixed=dict(fixed), rows=base.rows,
        fit=base.fit, entries=entries, n_images=base.n_images, gain_fit=base.gain_fit, probe=base.probe,
        second=second, local=local,
        levels=[{"value": s, "rows": t.rows, "fit": t.fit, "gain_fit": t.gain_fit, "probe": t.probe,
                 "reached": {k: e["reached"] for k, e in t.entries.items()}} for s, t in zip(svals, tables)])


def verify(table: CalibrationTable, attack: Optional[AttackSpec], metric: Metric, images: torch.Tensor,
           ref: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
           progress: Progress = None, batch: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """Run each calibrated preset of ``table`` on ``images`` (held out from the calibration).

    ``attack``: the attack the table was made for (``None``: ``table.attack``); it runs with
    ``table.kwargs(preset)``. Returns preset name -> ``{"value", "target", "achieved" (mean
    budget under ``table.restriction``), "rel_error" (``|achieved - target| / |target|``), "gain"
    (mean objective increase), "reached" (the table's flag)}`` (and ``second: value`` for a
    two-parameter table).
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
        achieved, gain = _run(cls, table.kwargs(preset), metric, images, ref, generator, r, batch)
        t = float(e["target"])
        out[preset] = {"value": e[table.varied], "target": t, "achieved": achieved,
                       "rel_error": abs(achieved - t) / max(abs(t), 1e-300), "gain": gain,
                       "reached": bool(e.get("reached", True))}
        if table.second:
            out[preset][table.second] = e[table.second]
        if progress:
            progress(f"held-out {preset}: {r.value} {fmt_budget(r, achieved)} (target {fmt_budget(r, t)}, "
                     f"error {100 * out[preset]['rel_error']:.2f}%), gain {gain:+.4f}")
    return out
