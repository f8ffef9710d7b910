"""Adapters: any ``torch.nn.Module`` as a metric, and pyiqa metrics (``"pyiqa:<name>"``).

* :class:`ModuleMetric` wraps a user module; the user states the kind, the direction and the
  bounds (Guardians of Image Quality appendix A.3.2 ranges, see :func:`iqaguard.metrics.bounds.calibrate_bounds`).
* :class:`PyiqaMetric` wraps ``pyiqa.create_metric(name, as_loss=True, loss_reduction="none")``
  so gradients flow and one score per image comes back. pyiqa is an optional extra (its licence
  is non-commercial): it is imported lazily and only called, never copied.

Offline by default: unless ``allow_download=True`` (or ``IQAGUARD_ALLOW_DOWNLOAD=1`` in the
environment, for the CLI and benchmark workers), a weight file that pyiqa would download is a
:class:`~iqaguard.errors.MissingWeightsError` naming the file and the folder to put it in; opted
in, a download that cannot reach its server is the same one-line error, never a traceback.

Shared with the other third-party adapters (``piq_adapter``): :func:`import_optional` (the
torchvision compatibility shim, then a one-line ``MissingDependencyError`` naming the extra),
:func:`offline_guard` (downloads refused offline) and :func:`keep_grad_mode`.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import InputError, MissingDependencyError, MissingWeightsError, ScoreError, UnknownNameError
from ..registry import METRICS
from ..validation import resolve_device
from ._torchvision_compat import ensure_torchvision
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


# ------------------------------------------------------------ backbone features of a named layer


def check_feature_layer(root: nn.Module, layer: Optional[str], who: str) -> Optional[str]:
    """Validate ``feature_layer``: ``None``, or the dotted name of a submodule of ``root`` as
    ``root.named_modules()`` spells it (``""``, the root itself, is not a feature layer).

    Raises:
        InputError: one line naming the bad name and up to ten available submodule names.
    """
    if layer is None:
        return None
    names = [n for n, _ in root.named_modules(remove_duplicate=False) if n]
    if isinstance(layer, str) and layer in names:
        return layer
    if not isinstance(layer, str):
        raise InputError(f"feature_layer: expected the dotted name of a submodule of {who} (a str, as in "
                         f"named_modules()), got {type(layer).__name__}")
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
    shown = (close + [n for n in names if n not in close])[:10]
    more = f", ... ({len(names)} in all)" if len(names) > len(shown) else ""
    available = ", ".join(repr(n) for n in shown) + more if shown else "none (it has no submodules)"
    raise InputError(f"feature_layer: {who} has no submodule {layer!r}; available: {available}")


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    """``out`` itself when it is a tensor, else the first tensor of a tuple or list (else ``None``)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in out if isinstance(t, torch.Tensor)), None)
    return None


def hooked_features(layer: nn.Module, name: str, run: Callable[[], Any], batch: int, who: str) -> torch.Tensor:
    """Features ``[B, D]``: the output of submodule ``layer`` (called ``name``) while ``run()`` does the
    wrapped model's normal forward.

    A forward hook on ``layer`` captures its first output of that forward (for a tuple or list, its
    first tensor; an FR model that runs the layer on both images gives the first run's, normally
    ``x``'s), cloned so that an in-place op after the layer (``ReLU(inplace=True)``) does not change
    it, and is removed in a ``finally``, also when the forward raises. A 4-D output
    ``[B, C, H, W]`` is global-average-pooled over ``H, W`` to ``[B, C]``, so ``D`` does not depend
    on the image size; any other output is flattened to ``[B, -1]``. Nothing is detached: the
    features stay differentiable with respect to the input of the forward.

    Raises:
        InputError: the layer did not run in the forward, returned no tensor, or returned a tensor
            whose first dimension is not the batch.
    """
    captured: List[Any] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not captured:
            t = _first_tensor(output)
            captured.append(None if t is None else t.clone())  # kept from in-place ops after the layer

    handle = layer.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not captured:
        raise InputError(f"feature_layer: layer {name!r} of {who} did not run in the forward; choose a "
                         "submodule that the forward calls")
    t = captured[0]
    if t is None:
        raise InputError(f"feature_layer: layer {name!r} of {who} returned no tensor; choose a layer that "
                         "outputs a tensor [B, ...]")
    if t.dim() == 0 or t.shape[0] != batch:
        raise InputError(f"feature_layer: layer {name!r} of {who} returned shape {list(t.shape)}, not a batch "
                         f"of {batch} (expected [B, ...]); choose a layer before any reshape of the batch")
    if t.dim() == 4:
        t = t.mean(dim=(2, 3))
    return t.reshape(batch, -1)


class ModuleMetric(Metric):
    """Any ``nn.Module`` as an iqaguard metric (created by ``iqaguard.metrics.create(module, ...)``).

    Args:
        module: maps ``x`` (NR) or ``(x, ref)`` (FR), ``[B, 3, H, W]`` in [0, 1], to scores
            ``[B]``, ``[B, 1]`` or a scalar for a single image. Wrapping puts it in eval mode
            (BatchNorm and dropout then behave as at inference).
        kind: ``"nr"`` or ``"fr"``.
        lower_better: True when lower scores mean better quality.
        bounds: ``Bounds(worst, best)`` (or a pair) of Guardians of Image Quality appendix A.3.2; required. Use
            :meth:`calibrated` to measure them.
        name: display name (default: the module's class name).
        feature_layer: ``None`` (default: no features), or the dotted name of a submodule of
            ``module`` as in ``module.named_modules()`` (e.g. ``"0"`` or ``"backbone.layer3"``):
            :meth:`features` (FS-IQA) then returns that layer's output during the normal forward,
            ``[B, C, H, W]`` global-average-pooled to ``[B, C]`` (``D`` independent of the image
            size), anything else flattened to ``[B, D]`` (see :func:`hooked_features`).

    Raises:
        InputError: bad arguments, missing bounds, or ``feature_layer`` not a submodule (names the
            available ones).
    """

    def __init__(
        self,
        module: nn.Module,
        kind: str = "nr",
        lower_better: bool = False,
        bounds: Optional[BoundsLike] = None,
        name: Optional[str] = None,
        feature_layer: Optional[str] = None,
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
            "Guardians of Image Quality appendix A.3.2).",
        )
        self.name = name or type(module).__name__
        self.feature_layer = check_feature_layer(module, feature_layer, f"module {self.name!r}")
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
        feature_layer: Optional[str] = None,
        **calibrate_kwargs: Any,
    ) -> "ModuleMetric":
        """Wrap ``module`` and set its bounds with :func:`~iqaguard.metrics.bounds.calibrate_bounds`.

        ``images`` are pristine ``[B, 3, H, W]`` (or a list of ``[1, 3, H, W]``) in [0, 1];
        ``feature_layer`` as in the constructor.
        """
        from .bounds import calibrate_bounds

        metric = cls(module, kind=kind, lower_better=lower_better, bounds=_UNCALIBRATED, name=name,
                     feature_layer=feature_layer)
        metric.bounds = calibrate_bounds(metric, images, seed=seed, **calibrate_kwargs)
        return metric

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.module(x, ref) if self.kind == "fr" else self.module(x)
        return to_scores(out, x.shape[0], f"metric {self.name!r}")

    @property
    def has_features(self) -> bool:
        """Whether :meth:`features` is available: only when ``feature_layer`` was given."""
        return self.feature_layer is not None

    def feature_map(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unchecked features ``[B, D]`` of ``feature_layer`` during the forward that :meth:`score` makes
        (``module(x, ref)`` for FR); 4-D outputs are spatially averaged (:func:`hooked_features`)."""
        if self.feature_layer is None:
            return super().feature_map(x, ref)  # the base's one-line no-features error
        layer = self.module.get_submodule(self.feature_layer)
        run = (lambda: self.module(x, ref)) if self.kind == "fr" else (lambda: self.module(x))
        return hooked_features(layer, self.feature_layer, run, x.shape[0], f"metric {self.name!r}")


# ------------------------------------------- optional dependencies, grad mode, offline downloads


def import_optional(module: str, extra: str, what: str, note: str = "") -> Any:
    """Import an optional dependency after :func:`ensure_torchvision` (see ``_torchvision_compat``).

    Raises:
        MissingDependencyError: one line naming the extra to install, ``pip install "iqaguard[<extra>]"``.
    """
    ensure_torchvision()
    hint = f'pip install "iqaguard[{extra}]"' + (f" ({note})" if note else "")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = f"; missing module {e.name!r}" if e.name and e.name != module else ""
        raise MissingDependencyError(f"{what} need the optional extra: {hint}{missing}") from e
    except RuntimeError as e:  # e.g. a torchvision whose C++ operators do not match torch
        first = " ".join(str(e).split())[:300]
        if "torchvision::" in first and os.environ.get("IQAGUARD_TORCHVISION_SHIM", "").strip() == "0":
            fix = "unset IQAGUARD_TORCHVISION_SHIM (=0 turns off iqaguard's torchvision shim)"
        else:
            fix = (f'reinstall the extra with torch pinned, pip install torch=={torch.__version__.split("+")[0]} '
                   f'"iqaguard[{extra}]"')
        raise MissingDependencyError(
            f"{what}: importing {module} failed ({type(e).__name__}: {first}); {fix} "
            "(see docs/third_party_metrics.md)"
        ) from e


@contextlib.contextmanager
def keep_grad_mode() -> Iterator[None]:
    """Restore the global grad mode (``torch.is_grad_enabled()``) on exit, whatever the body did."""
    mode = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(mode)


#: environment variable that opts in to downloads where no ``allow_download`` is given (the CLI,
#: benchmark workers): ``IQAGUARD_ALLOW_DOWNLOAD=1``
ALLOW_DOWNLOAD_ENV = "IQAGUARD_ALLOW_DOWNLOAD"
#: how to opt in, as every refused download says it
ALLOW_HINT = f"allow the download with allow_download=True (Python, spec kwargs) or {ALLOW_DOWNLOAD_ENV}=1"


def download_allowed(allow_download: Optional[bool]) -> bool:
    """Whether a third-party adapter may download weights: ``allow_download`` when given, else the
    environment variable :data:`ALLOW_DOWNLOAD_ENV` (``1``/``true``/``yes``). Off by default."""
    if allow_download is not None:
        return bool(allow_download)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


#: errors that mean "the download could not reach the server" (no network, DNS, proxy, timeout)
_NETWORK_ERRORS = ("URLError", "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "SSLError",
                   "gaierror", "timeout", "HTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled")


def _network_error(e: BaseException) -> bool:
    return isinstance(e, OSError) or any(c.__name__ in _NETWORK_ERRORS for c in type(e).__mro__)


def _fetch(who: str, hub: bool, download: Any):
    """``download`` (``download_url_to_file`` or ``hf_hub_download``) with its network failures turned
    into one :class:`MissingWeightsError` line naming the file, where it goes and what to do."""

    def fetch(*args: Any, **kwargs: Any) -> Any:
        try:
            return download(*args, **kwargs)
        except Exception as e:
            if not _network_error(e):
                raise
            what = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            if hub:
                repo = kwargs.get("repo_id", args[0] if args else "?")
                fname = kwargs.get("filename", args[1] if len(args) > 1 else "?")
                where = f"the file {fname!r} of the Hugging Face repository {repo!r}"
            else:
                url = str(kwargs.get("url", args[0] if args else "?"))
                dst = Path(str(kwargs.get("dst", args[1] if len(args) > 1 else "?")))
                where = f"the weight file {dst.name!r} from {url} into {dst.parent}"
            raise MissingWeightsError(f"{who}: could not download {where} ({what}); without network, put the "
                                      "file there by hand") from None

    return fetch


def _refuse(who: str, hub: bool):
    """A stand-in for a download function that raises :class:`MissingWeightsError`.

    ``hub=False``: ``download_url_to_file(url, dst, ...)``; ``hub=True``:
    ``hf_hub_download(repo_id, filename, ...)`` (Hugging Face cache).
    """

    def refuse(*args: Any, **kwargs: Any) -> None:
        if hub:
            fname = str(kwargs.get("filename", args[1] if len(args) > 1 else "?"))
            repo = kwargs.get("repo_id", args[0] if args else "?")
            raise _hf_missing(who, str(repo), fname)
        url = str(kwargs.get("url", args[0] if args else ""))
        dst = Path(str(kwargs.get("dst", args[1] if len(args) > 1 else "?")))
        source = f" (download it from {url})" if url else ""
        raise MissingWeightsError(
            f"{who} needs the weight file {dst.name!r}, not found in {dst.parent}{source}. "
            f"Put the file there, or {ALLOW_HINT}."
        )

    return refuse


def _hf_missing(who: str, repo: str, fname: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{who} needs the file {fname!r} of the Hugging Face repository {repo!r}, not found in the "
        "Hugging Face cache (HF_HOME). Put it there (huggingface-cli download "
        f"{repo} {fname}), or {ALLOW_HINT}."
    )


def _hf_offline_error(e: BaseException) -> bool:
    return type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") and any(
        c.__module__.startswith("huggingface_hub") for c in type(e).__mro__
    )


def _hf_request(e: BaseException) -> Tuple[str, str]:
    """``(repo_id, filename)`` of the failed Hugging Face request, read from the traceback's frames."""
    repo, fname, tb = "?", "?", e.__traceback__
    while tb is not None:
        loc = tb.tb_frame.f_locals
        if isinstance(loc.get("repo_id"), str) and isinstance(loc.get("filename"), str):
            repo, fname = loc["repo_id"], loc["filename"]
        tb = tb.tb_next
    return repo, fname


@contextlib.contextmanager
def offline_guard(
    who: str, allow_download: Optional[bool], patches: Sequence[Tuple[Any, str, Any]] = ()
) -> Iterator[None]:
    """Construct a third-party model offline unless ``allow_download``.

    Offline: ``torch.hub.download_url_to_file`` (used by ``torch.hub.load_state_dict_from_url``,
    hence by torchvision's and piq's weights) raises :class:`MissingWeightsError` naming the file,
    the folder and the URL; Hugging Face Hub runs in offline mode and its "not in the local cache"
    error becomes a :class:`MissingWeightsError`; the "Downloading: ..." notices printed just before
    a refused download are dropped (other output is kept). ``patches`` are extra
    ``(owner, attribute, value)`` replacements (e.g. pyiqa's own downloader). Everything is restored
    on exit, and so is the grad mode.

    Opted in (``allow_download``, or :data:`ALLOW_DOWNLOAD_ENV` when it is ``None``): a download that
    cannot reach its server (no network, DNS, timeout) is one :class:`MissingWeightsError` line naming
    the file, the URL and the folder, never a traceback.
    """
    allow_download = download_allowed(allow_download)
    patches = list(patches)
    if allow_download:
        patches.append((torch.hub, "download_url_to_file", _fetch(who, False, torch.hub.download_url_to_file)))
    else:
        patches.append((torch.hub, "download_url_to_file", _refuse(who, hub=False)))
        try:
            hf_constants = importlib.import_module("huggingface_hub.constants")
        except ImportError:
            hf_constants = None
        if hf_constants is not None and hasattr(hf_constants, "HF_HUB_OFFLINE"):
            patches.append((hf_constants, "HF_HUB_OFFLINE", True))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    out = io.StringIO()
    try:
        with keep_grad_mode(), contextlib.ExitStack() as stack:
            for owner, attr, value in patches:
                setattr(owner, attr, value)
            if not allow_download:
                stack.enter_context(contextlib.redirect_stdout(out))
            try:
                yield
            except Exception as e:
                if _hf_offline_error(e):
                    if not allow_download:
                        raise _hf_missing(who, *_hf_request(e)) from None
                    repo, fname = _hf_request(e)
                    raise MissingWeightsError(f"{who}: could not download the file {fname!r} of the Hugging Face "
                                              f"repository {repo!r} (no network?); put it in the Hugging Face "
                                              f"cache by hand (huggingface-cli download {repo} {fname})") from None
                raise
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)
        kept = [line for line in out.getvalue().splitlines(True) if not line.startswith("Downloading: ")]
        if kept:
            sys.stdout.write("".join(kept))


# ----------------------------------------------------------------------------------- pyiqa


def _import_pyiqa() -> Any:
    return import_optional("pyiqa", "pyiqa", "pyiqa metrics", "pyiqa is licensed for non-commercial use only")


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


def _pyiqa_patches(
    pyiqa: Any, metric: str, cache_dir: Optional[Path], allow_download: bool
) -> List[Tuple[Any, str, Any]]:
    """pyiqa's cache folder (``DEFAULT_CACHE_DIR``) and, offline, its own download functions."""
    dl = _download_module(pyiqa)
    who = f"pyiqa metric {metric!r}"
    patches: List[Tuple[Any, str, Any]] = []
    if cache_dir is not None:
        patches.append((dl, "DEFAULT_CACHE_DIR", str(cache_dir)))
    for attr, hub in (("download_url_to_file", False), ("hf_hub_download", True)):
        if hasattr(dl, attr):
            patches.append((dl, attr, _fetch(who, hub, getattr(dl, attr)) if allow_download else _refuse(who, hub)))
    return patches


#: Packages that provide modules some pyiqa metrics import lazily (clipiqa: pkg_resources).
_PROVIDERS = {
    "pkg_resources": "a setuptools release that still ships pkg_resources",
    "cv2": "pip install opencv-python-headless",
    "sklearn": "pip install scikit-learn",
    "skimage": "pip install scikit-image",
    "yaml": "pip install pyyaml",
}


def _bounds_from_range(score_range: Any, lower_better: bool, name: str) -> Bounds:
    """``Bounds`` from pyiqa's ``score_range`` string ``"lo, hi"`` (``~`` marks approximate ends)."""
    hint = (
        f"pyiqa metric {name!r} publishes no finite score range; pass bounds=Bounds(worst, best) or "
        "calibrate them with iqaguard.metrics.calibrate_bounds (Guardians of Image Quality appendix A.3.2)."
    )
    try:
        lo, hi = (float(part.strip().lstrip("~")) for part in str(score_range).split(","))
    except (ValueError, TypeError):
        raise InputError(f"bounds: {hint}") from None
    if not lo < hi:
        raise InputError(f"bounds: {hint}")
    return Bounds(worst=hi, best=lo) if lower_better else Bounds(worst=lo, best=hi)


def _pyiqa_network(net: nn.Module) -> nn.Module:
    """The architecture inside pyiqa's ``InferenceModel`` (its ``.net``), else ``net`` itself."""
    inner = getattr(net, "net", None)
    return inner if isinstance(inner, nn.Module) else net


@METRICS.register("pyiqa:")
class PyiqaMetric(Metric):
    """A pyiqa metric as an iqaguard metric: ``iqaguard.metrics.create("pyiqa:<name>")``.

    Args:
        name: pyiqa metric name (``"lpips"``, ``"dbcnn"``, ``"psnr"``, ...).
        device: where the network runs (default CPU).
        allow_download: let pyiqa download missing weights (off by default: offline); ``None``:
            the ``IQAGUARD_ALLOW_DOWNLOAD`` environment variable decides (``1`` opts in).
        weights_dir: folder holding the weight files (default: pyiqa's ``DEFAULT_CACHE_DIR``,
            ``<torch hub dir>/pyiqa``).
        bounds: ``Bounds(worst, best)``; default from pyiqa's ``score_range``.
        feature_layer: ``None`` (default: no features), or the dotted name of a submodule of the pyiqa
            network, the architecture that pyiqa's ``InferenceModel`` holds as ``.net`` (names as in
            ``metric.net.net.named_modules()``, e.g. ``"conv1"`` for ``cnniqa``): :meth:`features`
            (FS-IQA) then returns that layer's output during the normal scoring forward,
            ``[B, C, H, W]`` global-average-pooled to ``[B, C]`` (``D`` independent of the image
            size), anything else flattened to ``[B, D]`` (see :func:`hooked_features`).
        **options: extra options passed to ``pyiqa.create_metric``.

    Kind (``metric_mode`` FR/NR) and direction (``lower_better``) come from pyiqa. Scores are
    ``[B]`` in ``x``'s dtype, differentiable w.r.t. ``x`` (``as_loss=True``, ``loss_reduction="none"``); under
    ``torch.no_grad()`` they come back detached. pyiqa switches the grad mode while it builds and
    runs a metric; construction and scoring restore ``torch.is_grad_enabled()`` as they found it.
    Offline, backbone weights that pyiqa loads through torchvision, timm or Hugging Face Hub are
    refused as well (:func:`offline_guard`).

    Raises:
        MissingDependencyError: pyiqa is not installed.
        UnknownNameError: pyiqa has no metric ``name``.
        MissingWeightsError: offline and a weight file is absent (names the file and folder).
        InputError: ``feature_layer`` is not a submodule of the network (names the available ones).
    """

    def __init__(
        self,
        name: str,
        device: Any = None,
        allow_download: Optional[bool] = None,
        weights_dir: Optional[Union[str, Path]] = None,
        bounds: Optional[BoundsLike] = None,
        feature_layer: Optional[str] = None,
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
        allow_download = download_allowed(allow_download)
        if not allow_download:
            folder = cache if cache is not None else Path(_download_module(pyiqa).DEFAULT_CACHE_DIR)
            for fname in expected_weight_files(pyiqa, name, options):
                if not (folder / fname).is_file():
                    raise MissingWeightsError(
                        f"pyiqa metric {name!r} needs the weight file {fname!r}, not found in {folder}. "
                        f"Put the file there (or pass weights_dir=<folder>), or {ALLOW_HINT}."
                    )
        patches = _pyiqa_patches(pyiqa, name, cache, allow_download)
        try:
            with offline_guard(f"pyiqa metric {name!r}", allow_download, patches):
                net = pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=dev, **options)
        except ImportError as e:  # a module that only this metric's implementation imports
            module = e.name or str(e)
            raise MissingDependencyError(
                f"pyiqa metric {name!r} needs the Python module {module!r}, which is not installed: "
                f"install the package that provides it ({_PROVIDERS.get(module, 'pip install ' + module)})"
            ) from None
        self.net = net
        self.kind = "fr" if str(getattr(net, "metric_mode", "NR")).upper() == "FR" else "nr"
        self.lower_better = bool(getattr(net, "lower_better", False))
        self.name = f"pyiqa:{name}"
        self._device = dev
        self.feature_layer = check_feature_layer(_pyiqa_network(net), feature_layer, f"pyiqa metric {name!r}")
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
        grad = torch.is_grad_enabled()
        with keep_grad_mode():
            xd = x.to(dev)
            out = self.net(xd, ref.to(dev)) if self.kind == "fr" and ref is not None else self.net(xd)
        scores = to_scores(out, x.shape[0], f"metric {self.name!r}").to(device=x.device, dtype=x.dtype)
        return scores if grad else scores.detach()

    @property
    def has_features(self) -> bool:
        """Whether :meth:`features` is available: only when ``feature_layer`` was given."""
        return self.feature_layer is not None

    def feature_map(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unchecked features ``[B, D]`` of ``feature_layer`` during the forward that :meth:`score` makes,
        in ``x``'s device and dtype; 4-D outputs are spatially averaged (:func:`hooked_features`).
        Under ``torch.no_grad()`` they come back detached, as the scores."""
        if self.feature_layer is None:
            return super().feature_map(x, ref)  # the base's one-line no-features error
        dev = self.device
        grad = torch.is_grad_enabled()
        xd = x.to(dev)
        rd = ref.to(dev) if self.kind == "fr" and ref is not None else None
        layer = _pyiqa_network(self.net).get_submodule(self.feature_layer)

        def run() -> Any:
            return self.net(xd, rd) if rd is not None else self.net(xd)

        with keep_grad_mode():
            feats = hooked_features(layer, self.feature_layer, run, x.shape[0], f"metric {self.name!r}")
        feats = feats.to(device=x.device, dtype=x.dtype)
        return feats if grad else feats.detach()


__all__ = [
    "ModuleMetric",
    "PyiqaMetric",
    "MissingDependencyError",
    "to_scores",
    "check_feature_layer",
    "hooked_features",
    "expected_weight_files",
    "import_optional",
    "keep_grad_mode",
    "offline_guard",
    "download_allowed",
    "ALLOW_DOWNLOAD_ENV",
]
