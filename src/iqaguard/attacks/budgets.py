"""Attack restrictions: the budget of each, its projection, the check that it holds, the presets.

Guardians of Image Quality (appendix A.3.4) restricts every attack by one of L∞, SSIM or PSNR and
calibrates three strengths per attack to the budgets of :data:`PRESET_BUDGETS` (L∞ 2/4/8 /255,
SSIM 0.9/0.8/0.75, PSNR 35/30/25 dB); Robustness as Architecture adds L2 (PGD-L2) and the pixel
count L0 (One Pixel, Patch-RS). A restriction is a :class:`Restriction` member, never a free string.

All budgets are on the [0, 1] image scale. :func:`measure` gives, per image, the quantity a
restriction bounds (L∞ / L2 norm of the perturbation, changed-pixel count, SSIM or PSNR to the
clean image) and :func:`within` whether it holds.
"""
from __future__ import annotations

import enum
import math
import numbers
from typing import Any, Dict, Tuple

import torch

from ..errors import InputError


class Restriction(str, enum.Enum):
    """What an attack's budget bounds (a ``str`` enum: ``Restriction.LINF == "linf"``)."""

    LINF = "linf"
    L2 = "l2"
    L0 = "l0"
    SSIM = "ssim"
    PSNR = "psnr"

    def __str__(self) -> str:
        return self.value

    @property
    def upper_is_stronger(self) -> bool:
        """True for norms (a larger budget is a stronger attack), False for SSIM / PSNR floors."""
        return self in (Restriction.LINF, Restriction.L2, Restriction.L0)


PRESET_NAMES = ("weak", "medium", "strong")

#: the budgets of the weak / medium / strong presets (Guardians of Image Quality appendix A.3.4)
PRESET_BUDGETS: Dict[Restriction, Dict[str, float]] = {
    Restriction.LINF: {"weak": 2 / 255, "medium": 4 / 255, "strong": 8 / 255},
    Restriction.SSIM: {"weak": 0.9, "medium": 0.8, "strong": 0.75},
    Restriction.PSNR: {"weak": 35.0, "medium": 30.0, "strong": 25.0},
}

#: the largest plausible L∞ budget on the [0, 1] image scale: 64/255 (~0.251); Guardians of Image
#: Quality uses 2/255, 4/255 and 8/255, so anything above is almost surely a value on the 0..255 scale
MAX_LINF_EPS = 64 / 255


def check_budget(name: str, value: Any, upper: float, upper_text: str, alt: str = "") -> float:
    """``value`` as a float if ``0 < value <= upper`` (a budget on the [0, 1] image scale).

    Otherwise an :class:`InputError` with a one-line message naming ``name``, the value, the
    plausible range (``upper_text`` spells ``upper``; ``alt`` adds other accepted values) and
    the likely intent: a value in ``[1, 255]`` was most probably meant on the 0..255 scale, so
    ``value/255`` is suggested when that is plausible.
    """
    rng = f"expected 0 < {name} <= {upper_text} on the [0, 1] image scale{alt}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: {rng} (e.g. {name}=4/255), got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name}={v!r} is not finite: {rng} (e.g. {name}=4/255)")
    if v <= 0:
        raise InputError(f"{name}={value!r} is not positive: {rng} (e.g. {name}=4/255)")
    if v > upper:
        if 1 <= v <= 255 and v / 255 <= upper:
            raise InputError(f"{name}={value!r} is on the 0..255 scale? pass {name}={value!r}/255 "
                             f"(={v / 255:.4g}); {rng}")
        if 1 <= v <= 255:
            raise InputError(f"{name}={value!r} is on the 0..255 scale? even {name}={value!r}/255 "
                             f"(={v / 255:.4g}) is too large; {rng} (e.g. {name}=8/255)")
        what = f"(={v * 255:.4g}/255) " if v < 1 else ""
        raise InputError(f"{name}={value!r} {what}is outside the plausible range: {rng} (e.g. {name}=4/255)")
    return v


def check_linf_eps(eps: Any, name: str = "eps") -> float:
    """:func:`check_budget` for an L∞ budget: ``0 < eps <= MAX_LINF_EPS`` (64/255)."""
    return check_budget(name, eps, MAX_LINF_EPS, "0.251 (64/255)")


def linf_presets(**extra: Any) -> Dict[str, Dict[str, Any]]:
    """The weak / medium / strong presets of an L∞ attack: ``eps`` from :data:`PRESET_BUDGETS`
    plus ``extra`` (e.g. ``steps=10``) in each."""
    return {name: {"eps": eps, **extra} for name, eps in PRESET_BUDGETS[Restriction.LINF].items()}


def check_count(name: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an integer ``>= low`` (iterations, queries, restarts), else one-line InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def linf_box(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds ``(lo, hi)`` of the L∞ ball of radius ``eps`` around ``x``, within [0, 1].

    ``x + eps`` rounds in float arithmetic, so ``hi - x`` can exceed ``eps`` by an ulp. Each bound
    that does is moved towards ``x`` by its excess (at least one float), until ``hi - x <= eps``
    and ``x - lo <= eps`` hold as computed in ``x``'s dtype (compared with ``eps`` in double
    precision), not just in exact arithmetic.
    """
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    for _ in range(64):  # one or two rounds in practice: every round removes the whole excess
        over_hi, over_lo = (hi - x).double() - eps, (x - lo).double() - eps
        if not bool((over_hi > 0).any() or (over_lo > 0).any()):
            return lo, hi
        hi = torch.where(over_hi > 0, torch.minimum(torch.nextafter(hi, x), (hi.double() - over_hi).to(x.dtype)), hi)
        lo = torch.where(over_lo > 0, torch.maximum(torch.nextafter(lo, x), (lo.double() + over_lo).to(x.dtype)), lo)
    raise RuntimeError(f"linf_box: could not fit the bounds within eps={eps!r} in {x.dtype}")


def project_linf(x_adv: torch.Tensor, box: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x_adv`` clipped into the box ``(lo, hi)`` of :func:`linf_box` (the L∞ ball within [0, 1])."""
    return torch.min(torch.max(x_adv, box[0]), box[1])


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L2 ball of radius ``eps`` around ``x`` (per image), then clip to [0, 1].

    Clipping after the ball projection keeps the image in the ball: ``x`` is in [0, 1], so moving a
    coordinate into [0, 1] never moves it away from ``x``. Rounding ``x + d`` to float can still
    overshoot ``eps`` by ~1e-8, so those images are aimed a little inside the ball (1e-7 below
    ``eps``, doubling each round) until the budget holds as :func:`measure` computes it.
    """
    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (x.dim() - 1)))

    d = x_adv - x
    d = d * torch.clamp(eps / per_image(d.flatten(1).norm(dim=1).clamp_min(1e-12)), max=1.0)
    out = (x + d).clamp(0.0, 1.0)
    for r in range(64):
        m = measure(Restriction.L2, out, x)
        over = m > eps
        if not bool(over.any()):
            return out
        shrink = torch.where(over, max(eps - 1e-7 * 2.0 ** r, 0.0) / m.clamp_min(1e-300), torch.ones_like(m))
        fixed = (x + (out - x) * per_image(shrink).to(out.dtype)).clamp(0.0, 1.0)
        out = torch.where(per_image(over), fixed, out)
    raise RuntimeError(f"project_l2: could not fit the L2 budget eps={eps!r} in {out.dtype}")


def measure(restriction: Restriction | str, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image ``[B]``: the quantity ``restriction`` bounds, for ``x_adv`` against the clean ``x``.

    L∞ and L2: the norm of ``x_adv - x``; L0: the number of pixels (positions, any channel) that
    changed; SSIM: :func:`iqaguard.metrics.functional.fidelity_ssim` (RGB, scikit-image's
    convention, as Guardians of Image Quality's code measures it); PSNR: ``functional.psnr`` (RGB).
    """
    r = Restriction(restriction)
    d = (x_adv.double() - x.double()).flatten(1)
    if r is Restriction.LINF:
        return d.abs().amax(dim=1)
    if r is Restriction.L2:
        return d.norm(dim=1)
    if r is Restriction.L0:
        return (x_adv != x).any(dim=1).flatten(1).sum(dim=1).double()
    from ..metrics import functional as F

    return (F._fidelity_ssim(x_adv, x) if r is Restriction.SSIM else F.psnr(x_adv, x)).double()


def within(restriction: Restriction | str, x_adv: torch.Tensor, x: torch.Tensor, budget: float,
           rtol: float = 0.0) -> torch.Tensor:
    """``[B]`` bool: the restriction holds with ``budget`` (norms: ``<= budget``; SSIM/PSNR: ``>=``).

    ``rtol`` loosens the check relatively (calibrated SSIM / PSNR presets are checked at 2%).
    """
    r = Restriction(restriction)
    m = measure(r, x_adv, x)
    if r.upper_is_stronger:
        return m <= budget * (1 + rtol)
    return m >= budget * (1 - rtol)


#: the largest plausible L2 budget (norm of the whole perturbation on the [0, 1] scale): 10.0, the
#: L2 norm of a 4/255 perturbation on every value of a ~512x384 RGB image
MAX_L2_EPS = 10.0


def check_norm_eps(norm: Any, eps: Any) -> Restriction:
    """The restriction named by ``norm`` (``"linf"`` | ``"l2"``) after checking ``eps`` against it."""
    if norm not in (Restriction.LINF, Restriction.L2):
        raise InputError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    r = Restriction(norm)
    if r is Restriction.LINF:
        check_linf_eps(eps)
    else:
        check_budget("eps", eps, MAX_L2_EPS, "10 (an L2 norm over the whole image)")
    return r


def hold(restriction: Restriction | str, x_adv: torch.Tensor, x: torch.Tensor, budget: float,
         iters: int = 30) -> torch.Tensor:
    """Per image, ``x + t (x_adv - x)`` with the largest ``t`` in [0, 1] (bisection, ``iters``
    halvings) for which :func:`within` holds; images that already meet the budget are returned
    unchanged, ``t = 0`` is ``x`` itself.

    Every restriction tightens monotonically along the segment (a norm or the MSE grows with
    ``t``; the segment stays in [0, 1] because both ends do), so the bisection is exact up to
    ``2^-iters``. Attacks whose iterates may miss an SSIM / PSNR floor (by construction or by
    float rounding) finish with it.
    """
    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (x.dim() - 1)))

    ok = within(restriction, x_adv, x, budget).to(x.device)
    if bool(ok.all()):
        return x_adv
    d = x_adv - x
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        good = within(restriction, x + per_image(mid) * d, x, budget).to(x.device)
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return torch.where(per_image(ok), x_adv, x + per_image(lo) * d)  # every lo > 0 was checked


class Ball:
    """The feasible set of a batch: the L∞ or L2 ball of radius ``eps`` around each image, in [0, 1].

    Args:
        x: clean images ``[B, 3, H, W]`` in [0, 1].
        eps: the budget (L∞: per value; L2: norm of the whole perturbation of an image).
        norm: ``Restriction.LINF`` or ``Restriction.L2``.
    """

    def __init__(self, x: torch.Tensor, eps: float, norm: Restriction) -> None:
        self.x, self.eps, self.norm = x, float(eps), Restriction(norm)
        self.box = linf_box(x, self.eps) if self.norm is Restriction.LINF else None

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (self.x.dim() - 1)))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` projected onto the set; the budget holds exactly as :func:`~.budgets.measure` computes it."""
        if self.norm is Restriction.LINF:
            return project_linf(z, self.box)
        return project_l2(z, self.x, self.eps)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit norm: ``sign(g)`` (L∞) or ``g / ||g||_2`` per image (L2)."""
        if self.norm is Restriction.LINF:
            return g.sign()
        return g / self._view(g.flatten(1).norm(dim=1).clamp_min(1e-12))

    def random_point(self, generator: torch.Generator) -> torch.Tensor:
        """A random point of the set: uniform in the L∞ ball, or a uniformly scaled random direction (L2).

        Random numbers are drawn on the generator's device and moved to the images' device.
        """
        shape, dev = self.x.shape, generator.device
        if self.norm is Restriction.LINF:
            u = torch.rand(shape, generator=generator, device=dev) * 2 - 1
            return self.project(self.x + self.eps * u.to(self.x))
        d = torch.randn(shape, generator=generator, device=dev)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        r = torch.rand(shape[0], generator=generator, device=dev).view(-1, 1, 1, 1)
        return self.project(self.x + (self.eps * r * d).to(self.x))
