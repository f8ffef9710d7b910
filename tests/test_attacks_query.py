"""The query (black-box) attacks: Square, NES, Parsimonious, One Pixel, Patch-RS.

Analytic metrics: a linear NR metric f(x) = sum(w * x) / scale on interior images (x in
[0.3, 0.7]) has the optimal L-inf gain eps * ||w||_1 / scale; a lower-better and an FR variant
check the sign and the reference handling. builtin-nr on 64x64 photo crops checks a real model.
"""
from functools import partial

import pytest
import torch

import iqaguard
import iqaguard.attacks as A
from iqaguard.attacks import budgets
from iqaguard.attacks.query import QueryBudgetExceeded, QueryOracle
from iqaguard.errors import InputError

from attack_toys import Linear, LinearFR, LinearLower, NoBackward, gen, interior, linear_weights, photo_crops

QUERY = ["square", "nes", "parsimonious", "one-pixel", "patch-rs"]
LINF = ["square", "nes", "parsimonious"]
MONOTONE = ["square", "one-pixel", "patch-rs"]
SMALL = {"one-pixel": {"pixels": 3, "population": 10}, "patch-rs": {"size": 4}, "parsimonious": {"block_size": 2, "batch_size": 16}}


def _linear(cls=Linear):
    """A linear metric of ``cls`` on 3x8x8 Gaussian weights (seed 1), scaled by ``||w||_1``."""
    return cls(linear_weights(8, seed=1), scale="l1")


_interior = partial(interior, n=4, size=8, seed=2)


def _attack(name, **kw):
    return A.create(name, **{**SMALL.get(name, {}), **kw})


def _budget(a):
    return float(a.eps) if a.restriction is budgets.Restriction.LINF else float(a.budget)


@pytest.mark.parametrize("name", ["square", "nes"])
def test_linear_gain_at_least_half_optimal(name):
    # 3x8x8 images (192 coordinates), i.i.d. Gaussian weights, eps = 8/255, 1000 queries per image;
    # measured fraction of eps*||w||_1 (mean / min over 4 images): square 0.96 / 0.95, nes 0.83 / 0.81
    # (nes without its momentum, momentum=0, plateau=None: 0.68 / 0.67)
    m, x, eps = _linear(), _interior(), 8 / 255
    a = A.create(name, eps=eps, max_queries=1000)
    x_adv = a(m, x, generator=gen(0))
    frac = (m(x_adv) - m(x)) / (eps * m.w.abs().sum() / m.scale)
    assert bool((frac >= 0.5).all()), frac
    assert bool(budgets.within("linf", x_adv, x, eps).all())


def spent(name: str, budget: int) -> int:
    """Queries an attack spends of an even ``budget``: all of it, but NES's samples come in pairs
    and one query scores its last iterate, which leaves one."""
    return budget - 1 if name == "nes" else budget


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["square", "nes"])
def test_linear_gain_at_least_half_optimal_on_16x16(name, seed):
    # 3x16x16 images (768 coordinates), otherwise as above; measured fraction of eps*||w||_1 over
    # 4 images x seeds 0-2 (mean / min): square 0.67 / 0.63, nes 0.58 / 0.54. Without momentum
    # (momentum=0, plateau=None: the estimate of each step alone) nes reached 0.41 / 0.37.
    m, x, eps = Linear(linear_weights(16, seed=1), scale="l1"), interior(4, 16, seed=2), 8 / 255
    a = A.create(name, eps=eps, max_queries=1000)
    x_adv = a(m, x, generator=gen(seed))
    frac = (m(x_adv) - m(x)) / (eps * m.w.abs().sum() / m.scale)
    assert bool((frac >= 0.5).all()), frac
    assert bool(budgets.within("linf", x_adv, x, eps).all())
    # NES: pairs of samples plus one query scoring the last iterate leave one of an even budget
    assert bool((a.queries == spent(name, 1000)).all())


def test_parsimonious_linear_gain():
    # vertices of the ball: the lazy greedy search finds the optimum of a linear objective
    m, x, eps = _linear(), _interior(), 8 / 255
    a = A.create("parsimonious", eps=eps, max_queries=1000, block_size=4)
    frac = (m(a(m, x)) - m(x)) / (eps * m.w.abs().sum() / m.scale)
    assert bool((frac >= 0.99).all()), frac


@pytest.mark.parametrize("name", QUERY)
def test_never_calls_backward_and_respects_budget(name):
    m, x = _linear(NoBackward), _interior()
    a = _attack(name, max_queries=120)
    x_adv = a(m, x)
    assert a.queries.shape == (4,)
    assert bool((a.queries == spent(name, 120)).all()), a.queries  # budget used, never exceeded
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert bool(budgets.within(a.restriction, x_adv, x, _budget(a)).all())
    if name in MONOTONE:  # these never return an image scoring below the clean one
        assert bool((m(x_adv) >= m(x)).all())


@pytest.mark.parametrize("name", QUERY)
@pytest.mark.parametrize("metric_cls", [LinearLower, LinearFR])
def test_lower_better_and_fr_improve(name, metric_cls):
    m, x = _linear(metric_cls), _interior()
    ref = _interior(seed=5) if m.kind == "fr" else None
    a = _attack(name, max_queries=200)
    x_adv = a(m, x, ref=ref)
    before = m(x, ref) if ref is not None else m(x)
    after = m(x_adv, ref) if ref is not None else m(x_adv)
    assert bool((after < before).all()), (before, after)  # lower-better: the score falls
    assert bool(budgets.within(a.restriction, x_adv, x, _budget(a)).all())


@pytest.mark.parametrize("name", QUERY)
def test_deterministic_and_seeded(name):
    m, x = _linear(), _interior(n=2)
    a = _attack(name, max_queries=60)
    one, two = a(m, x, generator=gen(3)), a(m, x, generator=gen(3))
    assert torch.equal(one, two)
    assert torch.equal(a(m, x), a(m, x))  # generator=None: fixed seed 0
    assert not torch.equal(one, a(m, x, generator=gen(4)))


@pytest.mark.parametrize("name", LINF)
def test_linf_presets_and_exact_restriction(name):
    for preset, eps in budgets.PRESET_BUDGETS[budgets.Restriction.LINF].items():
        a = A.create(name, preset=preset, max_queries=40)
        assert a.eps == eps and a.varied == "eps" and a.restriction == "linf"
    # an awkward eps: the budget holds exactly as computed in float32, also near 0 and 1
    x = torch.rand(2, 3, 8, 8, generator=gen(7))
    x[:, :, 0] = 1.0
    x[:, :, 1] = 0.0
    a = A.create(name, eps=0.0123456789, max_queries=50)
    x_adv = a(_linear(), x)
    assert float((x_adv - x).abs().max()) <= 0.0123456789


def test_l0_presets():
    assert {k: v["pixels"] for k, v in A.create("one-pixel").presets.items()} == {"weak": 1, "medium": 3, "strong": 5}
    assert {k: v["size"] for k, v in A.create("patch-rs").presets.items()} == {"weak": 14, "medium": 24, "strong": 43}
    for name, varied in [("one-pixel", "pixels"), ("patch-rs", "size")]:
        a = A.create(name, preset="medium")
        assert a.restriction == "l0" and a.varied == varied


@pytest.mark.parametrize("name,kw", [("square", {"eps": 4}), ("nes", {"sigma": 0}), ("nes", {"max_queries": 1}),
                                     ("nes", {"momentum": 1.0}), ("nes", {"momentum": -0.1}), ("nes", {"plateau": 1}),
                                     ("parsimonious", {"block_size": 0}), ("one-pixel", {"pixels": 0}),
                                     ("one-pixel", {"max_queries": 10}), ("patch-rs", {"init": "noise"}),
                                     ("square", {"max_queries": 0}), ("patch-rs", {"p_init": 2.0})])
def test_invalid_arguments(name, kw):
    with pytest.raises(InputError) as e:
        A.create(name, **kw)
    assert "\n" not in str(e.value)


def test_nes_plateau_halves_the_step_of_images_whose_objective_fell():
    from iqaguard.attacks.nes import NES
    step, history, filled = torch.full((2,), 0.04, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.long)
    # image 0 falls (3, 2, 1), image 1 rises (1, 2, 3): only image 0 halves, once its window of 3 is full
    for k, values in enumerate([(3.0, 1.0), (2.0, 2.0), (1.0, 3.0)]):
        step, filled = NES._plateau(step, 0.015, history, filled, torch.tensor(values, dtype=torch.float64))
        assert step.tolist() == ([0.02, 0.04] if k == 2 else [0.04, 0.04])
    assert filled.tolist() == [0, 3]  # image 0's window starts again
    for values in [(0.5, 4.0), (0.4, 5.0), (0.3, 6.0)]:
        step, filled = NES._plateau(step, 0.015, history, filled, torch.tensor(values, dtype=torch.float64))
    assert step.tolist() == [0.015, 0.04]  # halved again, but not below the floor


def test_oracle_refuses_beyond_budget():
    oracle = QueryOracle(_linear(), None, 2, 3)
    x = _interior(n=2)
    oracle(torch.cat([x, x]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[:1].repeat(2, 1, 1, 1), torch.tensor([0, 0]))


@pytest.mark.parametrize("name", QUERY)
def test_builtin_nr_score_rises(name):
    # medium preset, 4 crops of 64x64, 100 queries per image: measured rise on 4/4 images for every attack
    m, x = iqaguard.metrics.create("builtin-nr"), photo_crops(4, center=False)
    a = A.create(name, preset="medium", max_queries=100)
    x_adv = a(m, x)
    rise = (m(x_adv) - m(x)) > 0
    assert float(rise.float().mean()) >= 0.75, (m(x), m(x_adv))
    assert bool(budgets.within(a.restriction, x_adv, x, _budget(a)).all())
    assert bool((a.queries == spent(name, 100)).all())
