"""FACPA: a small CNN that maps an image to its adversarial perturbation in one forward pass.

Shumitskaya, Antsiferova & Vatolin, "Fast Adversarial CNN-based Perturbation Attack on
No-Reference Image- and Video-Quality Metrics" (ICLR Tiny Papers 2023), listed by Guardians of
Image Quality (Table 7): a U-Net generator ``g`` is trained once, over a training set, to maximise
the target metric's objective ``sign · f(clip(x + eps · tanh(g(x)))) / diam(f)`` (Guardians of
Image Quality §3.1); attacking is one forward pass plus the exact projection onto the L∞ box.

``tanh`` keeps the generator's output in [-1, 1], so the perturbation is ``eps`` times a
direction field: a generator trained at one budget (the shipped one at 8/255) is applied at any
``eps`` by rescaling, which is how the presets vary the strength.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError, MissingWeightsError
from ..metrics.base import Metric, frozen
from ..registry import ATTACKS
from ..validation import check_image
from .base import seeded
from .budgets import Restriction, check_budget, check_count, check_linf_eps, linf_box, linf_presets, project_linf
from .gradient import GradientAttack

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WIDTHS = (16, 32, 64)


def weights_file(metric_name: str) -> Path:
    """The generator file for ``metric_name``: ``attacks/weights/facpa-<name>.safetensors``
    (characters other than letters, digits, ``.``, ``_`` and ``-`` become ``-``)."""
    return WEIGHTS_DIR / f"facpa-{re.sub(r'[^A-Za-z0-9._-]', '-', metric_name)}.safetensors"


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and LeakyReLU (no BatchNorm: no running statistics)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """A 3-level U-Net (widths 16 / 32 / 64, ~120k parameters): ``[B, 3, H, W]`` -> ``[B, 3, H, W]``.

    Inputs of any size: they are reflect-padded to a multiple of 4 and the output is cropped back.
    """

    def __init__(self, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        a, b, c = widths
        self.enc1, self.enc2, self.enc3 = _block(3, a), _block(a, b), _block(b, c)
        self.up2, self.dec2 = nn.ConvTranspose2d(c, b, 2, stride=2), _block(2 * b, b)
        self.up1, self.dec1 = nn.ConvTranspose2d(b, a, 2, stride=2), _block(2 * a, a)
        self.out = nn.Conv2d(a, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        z = F.pad(x - 0.5, (0, pw, 0, ph), mode="replicate") if ph or pw else x - 0.5
        e1 = self.enc1(z)
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        e3 = self.enc3(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)[..., :h, :w]


Images = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_list(images: Images) -> List[torch.Tensor]:
    """``images`` as a list of ``[1, 3, H, W]`` tensors (sizes may differ), each validated."""
    if isinstance(images, torch.Tensor):
        check_image(images, "images")
        return [im.unsqueeze(0) for im in images.detach()]
    if not isinstance(images, (list, tuple)) or not images:
        raise InputError(f"images: expected a tensor [N, 3, H, W] or a non-empty list of [1, 3, H, W] "
                         f"tensors, got {type(images).__name__}")
    out = []
    for i, im in enumerate(images):
        check_image(im, f"images[{i}]")
        out.extend(t.unsqueeze(0) for t in im.detach())
    return out


def _crop_sizes(crop: Union[None, int, Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    if crop is None:
        return None
    lo, hi = (crop, crop) if isinstance(crop, int) and not isinstance(crop, bool) else tuple(crop)
    check_count("crop", lo, low=8)
    check_count("crop", hi, low=lo)
    return int(lo), int(hi)


def _sample_batch(pool: List[torch.Tensor], batch: int, crop: Optional[Tuple[int, int]],
                  g: torch.Generator) -> torch.Tensor:
    """``batch`` images of ``pool`` drawn with replacement; with ``crop=(lo, hi)`` one random
    square size in ``[lo, hi]`` per batch, a random crop of each image and a random horizontal flip."""
    idx = torch.randint(0, len(pool), (batch,), generator=g).tolist()
    if crop is None:
        return torch.cat([pool[i] for i in idx])
    s = int(torch.randint(crop[0], crop[1] + 1, (1,), generator=g))
    out = []
    for i in idx:
        h, w = pool[i].shape[-2:]
        if h < s or w < s:
            raise InputError(f"images: an image of {h}x{w} is smaller than the crop size {s}")
        t = int(torch.randint(0, h - s + 1, (1,), generator=g))
        l = int(torch.randint(0, w - s + 1, (1,), generator=g))
        c = pool[i][..., t:t + s, l:l + s]
        out.append(c.flip(-1) if bool(torch.rand(1, generator=g) < 0.5) else c)
    return torch.cat(out)


@ATTACKS.register("facpa")
class FACPA(GradientAttack):
    """FACPA (Shumitskaya, Antsiferova & Vatolin 2023): a U-Net generator, one forward pass per attack.

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the budgets of Guardians of
    Image Quality appendix A.3.4: ``weak`` 2/255, ``medium`` 4/255, ``strong`` 8/255. The
    perturbation is ``eps · tanh(g(x))``, clipped to the exact L∞ box within [0, 1].

    The shipped generator (``attacks/weights/facpa-builtin-nr.safetensors``, model card beside
    it) was trained by ``scripts/train_facpa.py`` against **builtin-nr** at ε = 8/255. With
    ``weights=None`` the attack looks for the generator of the attacked metric
    (``facpa-<metric name>.safetensors``); for any other metric, either train one
    (``python scripts/train_facpa.py --metric NAME``, or :meth:`fit` then :meth:`save`) or pass
    ``weights=`` the builtin-nr file explicitly: that is a *transfer* attack (a generator trained
    for one metric applied to another), usually weaker than a generator trained for the metric.

    Args:
        eps: L∞ budget on the [0, 1] scale (default 4/255), ``0 < eps <= 64/255``.
        weights: path of a generator saved by :meth:`save`, or ``None`` (the file of the attacked
            metric in ``attacks/weights``).
        generator_for: instead of ``weights``, the metric whose shipped generator to use
            (``"builtin-nr"``): on another metric a transfer attack, e.g. in a benchmark spec that
            attacks several metrics with the one shipped generator.
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape, ``||x_adv - x||_inf <= eps``.

    Example:
        >>> x_adv = FACPA(preset="strong")(metric, x)       # metric: builtin-nr
        >>> a = FACPA(eps=8/255).fit(my_metric, images, epochs=20); a.save("facpa-mine.safetensors")
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets()
    net: Optional[UNet] = None
    trained_for: str = ""

    def __init__(self, eps: float = 4 / 255, weights: Union[None, str, Path] = None,
                 generator_for: Optional[str] = None) -> None:
        check_linf_eps(eps)
        if generator_for is not None:
            if weights is not None:
                raise InputError("weights, generator_for: give one of them (a generator file, or the metric whose "
                                 "shipped generator to use)")
            if not isinstance(generator_for, str) or not weights_file(generator_for).is_file():
                raise MissingWeightsError(f"generator_for: no shipped FACPA generator for metric {generator_for!r} "
                                          f"({weights_file(str(generator_for)).name} not found); shipped: builtin-nr")
        if weights is not None:
            if not isinstance(weights, (str, Path)):
                raise InputError(f"weights: expected a path to a FACPA generator (.safetensors) or None, "
                                 f"got {type(weights).__name__}")
            if not Path(weights).is_file():
                raise MissingWeightsError(f"weights: no FACPA generator at {weights}; make one with "
                                          "`python scripts/train_facpa.py --metric NAME --out DIR`")

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """``eps · tanh(g(x))`` ``[B, 3, H, W]`` (differentiable in the generator's parameters)."""
        if self.net is None:
            raise InputError("FACPA has no generator yet: call fit(metric, images) or load(path) first")
        net = self.net.to(device=x.device)
        return float(self.eps) * torch.tanh(net(x))

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """One forward pass of the generator, then the exact projection onto the ε-box in [0, 1]."""
        if self.net is None:
            path = Path(self.weights) if self.weights is not None else weights_file(self.generator_for or metric.name)
            self.load(path, metric_name=self.generator_for or metric.name)
        with torch.no_grad():
            return project_linf(x + self.perturbation(x), linf_box(x, float(self.eps)))

    def fit(self, metric: Metric, images: Images, epochs: int = 10, lr: float = 1e-3,
            generator: Optional[torch.Generator] = None, ref: Optional[torch.Tensor] = None,
            batch: int = 8, crop: Union[None, int, Tuple[int, int]] = None) -> "FACPA":
        """Train a fresh generator for ``metric`` on ``images``; returns self.

        Maximises the mean of ``sign · f(clip(x + eps · tanh(g(x)), 0, 1)) / diam(f)`` with Adam.
        An epoch is ``ceil(N / batch)`` steps on batches drawn from ``generator`` (which also
        initialises the network, so a seed gives the same generator).

        Args:
            metric: the metric to attack (kept in eval mode, its parameters untouched).
            images: ``[N, 3, H, W]`` in [0, 1], or a list of ``[1, 3, H, W]`` of different sizes
                (then ``crop`` is needed so that a batch stacks).
            epochs: passes over the images, >= 1. lr: Adam learning rate, ``0 < lr <= 1``.
            generator: a ``torch.Generator`` (default: seeded with 0).
            ref: FR metrics only: references ``[N, 3, H, W]`` (no ``crop`` then).
            batch: images per step, >= 1. crop: ``None``, a size, or ``(lo, hi)``: random square
                crops with a random size in ``[lo, hi]`` per batch and random horizontal flips.
        """
        check_count("epochs", epochs)
        check_count("batch", batch)
        check_budget("lr", lr, 1.0, "1")
        size = _crop_sizes(crop)
        pool = _as_list(images)
        if metric.kind == "fr" and (ref is None or size is not None or not isinstance(images, torch.Tensor)):
            raise InputError("ref: fitting a full-reference metric needs images [N, 3, H, W], ref= of the "
                             "same shape and crop=None")
        if size is None and len({tuple(p.shape) for p in pool}) > 1:
            raise InputError("images: of different sizes; pass crop=(lo, hi) to train on random crops")
        g = seeded(generator)
        init_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the global RNG is left as it was
            torch.manual_seed(init_seed)
            self.net = UNet().to(pool[0].device)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        steps = epochs * math.ceil(len(pool) / batch)
        refs = None if ref is None else ref.detach()
        with frozen(metric):
            for _ in range(steps):
                if refs is not None:
                    idx = torch.randint(0, len(pool), (batch,), generator=g)
                    xb, rb = images[idx].detach(), refs[idx]
                else:
                    xb, rb = _sample_batch(pool, batch, size, g), None
                loss = -self.train_objective(metric, xb, rb).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        self.trained_for = metric.name
        return self

    def train_objective(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-image objective ``[B]`` of ``clip(x + eps · tanh(g(x)), 0, 1)``, differentiable in ``g``."""
        obj = self.objective(metric, (x + self.perturbation(x)).clamp(0.0, 1.0), ref)
        if not obj.requires_grad:
            raise InputError(f"metric: {metric.name!r} is not differentiable with respect to x; FACPA trains "
                             "its generator through the metric's gradient")
        return obj

    def save(self, path: Union[str, Path]) -> Path:
        """Write the generator's parameters as safetensors (metadata: attack, widths, metric, eps)."""
        from safetensors.torch import save_file

        if self.net is None:
            raise InputError("FACPA: nothing to save before fit() or load()")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"attack": "FACPA", "widths": json.dumps(list(WIDTHS)), "eps": repr(float(self.eps)),
                "metric": self.trained_for}
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(path),
                  metadata=meta)
        return path

    def load(self, path: Union[str, Path], metric_name: Optional[str] = None) -> "FACPA":
        """Read a generator written by :meth:`save`; returns self."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            name = metric_name or "NAME"
            raise MissingWeightsError(f"no FACPA generator for metric {name!r}: {path} not found; make it with "
                                      f"`python scripts/train_facpa.py --metric {name}` (or attack with the shipped "
                                      "builtin-nr generator as a transfer attack: generator_for='builtin-nr')")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise InputError(f"{path} is not a safetensors FACPA generator ({e})") from None
        if meta.get("attack") != "FACPA" or json.loads(meta.get("widths", "null")) != list(WIDTHS):
            raise InputError(f"{path} is not a FACPA generator with widths {list(WIDTHS)} (metadata {meta})")
        net = UNet()
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"{path}: the tensors do not match FACPA's U-Net ({str(e).splitlines()[0]})") from None
        self.net, self.trained_for = net.eval(), meta.get("metric", "")
        return self
