"""JPEG purification and defend(): exact values, BPDA, chain rule, EOT, adaptive I-FGSM."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard.attacks.ifgsm import IFGSM
from iqaguard.defenses.base import Purification
from iqaguard.defenses.defend import DefendedMetric, defend
from iqaguard.defenses.purification.jpeg import JPEG
from iqaguard.errors import InputError
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import DEFENSES


class Quadratic(Metric):
    """NR, ``sum(w * x^2)`` per image: gradient ``2 w x``."""

    name = "quad"
    bounds = Bounds(0.0, 10.0)

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def score(self, x, ref=None):
        return (self.w * x * x).sum(dim=(1, 2, 3))


class Brightness(Metric):
    name = "brightness"

    def score(self, x, ref=None):
        return x.mean(dim=(1, 2, 3))


class Distance(Metric):
    """FR, lower-better: mean absolute difference to the reference."""

    name = "dist"
    kind = "fr"
    lower_better = True
    bounds = Bounds(worst=1.0, best=0.0)

    def score(self, x, ref=None):
        return (x - ref).abs().mean(dim=(1, 2, 3))


class Affine(Purification):
    """Differentiable ``P(x) = 0.5 x + 0.25``."""

    differentiable = True

    def apply(self, x, generator=None):
        return 0.5 * x + 0.25


class Jitter(Purification):
    """Randomized, differentiable ``P(x) = 0.8 x + 0.1 u``, ``u ~ U[0, 1)`` (stays in [0, 1))."""

    differentiable = True
    randomized = True

    def apply(self, x, generator=None):
        return 0.8 * x + 0.1 * torch.rand(x.shape, generator=generator, dtype=x.dtype)


class FrozenJitter(Jitter):
    """The same draws, declared non-differentiable (BPDA + EOT)."""

    differentiable = False


def _image(b=2, h=16, seed=0):
    return torch.rand(b, 3, h, h, generator=torch.Generator().manual_seed(seed))


def _weights(h=16, seed=1):
    return torch.rand(1, 3, h, h, generator=torch.Generator().manual_seed(seed))


def _grad(metric, x, ref=None):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(metric(x, ref).sum(), x)
    return g


# ---------------------------------------------------------------- JPEG
@pytest.mark.parametrize("q", [10, 50, 90])
def test_jpeg_equals_pil_round_trip(q):
    x = _image()
    out = JPEG(q=q)(x)
    for i in range(x.shape[0]):
        arr = (x[i].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=q)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(out[i], torch.from_numpy(decoded).permute(2, 0, 1))


def test_jpeg_lower_quality_removes_more():
    x = _image(b=1, h=32)  # uniform noise: maximally textured
    errors = [((JPEG(q=q)(x) - x) ** 2).mean().item() for q in (90, 70, 50, 30, 10)]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_jpeg_presets_flags_and_registry():
    assert [JPEG(preset=i).q for i in range(5)] == [90, 70, 50, 30, 10]  # weakest first
    assert JPEG().q == 50 and not JPEG.differentiable and not JPEG.randomized
    assert DEFENSES.create("jpeg", q=30).q == 30
    for bad in (0, 101, 50.0, True):
        with pytest.raises(InputError, match="q"):
            JPEG(q=bad)
    with pytest.raises(InputError, match="preset"):
        JPEG(preset=5)


# ---------------------------------------------------------------- defend(): values and module
def test_defended_metric_value_and_attributes():
    m, p = Quadratic(_weights()), JPEG(q=30)
    dm = defend(m, p)
    x = _image()
    assert torch.equal(dm(x), m(p(x)))
    assert isinstance(dm, DefendedMetric) and isinstance(dm, Metric)
    assert (dm.kind, dm.lower_better, dm.bounds, dm.name) == ("nr", False, Bounds(0.0, 10.0), "quad+JPEG")
    assert dm.metric is m and m in list(dm.children())
    dm.eval()
    assert not m.training
    dm.to(torch.float64)
    assert m.w.dtype == torch.float64


def test_defended_full_reference_metric():
    m = Distance()
    dm = defend(m, Affine())
    x, ref = _image(seed=2), _image(seed=3)
    assert (dm.kind, dm.lower_better, dm.bounds) == ("fr", True, m.bounds)
    torch.testing.assert_close(dm(x, ref), m(0.5 * x + 0.25, ref))  # ref is not purified
    with pytest.raises(InputError, match="ref"):
        dm(x)


# ---------------------------------------------------------------- gradients
def test_bpda_gradient_is_metric_gradient_at_purified_input():
    class Quantise(Purification):
        """Non-differentiable, no surrogate: BPDA with the identity."""

        def apply(self, x, generator=None):
            return torch.round(x * 7) / 7

    w = _weights()
    m, p = Quadratic(w), Quantise()
    x = _image()
    px = p(x)
    expected = 2 * w * px  # grad of sum(w x^2) evaluated at P(x), identity backward for P
    torch.testing.assert_close(_grad(defend(m, p), x), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(_grad(defend(m, p), x), _grad(m, px), atol=0, rtol=0)


def test_jpeg_bpda_differentiates_its_diffjpeg_surrogate():
    w = _weights()
    m, p = Quadratic(w), JPEG(q=30)
    x = _image()
    px = p(x)
    assert torch.equal(defend(m, p)(x), m(px))  # the value is real JPEG's
    # backward: the surrogate's vector-Jacobian product with grad f at P(x)
    xs = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((p.surrogate().apply(xs).clamp(0, 1) * (2 * w * px)).sum(), xs)
    got = _grad(defend(m, p), x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, 2 * w * px, atol=1e-3)  # not the identity


def test_differentiable_purification_gets_exact_chain_rule():
    w = _weights()
    x = _image()
    # d/dx sum(w (0.5 x + 0.25)^2) = 2 w (0.5 x + 0.25) * 0.5
    expected = w * (0.5 * x + 0.25)
    torch.testing.assert_close(_grad(defend(Quadratic(w), Affine()), x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cls, factor", [(Jitter, 0.8), (FrozenJitter, 1.0)])
def test_eot_averages_draws_from_the_generator(cls, factor):
    w, x, k = _weights(), _image(), 4
    dm = defend(Quadratic(w), cls(), eot_samples=k, generator=torch.Generator().manual_seed(7))
    value = dm(x)
    grad = _grad(defend(Quadratic(w), cls(), eot_samples=k, generator=torch.Generator().manual_seed(7)), x)
    g = torch.Generator().manual_seed(7)
    draws = [cls().apply(x, g) for _ in range(k)]
    manual = sum((w * d * d).sum(dim=(1, 2, 3)) for d in draws) / k
    torch.testing.assert_close(value, manual, atol=1e-6, rtol=1e-6)
    # exact chain rule (factor 0.8) or BPDA (identity, factor 1) averaged over the same draws
    manual_grad = sum(2 * w * d * factor for d in draws) / k
    torch.testing.assert_close(grad, manual_grad, atol=1e-6, rtol=1e-6)
    # the generator's stream continues: a second call uses new draws
    assert not torch.equal(dm(x), value)


def test_eot_ignored_for_deterministic_purification():
    class Counting(Affine):
        calls = 0

        def apply(self, x, generator=None):
            Counting.calls += 1
            return super().apply(x, generator)

    defend(Brightness(), Counting(), eot_samples=5)(_image())
    assert Counting.calls == 1


@pytest.mark.parametrize("kwargs, name", [
    ({"metric": torch.nn.Identity()}, "metric"), ({"purification": lambda x: x}, "purification"),
    ({"eot_samples": 0}, "eot_samples"), ({"generator": 3}, "generator"),
])
def test_defend_rejects_bad_arguments(kwargs, name):
    args = {"metric": Brightness(), "purification": JPEG(), **kwargs}
    with pytest.raises(InputError, match=name):
        defend(**args)


# ---------------------------------------------------------------- adaptive attack
def test_adaptive_ifgsm_through_jpeg_stays_in_budget_and_raises_defended_score():
    dm = defend(Brightness(), JPEG(q=50))
    x = 0.1 + 0.8 * _image(h=32)
    eps = 8 / 255
    x_adv = IFGSM(eps=eps, steps=5)(dm, x)
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    # BPDA differentiates the DiffJPEG surrogate, whose quantiser passes each DCT coefficient's
    # gradient with the cubic rounding slope 3 (z - round z)^2: the step is no longer +eps
    # everywhere (the identity BPDA's), yet it raises brightness on average, and JPEG keeps the
    # DC level, so the defended score rises too
    assert not torch.allclose(x_adv, x + eps, atol=1e-6)
    assert (x_adv - x).mean() > 0.5 * eps
    assert (dm(x_adv) > dm(x) + 0.5 * eps).all()


def test_bpda_needs_shape_preserving_purification():
    class Halve(Purification):
        def apply(self, x, generator=None):
            return x[..., ::2, ::2]

    with pytest.raises(InputError, match="shape"):
        defend(Brightness(), Halve())(_image())
