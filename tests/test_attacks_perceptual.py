"""Perceptual white-box attacks: Korhonen et al. (Sobel-masked steps) and MADC (MSE level set)."""
import math
from functools import partial

import pytest
import torch

import iqaguard.attacks as attacks
import iqaguard.metrics as metrics
from iqaguard.attacks.budgets import Restriction, measure, within
from iqaguard.attacks.korhonen import Korhonen, sobel_mask
from iqaguard.attacks.madc import MADC, to_level
from iqaguard.errors import InputError

from attack_toys import Linear, LinearFR, LinearLower, interior, photo_crops


_interior = partial(interior, size=16, seed=1, low=0.2, width=0.6)


@pytest.fixture(scope="module")
def crops():
    """6 central 64x64 crops of the builtin photographs."""
    return photo_crops(6)


@pytest.fixture(scope="module")
def nr():
    return metrics.create("builtin-nr")


def _gain(m, x_adv, x, ref=None):
    with torch.no_grad():
        return m.improvement_sign() * (m.score(x_adv, ref) - m.score(x, ref))


# --- Korhonen et al. ---------------------------------------------------------------------------

def test_korhonen_registered_with_linf_presets():
    a = attacks.create("korhonen", preset="weak")
    assert isinstance(a, Korhonen) and a.restriction is Restriction.LINF and Korhonen.varied == "eps"
    assert {k: v["eps"] for k, v in Korhonen.presets.items()} == {"weak": 2 / 255, "medium": 4 / 255,
                                                                   "strong": 8 / 255}
    assert a.step_size == pytest.approx(2 * (2 / 255) / 10)


def test_sobel_mask_is_zero_on_flat_regions():
    assert torch.equal(sobel_mask(torch.full((2, 3, 8, 8), 0.3)), torch.zeros(2, 1, 8, 8))
    x = torch.zeros(1, 3, 8, 8)
    x[..., 4:] = 1.0  # a vertical step edge between columns 3 and 4
    m = sobel_mask(x)
    assert float(m.max()) == 1.0 and torch.equal(m[..., :3], torch.zeros(1, 1, 8, 3))
    assert bool((m[..., 3:5] > 0).all()) and torch.equal(m[..., 5:], torch.zeros(1, 1, 8, 3))


def test_korhonen_spares_flat_region_and_perturbs_texture():
    g = torch.Generator().manual_seed(5)
    x = torch.full((2, 3, 16, 16), 0.5)
    x[..., 8:] = 0.2 + 0.6 * torch.rand(2, 3, 16, 8, generator=g)  # right half textured
    m = Linear.random()
    eps = 8 / 255
    x_adv = Korhonen(eps=eps, steps=10)(m, x)
    change = (x_adv - x).abs()
    assert torch.equal(change[..., :6], torch.zeros_like(change[..., :6]))  # flat, off the border
    assert float(change[..., 9:].mean()) > 0.3 * eps
    assert bool(within(Restriction.LINF, x_adv, x, eps).all())
    assert bool((m(x_adv) > m(x)).all())


def test_korhonen_energy_follows_sobel_magnitude_on_photos(crops, nr):
    eps = 4 / 255
    x_adv = Korhonen(eps=eps)(nr, crops)
    energy = (x_adv - crops).pow(2).sum(dim=1).flatten(1)
    mask = sobel_mask(crops).flatten(1)
    top = mask >= mask.median(dim=1, keepdim=True).values
    share = (energy * top).sum(dim=1) / energy.sum(dim=1)
    # measured: 0.89..1.00 of the energy on the more textured half of the pixels
    assert bool((share > 0.8).all())
    assert bool(within(Restriction.LINF, x_adv, crops, eps).all())
    gain = _gain(nr, x_adv, crops)
    assert bool((gain > 0).all()) and float(gain.mean()) > 0.2  # measured: 0.30..1.14, mean 0.64


@pytest.mark.parametrize("metric_cls", [LinearLower, LinearFR])
def test_korhonen_lower_better_and_fr(metric_cls):
    m = metric_cls.random()
    x, ref = _interior(2, seed=2), _interior(2, seed=3)
    ref_arg = ref if m.kind == "fr" else None
    x_adv = Korhonen(eps=4 / 255)(m, x, ref=ref_arg)
    assert bool((_gain(m, x_adv, x, ref_arg) > 0).all())
    assert bool(within(Restriction.LINF, x_adv, x, 4 / 255).all())


@pytest.mark.parametrize("kwargs", [{"eps": 4}, {"steps": 0}, {"alpha": 0.0}])
def test_korhonen_invalid_arguments(kwargs):
    with pytest.raises(InputError) as e:
        Korhonen(**kwargs)
    assert "\n" not in str(e.value)


# --- MADC --------------------------------------------------------------------------------------

def test_madc_registered_with_psnr_presets():
    a = attacks.create("madc", preset="strong")
    assert isinstance(a, MADC) and a.restriction is Restriction.PSNR and MADC.varied == "psnr"
    assert {k: v["psnr"] for k, v in MADC.presets.items()} == {"weak": 35.0, "medium": 30.0, "strong": 25.0}
    assert a.mse == pytest.approx(10 ** -2.5)


@pytest.mark.parametrize("preset", ["weak", "medium", "strong"])
def test_madc_holds_mse_and_beats_random_noise_of_same_mse(preset, crops, nr):
    a = MADC(preset=preset)
    x_adv = a(nr, crops)
    mse = (x_adv.double() - crops.double()).pow(2).flatten(1).mean(dim=1)
    assert torch.allclose(mse / a.mse, torch.ones_like(mse), rtol=0.01)  # measured: within 1.3e-7
    assert bool(within(Restriction.PSNR, x_adv, crops, a.psnr).all())
    radius = torch.full((crops.shape[0],), math.sqrt(a.mse * crops[0].numel()), dtype=torch.float64)
    noise = torch.randn(crops.shape, generator=torch.Generator().manual_seed(11))
    x_rand = to_level(crops, noise, radius)
    assert torch.allclose(measure(Restriction.PSNR, x_rand, crops), torch.full_like(mse, a.psnr), atol=0.01)
    gain, gain_rand = _gain(nr, x_adv, crops), _gain(nr, x_rand, crops)
    # measured (mean gain, score range ~5.5), weak/medium/strong: MADC 0.91, 0.94, 0.85 (each image
    # >= 0.47); random 0.15, -0.27, -0.95
    assert bool((gain > gain_rand).all()) and bool((gain > 0).all())


def test_madc_finds_the_linear_optimum_on_the_sphere():
    m = Linear.random()
    x = _interior(2)
    a = MADC(psnr=35.0, steps=50)
    d = (a(m, x) - x).flatten(1)
    cos = torch.nn.functional.cosine_similarity(d, m.w.flatten(1), dim=1)
    assert bool((cos > 0.999).all())  # measured 1.0000; the maximiser of <w, d> on ||d|| = r is d = r w / ||w||


@pytest.mark.parametrize("metric_cls", [LinearLower, LinearFR])
def test_madc_lower_better_and_fr(metric_cls):
    m = metric_cls.random()
    x, ref = _interior(2, seed=2), _interior(2, seed=3)
    ref_arg = ref if m.kind == "fr" else None
    ref0 = ref.clone()
    a = MADC(psnr=30.0, steps=20)
    x_adv = a(m, x, ref=ref_arg)
    assert torch.equal(ref, ref0)
    assert bool((_gain(m, x_adv, x, ref_arg) > 0).all())
    assert bool(within(Restriction.PSNR, x_adv, x, 30.0).all())


def test_madc_is_deterministic_given_generator():
    m, x = Linear.random(), _interior(2)
    a = MADC(psnr=30.0, steps=5)
    default = a(m, x)
    assert torch.equal(default, a(m, x, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(a(m, x, generator=torch.Generator().manual_seed(3)),
                       a(m, x, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("kwargs", [{"psnr": 0.0}, {"psnr": 100.0}, {"psnr": float("nan")},
                                    {"psnr": "30"}, {"steps": 0}, {"lr": 2.0}])
def test_madc_invalid_arguments(kwargs):
    with pytest.raises(InputError) as e:
        MADC(**kwargs)
    assert "\n" not in str(e.value)
