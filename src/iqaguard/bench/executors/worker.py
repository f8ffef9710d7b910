"""What one worker does with one task (the same code in-process and on Ray workers).

:func:`run_task` rebuilds the metric, dataset, attack and defenses from the task's names
(metrics and datasets are cached per process, so a Ray worker builds them once), computes with
``torch.set_num_threads(task.num_threads)`` and seeded generators, and returns plain Python
data (floats, lists, PNG bytes). It never touches the store: the driver alone writes results.

Fidelity columns (``psnr``, ``ssim``, ``mse``, ``linf`` of the scored image against the clean one)
come from :func:`iqaguard.scores.fidelity`: PSNR over the RGB channels with the MSE floored at
the 8-bit quantisation noise (58.92 dB for identical images, never ``+inf``), SSIM on the luma.

Metrics are in eval mode from construction (``iqaguard.metrics.create``); attacks run them
under :func:`iqaguard.metrics.base.frozen`, so no task changes a metric's BatchNorm statistics
and a metric cached by the process scores an image the same way in every task.

Randomness: a randomized defense draws from a generator seeded by
``gen_seed(seed, dataset, image, defense, preset)`` — one per image, the same for the clean and
the attacked image of a pair and independent of the batch. Randomized attacks (and the EOT draws
of adaptive attacks) draw from a per-batch generator seeded by the task's identity.
"""
from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from PIL import Image

from ... import attacks, data, defenses, metrics, scores
from ...data.io import pil_to_tensor, tensor_to_uint8
from ...defenses.defend import defend
from ...errors import InputError
from ..spec import load_plugins
from ..tasks import NO_DEFENSE, AttackTask, CertifyTask, CleanTask, DefenseRef, FitTask, Ref, TransferTask, gen_seed

_METRICS: Dict[Tuple[str, str, str], metrics.Metric] = {}
_DATASETS: Dict[Tuple[str, str], data.Dataset] = {}
_DEFENSES: Dict[Tuple[str, int, str, str], defenses.Purification] = {}


def get_metric(ref: Ref, device: str) -> metrics.Metric:
    """The metric of ``ref`` on ``device`` in eval mode (built once per process)."""
    key = (ref.name, ref.kwargs, device)
    if key not in _METRICS:
        _METRICS[key] = metrics.create(ref.name, **ref.kw).to(torch.device(device)).eval()
    return _METRICS[key]


def get_dataset(ref: Ref) -> data.Dataset:
    """The dataset of ``ref`` (built once per process)."""
    key = (ref.name, ref.kwargs)
    if key not in _DATASETS:
        _DATASETS[key] = data.create(ref.name, **ref.kw)
    return _DATASETS[key]


def is_smoothing(name: str) -> bool:
    """Whether the registered defense ``name`` is a certified smoothing defense (it wraps the metric)."""
    from ...defenses.certified.base import Smoothed
    from ...registry import DEFENSES

    factory = DEFENSES.get(name)
    return isinstance(factory, type) and issubclass(factory, Smoothed)


def is_trained(name: str) -> bool:
    """Whether the registered defense ``name`` is a trained metric (:mod:`iqaguard.defenses.trained`)."""
    from ...defenses.trained.base import TrainedMetric
    from ...registry import DEFENSES

    factory = DEFENSES.get(name)
    return isinstance(factory, type) and issubclass(factory, TrainedMetric)


def wraps_metric(name: str) -> bool:
    """Whether the registered defense ``name`` is built from the task's metric and replaces it: a
    smoothing defense, or a trained metric (trained once and cached, so every worker and a
    resumed run load the same file)."""
    return is_smoothing(name) or is_trained(name)


def get_defense(d: DefenseRef, device: str, metric: Optional[Ref] = None) -> Any:
    """The defense of ``d`` built once per process (a worker loads a neural defense's weights once,
    not once per task): a purification (a neural one on ``device``), or, for a defense that wraps
    the metric (:func:`wraps_metric`), the smoothed or trained ``metric``."""
    smoothing = wraps_metric(d.name)
    key = (d.name, d.preset, d.kwargs, device, metric if smoothing else None)
    if key not in _DEFENSES:
        if smoothing:
            if metric is None:
                raise InputError(f"defense {d.label!r} smooths a metric: it needs the task's metric")
            p = defenses.create(d.name, metric=get_metric(metric, device), preset=d.preset, **d.kw)
        else:
            p = defenses.create(d.name, preset=d.preset, **d.kw)
        if isinstance(p, torch.nn.Module):
            p = p.to(torch.device(device))
        _DEFENSES[key] = p
    return _DEFENSES[key]


def gradient_check(target: metrics.Metric, x: torch.Tensor, ref: Optional[torch.Tensor]) -> Dict[str, List[float]]:
    """The input gradient of ``target`` (a defended metric, as adaptive attacks differentiate it) at ``x``:
    per image its L1 norm over the finite entries and the finite and non-zero fractions.

    A metric whose score does not depend on the input through autograd gives L1 0 and non-zero 0
    (the gradient-masking flag of :mod:`iqaguard.bench.masking`), not an error.
    """
    xg = x.detach().clone().requires_grad_(True)
    with metrics.base.frozen(target), torch.enable_grad():
        s = target(xg, ref) if target.kind == "fr" else target(xg)
        g = torch.autograd.grad(s.sum(), xg, allow_unused=True)[0] if s.requires_grad else None
    if g is None:
        g = torch.zeros_like(x)
    g = g.detach().flatten(1)
    fin = torch.isfinite(g)
    return {"grad_l1": [float(v) for v in torch.where(fin, g.abs(), torch.zeros_like(g)).sum(1)],
            "finite": [float(v) for v in fin.float().mean(1)],
            "nonzero": [float(v) for v in ((g != 0) & fin).float().mean(1)]}


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def _load(task: Any, metric: metrics.Metric) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[Optional[float]]]:
    ds = get_dataset(task.dataset)
    samples = [ds[i] for i in task.indices]
    got = tuple(s.name for s in samples)
    if got != task.names:
        raise InputError(f"dataset {task.dataset.label!r} changed since the images were selected: expected "
                         f"{task.names[:3]}..., found {got[:3]}...; use a new store or restore the dataset")
    dev = torch.device(task.device)
    try:
        x = torch.cat([s.image for s in samples]).to(dev)
        ref = torch.cat([s.ref for s in samples]).to(dev) if metric.kind == "fr" else None
    except RuntimeError as e:
        raise InputError(f"images of one batch must share their size ({e}); set batch_size: 1 in the spec") from e
    except TypeError as e:
        raise InputError(f"metric {task.metric.label!r} is full-reference but dataset {task.dataset.label!r} "
                         "has no reference images") from e
    return x, ref, [s.mos for s in samples]


@torch.no_grad()
def _score(metric: metrics.Metric, x: torch.Tensor, ref: Optional[torch.Tensor]) -> List[float]:
    return [float(v) for v in (metric(x, ref) if metric.kind == "fr" else metric(x)).cpu()]


def _seeds(d: DefenseRef, task: Any) -> List[int]:
    """The per-image generator seeds of a randomized defense (the same for the clean and attacked image)."""
    return [gen_seed(task.seed, task.dataset.label, n, d.label, d.preset) for n in task.names]


def _purify(d: DefenseRef, x: torch.Tensor, task: Any) -> Tuple[torch.Tensor, float, List[Optional[int]]]:
    """``P(x)`` (per-image generators when randomized), per-image seconds, generator seeds."""
    p = get_defense(d, task.device)
    t0 = time.perf_counter()
    if p.randomized:
        seeds = _seeds(d, task)
        gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
        out = torch.cat([p(x[i:i + 1], generator=g) for i, g in enumerate(gens)])
    else:
        seeds, out = [None] * len(task.names), p(x)
    return out, (time.perf_counter() - t0) / len(task.names), seeds


def _defended(d: DefenseRef, metric: metrics.Metric, x: torch.Tensor, ref: Optional[torch.Tensor], task: Any,
              clean: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """Scores of ``x`` under defense ``d``: ``f(P(x))`` for a purification, the smoothed score
    (``predict``, per-image noise generators) for a smoothing defense, the trained metric's score
    for a trained one; with ``clean``, the fidelity of what the metric scored to it (``None`` for a
    defense that wraps the metric: it changes no image)."""
    if wraps_metric(d.name):
        c = get_defense(d, task.device, task.metric)
        seeds = _seeds(d, task)
        gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
        t0 = time.perf_counter()
        with torch.no_grad():
            s = c.predict(x, ref, generator=gens)
        out: Dict[str, Any] = {"score": [float(v) for v in s.cpu()],
                               "t": (time.perf_counter() - t0) / len(task.names), "gen_seed": seeds}
        if clean is not None:
            out.update({k: [None] * len(task.names) for k in ("psnr", "ssim", "mse", "linf")})
        return out
    px, t, seeds = _purify(d, x, task)
    out = {"score": _score(metric, px, ref), "t": t, "gen_seed": seeds}
    if clean is not None:
        out.update(_fidelity(px, clean))
    return out


def _fidelity(px: torch.Tensor, x: torch.Tensor) -> Dict[str, List[float]]:
    """Fidelity of the scored image to the clean one; a size-changing defense's output (Resize) is
    brought back to the clean image's size first (:func:`iqaguard.defenses.base.match_size`)."""
    from ...defenses.base import match_size

    return {k: [float(v) for v in vals] for k, vals in scores.fidelity(match_size(px, x), x).items()}


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid exactly as the PNG cache stores it (``k / 255``)."""
    return torch.round(x.detach().clamp(0, 1) * 255.0) / 255.0


def encode_png(x: torch.Tensor) -> List[bytes]:
    """Lossless 8-bit PNG bytes of every image of ``x`` (zlib level 1: ~2.5x faster than level 6
    for ~15% larger files on 384x512 adversarial images)."""
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(tensor_to_uint8(img)).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def decode_png(blobs: Tuple[bytes, ...], device: torch.device) -> torch.Tensor:
    """Inverse of :func:`encode_png`: ``[B, 3, H, W]`` on ``device``."""
    return torch.cat([pil_to_tensor(Image.open(io.BytesIO(b))) for b in blobs]).to(device)


def _clean(task: CleanTask) -> Dict[str, Any]:
    metric = get_metric(task.metric, task.device)
    x, ref, mos = _load(task, metric)
    out = {NO_DEFENSE: {"score": _score(metric, x, ref), "t": 0.0, "gen_seed": [None] * len(task.names)}}
    for d in task.defenses:
        out[d.key] = _defended(d, metric, x, ref, task)
    return {"mos": mos, "scores": out}


def params_json(params: Dict[str, Any]) -> str:
    """An attack's resolved parameters as sorted JSON (paths and other objects as strings)."""
    return json.dumps(params, sort_keys=True, default=str)


def make_attack(ref: Ref, preset: str, metric: str, universal: Optional[bytes] = None) -> attacks.Attack:
    """The attack of ``ref`` at ``preset`` for the metric named ``metric``: the preset resolves
    through the shipped calibration table of (attack, metric) when there is one
    (:func:`iqaguard.attacks.calibrate.resolve_preset`), the spec's kwargs on top; a universal
    attack gets its fitted perturbation."""
    from ...attacks.calibrate import resolve_preset

    atk = attacks.create(ref.name, **{**resolve_preset(ref.name, preset, metric), **ref.kw})
    atk.preset = preset
    if universal is not None:
        from safetensors.torch import load as load_tensors

        atk.load_state_dict(load_tensors(universal))
    return atk


def _adaptive_target(d: DefenseRef, metric: metrics.Metric, task: Any, generator: torch.Generator) -> metrics.Metric:
    """What an adaptive attack on defense ``d`` attacks: ``defend(f, P)`` (BPDA / EOT over
    ``eot_samples``) for a purification, the smoothed metric itself (EOT over its noise, drawn from
    ``generator``) for a smoothing defense, the trained metric itself (white-box on its new weights)."""
    if wraps_metric(d.name):
        c = get_defense(d, task.device, task.metric)
        c.generator = generator
        return c
    return defend(metric, get_defense(d, task.device), eot_samples=d.eot_samples, generator=generator)


def _fit(task: FitTask) -> Dict[str, Any]:
    """Fit a universal attack on ``task.images`` evenly spaced images of its dataset."""
    from safetensors.torch import save as save_tensors

    metric = get_metric(task.metric, task.device)
    ds = get_dataset(task.dataset)
    if len(ds) == 0:
        raise InputError(f"fit dataset {task.dataset.label!r} has no images")
    n = min(task.images, len(ds))
    idx = sorted({round(i * (len(ds) - 1) / max(n - 1, 1)) for i in range(n)})
    atk = make_attack(task.attack, task.preset, task.metric.name)
    size = getattr(atk, "size", None)
    side = (size, size) if isinstance(size, int) else None
    dev = torch.device(task.device)
    xs, refs = [], []
    for i in idx:
        s = ds[i]
        if metric.kind == "fr" and s.ref is None:
            raise InputError(f"metric {task.metric.label!r} is full-reference but fit dataset "
                             f"{task.dataset.label!r} has no reference images")
        side = side or tuple(s.image.shape[-2:])  # without a size: the first image's
        for img, out in ((s.image, xs), (s.ref, refs)) if metric.kind == "fr" else ((s.image, xs),):
            if tuple(img.shape[-2:]) != side:
                img = F.interpolate(img, size=side, mode="bilinear", align_corners=False)
            out.append(img.to(dev))
    g = torch.Generator(device=dev).manual_seed(gen_seed("fit", *task.key))
    t0 = time.perf_counter()
    atk.fit(metric, torch.cat(xs), ref=torch.cat(refs) if refs else None, generator=g)
    return {"state": save_tensors(atk.state_dict(), metadata={"params": params_json(atk.params)}),
            "params": params_json(atk.params), "t_fit": time.perf_counter() - t0,
            "images": [ds[i].name for i in idx]}


def _attack(task: AttackTask) -> Dict[str, Any]:
    metric = get_metric(task.metric, task.device)
    x, ref, _ = _load(task, metric)
    png, grad = None, None
    if task.cached is not None:
        x_adv, t_attack = decode_png(task.cached, x.device), list(task.cached_t_attack)
        params, queries = task.cached_params, list(task.cached_queries)
    else:
        key = (task.seed, task.dataset.label, task.names, task.attack.label, task.preset, task.mode,
               task.target.key if task.target else None)
        target = metric
        if task.target is not None:
            g_eot = torch.Generator(device=x.device).manual_seed(gen_seed("eot", *key))
            target = _adaptive_target(task.target, metric, task, g_eot)
            if task.grad_check:
                g_grad = torch.Generator(device=x.device).manual_seed(gen_seed("grad", *key))
                grad = gradient_check(_adaptive_target(task.target, metric, task, g_grad), x, ref)
        atk = make_attack(task.attack, task.preset, task.metric.name, task.universal)
        g_atk = torch.Generator(device=x.device).manual_seed(gen_seed("attack", *key))
        t0 = time.perf_counter()
        x_adv = quantise(atk(target, x, ref=ref, generator=g_atk))
        t_attack = [(time.perf_counter() - t0) / len(task.names)] * len(task.names)
        png = encode_png(x_adv) if task.mode == "non-adaptive" else None
        params = params_json(atk.params)
        counts = getattr(atk, "queries", None) if isinstance(atk, attacks.QueryAttack) else None
        queries = [None] * len(task.names) if counts is None else [float(q) for q in counts]
    scored: Dict[Tuple[str, str], Dict[str, Any]] = {}
    evaluated = [None] + list(task.defenses) if task.target is None else [task.target]
    for d in evaluated:
        if d is None:
            scored[NO_DEFENSE] = {"score": _score(metric, x_adv, ref), "t": 0.0, "gen_seed": [None] * len(task.names),
                                  **_fidelity(x_adv, x)}
        else:
            scored[d.key] = _defended(d, metric, x_adv, ref, task, clean=x)
    b = metric.bounds
    attacked = scored[NO_DEFENSE]["score"] if NO_DEFENSE in scored else _score(metric, x_adv, ref)
    return {"bounds": (float(b.worst), float(b.best)), "lower_better": bool(metric.lower_better),
            "attacked": attacked, "t_attack": t_attack, "png": png, "scores": scored, "params": params,
            "queries": queries, "grad": grad, "pixels": int(x.shape[-2] * x.shape[-1])}


def _transfer(task: TransferTask) -> Dict[str, Any]:
    """Score the source metric's adversarial images with ``task.metric``, bare and defended."""
    metric = get_metric(task.metric, task.device)
    x, ref, _ = _load(task, metric)
    x_adv = decode_png(task.cached, x.device)
    if x_adv.shape != x.shape:
        raise InputError(f"transfer {task.source.label} -> {task.metric.label}: cached adversarial images have "
                         f"shape {tuple(x_adv.shape)}, the dataset's {tuple(x.shape)}; use a new store")
    # the clean and defended-clean scores of these images are the target metric's clean phase
    scored = {NO_DEFENSE: _score(metric, x_adv, ref)}
    for d in task.defenses:
        scored[d.key] = _defended(d, metric, x_adv, ref, task)["score"]
    b = metric.bounds
    return {"bounds": (float(b.worst), float(b.best)), "lower_better": bool(metric.lower_better), "scores": scored}


def _certify(task: CertifyTask) -> Dict[str, Any]:
    """The certificates of the clean images under a smoothing defense (noise seeds as its scores use)."""
    metric = get_metric(task.metric, task.device)
    x, ref, _ = _load(task, metric)
    c = get_defense(task.defense, task.device, task.metric)
    seeds = _seeds(task.defense, task)
    gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
    t0 = time.perf_counter()
    r = c.certify(x, ref, generator=gens)
    b = metric.bounds
    return {"rows": r.as_rows(), "t": (time.perf_counter() - t0) / len(task.names), "gen_seed": seeds,
            "bounds": (float(b.worst), float(b.best))}


def run_task(task: Any) -> Dict[str, Any]:
    """Execute one :class:`CleanTask` or :class:`AttackTask` and return its plain-data result."""
    load_plugins(task.imports)
    dev = torch.device(task.device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with _threads(task.num_threads), torch.random.fork_rng(devices=cuda):
        seed = gen_seed("global", task.describe())  # global RNG, for plugins that ignore `generator`
        torch.random.default_generator.manual_seed(seed)  # (torch.manual_seed would also queue CUDA seeding)
        if cuda:
            torch.cuda.manual_seed(seed)
        if isinstance(task, FitTask):
            return _fit(task)
        if isinstance(task, TransferTask):
            return _transfer(task)
        if isinstance(task, CertifyTask):
            return _certify(task)
        return _clean(task) if isinstance(task, CleanTask) else _attack(task)
