"""Attack budgets outside their plausible range on the [0, 1] image scale are an InputError."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from iqaguard import attacks
from iqaguard.attacks.budgets import MAX_LINF_EPS
from iqaguard.attacks.ifgsm import IFGSM
from iqaguard.bench.spec import Spec, load_plugins
from iqaguard.bench.tasks import AttackTask, Selection, expand
from iqaguard.errors import InputError


def _message(**kwargs) -> str:
    with pytest.raises(InputError) as e:
        attacks.create("ifgsm", **kwargs)
    msg = str(e.value)
    assert "\n" not in msg  # one line
    return msg


@pytest.mark.parametrize("eps", [4, 4.0])
def test_eps_on_the_0_255_scale_suggests_dividing_by_255(eps):
    msg = _message(eps=eps)
    assert msg.startswith(f"eps={eps!r} is on the 0..255 scale? pass eps={eps!r}/255 ")
    assert "4/255" in msg or "4.0/255" in msg
    assert "0.01569" in msg and "0 < eps <= 0.251 (64/255)" in msg and "[0, 1]" in msg


def test_eps_too_large_even_on_the_0_255_scale():
    assert "even eps=128/255 (=0.502) is too large" in _message(eps=128)
    msg = _message(eps=1000)
    assert msg.startswith("eps=1000 ") and "0 < eps <= 0.251" in msg and "/255)" not in msg.split(":")[0]


@pytest.mark.parametrize("eps", [2 / 255, 4 / 255, 8 / 255, 1e-4, 0.25, MAX_LINF_EPS])
def test_plausible_eps_accepted(eps):
    a = attacks.create("ifgsm", eps=eps)
    assert isinstance(a, IFGSM) and a.eps == eps


@pytest.mark.parametrize("eps, what", [
    (0, "eps=0 is not positive"), (0.0, "eps=0.0 is not positive"), (-4 / 255, "is not positive"),
    (-4, "eps=-4 is not positive"), (float("nan"), "eps=nan is not finite"), (math.inf, "eps=inf is not finite"),
    (-math.inf, "eps=-inf is not finite"), (0.5, "eps=0.5 (=127.5/255) is outside the plausible range"),
    (0.26, "outside the plausible range"), ("4/255", "got '4/255'"), (True, "got True"), (None, "got None"),
])
def test_implausible_eps_rejected_with_one_line(eps, what):
    msg = _message(eps=eps)
    assert what in msg and "0 < eps <= 0.251 (64/255) on the [0, 1] image scale" in msg


def test_alpha_range():
    assert "pass alpha=3/255 (=0.01176)" in _message(alpha=3)
    for bad in (0, -0.1, float("nan"), math.inf, 300, "x"):
        msg = _message(alpha=bad)
        assert msg.startswith("alpha") and "0 < alpha <= 1" in msg and "or None" in msg
    for ok in (None, 1 / 255, 4 / 255, 1.0):  # alpha > eps is clipped by the projection, like FGSM
        assert attacks.create("ifgsm", eps=4 / 255, alpha=ok).alpha == ok


def test_presets_still_work_and_explicit_eps_is_checked_over_a_preset():
    for name, k in (("weak", 2), ("medium", 4), ("strong", 8)):
        assert attacks.create("ifgsm", preset=name).eps == pytest.approx(k / 255)
    assert attacks.create("ifgsm", preset="strong", eps=16 / 255).eps == pytest.approx(16 / 255)
    assert "pass eps=8/255" in _message(preset="strong", eps=8)


def test_spec_kwargs_are_checked_when_the_worker_builds_the_attack():
    (toys,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])
    spec = Spec.model_validate(toys.toy_spec(attacks=[{"name": "ifgsm", "presets": ["weak"],
                                                       "kwargs": {"eps": 4, "steps": 2}}]))
    _, tasks = expand(spec, {("toy", 0): Selection(tuple(range(6)), tuple(f"i{i}" for i in range(6)))})
    task = next(t for t in tasks if isinstance(t, AttackTask) and t.attack.name == "ifgsm")
    with pytest.raises(InputError, match=r"eps=4 is on the 0\.\.255 scale\? pass eps=4/255"):
        attacks.create(task.attack.name, preset=task.preset, **task.attack.kw)  # as executors/worker.py does
