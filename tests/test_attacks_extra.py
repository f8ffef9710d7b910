"""Zhang et al. (SSIM floor), SSAH (high-frequency L∞) and stAdv (bounded flow) on the builtin metrics."""
import math

import pytest
import torch
import torch.nn.functional as F

import iqaguard.attacks as attacks
import iqaguard.metrics as metrics
from iqaguard.attacks.budgets import PRESET_BUDGETS, Restriction, measure, within
from iqaguard.attacks.ssah import SSAH, haar_ll, project_high
from iqaguard.attacks.stadv import StAdv, flow_tv, warp
from iqaguard.attacks.budgets import hold
from iqaguard.attacks.zhang import Zhang
from iqaguard.errors import InputError

from attack_toys import gen, photo_crops


@pytest.fixture(scope="module")
def nr():
    return metrics.create("builtin-nr")


@pytest.fixture(scope="module")
def crops():
    """6 central 64x64 crops of every 20th builtin photograph."""
    return photo_crops(6, size=64, step=20)


@pytest.fixture(scope="module")
def zhang_runs(nr, crops):
    """Zhang et al. at the three presets: ``{preset: x_adv}``."""
    return {p: Zhang(preset=p)(nr, crops) for p in ("weak", "medium", "strong")}


def _gain(m, x_adv, x):
    return (m.score(x_adv) - m.score(x)).detach()


# ---- Zhang et al. -------------------------------------------------------------------------------

def test_zhang_raises_the_score_and_holds_the_ssim_floor_exactly(nr, crops, zhang_runs):
    for preset, x_adv in zhang_runs.items():
        floor = PRESET_BUDGETS[Restriction.SSIM][preset]
        assert bool(within(Restriction.SSIM, x_adv, crops, floor).all()), preset
        assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
        gain = _gain(nr, x_adv, crops)
        assert int((gain > 0.05).sum()) >= 5, (preset, gain)  # measured: all 6 rise by 0.6..1.6
    # the floor binds on most images at the strong preset (measured SSIM 0.76..0.91)
    assert int((measure(Restriction.SSIM, zhang_runs["strong"], crops) < 0.9).sum()) >= 3


def test_zhang_lower_floor_gains_at_least_as_much(nr, crops, zhang_runs):
    weak, strong = (_gain(nr, zhang_runs[p], crops).mean() for p in ("weak", "strong"))
    assert float(strong) >= float(weak) - 1e-6  # measured: 1.06 vs 1.02


def test_zhang_is_deterministic_and_works_on_fr(crops):
    fr = metrics.create("builtin-fr")  # lower-better: the attack lowers the distance to ref
    ref = crops[:3]
    x = (ref + 0.08 * torch.randn(ref.shape, generator=gen(4))).clamp(0, 1)
    a = Zhang(preset="medium", steps=15)
    x_adv = a(fr, x, ref=ref)
    assert torch.equal(x_adv, a(fr, x, ref=ref, generator=gen(5)))
    assert bool(within(Restriction.SSIM, x_adv, x, 0.8).all())
    assert bool((fr.score(x_adv, ref) < fr.score(x, ref)).all())


def test_hold_ssim_pulls_back_only_the_images_below_the_floor(crops):
    noisy = (crops + 0.3 * torch.randn(crops.shape, generator=gen(1))).clamp(0, 1)
    x_adv = torch.cat([crops[:1], noisy[1:]])
    held = hold("ssim", x_adv, crops, 0.9)
    assert bool(within(Restriction.SSIM, held, crops, 0.9).all())
    assert torch.equal(held[0], crops[0])
    s = measure(Restriction.SSIM, held[1:], crops[1:])
    assert float(s.max()) < 0.91  # the largest step that holds: close to the floor


# ---- SSAH ---------------------------------------------------------------------------------------

def test_ssah_raises_the_score_within_linf_with_no_low_frequency_change(nr, crops):
    for preset in ("weak", "strong"):
        a = SSAH(preset=preset)
        x_adv = a(nr, crops)
        assert bool(within(Restriction.LINF, x_adv, crops, a.eps).all())
        assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
        assert float(haar_ll(x_adv - crops).abs().max()) < 1e-6  # measured: ~5e-8
        gain = _gain(nr, x_adv, crops)
        assert int((gain > 0.05).sum()) >= 5, (preset, gain)  # measured: 0.49..1.5
        assert torch.equal(x_adv, a(nr, crops, generator=gen(3)))


def test_project_high_is_an_exact_projection_on_odd_sizes():
    d = torch.randn(2, 3, 7, 9, generator=gen(2)) * 0.05
    lo, hi = -0.02 * torch.ones_like(d), 0.03 * torch.ones_like(d)
    p = project_high(d, lo, hi)
    assert bool((p >= lo).all() and (p <= hi).all())
    assert float(haar_ll(p).abs().max()) < 1e-6
    assert float(p[..., -1, -1].abs().max()) == 0.0  # a 1x1 corner block is pinned to 0
    z = d - haar_ll(d).repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :7, :9] / 2
    assert float((project_high(z, -torch.ones_like(d), torch.ones_like(d)) - z)[..., :6, :8].abs().max()) < 1e-6


def test_ssah_on_fr_and_odd_sizes(crops):
    fr = metrics.create("builtin-fr")
    x, ref = (0.7 * crops[:2] + 0.15).contiguous()[..., :63, :61], crops[:2, :, :63, :61]
    x_adv = SSAH(preset="medium", steps=8)(fr, x, ref=ref)
    assert bool(within(Restriction.LINF, x_adv, x, 4 / 255).all())
    assert float(haar_ll(x_adv - x).abs().max()) < 1e-6
    assert bool((fr.score(x_adv, ref) < fr.score(x, ref)).all())


# ---- stAdv --------------------------------------------------------------------------------------

def _window_range(x, radius):
    pad = F.pad(x, (radius,) * 4, mode="replicate")
    return -F.max_pool2d(-pad, 2 * radius + 1, 1), F.max_pool2d(pad, 2 * radius + 1, 1)


def test_stadv_raises_the_score_with_a_bounded_flow(nr, crops):
    for preset in ("weak", "strong"):
        a = StAdv(preset=preset)
        x_adv = a(nr, crops)
        assert a.flow.shape == (6, 2, 64, 64)
        assert float(a.flow.abs().max()) <= a.max_flow
        assert torch.allclose(x_adv, warp(crops, a.flow).clamp(0, 1), atol=1e-6)
        lo, hi = _window_range(crops, math.ceil(a.max_flow))  # the documented bound on the image
        assert float((lo - x_adv).max()) < 1e-5 and float((x_adv - hi).max()) < 1e-5
        assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
        gain = _gain(nr, x_adv, crops)
        assert int((gain > 0.05).sum()) >= 5, (preset, gain)  # measured: 0.34..1.3
        first = x_adv.clone()
        assert torch.equal(first, a(nr, crops, generator=gen(9)))


def test_stadv_tv_and_warp_basics(crops):
    zero = torch.zeros(2, 2, 64, 64)
    assert float((warp(crops[:2], zero) - crops[:2]).abs().max()) < 1e-5
    shift = zero.clone()
    shift[:, 0] = 1.0  # read one pixel to the right: a constant flow has (almost) no TV
    assert torch.allclose(warp(crops[:2], shift)[..., :-1], crops[:2, ..., 1:], atol=1e-5)
    assert float(flow_tv(shift).max()) < 1e-3 < float(flow_tv(torch.randn(2, 2, 64, 64, generator=gen(0))).min())


def test_stadv_on_fr(crops):
    fr = metrics.create("builtin-fr")
    x, ref = crops[:2].roll(1, dims=-1), crops[:2]
    a = StAdv(preset="medium")
    x_adv = a(fr, x, ref=ref)
    assert bool((fr.score(x_adv, ref) < fr.score(x, ref)).all())


# ---- arguments and presets ----------------------------------------------------------------------

@pytest.mark.parametrize("name, restriction, varied, values", [
    ("zhang", Restriction.SSIM, "ssim", (0.9, 0.8, 0.75)),
    ("ssah", Restriction.LINF, "eps", (2 / 255, 4 / 255, 8 / 255)),
    ("stadv", Restriction.LINF, "max_flow", (0.25, 0.5, 1.0)),
])
def test_presets_resolve(name, restriction, varied, values):
    for preset, v in zip(("weak", "medium", "strong"), values):
        a = attacks.create(name, preset=preset)
        assert a.restriction is restriction and a.varied == varied
        assert a.params[varied] == pytest.approx(v)
    assert attacks.create(name, preset="strong", steps=3).params["steps"] == 3


@pytest.mark.parametrize("name, kwargs, text", [
    ("zhang", {"ssim": 1.0}, "ssim: expected an SSIM floor"),
    ("zhang", {"ssim": -0.2}, "ssim: expected an SSIM floor"),
    ("zhang", {"ssim": float("nan")}, "ssim: expected an SSIM floor"),
    ("zhang", {"steps": 0}, "steps: expected an integer >= 1"),
    ("zhang", {"lam": -1}, "lam: expected a finite weight"),
    ("zhang", {"lr": 4}, "lr=4 is on the 0..255 scale"),
    ("zhang", {"fidelity": "lpips"}, "fidelity: expected one of"),
    ("ssah", {"eps": 8}, "eps=8 is on the 0..255 scale"),
    ("ssah", {"steps": 1.5}, "steps: expected an integer"),
    ("ssah", {"alpha": 0}, "alpha=0 is not positive"),
    ("stadv", {"max_flow": 0}, "max_flow: expected a flow bound in pixels"),
    ("stadv", {"max_flow": 100}, "max_flow: expected a flow bound in pixels"),
    ("stadv", {"tau": -0.1}, "tau: expected a finite smoothness weight"),
    ("stadv", {"alpha": 2.0}, "alpha: expected a step in pixels"),
    ("stadv", {"bogus": 1}, "unknown argument"),
    ("zhang", {"preset": "huge"}, "unknown preset 'huge'"),
])
def test_bad_arguments_are_one_line_errors(name, kwargs, text):
    with pytest.raises(InputError, match=text) as e:
        attacks.create(name, **kwargs)
    assert "\n" not in str(e.value)


def test_zhang_rejects_images_below_the_ssim_window(nr):
    with pytest.raises(InputError, match="SSIM"):
        Zhang(steps=1)(nr, torch.rand(1, 3, 6, 6, generator=gen(0)))
