"""piq's full-reference metrics as iqaguard metrics: ``iqaguard.metrics.create("piq:<name>")``.

piq (PyTorch Image Quality, Apache-2.0) is an optional extra, ``pip install "iqaguard[piq]"``;
it is imported lazily and only called. One declarative row per metric (:data:`PIQ_METRICS`):
the piq function or class, the direction, the bounds and the smallest image side it accepts.

Conventions: iqaguard's ``m(x, ref)`` is piq's ``f(x, y)`` with ``x`` the distorted image and
``y`` the reference (the order matters for VIF, whose denominator is the reference's
information), ``data_range=1.0`` (our images are in [0, 1]; piq rescales internally to the
0..255 scale its constants were fitted on) and ``reduction="none"`` (one score per image).
Every metric takes ``[B, 3, H, W]`` RGB and converts to the colour space of its paper itself.

Gradients: piq's metrics take square roots of gradient magnitudes and local variances,
fractional powers and ``atan2``; at a zero argument (flat or saturated regions, pure black
pixels, ``x == ref``) their derivative is infinite and autograd's chain rule turns ``inf * 0``
into NaN, which then spreads through the filters to most of the image. Scoring therefore runs
under :class:`_FiniteGradients`, a ``TorchFunctionMode`` that computes ``sqrt``, ``pow`` with an
exponent in (0, 1), and ``atan2`` exactly as torch does in the forward pass but takes the
zero (minimum-norm) subgradient at the singular points in the backward pass; everywhere else
the gradient is torch's own.

Bounds (Guardians of Image Quality appendix A.3.2 adapted to FR metrics, as in ``classic.py``): ``best`` is the
value of an image against itself (1 for the similarity indices, 0 for the deviations and
distances); ``worst`` is the worst value over the JPEG q=10 versions and the uniform-noise
images of the builtin photographs against their references, measured by
``python -c "import iqaguard.metrics.piq_adapter as p; p.print_calibration()"``. LPIPS and
DISTS need weight files and carry the nominal range [0, 1] instead; calibrate them with
:func:`iqaguard.metrics.calibrate_bounds` once the weights are there.

Weights (LPIPS, DISTS): piq loads them with ``torch.hub.load_state_dict_from_url`` into
``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``), together with torchvision's VGG16 ImageNet weights. Offline
(``allow_download=False``, the default) a missing file is a one-line
:class:`~iqaguard.errors.MissingWeightsError` naming the file, the folder and the URL.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode

from ..errors import InputError, MissingWeightsError, UnknownNameError
from ..registry import METRICS
from .adapters import (ALLOW_HINT, BoundsLike, _as_bounds, download_allowed, import_optional, offline_guard,
                       to_scores)
from .base import Bounds, Metric


@dataclass(frozen=True)
class PiqSpec:
    """One row of :data:`PIQ_METRICS`.

    Attributes:
        attr: the piq function (``piq.<attr>(x, y, data_range=, reduction=)``) or, when
            ``weights`` is set, the ``nn.Module`` class (``piq.<attr>(reduction=)``).
        lower_better: True for deviations and distances.
        bounds: ``Bounds(worst, best)`` with piq's default options.
        min_size: smallest image side for which piq returns a finite score (default options).
        weights: torchvision backbone whose ImageNet weights piq loads, besides the class's own
            ``_weights_url`` (``None``: a weightless metric).
    """

    attr: str
    lower_better: bool
    bounds: Bounds
    min_size: int = 1
    weights: Optional[str] = None


#: ``worst``: :func:`print_calibration` on the 159 builtin photographs (seed 0, JPEG q=10 and uniform
#: noise, piq 0.8.0; 580 s on one busy thread). ``best`` is f(x, x) (measured: 1 or 0 within 6e-6).
PIQ_METRICS: Dict[str, PiqSpec] = {
    "fsim": PiqSpec("fsim", False, Bounds(worst=0.2725, best=1.0), min_size=2),
    "vsi": PiqSpec("vsi", False, Bounds(worst=0.6348, best=1.0)),
    "gmsd": PiqSpec("gmsd", True, Bounds(worst=0.3083, best=0.0)),
    "ms-gmsd": PiqSpec("multi_scale_gmsd", True, Bounds(worst=0.3041, best=0.0), min_size=17),
    "vif": PiqSpec("vif_p", False, Bounds(worst=0.0027, best=1.0), min_size=41),
    "haarpsi": PiqSpec("haarpsi", False, Bounds(worst=0.1239, best=1.0), min_size=16),
    "mdsi": PiqSpec("mdsi", True, Bounds(worst=0.5726, best=0.0)),
    "dss": PiqSpec("dss", False, Bounds(worst=0.0469, best=1.0), min_size=32),
    "sr-sim": PiqSpec("srsim", False, Bounds(worst=0.3488, best=1.0), min_size=40),
    "lpips": PiqSpec("LPIPS", True, Bounds(worst=1.0, best=0.0), min_size=32, weights="vgg16"),
    "dists": PiqSpec("DISTS", True, Bounds(worst=1.0, best=0.0), weights="vgg16"),
}
#: piq's own spellings of the names above.
ALIASES = {"vif_p": "vif", "vifp": "vif", "ms_gmsd": "ms-gmsd", "multi_scale_gmsd": "ms-gmsd",
           "srsim": "sr-sim", "sr_sim": "sr-sim"}


# ------------------------------------------------------------------- finite gradients


class _Sqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        ok = y > 0
        return torch.where(ok, g * 0.5 / torch.where(ok, y, torch.ones_like(y)), torch.zeros_like(g))


class _Pow(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.p = p
        return torch.pow(x, p)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        ok = x != 0
        d = ctx.p * torch.pow(torch.where(ok, x, torch.ones_like(x)), ctx.p - 1.0)
        return torch.where(ok, g * d, torch.zeros_like(g)), None


class _Atan2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y, x)
        return torch.atan2(y, x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y, x = ctx.saved_tensors
        r2 = x * x + y * y
        ok = r2 > 0
        inv = torch.where(ok, 1.0 / torch.where(ok, r2, torch.ones_like(r2)), torch.zeros_like(r2))
        return g * x * inv, -g * y * inv


_SQRT = {torch.sqrt, torch.Tensor.sqrt}
_POW = {torch.pow, torch.Tensor.pow, torch.Tensor.__pow__}
_ATAN2 = {torch.atan2, torch.Tensor.atan2}


def _grad_tensor(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and a.requires_grad


class _FiniteGradients(TorchFunctionMode):
    """Within this mode ``sqrt``, ``pow(x, p)`` with ``0 < p < 1`` and ``atan2`` on tensors that
    require grad have torch's forward values and a zero subgradient where torch's is infinite."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None):
        kwargs = kwargs or {}
        if not kwargs and func in _SQRT and len(args) == 1 and _grad_tensor(args[0]):
            return _Sqrt.apply(args[0])
        if (not kwargs and func in _POW and len(args) == 2 and _grad_tensor(args[0])
                and isinstance(args[1], (int, float)) and 0 < args[1] < 1):
            return _Pow.apply(args[0], float(args[1]))
        if (not kwargs and func in _ATAN2 and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args)
                and (_grad_tensor(args[0]) or _grad_tensor(args[1]))):
            return _Atan2.apply(args[0], args[1])
        return func(*args, **kwargs)


# ------------------------------------------------------------------- the adapter


def _import_piq() -> Any:
    return import_optional("piq", "piq", "piq metrics")


def resolve_name(name: str) -> str:
    """Table key of ``name`` (case-insensitive; piq's spellings accepted), else UnknownNameError."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PIQ_METRICS:
        import difflib

        close = difflib.get_close_matches(key, list(PIQ_METRICS) + list(ALIASES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr('piq:' + ALIASES.get(c, c)) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown piq metric {name!r}.{hint} Known: {', '.join('piq:' + k for k in PIQ_METRICS)}"
        )
    return key


def weight_files(piq: Any, key: str) -> List[Tuple[str, str]]:
    """``(file name, URL)`` of every weight file piq loads for metric ``key`` (empty if weightless)."""
    spec = PIQ_METRICS[key]
    if spec.weights is None:
        return []
    import torchvision

    urls = [str(getattr(getattr(piq, spec.attr), "_weights_url"))]
    urls.append(torchvision.models.get_model_weights(spec.weights)["IMAGENET1K_V1"].url)
    return [(Path(u.split("?", 1)[0]).name, u) for u in urls]


def weights_folder() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps files: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@METRICS.register("piq:")
class PiqMetric(Metric):
    """A piq metric: ``iqaguard.metrics.create("piq:fsim")`` (see :data:`PIQ_METRICS` for names).

    Args:
        name: ``fsim``, ``vsi``, ``gmsd``, ``ms-gmsd``, ``vif`` (piq's ``vif_p``), ``haarpsi``,
            ``mdsi``, ``dss``, ``sr-sim``, ``lpips``, ``dists`` (piq's spellings work too).
        allow_download: let piq download LPIPS/DISTS weights (off by default: offline); ``None``:
            the ``IQAGUARD_ALLOW_DOWNLOAD`` environment variable decides (``1`` opts in).
        bounds: ``Bounds(worst, best)``; required when ``options`` are given.
        **options: keyword options of the piq function (e.g. ``chromatic=False``) or class.

    Call ``m(x, ref)`` with ``[B, 3, H, W]`` tensors in [0, 1] (distorted first); returns ``[B]``,
    differentiable w.r.t. ``x``.

    Raises:
        MissingDependencyError: piq is not installed (``pip install "iqaguard[piq]"``).
        UnknownNameError: no such piq metric here.
        MissingWeightsError: LPIPS/DISTS offline without their weight files (names file, folder, URL).
        InputError: options without bounds; images smaller than the metric accepts.
    """

    kind = "fr"

    def __init__(self, name: str, allow_download: Optional[bool] = None, bounds: Optional[BoundsLike] = None,
                 **options: Any) -> None:
        super().__init__()
        key = resolve_name(name)
        spec = PIQ_METRICS[key]
        piq = _import_piq()
        self.key, self.spec, self.options = key, spec, dict(options)
        self.name = f"piq:{key}"
        self.lower_better = spec.lower_better
        if bounds is not None:
            self.bounds = _as_bounds(bounds, "")
        elif options:
            raise InputError(
                f"bounds: options {sorted(options)} change {self.name}'s range; pass bounds=Bounds(worst, best), "
                "e.g. measured with iqaguard.metrics.calibrate_bounds (Guardians of Image Quality appendix A.3.2)"
            )
        else:
            self.bounds = spec.bounds
        self.net: Optional[torch.nn.Module] = None
        self._fn: Optional[Callable[..., torch.Tensor]] = None
        if spec.weights is None:
            self._fn = getattr(piq, spec.attr)
            return
        allow_download = download_allowed(allow_download)
        if not allow_download:
            folder = weights_folder()
            for fname, url in weight_files(piq, key):
                if not (folder / fname).is_file():
                    raise MissingWeightsError(
                        f"piq metric {key!r} needs the weight file {fname!r}, not found in {folder}. Download "
                        f"{url} into that folder (or point TORCH_HOME elsewhere), or {ALLOW_HINT}."
                    )
        with offline_guard(f"piq metric {key!r}", allow_download):
            net = getattr(piq, spec.attr)(reduction="none", **options)
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        assert ref is not None
        side = min(x.shape[-2:])
        if side < self.spec.min_size:
            raise InputError(
                f"x: {self.name} needs images of at least {self.spec.min_size} x {self.spec.min_size} pixels, "
                f"got {x.shape[-2]} x {x.shape[-1]}"
            )
        try:
            with _FiniteGradients():
                if self.net is not None:
                    out = self.net(x, ref)
                else:
                    assert self._fn is not None
                    out = self._fn(x, ref, data_range=1.0, reduction="none", **self.options)
        except (AssertionError, ValueError) as e:  # piq validates with assert / ValueError
            raise InputError(f"x: {self.name} rejected the input: {' '.join(str(e).split())}") from None
        return to_scores(out, x.shape[0], f"metric {self.name!r}")


# ------------------------------------------------------------------- calibration (A.3.2)


def calibrate_table(images: List[torch.Tensor], seed: int = 0, jpeg_quality: int = 10) -> Dict[str, Bounds]:
    """Measured ``Bounds`` of every weightless metric of :data:`PIQ_METRICS` on ``images``."""
    from .bounds import calibrate_bounds

    out = {}
    for key, spec in PIQ_METRICS.items():
        if spec.weights is None:
            out[key] = calibrate_bounds(PiqMetric(key), images, seed=seed, jpeg_quality=jpeg_quality, batch_size=1)
    return out


def print_calibration() -> None:  # pragma: no cover - a measurement (about 8 min on one thread)
    """Print the calibrated bounds of :data:`PIQ_METRICS` on the builtin photographs."""
    import time

    import iqaguard.data
    from iqaguard.data.io import list_images, load_image

    torch.set_num_threads(1)
    folder = Path(iqaguard.data.__file__).parent / "photos"
    images = [load_image(p) for p in list_images(folder)]
    t = time.time()
    for key, b in calibrate_table(images).items():
        best = PIQ_METRICS[key].bounds.best
        print(f"{key:8s} worst={b.worst:.4f} best(measured)={b.best:.6f} best(table)={best}", flush=True)
    print(f"# {len(images)} images of {folder}; seed 0, JPEG q=10; {time.time() - t:.0f} s", flush=True)


__all__ = ["PIQ_METRICS", "ALIASES", "PiqMetric", "PiqSpec", "resolve_name", "weight_files", "weights_folder",
           "calibrate_table", "print_calibration"]
