"""Universal perturbations under an L∞ budget: UAP and Optimized-UAP.

Both learn one perturbation ``delta`` ``[1, 3, S, S]`` on training images resized to a fixed
``size`` (Guardians of Image Quality trains at 256x256), then attack any image by
resize-add-clip (:class:`~.universal.UniversalAttack`). One training loop serves both: each batch
of training images ``t`` gives the gradient of the mean objective ``sign · f(clip(t + delta)) /
diam(f)`` (Guardians of Image Quality §3.1) with respect to ``delta``; UAP takes a signed step,
Optimized-UAP an Adam step; ``delta`` is projected onto the ε-ball after every update.
"""
from __future__ import annotations

from abc import abstractmethod

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..metrics.base import Metric
from ..registry import ATTACKS
from ..validation import check_pair
from .base import seeded
from .budgets import Restriction, check_budget, check_count, check_linf_eps, linf_box, linf_presets, project_linf
from .universal import UniversalAttack



def _float_bound(eps: float, dtype: torch.dtype = torch.float32) -> float:
    """The largest value of ``dtype`` that is ``<= eps`` (so ``|delta| <= eps`` holds as stored)."""
    b = torch.tensor(eps, dtype=dtype)
    if float(b) > eps:
        b = torch.nextafter(b, torch.tensor(0.0, dtype=dtype))
    return float(b)


class _LearnedUniversal(UniversalAttack):
    """Shared training loop of :class:`UAP` and :class:`OptimizedUAP` (subclasses define :meth:`_update`)."""

    restriction = Restriction.LINF
    varied = "eps"

    def _validate(self, eps: float, epochs: int, step: Optional[float], size: int, batch: int) -> None:
        check_linf_eps(eps)
        check_count("epochs", epochs)
        check_count("size", size, low=8)
        check_count("batch", batch)
        if step is not None:
            check_budget("step", step, 1.0, "1 (the whole range)", ", or None (eps / 10)")

    @property
    def step_size(self) -> float:
        """The step actually used: ``step`` or ``eps / 10``."""
        return float(self.step) if self.step is not None else float(self.eps) / 10

    def _start(self, delta: torch.Tensor) -> Any:
        """Optimiser state for ``delta`` (``None`` for a stateless update)."""
        return None

    @abstractmethod
    def _update(self, delta: torch.Tensor, grad: torch.Tensor, state: Any) -> torch.Tensor:
        """``delta`` after one ascent step along ``grad`` (before the projection)."""

    def learn(self, metric: Metric, images: torch.Tensor, ref: Optional[torch.Tensor],
              generator: Optional[torch.Generator]) -> torch.Tensor:
        """Train ``delta`` for ``epochs`` passes over ``images`` in shuffled batches of ``batch``.

        Args:
            metric: the attacked metric (FR: ``ref`` holds the references, never perturbed).
            images: training images ``[N, 3, H, W]`` in [0, 1], resized to ``size`` x ``size``.
            ref: references ``[N, 3, H, W]`` for FR metrics, else ``None``.
            generator: shuffles the batches (``None``: a generator seeded with 0).

        Returns:
            ``delta`` ``[1, 3, size, size]`` with ``|delta| <= eps`` in float32.
        """
        if metric.kind == "fr":
            if ref is None:
                raise InputError("ref: fitting on a full-reference metric needs ref= (the reference images)")
            check_pair(images, ref, "images", "ref")
        gen = seeded(generator)
        s = (self.size, self.size)
        train = images if images.shape[-2:] == s else F.interpolate(images, size=s, mode="bilinear",
                                                                     align_corners=False, antialias=True)
        train = train.clamp(0, 1)
        refs = None
        if ref is not None:
            refs = ref if ref.shape[-2:] == s else F.interpolate(ref, size=s, mode="bilinear",
                                                                 align_corners=False, antialias=True)
            refs = refs.clamp(0, 1)
        bound = _float_bound(float(self.eps))
        delta = torch.zeros(1, 3, *s, dtype=train.dtype, device=train.device)
        state = self._start(delta)
        for _ in range(self.epochs):
            order = torch.randperm(train.shape[0], generator=gen, device=gen.device).to(train.device)
            for idx in order.split(self.batch):
                raw = train[idx] + delta
                _, grad = self.gradient(metric, raw.clamp(0, 1), None if refs is None else refs[idx])
                inside = ((raw > 0) & (raw < 1)).to(grad.dtype)  # d clip / d delta
                g = (grad * inside).mean(dim=0, keepdim=True)
                delta = self._update(delta, g, state).clamp(-bound, bound)
        return delta

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        """``apply(x)``, then clipped to the exact ε-box of :func:`~.budgets.linf_box` (removes the
        float rounding of ``x + delta``, so ``||x_adv - x||_inf <= eps`` holds as computed)."""
        return project_linf(self.apply(x), linf_box(x, float(self.eps)))


@ATTACKS.register("uap")
class UAP(_LearnedUniversal):
    """UAP (Shumitskaya, Antsiferova & Vatolin, "Universal Perturbation Attack on Differentiable
    No-Reference Image- and Video-Quality Metrics", BMVC 2022), as used by Guardians of Image Quality.

    One perturbation is learned on training images at ``size`` x ``size``: for each shuffled batch,
    ``delta <- clip_eps(delta + step · sign(∇_delta mean objective(clip(t + delta))))``. Attacking
    resizes ``delta`` to the image (bilinear), adds it and clips to [0, 1].

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the perturbation amplitude
    (Guardians of Image Quality Table 7 "amplitude"), at the L∞ budgets of its appendix A.3.4:
    ``weak`` 2/255, ``medium`` 4/255, ``strong`` 8/255.

    Args:
        eps: L∞ amplitude on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        epochs: passes over the training images, >= 1 (default 5).
        step: signed step per batch, ``0 < step <= 1``; ``None`` (default) uses ``eps / 10``.
        size: side ``S`` of the learned perturbation and of the resized training images,
            >= 8 (default 256).
        batch: training images per update, >= 1 (default 8).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: ``fit(metric, images [N, 3, H, W])`` learns ``delta [1, 3, S, S]``; then
    ``x [B, 3, H', W']`` in [0, 1] -> ``x_adv`` of the same shape, ``||x_adv - x||_inf <= eps``.

    Example:
        >>> a = UAP(preset="medium", size=256).fit(metric, train_images)
        >>> x_adv = a(metric, x); a.save("uap.safetensors")
    """

    presets = linf_presets()

    def __init__(self, eps: float = 4 / 255, epochs: int = 5, step: Optional[float] = None,
                 size: int = 256, batch: int = 8) -> None:
        self._validate(eps, epochs, step, size, batch)

    def _update(self, delta: torch.Tensor, grad: torch.Tensor, state: Any) -> torch.Tensor:
        return delta + self.step_size * grad.sign()


@ATTACKS.register("opt-uap")
class OptimizedUAP(_LearnedUniversal):
    """Optimized-UAP (Shumitskaya, Antsiferova & Vatolin, "Towards adversarial robustness
    verification of no-reference image- and video-quality metrics", Computer Vision and Image
    Understanding 240:103913, 2024: the reference Guardians of Image Quality gives for
    "Optimised-UAP", Table 7).

    The universal perturbation is optimised by gradient descent on the mean loss
    ``-objective(clip(t + delta))`` over each shuffled batch with Adam (learning rate ``step``),
    projecting ``delta`` onto the ε-ball after every Adam step. Attacking is resize-add-clip.

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the perturbation amplitude
    (Guardians of Image Quality Table 7 "amplitude"): ``weak`` 2/255, ``medium`` 4/255,
    ``strong`` 8/255.

    Args:
        eps: L∞ amplitude on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        epochs: passes over the training images, >= 1 (default 5).
        step: Adam learning rate, ``0 < step <= 1``; ``None`` (default) uses ``eps / 10``.
        size: side ``S`` of the learned perturbation and of the resized training images,
            >= 8 (default 256).
        batch: training images per Adam step, >= 1 (default 8).
        betas: Adam's moment coefficients, each in [0, 1) (default (0.9, 0.999)).
        preset: ``"weak"``, ``"medium"`` or ``"strong"`` (explicit arguments override it).

    Shapes: as :class:`UAP`.

    Example:
        >>> a = OptimizedUAP(preset="strong", size=256).fit(metric, train_images)
        >>> x_adv = a(metric, x)   # ||x_adv - x||_inf <= 8/255
    """

    presets = linf_presets()

    def __init__(self, eps: float = 4 / 255, epochs: int = 5, step: Optional[float] = None,
                 size: int = 256, batch: int = 8, betas: tuple = (0.9, 0.999)) -> None:
        self._validate(eps, epochs, step, size, batch)
        ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        if not ok:
            raise InputError(f"betas: expected two Adam coefficients in [0, 1), got {betas!r}")

    def _start(self, delta: torch.Tensor) -> Any:
        param = torch.nn.Parameter(delta.clone())
        return param, torch.optim.Adam([param], lr=self.step_size, betas=tuple(float(b) for b in self.betas))

    def _update(self, delta: torch.Tensor, grad: torch.Tensor, state: Any) -> torch.Tensor:
        param, opt = state
        with torch.no_grad():
            param.copy_(delta)  # the projected delta of the previous step
        param.grad = -grad  # Adam minimises the loss -objective
        opt.step()
        return param.detach().clone()
