"""Expansion of a spec into tasks, and the rows they produce (DESIGN.md §Benchmark).

Two phases per run:

1. :class:`CleanTask` — per (metric, dataset, seed, image batch): the clean score and the
   defended-clean score of every (defense, preset), computed once and stored in ``clean_scores``.
2. :class:`AttackTask` — ``non-adaptive``: per (metric, dataset, attack, preset, seed, image
   batch) the attack runs ONCE on the bare metric; its output is quantised to 8 bits (it is
   cached as PNG) and that quantised image is scored undefended (the ``none`` / ``-`` row) and
   under every (defense, preset). ``adaptive``: per (metric, dataset, attack, preset, defense,
   defense preset, seed, batch) the attack runs against ``defend(metric, P)``.

Universal attacks add a phase between the two (:class:`FitTask`: the perturbation is fitted once
per (metric, attack, preset) on the spec's ``fit`` images, stored, and handed to every attack
task of that preset; non-adaptive only), and ``transfer: true`` adds a third
(:class:`TransferTask`: each metric's cached adversarial images scored by every other metric).

Tasks are small frozen dataclasses of strings and tuples, so they pickle cheaply to Ray
workers; a worker rebuilds metrics, datasets, attacks and defenses from names and kwargs.
Batches always follow the selection order, so every executor sees the same batch composition.
Image caps (a metric's ``limit``, a dataset's ``mode_limits``) keep the first N images of the
selection; a KMeans selection is in round-robin order over its clusters (and photographs,
:func:`iqaguard.data.sampling.cluster_subset`), so those N images spread over as many clusters
as N allows instead of coming from the first photographs in index order.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .spec import Spec

NO_DEFENSE = ("none", "-")
CleanLookup = Dict[Tuple[str, str, str, str, str, int], Tuple[Optional[float], float]]


@dataclass(frozen=True)
class Ref:
    """A pluggable object: ``label`` (row value), registry ``name``, ``kwargs`` as sorted JSON."""

    label: str
    name: str
    kwargs: str = "{}"

    @property
    def kw(self) -> Dict[str, Any]:
        """The constructor kwargs as a dict."""
        return json.loads(self.kwargs)


@dataclass(frozen=True)
class DefenseRef:
    """One defense preset: ``label``, registry ``name``, preset index, kwargs JSON, EOT draws."""

    label: str
    name: str
    preset: int
    kwargs: str = "{}"
    eot_samples: int = 1

    @property
    def kw(self) -> Dict[str, Any]:
        """The constructor kwargs as a dict."""
        return json.loads(self.kwargs)

    @property
    def key(self) -> Tuple[str, str]:
        """``(defense, defense_preset)`` as written in rows."""
        return (self.label, str(self.preset))


@dataclass(frozen=True)
class Selection:
    """The images of one (dataset, seed): dataset indices and names, in selection order.

    Limits keep a prefix (:func:`_batches`): for a KMeans subset the order is round-robin over
    the clusters, so every prefix is cluster-diverse.
    """

    indices: Tuple[int, ...]
    names: Tuple[str, ...]


@dataclass(frozen=True)
class _Common:
    metric: Ref
    dataset: Ref
    seed: int
    indices: Tuple[int, ...]
    names: Tuple[str, ...]
    device: str = "cpu"
    num_threads: int = 1
    imports: Tuple[str, ...] = ()


@dataclass(frozen=True)
class CleanTask(_Common):
    """Clean and defended-clean scores of a batch (phase 1)."""

    defenses: Tuple[DefenseRef, ...] = ()

    def keys(self) -> List[tuple]:
        """``clean_scores`` keys this task writes."""
        pairs = [NO_DEFENSE] + [d.key for d in self.defenses]
        return [(self.dataset.label, n, self.metric.label, d, p, self.seed) for n in self.names for d, p in pairs]

    def describe(self) -> str:
        return f"clean {self.metric.label} {self.dataset.label} s{self.seed} [{self.names[0]}..+{len(self.names)}]"


@dataclass(frozen=True)
class CertifyTask(_Common):
    """The certificate of a smoothing defense on a batch of clean images (``certified`` table)."""

    defense: DefenseRef = DefenseRef("", "", 0)

    def keys(self) -> List[tuple]:
        """``certified`` keys this task writes."""
        return [(self.dataset.label, n, self.metric.label, self.defense.label, str(self.defense.preset), self.seed)
                for n in self.names]

    def describe(self) -> str:
        return (f"certify {self.defense.label}/{self.defense.preset} on {self.metric.label} {self.dataset.label} "
                f"s{self.seed} [{self.names[0]}..+{len(self.names)}]")


@dataclass(frozen=True)
class AttackTask(_Common):
    """One attack preset on a batch (phase 2); ``target`` is the defense attacked (adaptive).

    ``defenses`` are the (defense, preset) pairs scored on the adversarial images (non-adaptive;
    the undefended row is always written). ``cached`` holds PNG bytes of previously stored
    adversarial images and ``cached_t_attack`` their per-image attack times.
    """

    attack: Ref = Ref("", "")
    preset: str = ""
    mode: str = "non-adaptive"
    target: Optional[DefenseRef] = None
    defenses: Tuple[DefenseRef, ...] = ()
    cached: Optional[Tuple[bytes, ...]] = None
    cached_t_attack: Tuple[float, ...] = ()
    cached_params: Optional[str] = None
    cached_queries: Tuple[Optional[float], ...] = ()
    universal: Optional[bytes] = None
    #: adaptive: also measure the target's input gradient at the clean images (``gradient_checks``;
    #: set on the tasks of one attack preset per (metric, defense preset), so it is measured once)
    grad_check: bool = False

    def scored(self) -> List[Tuple[str, str]]:
        """``(defense, defense_preset)`` pairs of the rows this task writes."""
        if self.mode == "adaptive":
            assert self.target is not None
            return [self.target.key]
        return [NO_DEFENSE] + [d.key for d in self.defenses]

    def keys(self) -> List[tuple]:
        """``results`` keys this task writes (``store.KEY_COLUMNS`` order)."""
        return [(self.dataset.label, n, self.metric.label, self.attack.label, self.preset, d, p, self.mode, self.seed)
                for n in self.names for d, p in self.scored()]

    def adv_keys(self) -> List[tuple]:
        """``adversarial`` keys of the cached images (non-adaptive only)."""
        return [(self.dataset.label, n, self.metric.label, self.attack.label, self.preset, self.seed)
                for n in self.names]

    def describe(self) -> str:
        tgt = f" vs {self.target.label}/{self.target.preset}" if self.target else ""
        return (f"{self.mode} {self.attack.label}/{self.preset}{tgt} on {self.metric.label} {self.dataset.label} "
                f"s{self.seed} [{self.names[0]}..+{len(self.names)}]")


@dataclass(frozen=True)
class FitTask:
    """Fit one universal attack preset on a metric (phase 2a), once per (metric, attack, preset).

    ``dataset`` is the spec's ``fit.dataset`` and ``images`` how many of its images (evenly spaced
    indices) the perturbation is learned on; the result is the perturbation as safetensors bytes.
    """

    metric: Ref
    attack: Ref
    preset: str
    dataset: Ref
    images: int
    device: str = "cpu"
    num_threads: int = 1
    imports: Tuple[str, ...] = ()

    @property
    def key(self) -> Tuple[str, str, str]:
        """``universal`` table key: ``(metric, attack, attack_preset)``."""
        return (self.metric.label, self.attack.label, self.preset)

    def describe(self) -> str:
        return f"fit {self.attack.label}/{self.preset} on {self.metric.label} ({self.images} images of {self.dataset.label})"


@dataclass(frozen=True)
class TransferTask(_Common):
    """Score another metric's adversarial images (phase 3): ``source`` crafted them (non-adaptive,
    cached PNGs in ``cached``), ``metric`` scores them, undefended and under ``defenses``."""

    source: Ref = Ref("", "")
    attack: Ref = Ref("", "")
    preset: str = ""
    defenses: Tuple[DefenseRef, ...] = ()
    cached: Tuple[bytes, ...] = ()

    def keys(self) -> List[tuple]:
        """``transfer`` keys this task writes."""
        pairs = [NO_DEFENSE] + [d.key for d in self.defenses]
        return [(self.dataset.label, n, self.source.label, self.metric.label, self.attack.label, self.preset, d, p,
                 self.seed) for n in self.names for d, p in pairs]

    def adv_keys(self) -> List[tuple]:
        """``adversarial`` keys of the source's images."""
        return [(self.dataset.label, n, self.source.label, self.attack.label, self.preset, self.seed)
                for n in self.names]

    def describe(self) -> str:
        return (f"transfer {self.attack.label}/{self.preset} {self.source.label} -> {self.metric.label} "
                f"{self.dataset.label} s{self.seed} [{self.names[0]}..+{len(self.names)}]")


def _ref(entry: Any) -> Ref:
    return Ref(entry.key, entry.name, json.dumps(entry.kwargs, sort_keys=True))


def defense_refs(spec: Spec, mode: str, metric: Optional[str] = None,
                 excluded: Optional[Dict[Tuple[str, int, str], str]] = None) -> List[DefenseRef]:
    """Every (defense, preset) of the spec used in ``mode``, in spec order; with ``metric``, those
    not ``excluded`` for it (:func:`iqaguard.bench.defense_check.check_defenses`)."""
    refs = [DefenseRef(d.key, d.name, p, json.dumps(d.kwargs, sort_keys=True), d.eot_samples)
            for d in spec.defenses for p in d.presets_for(mode)]
    if metric is None or not excluded:
        return refs
    return [r for r in refs if (r.label, r.preset, metric) not in excluded]


def _batches(sel: Selection, size: int, limit: Optional[int]) -> Iterator[Tuple[Tuple[int, ...], Tuple[str, ...]]]:
    """Batches of at most ``size`` images of the first ``limit`` images of ``sel`` (all when None)."""
    n = len(sel.indices) if limit is None else min(limit, len(sel.indices))
    for s in range(0, n, size):
        yield sel.indices[s:min(s + size, n)], sel.names[s:min(s + size, n)]


def _cap(*limits: Optional[int]) -> Optional[int]:
    """The smallest of the given image caps (``None`` = no cap)."""
    given = [n for n in limits if n is not None]
    return min(given) if given else None


def expand(spec: Spec, selections: Dict[Tuple[str, int], Selection],
           excluded: Optional[Dict[Tuple[str, int, str], str]] = None) -> Tuple[List[CleanTask], List[AttackTask]]:
    """All tasks of ``spec`` for the image ``selections[(dataset label, seed)]``.

    ``excluded`` (defense, preset, metric) are left out (skipped defense presets).

    Returns:
        ``(clean_tasks, attack_tasks)``; clean tasks cover every image any mode uses.
    """
    common = dict(device=spec.device, num_threads=spec.num_threads, imports=tuple(spec.imports))
    clean, attacks = [], []
    adaptive_attacks = [a for a in spec.attacks if not a.universal]
    first = (adaptive_attacks[0].key, adaptive_attacks[0].presets[0]) if adaptive_attacks else None
    for m in spec.metrics:
        dfs = tuple(defense_refs(spec, "non-adaptive", m.key, excluded))
        targets_ad = defense_refs(spec, "adaptive", m.key, excluded) if "adaptive" in spec.modes else []
        used = dfs if "non-adaptive" in spec.modes else ()
        everyone = tuple(dict.fromkeys(used + tuple(targets_ad)))  # defended-clean scores needed by any mode
        for d in spec.datasets:
            limits = [_cap(m.limit, d.mode_limits.get(mode)) for mode in spec.modes]
            widest = None if None in limits else max(limits)
            for seed in spec.seeds:
                sel = selections[(d.key, seed)]
                base = dict(metric=_ref(m), dataset=_ref(d), seed=seed, **common)
                for idx, names in _batches(sel, spec.batch_size, widest):
                    clean.append(CleanTask(indices=idx, names=names, defenses=everyone, **base))
                for mode in spec.modes:
                    targets = [None] if mode == "non-adaptive" else targets_ad
                    # a universal perturbation is fitted on the bare metric: non-adaptive only
                    for a in (spec.attacks if mode == "non-adaptive" else [a for a in spec.attacks if not a.universal]):
                        for preset in a.presets:
                            for idx, names in _batches(sel, spec.batch_size, _cap(m.limit, d.mode_limits.get(mode))):
                                for tgt in targets:
                                    attacks.append(AttackTask(
                                        indices=idx, names=names, attack=_ref(a), preset=preset, mode=mode,
                                        target=tgt, defenses=dfs if tgt is None else (),
                                        grad_check=tgt is not None and (a.key, preset) == first, **base))
    return clean, attacks


def certify_tasks(spec: Spec, selections: Dict[Tuple[str, int], Selection],
                  excluded: Optional[Dict[Tuple[str, int, str], str]] = None) -> List[CertifyTask]:
    """One :class:`CertifyTask` per (metric, dataset, seed, smoothing defense preset, batch) of the
    images the non-adaptive mode uses (the clean images; Guardians of Image Quality certifies clean inputs)."""
    from .executors.worker import is_smoothing

    common = dict(device=spec.device, num_threads=spec.num_threads, imports=tuple(spec.imports))
    out = []
    for m in spec.metrics:
        smoothing = [d for d in defense_refs(spec, "non-adaptive", m.key, excluded) if is_smoothing(d.name)]
        for d in spec.datasets:
            cap = _cap(m.limit, d.mode_limits.get("non-adaptive"))
            for seed in spec.seeds:
                for ref in smoothing:
                    for idx, names in _batches(selections[(d.key, seed)], spec.batch_size, cap):
                        out.append(CertifyTask(metric=_ref(m), dataset=_ref(d), seed=seed, indices=idx, names=names,
                                               defense=ref, **common))
    return out


def certify_rows(task: CertifyTask, result: Dict[str, Any], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``certified`` rows of a finished :class:`CertifyTask` (infinite bounds stored as NULL)."""
    rows = []
    for i, name in enumerate(task.names):
        r = result["rows"][i]
        finite = {k: (r[k] if r[k] is not None and abs(r[k]) != float("inf") else None) for k in ("lower", "upper")}
        rows.append(dict(meta, dataset=task.dataset.label, image=name, metric=task.metric.label,
                         defense=task.defense.label, defense_preset=str(task.defense.preset), seed=task.seed,
                         score=r["score"], radius=r["radius"], eps=r["eps"], abstain=r["abstain"],
                         samples=r["samples"], t_certify=result["t"], bound_worst=result["bounds"][0],
                         bound_best=result["bounds"][1], gen_seed=result["gen_seed"][i], **finite))
    return rows


def fit_tasks(spec: Spec) -> List[FitTask]:
    """One :class:`FitTask` per (metric, universal attack, preset) of ``spec``."""
    common = dict(device=spec.device, num_threads=spec.num_threads, imports=tuple(spec.imports))
    return [FitTask(metric=_ref(m), attack=_ref(a), preset=p, dataset=_ref(a.fit.dataset), images=a.fit.images,
                    **common)
            for a in spec.attacks if a.fit is not None for m in spec.metrics for p in a.presets]


def transfer_tasks(spec: Spec, selections: Dict[Tuple[str, int], Selection],
                   excluded: Optional[Dict[Tuple[str, int, str], str]] = None) -> List[TransferTask]:
    """Every (source metric, other metric, dataset, attack, preset, seed, batch) of ``spec.transfer``.

    The images are the first N of the selection that both metrics' caps allow (the source's
    non-adaptive adversarial images exist for them); each batch is scored by the other metric,
    undefended and under every non-adaptive defense preset.
    """
    if not spec.transfer or "non-adaptive" not in spec.modes:
        return []
    common = dict(device=spec.device, num_threads=spec.num_threads, imports=tuple(spec.imports))
    out = []
    for src in spec.metrics:
        for m in spec.metrics:
            if m.key == src.key:
                continue
            dfs = tuple(defense_refs(spec, "non-adaptive", m.key, excluded))
            for d in spec.datasets:
                cap = _cap(src.limit, m.limit, d.mode_limits.get("non-adaptive"))
                for seed in spec.seeds:
                    for a in spec.attacks:
                        for preset in a.presets:
                            for idx, names in _batches(selections[(d.key, seed)], spec.batch_size, cap):
                                out.append(TransferTask(metric=_ref(m), dataset=_ref(d), seed=seed, indices=idx,
                                                        names=names, source=_ref(src), attack=_ref(a),
                                                        preset=preset, defenses=dfs, **common))
    return out


def pending(task: Any, done: set) -> Any:
    """``task`` reduced to its unfinished work given the stored ``done`` keys, or ``None``.

    A non-adaptive attack task keeps only the defenses with a missing row (the attack itself is
    recomputed or reloaded from the PNG cache); any other task runs whole or not at all.
    """
    keys = task.keys()
    if all(k in done for k in keys):
        return None
    if isinstance(task, AttackTask) and task.mode == "non-adaptive":
        missing = {k[5:7] for k in keys if k not in done}
        return replace(task, defenses=tuple(d for d in task.defenses if d.key in missing))
    if isinstance(task, CleanTask):
        missing = {k[3:5] for k in keys if k not in done}
        return replace(task, defenses=tuple(d for d in task.defenses if d.key in missing))
    return task


def gen_seed(*parts: Any) -> int:
    """A 63-bit generator seed derived from ``parts`` (e.g. seed, dataset, image, defense, preset)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def clean_rows(task: CleanTask, result: Dict[str, Any], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``clean_scores`` rows of a finished :class:`CleanTask` (``meta``: version, spec_hash, run_id)."""
    rows = []
    for (label, preset), out in result["scores"].items():
        for i, name in enumerate(task.names):
            rows.append(dict(meta, dataset=task.dataset.label, image=name, metric=task.metric.label, defense=label,
                             defense_preset=preset, seed=task.seed, mos=result["mos"][i], score=out["score"][i],
                             t_defense=out["t"], gen_seed=out["gen_seed"][i]))
    return rows


def result_rows(task: AttackTask, result: Dict[str, Any], clean: CleanLookup,
                meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``results`` rows of a finished :class:`AttackTask`, joined with the clean-phase scores.

    Args:
        task: the task.
        result: what the worker returned (see :mod:`iqaguard.bench.executors.worker`).
        clean: ``(dataset, image, metric, defense, preset, seed) -> (score, mos)`` of phase 1.
        meta: columns shared by every row (version, spec_version, spec_hash, run_id).
    """
    rows = []
    lo, hi = result["bounds"]
    for (label, preset), out in result["scores"].items():
        for i, name in enumerate(task.names):
            base = (task.dataset.label, name, task.metric.label)
            c, mos = clean[base + NO_DEFENSE + (task.seed,)]
            dc = clean[base + (label, preset, task.seed)][0]
            rows.append(dict(
                meta, dataset=task.dataset.label, image=name, metric=task.metric.label, attack=task.attack.label,
                attack_preset=task.preset, defense=label, defense_preset=preset, mode=task.mode, seed=task.seed,
                mos=mos, clean=c, attacked=result["attacked"][i], defended_clean=dc,
                defended_attacked=out["score"][i], bound_worst=lo, bound_best=hi,
                lower_better=result["lower_better"], psnr=out["psnr"][i], ssim=out["ssim"][i], mse=out["mse"][i],
                linf=out["linf"][i], t_attack=result["t_attack"][i], t_defense=out["t"], gen_seed=out["gen_seed"][i],
                attack_params=result["params"], queries=result["queries"][i], pixels=result.get("pixels")))
    return rows


def gradient_rows(task: AttackTask, result: Dict[str, Any], meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``gradient_checks`` rows of an adaptive task with ``grad_check`` (``[]`` otherwise)."""
    grad = result.get("grad")
    if not grad or task.target is None:
        return []
    label, preset = task.target.key
    return [dict(meta, dataset=task.dataset.label, image=name, metric=task.metric.label, defense=label,
                 defense_preset=preset, seed=task.seed, grad_l1=grad["grad_l1"][i], finite=grad["finite"][i],
                 nonzero=grad["nonzero"][i])
            for i, name in enumerate(task.names)]


def transfer_rows(task: TransferTask, result: Dict[str, Any], clean: CleanLookup,
                  meta: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``transfer`` rows of a finished :class:`TransferTask`, joined with the target metric's
    clean-phase scores (``clean`` as in :func:`result_rows`)."""
    lo, hi = result["bounds"]
    rows = []
    for (label, preset), attacked in result["scores"].items():
        for i, name in enumerate(task.names):
            base = (task.dataset.label, name, task.metric.label)
            rows.append(dict(meta, dataset=task.dataset.label, image=name, source=task.source.label,
                             metric=task.metric.label, attack=task.attack.label, attack_preset=task.preset,
                             defense=label, defense_preset=preset, seed=task.seed,
                             clean=clean[base + NO_DEFENSE + (task.seed,)][0], attacked=result["scores"][NO_DEFENSE][i],
                             defended_clean=clean[base + (label, preset, task.seed)][0],
                             defended_attacked=attacked[i], bound_worst=lo, bound_best=hi,
                             lower_better=result["lower_better"]))
    return rows


def adv_path(task: AttackTask, name: str) -> str:
    """Cache path of one adversarial PNG, relative to ``Store.cache_dir``.

    ``s<seed>/<dataset>/<metric>/<attack>/<preset>/<image>.png`` with unsafe characters replaced.
    """
    stem = safe_name(name)
    return "/".join(["s" + str(task.seed), safe_name(task.dataset.label), safe_name(task.metric.label),
                     safe_name(task.attack.label), safe_name(task.preset),
                     stem if stem.endswith(".png") else stem + ".png"])


def safe_name(s: str) -> str:
    """``s`` with every character but letters, digits and ``._-`` replaced by ``_`` (a path part)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in s)
