"""Universal attacks UAP and Optimized-UAP: fit once, then resize-add-clip."""
from functools import partial

import pytest
import torch

import iqaguard.attacks as attacks
import iqaguard.metrics as metrics
from iqaguard.attacks.budgets import Restriction, within
from iqaguard.attacks.uap import UAP, OptimizedUAP
from iqaguard.errors import InputError

from attack_toys import Linear, LinearFR, LinearLower, interior, photo_crops

KINDS = [UAP, OptimizedUAP]


_interior = partial(interior, size=16, seed=1, low=0.2, width=0.6)


@pytest.fixture(scope="module")
def crops():
    """16 central 64x64 crops of the builtin photographs: 8 to fit on, 8 held out."""
    x = photo_crops(16)
    return x[:8], x[8:]


@pytest.fixture(scope="module")
def nr():
    return metrics.create("builtin-nr")


@pytest.mark.parametrize("cls", KINDS)
def test_registered_with_linf_presets(cls):
    name = {UAP: "uap", OptimizedUAP: "opt-uap"}[cls]
    assert name in attacks.names()
    a = attacks.create(name, preset="strong")
    assert isinstance(a, cls) and a.restriction is Restriction.LINF and cls.varied == "eps"
    assert {k: v["eps"] for k, v in cls.presets.items()} == {"weak": 2 / 255, "medium": 4 / 255, "strong": 8 / 255}
    assert a.eps == 8 / 255 and a.params["size"] == 256


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("metric_cls,sign", [(Linear, 1.0), (LinearLower, -1.0)])
def test_linear_metric_gives_eps_times_sign_of_weights(cls, metric_cls, sign):
    m = metric_cls.random()
    a = cls(eps=4 / 255, size=16, epochs=10, batch=2).fit(m, _interior(4))
    d = a.delta
    assert d.shape == (1, 3, 16, 16)
    assert torch.allclose(d, sign * m.w.sign() * (4 / 255), atol=1e-6)
    assert float(d.abs().max().double()) <= 4 / 255  # stored float32 values within the budget


@pytest.mark.parametrize("cls", KINDS)
def test_fr_perturbs_distorted_image_only(cls):
    m = LinearFR.random()
    x, ref = _interior(4, seed=2), _interior(4, seed=3)
    a = cls(eps=2 / 255, size=16, epochs=20, batch=4).fit(m, x, ref=ref)
    assert torch.allclose(a.delta, -m.w.sign() * (2 / 255), atol=1e-6)
    ref0 = ref.clone()
    x_adv = a(m, x, ref=ref)
    assert torch.equal(ref, ref0)
    assert bool((m(x_adv, ref) < m(x, ref)).all())


@pytest.mark.parametrize("cls", KINDS)
def test_builtin_nr_score_rises_on_held_out_crops(cls, crops, nr):
    train, test = crops
    a = cls(eps=8 / 255, size=64, epochs=10, batch=4).fit(nr, train)
    x_adv = a(nr, test)
    with torch.no_grad():
        gain = nr(x_adv) - nr(test)
    # measured: UAP 8/8 crops, mean gain 0.43; Optimized-UAP 8/8, mean gain 0.25 (score range ~5.5)
    assert int((gain > 0).sum()) >= 7
    assert float(gain.mean()) > 0.1
    assert bool(within(Restriction.LINF, x_adv, test, 8 / 255).all())


@pytest.mark.parametrize("cls", KINDS)
def test_budget_holds_exactly_after_resize_and_clip(cls, crops):
    m = Linear.random(size=32)
    eps = 2 / 255
    a = cls(eps=eps, size=32, epochs=10, batch=4).fit(m, crops[0])
    x = torch.cat([crops[1][:, :, :48, :40], torch.zeros(1, 3, 48, 40), torch.ones(1, 3, 48, 40)])
    x_adv = a(m, x)  # 32x32 delta resized to 48x40; black and white images clip
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert bool(within(Restriction.LINF, x_adv, x, eps).all())
    assert float((x_adv - x).abs().max()) > 0.9 * eps


@pytest.mark.parametrize("cls", KINDS)
def test_save_load_round_trip(cls, tmp_path):
    m = Linear.random()
    a = cls(eps=4 / 255, size=16, epochs=2, batch=2).fit(m, _interior(4))
    path = a.save(tmp_path / "delta.safetensors")
    b = cls(eps=4 / 255, size=16).load(path)
    assert torch.equal(a.delta, b.delta)
    x = _interior(3, seed=7)
    assert torch.equal(a(m, x), b(m, x))


@pytest.mark.parametrize("cls", KINDS)
def test_apply_before_fit_is_one_line_error(cls):
    a = cls(size=16)
    with pytest.raises(InputError) as e:
        a(Linear.random(), _interior(1))
    assert "fit" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("cls", KINDS)
def test_fit_is_deterministic(cls):
    m = Linear.random(size=16)
    x = _interior(6, seed=4)
    a = cls(eps=4 / 255, size=16, epochs=2, batch=2, step=1 / 255).fit(m, x).delta
    b = cls(eps=4 / 255, size=16, epochs=2, batch=2, step=1 / 255).fit(m, x).delta
    c = cls(eps=4 / 255, size=16, epochs=2, batch=2, step=1 / 255).fit(
        m, x, generator=torch.Generator().manual_seed(0)).delta
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("kwargs", [{"eps": 4}, {"eps": 0.0}, {"epochs": 0}, {"size": 4},
                                    {"batch": 0}, {"step": -1.0}, {"eps": float("nan")}])
def test_invalid_arguments_are_one_line_errors(cls, kwargs):
    with pytest.raises(InputError) as e:
        cls(**kwargs)
    assert "\n" not in str(e.value)


def test_opt_uap_rejects_bad_betas():
    with pytest.raises(InputError, match="betas"):
        OptimizedUAP(betas=(0.9, 1.5))


@pytest.mark.parametrize("cls", KINDS)
def test_fit_on_fr_metric_needs_ref(cls):
    with pytest.raises(InputError, match="ref"):
        cls(size=16).fit(LinearFR.random(), _interior(2))
