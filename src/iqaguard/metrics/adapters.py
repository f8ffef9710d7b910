"""Adapters: any ``torch.nn.Module`` as a metric, and pyiqa metrics (``"pyiqa:<name>"``).

* :class:`ModuleMetric` wraps a user module; the user states the kind, the direction and the
  bounds (seed 002 appendix A.3.2 ranges, see :func:`iqaguard.metrics.bounds.calibrate_bounds`).
* :class:`PyiqaMetric` wraps ``pyiqa.create_metric(name, as_loss=True, loss_reduction="none")``
  so gradients flow and one score per image comes back. pyiqa is an optional extra (its licence
  is non-commercial): it is imported lazily and only called, never copied.

Offline by default: unless ``allow_download=True``, a weight file that pyiqa would download is
a :class:`~iqaguard.errors.MissingWeightsError` naming the file and the folder to put it in.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import InputError, MissingDependencyError, MissingWeightsError, ScoreError, UnknownNameError
from ..registry import METRICS
from ..validation import resolve_device
from .base import Bounds, Metric

BoundsLike = Union[Bounds, Tuple[float, float]]


def to_scores(out: Any, batch: int, who: str) -> torch.Tensor:
    """Reduce a module output to ``[B]`` scores.

    Accepted: ``[B]``, ``[B, 1]``, ``[B, 1, ..., 1]``, or a 0-d tensor when ``B == 1``.

    Raises:
        ScoreError: any other type or shape, naming the received shape.
    """
    if not isinstance(out, torch.Tensor):
        raise ScoreError(f"{who}: expected the module to return a tensor of scores, got {type(out).__name__}")
    if out.dim() == 0 and batch == 1:
        return out.reshape(1)
    if out.dim() >= 1 and out.shape[0] == batch and out[:1].numel() == 1:
        return out.reshape(batch)
    raise ScoreError(
        f"{who}: expected one score per image, shape [B], [B, 1] or a scalar for B = 1 "
        f"(B = {batch}), got shape {list(out.shape)}. Reduce the module output to one value per image."
    )


def _as_bounds(bounds: Optional[BoundsLike], hint: str) -> Bounds:
    if bounds is None:
        raise InputError(f"bounds: {hint}")
    if isinstance(bounds, Bounds):
        return bounds
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return Bounds(worst=float(bounds[0]), best=float(bounds[1]))
    raise InputError(f"bounds: expected Bounds(worst, best) or a (worst, best) pair, got {bounds!r}")


def _check_kind(kind: str) -> str:
    if kind not in ("nr", "fr"):
        raise InputError(f"kind: expected 'nr' (no-reference) or 'fr' (full-reference), got {kind!r}")
    return kind


_UNCALIBRATED = Bounds(float("nan"), float("nan"))


class ModuleMetric(Metric):
    """Any ``nn.Module`` as an iqaguard metric (created by ``iqaguard.metrics.create(module, ...)``).

    Args:
        module: maps ``x`` (NR) or ``(x, ref)`` (FR), ``[B, 3, H, W]`` in [0, 1], to scores
            ``[B]``, ``[B, 1]`` or a scalar for a single image. Put it in eval mode yourself.
        kind: ``"nr"`` or ``"fr"``.
        lower_better: True when lower scores mean better quality.
        bounds: ``Bounds(worst, best)`` (or a pair) of seed 002 appendix A.3.2; required. Use
            :meth:`calibrated` to measure them.
        name: display name (default: the module's class name).
    """

    def __init__(
        self,
        module: nn.Module,
        kind: str = "nr",
        lower_better: bool = False,
        bounds: Optional[BoundsLike] = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise InputError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        self.kind = _check_kind(kind)
        self.lower_better = bool(lower_better)
        self.bounds = _as_bounds(
            bounds,
            "a wrapped module needs its score range: pass bounds=Bounds(worst, best), or measure it with "
            "ModuleMetric.calibrated(module, images, ...) (runs iqaguard.metrics.calibrate_bounds, "
            "seed 002 appendix A.3.2).",
        )
        self.name = name or type(module).__name__
        self.module = module

    @classmethod
    def calibrated(
        cls,
        module: nn.Module,
        images: Union[torch.Tensor, Sequence[torch.Tensor]],
        kind: str = "nr",
        lower_better: bool = False,
        name: Optional[str] = None,
        seed: Union[int, torch.Generator] = 0,
        **calibrate_kwargs: Any,
    ) -> "ModuleMetric":
        """Wrap ``module`` and set its bounds with :func:`~iqaguard.metrics.bounds.calibrate_bounds`.

        ``images`` are pristine ``[B, 3, H, W]`` (or a list of ``[1, 3, H, W]``) in [0, 1].
        """
        from .bounds import calibrate_bounds

        metric = cls(module, kind=kind, lower_better=lower_better, bounds=_UNCALIBRATED, name=name)
        metric.bounds = calibrate_bounds(metric, images, seed=seed, **calibrate_kwargs)
        return metric

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.module(x, ref) if self.kind == "fr" else self.module(x)
        return to_scores(out, x.shape[0], f"metric {self.name!r}")


# ----------------------------------------------------------------------------------- pyiqa


def _import_pyiqa() -> Any:
    try:
        return importlib.import_module("pyiqa")
    except ImportError as e:
        raise MissingDependencyError(
            'pyiqa metrics need the optional extra: pip install "iqaguard[pyiqa]" '
            "(pyiqa is licensed for non-commercial use only)"
        ) from e


def _download_module(pyiqa: Any) -> Any:
    return importlib.import_module(pyiqa.__name__ + ".utils.download_util")


def _configs(pyiqa: Any) -> dict:
    return importlib.import_module(pyiqa.__name__ + ".default_model_configs").DEFAULT_CONFIGS


def _file_name(url: str) -> str:
    return os.path.basename(urlparse(str(url)).path)


def expected_weight_files(pyiqa: Any, name: str, options: dict) -> List[str]:
    """File names pyiqa would fetch for metric ``name`` from its arch's ``default_model_urls``.

    pyiqa builds metric ``name`` from ``DEFAULT_CONFIGS[name]["metric_opts"]`` (``type`` = the
    architecture class in ``ARCH_REGISTRY``); the architecture's module keeps a
    ``default_model_urls`` table whose key is picked by the options (e.g. ``pretrained``,
    ``model_name``, or ``f"{version}_{net}"``). Weightless metrics have no table.

    Returns:
        The file names found (empty when none is needed or when the key cannot be told;
        the download guard of :class:`PyiqaMetric` still catches those at creation).
    """
    opts = dict(_configs(pyiqa)[name].get("metric_opts", {}))
    opts.update(options)
    path = opts.get("pretrained_model_path")
    if path:
        return [_file_name(path)] if str(path).startswith(("http://", "https://")) else []
    if opts.get("pretrained", True) is False:
        return []
    try:
        registry = importlib.import_module(pyiqa.__name__ + ".utils.registry").ARCH_REGISTRY
        arch_module = sys.modules.get(registry.get(opts["type"]).__module__)
    except (ImportError, KeyError, AttributeError):
        return []
    urls = dict(getattr(arch_module, "default_model_urls", None) or {})
    if not urls:
        return []
    values = {str(v) for v in opts.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    keys = [k for k in urls if k in values or k == name]
    keys = keys or [k for k in urls if all(part in values for part in str(k).split("_"))]
    keys = keys or [k for k in ("url",) if k in urls] or (list(urls) if len(urls) == 1 else [])
    return [_file_name(urls[k]) for k in keys]


def _refuse(metric: str, hub: bool):
    """A stand-in for a download function that raises :class:`MissingWeightsError`.

    ``hub=False``: ``download_url_to_file(url, dst, ...)``; ``hub=True``:
    ``hf_hub_download(repo_id, filename, ...)`` (Hugging Face cache).
    """

    def refuse(*args: Any, **kwargs: Any) -> None:
        if hub:
            fname = str(kwargs.get("filename", args[1] if len(args) > 1 else "?"))
            repo = kwargs.get("repo_id", args[0] if args else "?")
            folder = f"the Hugging Face cache (HF_HOME) of repository {repo}"
        else:
            dst = Path(str(kwargs.get("dst", args[1] if len(args) > 1 else "?")))
            fname, folder = dst.name, str(dst.parent)
        raise MissingWeightsError(
            f"pyiqa metric {metric!r} needs the weight file {fname!r}, not found in {folder}. "
            "Put the file there, or allow the download with allow_download=True."
        )

    return refuse


@contextlib.contextmanager
def _pyiqa_env(pyiqa: Any, metric: str, cache_dir: Optional[Path], allow_download: bool) -> Iterator[None]:
    """Point pyiqa's cache at ``cache_dir`` and, offline, replace its downloaders by a refusal."""
    dl = _download_module(pyiqa)
    patches: List[Tuple[Any, str, Any]] = []
    if cache_dir is not None:
        patches.append((dl, "DEFAULT_CACHE_DIR", str(cache_dir)))
    if not allow_download:
        for owner in (dl, torch.hub):
            for attr, hub in (("download_url_to_file", False), ("hf_hub_download", True)):
                if hasattr(owner, attr):
                    patches.append((owner, attr, _refuse(metric, hub)))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, value in patches:
            setattr(owner, attr, value)
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


def _bounds_from_range(score_range: Any, lower_better: bool, name: str) -> Bounds:
    """``Bounds`` from pyiqa's ``score_range`` string ``"lo, hi"`` (``~`` marks approximate ends)."""
    hint = (
        f"pyiqa metric {name!r} publishes no finite score range; pass bounds=Bounds(worst, best) or "
        "calibrate them with iqaguard.metrics.calibrate_bounds (seed 002 appendix A.3.2)."
    )
    try:
        lo, hi = (float(part.strip().lstrip("~")) for part in str(score_range).split(","))
    except (ValueError, TypeError):
        raise InputError(f"bounds: {hint}") from None
    if not lo < hi:
        raise InputError(f"bounds: {hint}")
    return Bounds(worst=hi, best=lo) if lower_better else Bounds(worst=lo, best=hi)


@METRICS.register("pyiqa:")
class PyiqaMetric(Metric):
    """A pyiqa metric as an iqaguard metric: ``iqaguard.metrics.create("pyiqa:<name>")``.

    Args:
        name: pyiqa metric name (``"lpips"``, ``"dbcnn"``, ``"psnr"``, ...).
        device: where the network runs (default CPU).
        allow_download: let pyiqa download missing weights (off by default: offline).
        weights_dir: folder holding the weight files (default: pyiqa's ``DEFAULT_CACHE_DIR``,
            ``<torch hub dir>/pyiqa``).
        bounds: ``Bounds(worst, best)``; default from pyiqa's ``score_range``.
        **options: extra options passed to ``pyiqa.create_metric``.

    Kind (``metric_mode`` FR/NR) and direction (``lower_better``) come from pyiqa. Scores are
    ``[B]``, differentiable w.r.t. ``x`` (``as_loss=True``, ``loss_reduction="none"``).

    Raises:
        MissingDependencyError: pyiqa is not installed.
        UnknownNameError: pyiqa has no metric ``name``.
        MissingWeightsError: offline and a weight file is absent (names the file and folder).
    """

    def __init__(
        self,
        name: str,
        device: Any = None,
        allow_download: bool = False,
        weights_dir: Optional[Union[str, Path]] = None,
        bounds: Optional[BoundsLike] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        pyiqa = _import_pyiqa()
        configs = _configs(pyiqa)
        if name not in configs:
            close = difflib.get_close_matches(name, list(configs), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr('pyiqa:' + c) for c in close)}?" if close else ""
            raise UnknownNameError(f"unknown pyiqa metric {name!r}.{hint}")
        dev = torch.device("cpu") if device is None else resolve_device(device)
        cache = Path(weights_dir) if weights_dir is not None else None
        if not allow_download:
            folder = cache if cache is not None else Path(_download_module(pyiqa).DEFAULT_CACHE_DIR)
            for fname in expected_weight_files(pyiqa, name, options):
                if not (folder / fname).is_file():
                    raise MissingWeightsError(
                        f"pyiqa metric {name!r} needs the weight file {fname!r}, not found in {folder}. "
                        "Put the file there (or pass weights_dir=<folder>), or allow the download "
                        "with allow_download=True."
                    )
        with _pyiqa_env(pyiqa, name, cache, bool(allow_download)):
            net = pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=dev, **options)
        self.net = net
        self.kind = "fr" if str(getattr(net, "metric_mode", "NR")).upper() == "FR" else "nr"
        self.lower_better = bool(getattr(net, "lower_better", False))
        self.name = f"pyiqa:{name}"
        self._device = dev
        if bounds is not None:
            self.bounds = _as_bounds(bounds, "")
        else:
            self.bounds = _bounds_from_range(getattr(net, "score_range", None), self.lower_better, name)

    @property
    def device(self) -> torch.device:
        """Where the pyiqa network lives (its parameters, else the ``device`` it was built for)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return self._device

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        dev = self.device
        xd = x.to(dev)
        out = self.net(xd, ref.to(dev)) if self.kind == "fr" and ref is not None else self.net(xd)
        return to_scores(out, x.shape[0], f"metric {self.name!r}").to(x.device)


__all__ = ["ModuleMetric", "PyiqaMetric", "MissingDependencyError", "to_scores", "expected_weight_files"]
