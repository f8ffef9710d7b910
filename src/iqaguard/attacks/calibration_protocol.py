"""The calibration protocol on a dataset (``iqaguard attack calibrate``): disjoint calibration
and held-out crops of the validation split, the sweep, the fit and the check; see
:mod:`iqaguard.attacks.calibrate`."""
from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError, UnknownNameError
from ..metrics.base import Metric
from .budgets import PRESET_BUDGETS, Restriction
from .calibration_sweep import (Progress, _numeric_default, _restriction, _varied_default, calibrate, calibrate_two,
                                default_second, verify)
from .calibration_table import AttackSpec, CalibrationTable, _attack_class

# ---- the protocol on a dataset --------------------------------------------------------------------------------

#: the attack parameter that is itself the budget of each restriction: an attack varying it has
#: presets that are their budgets by construction (I-FGSM's eps, Zhang's ssim, MADC's psnr)
BUDGET_PARAMS = {"linf": "eps", "l2": "eps", "l0": "pixels", "ssim": "ssim", "psnr": "psnr"}


def needs_calibration(attack: AttackSpec) -> bool:
    """True for a per-image attack whose restriction has preset budgets and whose varied parameter
    is not that budget (stAdv's ``max_flow`` -> L∞, cAdv's ``lr`` -> SSIM): the attacks whose
    presets the shipped tables calibrate."""
    from .universal import UniversalAttack

    _, cls = _attack_class(attack)
    r = Restriction(cls.restriction)
    return (not issubclass(cls, UniversalAttack) and r in PRESET_BUDGETS
            and cls.varied != BUDGET_PARAMS.get(r.value))


def weights_provenance(attack: AttackSpec, metric: str) -> Dict[str, str]:
    """``{file name: sha256 (16 hex)}`` of the weight files a calibration depends on: the builtin
    metric's (``metrics/weights/<name>.safetensors``) and the attack module's ``WEIGHTS_FILE``."""
    import hashlib
    import sys

    from ..metrics.builtin import weights_path

    _, cls = _attack_class(attack)
    files = [weights_path(metric)] if metric.startswith("builtin-") else []
    files.append(getattr(sys.modules.get(cls.__module__), "WEIGHTS_FILE", None))
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16]
            for f in files if f is not None and Path(f).is_file()}


def default_fixed(attack: AttackSpec) -> Dict[str, Any]:
    """The parameters every preset of the attack's class sets alike, apart from ``varied`` (e.g.
    stAdv's ``steps=10``): what a calibration runs with unless told otherwise."""
    _, cls = _attack_class(attack)
    presets = list(cls.presets.values())
    if not presets:
        return {}
    common = {k: v for k, v in presets[0].items() if k != cls.varied}
    return {k: v for k, v in common.items() if all(p.get(k, object()) == v for p in presets[1:])}


def _open_dataset(dataset: Any, split: Optional[str], root: Optional[str]) -> Tuple[Any, str, Optional[str]]:
    """``(dataset, its name, the split used)``; the split defaults to ``val`` where the dataset has one."""
    from ..data import Dataset, create
    from ..registry import DATASETS

    if isinstance(dataset, Dataset):
        split = getattr(dataset, "split", split)
    if split == "test":
        raise InputError("split: 'test' is the evaluation split; calibrate on 'val' (the default) or 'train' "
                         "so that the benchmark's test images stay unseen")
    if isinstance(dataset, Dataset):
        return dataset, getattr(dataset, "name", "dataset"), split
    try:
        factory = DATASETS.get(dataset)
    except UnknownNameError as e:
        raise InputError(f"dataset: {e}".splitlines()[0]) from None
    params = inspect.signature(factory).parameters
    kw: Dict[str, Any] = {}
    if "split" in params:
        kw["split"] = split or "val"
    elif split is not None:
        raise InputError(f"split: dataset {dataset!r} has no splits; leave --split out (calibration and held-out "
                         f"images are then disjoint subsets of all its images)")
    if root is not None:
        if "root" not in params:
            raise InputError(f"root: dataset {dataset!r} takes no root folder; leave --root out")
        kw["root"] = root
    elif "root" in params and params["root"].default is inspect.Parameter.empty:
        raise InputError(f"dataset {dataset!r} needs its folder: pass --root PATH (root= in Python)")
    return create(dataset, **kw), dataset, kw.get("split")


def _draw(pool: List[int], cells: List[Any], seq: List[Any], count: int, rng: Any) -> List[int]:
    """``count`` indices of ``pool``: the i-th of the cell ``seq[i]`` where the pool still has one,
    else any unused one (random, without replacement)."""
    by_cell: Dict[Any, List[int]] = {}
    for i in (pool[j] for j in rng.permutation(len(pool))):
        by_cell.setdefault(cells[i], []).append(i)
    out: List[int] = []
    for c in seq[:count]:
        if by_cell.get(c):
            out.append(by_cell[c].pop())
    rest = [i for c in sorted(by_cell, key=repr) for i in by_cell[c]]
    rest = [rest[j] for j in rng.permutation(len(rest))]
    return out + rest[:count - len(out)]


def _pick(ds: Any, n: int, held_out: int, seed: int) -> Tuple[List[int], List[int]]:
    """Disjoint random indices: by source photograph where the samples name one (``meta["source"]``:
    no photograph is in both subsets), else by image; stratified by distortion where the samples
    name it (``meta["dist_id"]``, ``meta["level"]``: both subsets get the same sequence of
    distortion type x level cells, so their means differ by content, not by the mix of distortions)."""
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA11B]))
    metas = [s.meta or {} for s in ds.samples]
    cells = [(m.get("dist_id"), m.get("level")) for m in metas]
    kinds = sorted(set(cells), key=repr)
    seq = [kinds[j] for j in rng.permutation(len(kinds))] * (max(n, held_out) // len(kinds) + 1)
    sources = [m.get("source") for m in metas]
    groups = sorted(set(sources)) if all(sources) else []
    if len(groups) >= 2 and held_out > 0:
        order = [groups[i] for i in rng.permutation(len(groups))]
        k = min(len(groups) - 1, max(1, round(len(groups) * n / (n + held_out))))
        cal_src = set(order[:k])
        cal = [i for i, s in enumerate(sources) if s in cal_src]
        ho = [i for i, s in enumerate(sources) if s not in cal_src]
        if len(cal) < n or len(ho) < held_out:
            raise InputError(f"n / held_out: the {k} calibration and {len(groups) - k} held-out source photographs "
                             f"hold {len(cal)} and {len(ho)} images, fewer than {n} and {held_out}; lower --n / --held-out")
        return _draw(cal, cells, seq, n, rng), _draw(ho, cells, seq, held_out, rng)
    first = _draw(list(range(len(ds))), cells, seq, n, rng)
    taken = set(first)
    return first, _draw([i for i in range(len(ds)) if i not in taken], cells, seq, held_out, rng)


def _crops(ds: Any, indices: List[int], size: Optional[int], seed: int, fr: bool
           ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[Dict[str, Any]]]:
    import numpy as np

    xs, refs, info = [], [], []
    for i in indices:
        s = ds[i]
        x = s.image
        r = s.ref if fr else None
        h, w = x.shape[-2:]
        top = left = 0
        if size is not None:
            if min(h, w) < size:
                raise InputError(f"size: image {s.name} is {h}x{w}, smaller than the {size}px crop; lower --size")
            g = np.random.default_rng(np.random.SeedSequence([int(seed), i, 0xC809]))
            top, left = int(g.integers(0, h - size + 1)), int(g.integers(0, w - size + 1))
            x = x[..., top:top + size, left:left + size]
            r = None if r is None else r[..., top:top + size, left:left + size]
        xs.append(x)
        refs.append(r)
        info.append({"name": s.name, "top": top, "left": left})
    try:
        x = torch.cat(xs)
        ref = torch.cat(refs) if fr else None
    except RuntimeError:
        raise InputError("size: the images differ in size; pass a crop size (--size 96)") from None
    return x, ref, info


def calibrate_dataset(attack: AttackSpec, metric: Union[str, Metric], dataset: Any = "builtin-kadid",
                      split: Optional[str] = None, n: int = 125, held_out: int = 125, size: Optional[int] = 96,
                      seed: int = 0, restriction: Union[None, str, Restriction] = None,
                      values: Union[None, str, Sequence[float]] = "auto", second: Optional[str] = "auto",
                      root: Optional[str] = None, fixed: Optional[Dict[str, Any]] = None,
                      progress: Progress = None, batch: Optional[int] = 16, device: str = "cpu",
                      local: int = 4) -> CalibrationTable:
    """The calibration protocol of Guardians A.3.4 on a dataset, with a held-out check.

    ``n`` calibration and ``held_out`` held-out images are drawn (seeded) from ``split`` of
    ``dataset`` (default ``val``; ``test`` is refused), from disjoint source photographs where the
    dataset names them (builtin-kadid), and cropped to ``size`` px at seeded random positions.
    The attack's varied parameter is swept on the calibration crops (``values``, default
    ``"auto"``), the line fitted, each preset solved; ``second`` (``"auto"``: :func:`default_second`,
    ``None``: never) is calibrated too where the varied parameter alone misses a target
    (:func:`calibrate_two`); the presets are then run on the held-out crops (:func:`verify`).

    Args:
        attack: registered attack name; universal attacks are refused (their ``eps`` is their budget).
        metric: a metric name (``iqaguard.metrics.create``) or a Metric (its ``name`` is recorded).
        dataset: a dataset name (``iqaguard.data.create``) or a Dataset.
        fixed: other attack parameters (default :func:`default_fixed`, e.g. ``steps=10``).
        root: the folder of a dataset that needs one.
        batch: images per attack call.
        device: where the metric runs.
        local: :func:`calibrate`'s ``local`` (default 4: each target on the line through the 4
            sweep values around it; 0: one line over the whole sweep).

    Returns:
        A :class:`CalibrationTable` with every field of its provenance filled in.
    """
    from .. import __version__, metrics
    from .universal import UniversalAttack
    from ..validation import resolve_device

    t0 = time.perf_counter()
    name_, cls = _attack_class(attack)
    if issubclass(cls, UniversalAttack):
        raise InputError(f"attack: {name_!r} is universal (one perturbation fitted on a set of images, its eps is "
                         "its L∞ budget): nothing to calibrate; choose a per-image attack (iqaguard list attacks)")
    _varied_default(cls)
    _restriction(restriction, cls)
    if second not in (None, "auto"):
        params = [q for q in inspect.signature(cls).parameters if q != cls.varied]
        if second not in params:
            raise InputError(f"second (--second): {second!r} is not a parameter of {cls.__name__} other than its "
                             f"varied {cls.varied!r}; choose one of {params}, auto or none")
        _numeric_default(cls, second, "second")
    for k, v in (("n (--n)", n), ("held_out (--held-out)", held_out)):
        low = 4 if k.startswith("n ") else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise InputError(f"{k}: expected an integer >= {low} (docs/attacks.md: 32 calibration images gave "
                             f"held-out errors <= 2%, 12 gave 6-8%), got {v!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise InputError(f"size (--size): expected a crop size in pixels >= 8 (or None for whole images), got {size!r}")
    fixed = default_fixed(cls) if fixed is None else dict(fixed)
    if not isinstance(fixed, dict) or cls.varied in fixed:
        raise InputError(f"fixed (--fix): expected the attack's other parameters, not its varied {cls.varied!r}, "
                         f"got {fixed!r}")
    cls(**fixed)  # an unknown or bad fixed parameter fails before any image is read
    m = metrics.create(metric) if isinstance(metric, str) else metric
    if not isinstance(m, Metric):
        raise InputError(f"metric: expected a metric name or an iqaguard Metric, got {type(metric).__name__}")
    m = m.to(resolve_device(device))
    metric_name = metric if isinstance(metric, str) else getattr(m, "name", type(m).__name__)
    ds, ds_name, split_used = _open_dataset(dataset, split, root)
    if m.kind == "fr" and not getattr(ds, "full_reference", False):
        raise InputError(f"metric {metric_name!r} is full-reference but dataset {ds_name!r} has no reference images: "
                         "use a full-reference dataset (builtin-kadid) or a no-reference metric")
    if n + held_out > len(ds):
        raise InputError(f"n / held_out: {n} + {held_out} images requested, but {ds_name!r}"
                         f"{f' split {split_used!r}' if split_used else ''} has {len(ds)}; lower --n / --held-out")
    cal_idx, ho_idx = _pick(ds, n, held_out, seed)
    fr = m.kind == "fr"
    x, ref, cal_info = _crops(ds, cal_idx, size, seed, fr)
    try:
        m.check_min_size(x)
    except InputError as e:
        raise InputError(f"size: {e}; use crops of at least {m.min_size}px (--size / size=)".splitlines()[0]) from None
    if progress:
        progress(f"calibrating {name_} on {metric_name}: {ds_name}{f' split {split_used}' if split_used else ''}, "
                 f"{n} calibration + {held_out} held-out images, {f'{size}px crops' if size else 'whole images'}, "
                 f"seed {seed}")
    dev = m.device
    x, ref = x.to(dev), None if ref is None else ref.to(dev)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    if second == "auto":
        second = default_second(cls)
    table = calibrate(cls, m, x, None, values, ref, gen, restriction, progress, batch, local, **fixed)
    if second and not all(e["reached"] for e in table.entries.values()):
        if progress:
            unreached = [k for k, e in table.entries.items() if not e["reached"]]
            progress(f"{cls.varied} alone does not reach {', '.join(unreached)}: calibrating {second} too")
        table = calibrate_two(cls, m, x, second, None, 5, None, values, ref, gen, restriction, progress, batch,
                              local, **fixed)
    table.attack, table.metric, table.dataset, table.split = name_, metric_name, ds_name, split_used
    table.size, table.seed, table.images = size, int(seed), cal_info
    if held_out:
        xh, refh, ho_info = _crops(ds, ho_idx, size, seed, fr)
        xh, refh = xh.to(dev), None if refh is None else refh.to(dev)
        table.verification = verify(table, cls, m, xh, refh, gen, progress, batch)
        table.held_out_images, table.n_held_out = ho_info, held_out
    table.meta = {"iqaguard": __version__, "wall_s": round(time.perf_counter() - t0, 1), "device": str(dev),
                  "weights": weights_provenance(cls, metric_name)}
    return table
