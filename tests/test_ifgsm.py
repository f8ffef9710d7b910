"""I-FGSM (Kurakin et al. 2017) on tiny analytic metrics."""
import pytest
import torch
from torch import nn

from iqaguard.attacks.ifgsm import IFGSM
from iqaguard.errors import InputError
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import ATTACKS


class Brightness(Metric):
    """NR, higher-better, linear: mean pixel value."""

    name = "brightness"
    bounds = Bounds(0.0, 1.0)

    def score(self, x, ref=None):
        return x.mean(dim=(1, 2, 3))


class Darkness(Brightness):
    """NR, lower-better: same value, lower means better quality."""

    name = "darkness"
    lower_better = True
    bounds = Bounds(worst=1.0, best=0.0)


class Weighted(Metric):
    """NR, linear with a fixed +-1 weight per pixel: the gradient sign is the weight sign."""

    name = "weighted"
    bounds = Bounds(-5.0, 5.0)

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def score(self, x, ref=None):
        return (x * self.w).sum(dim=(1, 2, 3))


class Tiny(Metric):
    """NR, nonlinear, with trainable parameters."""

    name = "tiny"

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.3)
            self.conv.bias.zero_()

    def score(self, x, ref=None):
        return torch.tanh(self.conv(x)).pow(2).mean(dim=(1, 2, 3))


class Similarity(Metric):
    """FR, higher-better: minus the mean squared distance to the reference."""

    name = "similarity"
    kind = "fr"
    bounds = Bounds(-1.0, 0.0)

    def score(self, x, ref=None):
        return -(x - ref).pow(2).mean(dim=(1, 2, 3))


def _images(b=2, h=8, lo=0.1, hi=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(b, 3, h, h, generator=g)


def test_linear_metric_moves_each_pixel_by_eps_in_sign_direction():
    g = torch.Generator().manual_seed(3)
    w = torch.randint(0, 2, (1, 3, 8, 8), generator=g).float() * 2 - 1
    x = _images()  # in [0.1, 0.9]: no clipping at eps = 8/255
    eps = 8 / 255
    x_adv = IFGSM(eps=eps, steps=10)(Weighted(w), x)
    torch.testing.assert_close(x_adv - x, eps * w.expand_as(x), atol=1e-6, rtol=0)


def test_clipping_to_valid_range_and_lower_better_direction():
    x = torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0]).view(1, 1, 1, 5).expand(1, 3, 2, 5).contiguous()
    eps = 8 / 255
    up = IFGSM(eps=eps)(Brightness(), x)
    torch.testing.assert_close(up, (x + eps).clamp(max=1.0), atol=1e-6, rtol=0)
    down = IFGSM(eps=eps)(Darkness(), x)  # lower-better: the attack lowers the score
    torch.testing.assert_close(down, (x - eps).clamp(min=0.0), atol=1e-6, rtol=0)
    assert Darkness()(down).item() < Darkness()(x).item()


@pytest.mark.parametrize("eps, steps, alpha", [(2 / 255, 10, None), (4 / 255, 3, 1.0), (8 / 255, 5, 3 / 255)])
def test_nonlinear_metric_stays_in_budget_and_improves(eps, steps, alpha):
    m = Tiny()
    assert not m.training  # metrics leave their constructor in eval mode
    m.train()  # a user's choice: the attack runs in eval mode and gives the flag back
    x = _images(b=3, h=12, lo=0.0, hi=1.0)
    x_adv = IFGSM(eps=eps, steps=steps, alpha=alpha)(m, x)
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (m(x_adv) > m(x)).all()
    # gradients were taken w.r.t. the input only: the metric's parameters got none
    assert all(p.grad is None for p in m.parameters())
    assert all(p.requires_grad for p in m.parameters())  # parameter gradients were off only during the attack
    assert m.training and m.conv.training  # the attack restores the mode it found, module by module


def test_budget_holds_in_float_arithmetic_not_only_in_exact_arithmetic():
    from iqaguard.attacks.budgets import linf_box

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    x[0, 0, 0, :4] = torch.tensor([2 / 255, 4 / 255, 8 / 255, 1 - 4 / 255])  # x - eps rounds to 0 or x + eps to 1
    x[0, 0, 1, :3] = torch.tensor([1e-9, 1 - 1e-7, 0.0])
    for eps in (2 / 255, 4 / 255, 8 / 255):
        naive = (x + eps).clamp(max=1.0) - x
        assert (naive.double() > eps).any()  # float rounding overshoots the budget somewhere
        lo, hi = linf_box(x, eps)
        assert float((hi - x).double().max()) <= eps and float((x - lo).double().max()) <= eps
        assert float((hi - x).max()) > eps - 1e-6 and lo.min() >= 0 and hi.max() <= 1  # one float short, no more
    w = torch.ones(1, 3, 1, 1)
    x_adv = IFGSM(eps=4 / 255, steps=10)(Weighted(w), x.clamp(0.1, 0.9))
    assert float((x_adv - x.clamp(0.1, 0.9)).abs().double().max()) <= 4 / 255


def test_full_reference_perturbs_x_only_and_needs_ref():
    x = _images(lo=0.2, hi=0.4)
    ref = torch.full_like(x, 0.7)  # every pixel of x is more than eps below ref
    ref_before = ref.clone()
    eps = 4 / 255
    x_adv = IFGSM(eps=eps)(Similarity(), x, ref=ref)
    torch.testing.assert_close(x_adv, x + eps, atol=1e-6, rtol=0)  # moved towards ref by eps
    assert torch.equal(ref, ref_before)
    with pytest.raises(InputError, match="ref"):
        IFGSM()(Similarity(), x)


def test_presets_defaults_and_registry():
    for name, k in (("weak", 2), ("medium", 4), ("strong", 8)):
        a = ATTACKS.create("ifgsm", preset=name)
        assert isinstance(a, IFGSM) and a.eps == pytest.approx(k / 255) and a.steps == 10
    a = IFGSM()
    assert a.eps == pytest.approx(4 / 255) and a.steps == 10 and a.alpha is None
    assert a.step_size == pytest.approx(4 / 255 / 10)
    assert IFGSM(eps=0.1, steps=4, alpha=0.05).step_size == pytest.approx(0.05)
    assert IFGSM.restriction == "linf"


@pytest.mark.parametrize("kwargs, name", [
    ({"eps": 0.0}, "eps"), ({"eps": float("nan")}, "eps"), ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"), ({"alpha": -1.0}, "alpha"), ({"preset": "huge"}, "preset"),
    ({"gamma": 1}, "gamma"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(InputError, match=name):
        IFGSM(**kwargs)


class Wavy(Metric):
    """NR, per-pixel nonlinear: the gradient sign changes with the pixel value."""

    name = "wavy"
    bounds = Bounds(-1.0, 1.0)

    def score(self, x, ref=None):
        return torch.sin(6 * x).mean(dim=(1, 2, 3))


def test_deterministic_batched_and_under_no_grad():
    x = _images(b=3, h=10, lo=0.0, hi=1.0)
    a = IFGSM(preset="medium")
    first = a(Wavy(), x)
    with torch.no_grad():  # the attack enables autograd itself
        second = a(Wavy(), x)
    assert torch.equal(first, second)
    # images of a batch do not interact: attacking one at a time gives the same result
    one_by_one = torch.cat([a(Wavy(), x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(first, one_by_one, atol=1e-7, rtol=0)
    assert (Wavy()(first) > Wavy()(x)).all()


def test_non_differentiable_metric_is_a_clear_error():
    class Frozen(Brightness):
        def score(self, x, ref=None):
            return x.detach().mean(dim=(1, 2, 3))

    with pytest.raises(InputError, match="not differentiable"):
        IFGSM()(Frozen(), _images())
