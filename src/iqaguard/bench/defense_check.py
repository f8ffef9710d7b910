"""Which (defense, preset) can run against which metric, checked once per run before any task.

A defense preset is **skipped** for a metric — recorded in the store's ``defense_presets`` table
with the reason and listed in the report, never failed — when

* the defense cannot be built: a neural purification whose weights are not installed
  (:class:`~iqaguard.errors.MissingWeightsError`), or any other construction error (a smoothing
  defense is built once per metric: it wraps it; it changes no image, so no size check applies);
* the selected images are smaller than the defense accepts (``min_size``), or what it returns is
  smaller than the metric accepts (e.g. the strongest ``resize`` preset on a small image): the
  sizes checked are those of the first selected image of every dataset (the builtin datasets'
  images share one size; an image of another size that fails later still fails its task with one
  line naming the defense and the size).

Every checked preset also records what the gradient-masking checks (:mod:`iqaguard.bench.masking`)
need: ``randomized``, ``differentiable``, whether BPDA has a surrogate, and the EOT draws of the
spec.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from .. import defenses
from ..errors import IqaguardError, MissingWeightsError
from .spec import Spec
from .executors.worker import is_trained, wraps_metric
from .tasks import DefenseRef, Ref, Selection, defense_refs

#: (defense label, preset, metric label) -> reason
Excluded = Dict[Tuple[str, int, str], str]


def _sizes(spec: Spec, selections: Dict[Tuple[str, int], Selection]) -> List[Tuple[str, int, int]]:
    """``(dataset, H, W)`` of the first selected image of every dataset."""
    from .executors.worker import get_dataset

    out = []
    for d in spec.datasets:
        sel = next((selections[(d.key, s)] for s in spec.seeds if selections[(d.key, s)].indices), None)
        if sel is not None:
            ds = get_dataset(Ref(d.key, d.name, json.dumps(d.kwargs, sort_keys=True)))
            h, w = ds[sel.indices[0]].image.shape[-2:]
            out.append((d.key, int(h), int(w)))
    return out


def _build(d: DefenseRef, preset: int, metric: Optional[Ref] = None) -> Tuple[Any, Dict[str, Any], Optional[str]]:
    """``(defense or None, its gradient flags, why it cannot be built or None)``."""
    from .executors.worker import get_metric

    try:
        if metric is not None:
            p = defenses.create(d.name, metric=get_metric(metric, "cpu"), preset=preset, **d.kw)
            # smoothing draws noise (randomized); a trained metric is deterministic (class attribute False)
            return p, {"randomized": bool(getattr(p, "randomized", True)), "differentiable": True,
                       "surrogate": False}, None
        p = defenses.create(d.name, preset=preset, **d.kw)
    except MissingWeightsError as e:
        return None, {"randomized": None, "differentiable": None, "surrogate": None}, f"no weights: {e}"
    except IqaguardError as e:
        return None, {"randomized": None, "differentiable": None, "surrogate": None}, f"cannot be built: {e}"
    return p, {"randomized": bool(p.randomized), "differentiable": bool(p.differentiable),
               "surrogate": p.surrogate() is not None}, None


def trained_keys(spec: Spec) -> Excluded:
    """``(defense label, preset, metric)`` of every trained-metric defense preset of ``spec``, with the
    reason ``bench validate`` neither builds nor times them (building one trains it)."""
    out: Excluded = {}
    for mode in spec.modes:
        for d in defense_refs(spec, mode):
            if is_trained(d.name):
                for m in spec.metrics:
                    out[(d.label, d.preset, m.key)] = "trained on the first run (then cached): not timed here"
    return out


def check_defenses(spec: Spec, selections: Dict[Tuple[str, int], Selection],
                   min_sizes: Dict[str, int], build_trained: bool = True) -> Tuple[Excluded, List[Dict[str, Any]]]:
    """``(excluded, rows)``: the skipped (defense, preset, metric) with reasons, and one
    ``defense_presets`` row per checked (defense, preset, metric).

    Args:
        spec: the run's spec.
        selections: the image selection of every (dataset, seed).
        min_sizes: ``{metric label: min_size}``.
        build_trained: build (that is, train on first use) the trained-metric defenses; ``False``
            lists them as ``ok`` without building them (``bench validate``).
    """
    refs: Dict[Tuple[str, int], DefenseRef] = {}
    adaptive = set()
    for mode in spec.modes:
        for d in defense_refs(spec, mode):
            refs.setdefault((d.label, d.preset), d)
            if mode == "adaptive":
                adaptive.add((d.label, d.preset))
    sizes = _sizes(spec, selections)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    excluded: Excluded = {}
    rows = []
    for (label, preset), d in refs.items():
        smoothing = wraps_metric(d.name)
        if not smoothing:
            p, info, why = _build(d, preset)
        for m in spec.metrics:
            if smoothing and not build_trained and is_trained(d.name):
                p, info, why = None, {"randomized": False, "differentiable": True, "surrogate": False}, None
            elif smoothing:  # a smoothing or trained defense wraps the metric: built (and checked) per metric
                p, info, why = _build(d, preset, Ref(m.key, m.name, json.dumps(m.kwargs, sort_keys=True)))
            reason = why
            if reason is None and not smoothing:
                for ds, h, w in sizes:
                    oh, ow = p.output_size(h, w)
                    if min(h, w) < p.min_size:
                        reason = f"{ds} images are {h}x{w}, below the {p.min_size}x{p.min_size} {label} needs"
                    elif min(oh, ow) < min_sizes[m.key]:
                        reason = (f"{label} preset {preset} turns {ds}'s {h}x{w} images into {oh}x{ow}, below "
                                  f"{m.key}'s minimum {min_sizes[m.key]}x{min_sizes[m.key]}")
                    if reason:
                        break
            if reason is not None:
                excluded[(label, preset, m.key)] = reason
            rows.append({"defense": label, "defense_preset": str(preset), "metric": m.key, "name": d.name,
                         "status": "skipped" if reason else "ok", "reason": reason,
                         "adaptive": (label, preset) in adaptive, "eot_samples": d.eot_samples,
                         "checked": now, **info})
    return excluded, rows


def latest_presets(con: Any) -> List[Dict[str, Any]]:
    """The newest ``defense_presets`` row of every (defense, preset, metric) of a store (``[]`` without the table)."""
    if "defense_presets" not in {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}:
        return []
    cur = con.execute(
        "SELECT * FROM defense_presets QUALIFY row_number() OVER "
        "(PARTITION BY defense, defense_preset, metric ORDER BY checked DESC) = 1 "
        "ORDER BY defense, defense_preset, metric")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]
