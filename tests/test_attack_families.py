"""The attack substrate: budgets (projections, measures), the parameter mechanism, the three families."""
from __future__ import annotations

import inspect
import math
from functools import partial

import pytest
import torch

import iqaguard
from iqaguard.attacks import GradientAttack, QueryAttack, Restriction, UniversalAttack
from iqaguard.attacks.budgets import PRESET_BUDGETS, linf_box, measure, project_l2, project_linf, within
from iqaguard.attacks.ifgsm import IFGSM
from iqaguard.attacks.query import QueryBudgetExceeded, QueryOracle
from iqaguard.errors import InputError, MissingWeightsError

from attack_toys import Linear, NoBackward, interior


_images = partial(interior, n=3, size=8, seed=0)


# ---------------------------------------------------------------- budgets
def test_preset_budgets_are_the_papers():
    assert PRESET_BUDGETS[Restriction.LINF] == {"weak": 2 / 255, "medium": 4 / 255, "strong": 8 / 255}
    assert PRESET_BUDGETS[Restriction.SSIM] == {"weak": 0.9, "medium": 0.8, "strong": 0.75}
    assert PRESET_BUDGETS[Restriction.PSNR] == {"weak": 35.0, "medium": 30.0, "strong": 25.0}
    assert Restriction("linf") is Restriction.LINF and Restriction.LINF == "linf" and str(Restriction.L2) == "l2"
    with pytest.raises(ValueError):
        Restriction("l3")


def test_projections_hold_exactly():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    wild = x + torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    eps = 4 / 255
    p = project_linf(wild, linf_box(x, eps))
    assert bool(within("linf", p, x, eps).all()) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert float(measure("linf", p, x).max()) <= eps
    q = project_l2(wild, x, 0.5)
    assert bool((measure("l2", q, x) <= 0.5 + 1e-6).all()) and 0 <= float(q.min()) and float(q.max()) <= 1
    inside = x + 1e-3
    assert torch.equal(project_l2(inside.clamp(0, 1), x, 10.0), inside.clamp(0, 1))  # inside the ball: unchanged


def test_measures_against_hand_values():
    x = torch.full((1, 3, 4, 4), 0.5)
    y = x.clone()
    y[0, :, 0, 0] += 0.1   # one pixel, all channels
    y[0, 1, 2, 3] -= 0.05  # another pixel, one channel
    assert float(measure("l0", y, x)) == 2
    assert float(measure("linf", y, x)) == pytest.approx(0.1, abs=1e-6)
    assert float(measure("l2", y, x)) == pytest.approx(math.sqrt(3 * 0.01 + 0.0025), rel=1e-5)
    mse = (3 * 0.01 + 0.0025) / 48
    assert float(measure("psnr", y, x)) == pytest.approx(10 * math.log10(1 / mse), rel=1e-4)
    assert bool(within("psnr", y, x, 30.0)) and not bool(within("l0", y, x, 1))


# ---------------------------------------------------------------- the parameter mechanism
def test_typed_signature_is_what_help_and_the_spec_see():
    sig = inspect.signature(IFGSM)
    assert list(sig.parameters) == ["eps", "steps", "alpha", "preset"]
    assert sig.parameters["eps"].default == 4 / 255 and sig.parameters["preset"].kind is inspect.Parameter.KEYWORD_ONLY


def test_preset_fills_under_explicit_values_and_params_are_recorded():
    a = IFGSM(preset="strong", steps=3)
    assert (a.eps, a.steps, a.alpha, a.preset) == (8 / 255, 3, None, "strong")
    assert a.params == {"eps": 8 / 255, "steps": 3, "alpha": None}
    assert IFGSM(0.01).eps == 0.01  # positional works too
    assert iqaguard.attacks.create("ifgsm", preset="weak").eps == 2 / 255


@pytest.mark.parametrize("call, text", [
    (lambda: IFGSM(epz=1 / 255), r"unknown argument\(s\) \['epz'\] for attack IFGSM; allowed: \['eps', 'steps', 'alpha'\]"),
    (lambda: IFGSM(preset="mega"), r"unknown preset 'mega' for attack IFGSM; allowed: weak, medium, strong"),
    (lambda: IFGSM(0.01, eps=0.02), r"attack IFGSM: multiple values for argument 'eps'"),
])
def test_bad_arguments_are_one_line(call, text):
    with pytest.raises(InputError, match=text):
        call()


def test_subclass_without_its_own_init_still_gets_presets():
    class Weaker(IFGSM):
        presets = {"tiny": {"eps": 1 / 255, "steps": 2}}

    a = Weaker(preset="tiny")
    assert (a.eps, a.steps) == (1 / 255, 2) and a.params["eps"] == 1 / 255


def test_a_preset_naming_an_unknown_parameter_fails_at_class_definition():
    with pytest.raises(TypeError, match=r"presets\['x'\] names unknown parameters \['epsilon'\]"):
        class Broken(IFGSM):  # noqa: F841
            presets = {"x": {"epsilon": 1}}


# ---------------------------------------------------------------- families
def test_gradient_family_names_a_non_differentiable_metric():
    class Flat(Linear):
        name = "flat"

        def score(self, x, ref=None):
            return torch.zeros(x.shape[0])

    with pytest.raises(InputError, match="'flat' is not differentiable with respect to x; .*query"):
        IFGSM()(Flat(torch.ones(1)), _images())


def test_query_oracle_counts_per_image_and_enforces_the_budget():
    m = Linear(torch.ones(1, 3, 8, 8))
    x = _images()
    oracle = QueryOracle(m, None, n_images=3, max_queries=2)
    out = oracle(torch.cat([x, x[:1]]), torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(out[:3], m(x) / 2) and oracle.counts.tolist() == [2, 1, 1]
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[:1], torch.tensor([0]))
    assert oracle.remaining().tolist() == [0, 1, 1]


def test_query_family_runs_without_any_graph():
    class OneShot(QueryAttack):
        def __init__(self, max_queries: int = 4) -> None:
            pass

        def search(self, oracle, x, generator):
            assert not torch.is_grad_enabled()
            best = oracle(x)
            cand = (x + 0.01).clamp(0, 1)
            better = oracle(cand) > best
            return torch.where(better.view(-1, 1, 1, 1), cand, x)

    m = NoBackward(torch.ones(1, 3, 8, 8))
    a = OneShot()
    out = a(m, _images())
    assert bool((m(out) > m(_images())).all()) and a.queries.tolist() == [2, 2, 2]


def test_universal_family_needs_a_fit_and_round_trips(tmp_path):
    class Shift(UniversalAttack):
        def __init__(self, eps: float = 4 / 255) -> None:
            pass

        def learn(self, metric, images, ref, generator):
            return torch.full((1, 3, 4, 4), self.eps)

    x = _images(size=8)
    with pytest.raises(InputError, match="no perturbation yet: call fit"):
        Shift()(Linear(torch.ones(1)), x)
    a = Shift().fit(Linear(torch.ones(1)), x)
    out = a(Linear(torch.ones(1)), x)
    assert torch.allclose(out - x, torch.full_like(x, 4 / 255), atol=1e-6)  # resized 4x4 -> 8x8
    path = a.save(tmp_path / "d.safetensors")
    b = Shift().load(path)
    assert torch.equal(b.delta, a.delta)
    with pytest.raises(MissingWeightsError, match="no universal perturbation at"):
        Shift().load(tmp_path / "missing.safetensors")
    assert isinstance(a, GradientAttack)


def _package_attacks():
    from iqaguard.registry import ATTACKS

    # attacks of the package only: other test modules register toys (collection order must not matter)
    return [n for n in ATTACKS.names() if ATTACKS.get(n).__module__.startswith("iqaguard.")]


@pytest.mark.parametrize("name", _package_attacks())
def test_every_registered_attack_keeps_the_contract(name):
    """Typed signature with the varied parameter, a Restriction, the three presets, a docstring that
    cites its paper (a year) and names the varied parameter, and no "seed 00x"."""
    import re

    from iqaguard.attacks.budgets import PRESET_NAMES
    from iqaguard.registry import ATTACKS

    cls = ATTACKS.get(name)
    params = inspect.signature(cls).parameters
    assert cls.varied in params and "preset" in params
    assert isinstance(cls.restriction, Restriction)
    assert tuple(cls.presets) == PRESET_NAMES
    assert all(cls.varied in p for p in cls.presets.values())  # each preset sets the varied parameter
    doc = inspect.getdoc(cls) + "\n" + (inspect.getdoc(inspect.getmodule(cls)) or "")
    assert re.search(r"\b(19|20)\d\d\b", doc) and "aried" in doc and "seed 00" not in doc


def test_an_attack_without_its_method_cannot_be_built():
    """run / search / learn / ascend are abstract: a subclass missing one fails at construction."""
    class NoSearch(QueryAttack):
        def __init__(self, max_queries: int = 4) -> None:
            pass

    class NoRun(GradientAttack):
        def __init__(self, eps: float = 4 / 255) -> None:
            pass

    for cls in (NoSearch, NoRun):
        with pytest.raises(TypeError, match="abstract"):
            cls()
