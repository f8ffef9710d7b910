"""cAdv: recolour the image with a colourisation network whose weights are optimised to fool the metric.

Bhattad, Chong, Liang, Li & Forsyth, "Unrestricted Adversarial Examples via Semantic
Manipulation" (ICLR 2020), listed by Guardians of Image Quality (Table 7: white-box, restricted by
SSIM, learning rate varied, "grad. descent with recolorization"). The image is taken to CIELAB;
its lightness ``L`` is kept and its chroma ``ab`` is produced by a colourisation network (the paper
uses the user-guided network of Zhang et al., "Real-Time User-Guided Image Colorization with
Learned Deep Priors", 2017: input ``L`` plus sparse ``ab`` colour hints and their mask), whose
parameters are optimised by gradient descent (Adam) so that the recoloured image fools the model.

Here the network is :class:`Colouriser`, a small encoder-decoder (about 130k parameters) trained
from scratch by ``scripts/train_cadv.py`` on the builtin photographs of the builtin-kadid train
split (model card: ``attacks/weights/MODEL_CARD.md``). Its hints are the clean image's own ``ab``
at a random ``hints`` fraction of the pixels (drawn from the attack's ``generator``).
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab

from ..errors import InputError, MissingWeightsError
from ..metrics import functional as FM
from ..metrics.base import Metric
from ..registry import ATTACKS
from .base import seeded
from .budgets import PRESET_BUDGETS, Restriction, check_count, within
from .gradient import GradientAttack, keep_best

WEIGHTS_FILE = Path(__file__).resolve().parent / "weights" / "cadv-colouriser.safetensors"
WIDTHS = (16, 32, 64)
AB_SCALE = 110.0  # |a|, |b| of sRGB colours stay below ~110: the network's output range
TRAIN_CMD = "python scripts/train_cadv.py"

Params = Dict[str, torch.Tensor]


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """3x3 / 1x1 convolution with ``w [cout, cin, k, k]`` shared by the batch or ``[B, cout, cin, k, k]``
    per image (a grouped convolution: each image of the batch has its own weights)."""
    pad = dilation * (w.shape[-1] // 2)
    if w.dim() == 4:
        return F.conv2d(x, w, b, stride, pad, dilation)
    n = x.shape[0]
    y = F.conv2d(x.reshape(1, -1, *x.shape[-2:]), w.flatten(0, 1), b.flatten(), stride, pad, dilation, groups=n)
    return y.view(n, -1, *y.shape[-2:])


class Colouriser(nn.Module):
    """``(L, ab hints, mask) -> ab``: a 3-level encoder-decoder with skips (LeakyReLU, no normalisation).

    Full resolution 16 channels, 1/2 32, 1/4 64 (two dilated convolutions), bilinear upsampling.
    Inputs of any size (replicate-padded to a multiple of 4, cropped back). :meth:`forward` takes
    optional ``params`` (the same names as :meth:`named_parameters`), shared or with a leading
    batch dimension (one weight set per image, as the attack optimises them).
    """

    def __init__(self, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        a, b, c = widths
        self.layers = nn.ModuleDict({  # name: (cin, cout, kernel)
            name: nn.Conv2d(cin, cout, k) for name, cin, cout, k in (
                ("c0", 4, a, 3), ("c1", a, b, 3), ("c2", b, c, 3), ("c3", c, c, 3), ("c4", c, c, 3),
                ("c5", c + b, b, 3), ("c6", b + a, a, 3), ("out", a, 2, 1))})
        nn.init.zeros_(self.layers["out"].weight)  # a fresh network predicts grey (ab = 0)
        nn.init.zeros_(self.layers["out"].bias)

    def forward(self, lightness: torch.Tensor, hints: torch.Tensor, mask: torch.Tensor,
                params: Optional[Params] = None) -> torch.Tensor:
        """``lightness [B, 1, H, W]`` (0..100), ``hints [B, 2, H, W]`` (ab, 0 off the mask),
        ``mask [B, 1, H, W]`` (1 where a hint is given) -> ``ab [B, 2, H, W]`` in (-110, 110)."""
        p = dict(self.named_parameters()) if params is None else params

        def conv(name: str, z: torch.Tensor, stride: int = 1, dilation: int = 1, act: bool = True) -> torch.Tensor:
            y = _conv(z, p[f"layers.{name}.weight"], p[f"layers.{name}.bias"], stride, dilation)
            return F.leaky_relu(y, 0.2) if act else y

        h, w = lightness.shape[-2:]
        z = torch.cat([lightness / 100 - 0.5, hints / AB_SCALE, mask], dim=1)
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        e0 = conv("c0", z)
        e1 = conv("c1", e0, stride=2)
        e2 = conv("c4", conv("c3", conv("c2", e1, stride=2), dilation=2), dilation=2)
        d1 = conv("c5", torch.cat([F.interpolate(e2, scale_factor=2, mode="bilinear", align_corners=False), e1], 1))
        d0 = conv("c6", torch.cat([F.interpolate(d1, scale_factor=2, mode="bilinear", align_corners=False), e0], 1))
        return AB_SCALE * torch.tanh(conv("out", d0, act=False))[..., :h, :w]


def random_hints(ab: torch.Tensor, density: float, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(hints, mask)``: ``ab`` kept at a random ``density`` fraction of the pixels (drawn on the
    generator's device, moved to ``ab``'s), zero elsewhere; ``mask [B, 1, H, W]`` marks them."""
    u = torch.rand((ab.shape[0], 1, *ab.shape[-2:]), generator=generator, device=generator.device)
    mask = (u < density).to(ab)
    return ab * mask, mask


def save_colouriser(net: Colouriser, path: Union[str, Path], metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``net``'s parameters as safetensors (metadata: attack, widths, plus ``metadata``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"attack": "cAdv", "widths": ",".join(map(str, WIDTHS)), **(metadata or {})}
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    return path


def load_colouriser(path: Union[str, Path]) -> Colouriser:
    """The :class:`Colouriser` written by :func:`save_colouriser` at ``path`` (eval mode, CPU).

    Raises:
        MissingWeightsError: no file at ``path`` (the message names the training command).
        InputError: the file is not a cAdv colouriser safetensors file.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"no cAdv colouriser at {path}; make it with `{TRAIN_CMD}` "
                                  f"(it writes {WEIGHTS_FILE.name}) or pass colouriser= a file that script wrote")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise InputError(f"colouriser: {path} is not a safetensors cAdv colouriser ({str(e).splitlines()[0]}); "
                         f"make one with `{TRAIN_CMD}`") from None
    if meta.get("attack") != "cAdv" or meta.get("widths") != ",".join(map(str, WIDTHS)):
        raise InputError(f"colouriser: {path} is not a cAdv colouriser with widths {list(WIDTHS)} "
                         f"(metadata {meta}); make one with `{TRAIN_CMD}`")
    net = Colouriser()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"colouriser: {path}: the tensors do not match cAdv's colouriser "
                         f"({str(e).splitlines()[0]})") from None
    return net.eval().requires_grad_(False)


def _in_range(y: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` bool: every channel of the pixel is in [0, 1]."""
    return ((y >= 0) & (y <= 1)).all(dim=1, keepdim=True)


def recolour(x: torch.Tensor, lab: torch.Tensor, rgb0: torch.Tensor, delta: torch.Tensor,
             iters: int = 12) -> torch.Tensor:
    """``x + (lab_to_rgb(L, ab + s·delta) - rgb0)``, ``rgb0 = lab_to_rgb(lab)`` (so ``delta = 0`` gives
    ``x`` exactly), with a per-pixel ``s`` in [0, 1]: 1 where the colour stays in the sRGB gamut,
    else the largest in-gamut scale found by ``iters`` bisection halvings (``s = 0`` is the clean
    pixel). Moving back along ``delta`` keeps ``L``, which clipping to [0, 1] would change.
    ``s`` is a constant for the gradient (it flows through ``delta``)."""
    lightness, ab = lab[:, :1], lab[:, 1:]

    def at(scale: Union[float, torch.Tensor]) -> torch.Tensor:
        return x + (lab_to_rgb(torch.cat([lightness, ab + scale * delta], dim=1), clip=False) - rgb0)

    with torch.no_grad():
        d = delta.detach()
        ok = _in_range(x + (lab_to_rgb(torch.cat([lightness, ab + d], dim=1), clip=False) - rgb0))
        scale = torch.ones_like(ok, dtype=x.dtype)
        if not bool(ok.all()):
            lo, hi = torch.zeros_like(scale), torch.ones_like(scale)
            for _ in range(iters):
                mid = (lo + hi) / 2
                good = _in_range(x + (lab_to_rgb(torch.cat([lightness, ab + mid * d], dim=1), clip=False) - rgb0))
                lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
            scale = torch.where(ok, scale, lo)
    return at(scale).clamp(0, 1)  # the clamp only removes float rounding: every pixel is in range


def _check_rate(name: str, value: object, upper: float, example: str, zero: bool = True) -> float:
    """``value`` as a float in ``[0, upper]`` (``(0, upper]`` unless ``zero``), else one-line InputError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or not (0.0 <= float(value) <= upper) or (not zero and float(value) == 0.0):
        low = "0 <=" if zero else "0 <"
        raise InputError(f"{name}: expected a number with {low} {name} <= {upper:g} (e.g. {name}={example}), "
                         f"got {value!r}")
    return float(value)


@ATTACKS.register("cadv")
class CAdv(GradientAttack):
    """cAdv (Bhattad et al., ICLR 2020): Adam on a colourisation network's weights, lightness kept.

    Per image, the colouriser's weights ``θ`` (initialised at the shipped ``θ0``) are optimised by
    ``steps`` Adam steps at learning rate ``lr`` to maximise the objective of
    ``x' = recolour(L, ab + net_θ(L, h) - net_θ0(L, h))``, where ``L, ab`` are the clean image's
    CIELAB channels (``kornia.color``) and ``h`` the hints; each image has its own copy of ``θ``, so
    an image's result does not depend on the rest of its batch. The output is the iterate with the
    highest objective (the clean image included, so the objective never falls), among those that
    meet ``ssim_floor`` when one is given, or the best and the last iterate's chroma changes
    scaled back to meet it.

    Decisions (departures from the paper):

    * ``ab_clean + (net_θ - net_θ0)`` instead of ``net_θ``: the unattacked output is the input
      (``lr=0`` or ``steps=0`` return ``x`` exactly), so the small network's own colourisation
      error is never counted as attack; only the change the optimisation makes is.
    * Out-of-gamut colours are not clipped in RGB (which would change the lightness): each pixel's
      chroma change is scaled back until its colour is in the sRGB gamut (:func:`recolour`), so ``L``
      is kept up to the float32 LAB round trip (measured: max |ΔL| 2.3e-5, L on 0..100).
    * Hints: the clean ``ab`` at a random ``hints`` fraction of the pixels (the paper also picks
      hint locations by clustering or entropy); ``hints=0`` is automatic colourisation.

    Distance measure: SSIM (Guardians of Image Quality Table 7) on the RGB channels
    (:func:`iqaguard.metrics.functional.fidelity_ssim`, the benchmark's own measure, which sees
    colour; the luma SSIM of ``ssim.m`` hardly moves under a recolouring). Varied parameter (the
    presets): ``lr``, at 160 steps, each preset also setting ``ssim_floor`` to its SSIM budget
    (0.9 / 0.8 / 0.75, Guardians of Image Quality appendix A.3.4), so the budget holds per image.
    The presets resolve through the shipped calibration table where one exists
    (``attacks/tables/cadv__builtin-nr.json``: lr 6.1e-5 / 6.1e-4 / 2.4e-3, held-out mean SSIM
    0.880 / 0.778 / 0.748, errors 2.3% / 2.7% / 0.3%); the class presets are those values rounded,
    for metrics without a table. At 20 steps no lr reaches 0.8 (mean SSIM 0.87-0.92 for lr 1e-4
    to 5e-3, model card; past ~1e-2 Adam diverges and SSIM rises again), hence 160 steps. A
    full-reference metric's objective pulls the colours back to the reference's, so there the SSIM hardly falls
    (builtin-fr: 0.992 at lr 8e-5, where builtin-nr is at 0.877) and no table is shipped.

    Args:
        lr: Adam learning rate on the colouriser's weights, ``0 <= lr <= 1`` (default: medium).
        steps: Adam steps (one objective gradient each), >= 0 (default 20).
        hints: fraction of pixels given their clean colour as a hint, ``0 <= hints <= 1`` (default 0.01).
        ssim_floor: ``None`` or ``0 < ssim_floor < 1``: keep only iterates with
            ``SSIM(x', x) >= ssim_floor`` (:func:`~.budgets.within`), plus the iterate of highest
            objective and the last one scaled back along their chroma changes (bisection) to meet
            it. Needs ``H, W >= 7`` (the SSIM window).
        colouriser: path of a colouriser file written by ``scripts/train_cadv.py``, or ``None``
            (the shipped ``attacks/weights/cadv-colouriser.safetensors``).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape in [0, 1]; ``ref`` (FR
    metrics) is passed through, never recoloured.

    Example:
        >>> x_adv = CAdv(preset="medium")(metric, x, generator=torch.Generator().manual_seed(0))
    """

    restriction = Restriction.SSIM
    varied = "lr"
    presets = {name: {"lr": lr, "steps": 160, "ssim_floor": PRESET_BUDGETS[Restriction.SSIM][name]}
               for name, lr in (("weak", 6e-5), ("medium", 6e-4), ("strong", 2.4e-3))}
    net: Optional[Colouriser] = None

    def __init__(self, lr: float = 5e-4, steps: int = 20, hints: float = 0.01, ssim_floor: Optional[float] = None,
                 colouriser: Union[None, str, Path] = None) -> None:
        _check_rate("lr", lr, 1.0, "5e-4")
        check_count("steps", steps, low=0)
        _check_rate("hints", hints, 1.0, "0.01")
        if ssim_floor is not None:
            ok = isinstance(ssim_floor, numbers.Real) and not isinstance(ssim_floor, bool)
            if not ok or not math.isfinite(float(ssim_floor)) or not 0.0 < float(ssim_floor) < 1.0:
                raise InputError(f"ssim_floor: expected None or an SSIM floor with 0 < ssim_floor < 1 "
                                 f"(e.g. ssim_floor=0.8), got {ssim_floor!r}")
        if colouriser is not None:
            if not isinstance(colouriser, (str, Path)):
                raise InputError(f"colouriser: expected a path to a cAdv colouriser (.safetensors) or None, "
                                 f"got {type(colouriser).__name__}")
            if not Path(colouriser).is_file():
                raise MissingWeightsError(f"colouriser: no cAdv colouriser at {colouriser}; make one with "
                                          f"`{TRAIN_CMD} --out DIR` or pass colouriser=None (the shipped one)")

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """Adam on per-image copies of the colouriser's weights; the best (feasible) iterate."""
        floor = None if self.ssim_floor is None else float(self.ssim_floor)
        if floor is not None:
            FM.check_fidelity_ssim_size(x)
        if self.net is None:
            self.net = load_colouriser(WEIGHTS_FILE if self.colouriser is None else self.colouriser)
        net = self.net.to(x.device)
        lab = rgb_to_lab(x)
        hints, mask = random_hints(lab[:, 1:], float(self.hints), seeded(generator))
        rgb0 = lab_to_rgb(lab, clip=False)
        n = x.shape[0]
        theta = {k: v.detach().unsqueeze(0).repeat(n, *([1] * v.dim())).requires_grad_(True)
                 for k, v in net.named_parameters()}
        with torch.no_grad():  # with the per-image weights, as below: delta is exactly 0 before any step
            base = net(lab[:, :1], hints, mask, theta)
        opt = torch.optim.Adam(list(theta.values()), lr=float(self.lr))
        best = best_obj = None
        free_delta = free_obj = None  # the chroma change of the best iterate, floor or not

        def feasible(x_adv: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
            if floor is None:
                return obj
            ok = within(Restriction.SSIM, x_adv, x, floor).to(obj.device)
            return torch.where(ok, obj, torch.full_like(obj, -math.inf))

        for step in range(self.steps + 1):
            with torch.enable_grad():
                delta = net(lab[:, :1], hints, mask, theta) - base
                x_adv = recolour(x, lab, rgb0, delta)
                obj, grad = self.gradient(metric, x_adv.detach(), ref)
                best, best_obj = keep_best(best, best_obj, x_adv.detach(), feasible(x_adv.detach(), obj))
                if floor is not None:
                    free_delta, free_obj = keep_best(free_delta, free_obj, delta.detach(), obj)
                if step == self.steps:
                    break
                opt.zero_grad()
                x_adv.backward(-grad)  # ascent on the objective: Adam minimises its negative
            opt.step()
        if floor is not None and free_delta is not None:
            for d in (free_delta, delta.detach()):  # the best and the last iterate, each scaled back
                back = self._scale_back(x, lab, rgb0, d, floor)
                with torch.no_grad():
                    best, best_obj = keep_best(best, best_obj, back, self.objective(metric, back, ref))
        return best if best is not None else x

    @staticmethod
    def _scale_back(x: torch.Tensor, lab: torch.Tensor, rgb0: torch.Tensor, delta: torch.Tensor, floor: float,
                    iters: int = 20) -> torch.Tensor:
        """Per image, ``recolour(c · delta)`` with the largest ``c`` in [0, 1] meeting the SSIM floor
        (bisection; ``c = 0`` is ``x``): the chroma change is shrunk, ``L`` stays as it is."""
        def at(c: torch.Tensor) -> torch.Tensor:
            return recolour(x, lab, rgb0, c.view(-1, 1, 1, 1) * delta)

        with torch.no_grad():
            one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
            cand = at(one)
            ok = within(Restriction.SSIM, cand, x, floor).to(x.device)
            if bool(ok.all()):
                return cand
            lo, hi = torch.zeros_like(one), one.clone()
            for _ in range(iters):
                mid = (lo + hi) / 2
                good = within(Restriction.SSIM, at(mid), x, floor).to(x.device)
                lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
            return torch.where(ok.view(-1, 1, 1, 1), cand, at(lo))
