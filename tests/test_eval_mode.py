"""Eval mode and BatchNorm statistics (DESIGN.md: "create() returns a metric in eval mode; nothing in
the package changes its BatchNorm statistics").

For every metric that can be built offline: ``create()`` leaves the module and every submodule in
eval mode, and scoring an image gives bit-identical scores before and after an I-FGSM attack, an
adaptive attack through ``defend()`` and ``calibrate_bounds``, with unchanged BatchNorm buffers and
no parameter gradient.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

import iqaguard.metrics as M
from iqaguard.attacks.ifgsm import IFGSM
from iqaguard.data.io import jpeg_roundtrip, pil_to_tensor
from iqaguard.defenses import create as create_defense
from iqaguard.defenses import defend
from iqaguard.errors import MissingDependencyError, MissingWeightsError, UnknownNameError
from iqaguard.metrics.base import Metric, frozen
from iqaguard.metrics.bounds import calibrate_bounds

#: a weightless metric stands in for each prefix factory (skipped when its package is missing)
PREFIX_EXAMPLE = {"pyiqa:<name>": "pyiqa:ssim", "piq:<name>": "piq:fsim"}


def _names():
    return [PREFIX_EXAMPLE.get(n, n) for n in M.names()]


def _create(name: str) -> Metric:
    """``create(name)``; builtin models whose shipped weights do not load (missing, or not yet
    retrained for a changed architecture) are built untrained: eval mode does not depend on the
    weights, and random BatchNorm statistics differ from batch statistics just as well."""
    try:
        return M.create(name)
    except (MissingWeightsError, RuntimeError) as e:
        if not name.startswith("builtin-"):
            pytest.skip(f"{name}: weights not available offline ({str(e).splitlines()[0]})")
        return M.create(name, pretrained=False)
    except (MissingDependencyError, UnknownNameError, ImportError) as e:
        pytest.skip(f"{name}: cannot be built offline here ({e})")


@pytest.fixture(scope="module")
def images():
    """Two 192x192 crops (two images, so batch statistics would differ from running ones) and
    their JPEG q=30 versions as the distorted inputs of FR metrics."""
    ref = torch.cat([pil_to_tensor(Image.fromarray(a))[..., :192, :192]
                     for a in (data.astronaut()[64:], data.chelsea())]).contiguous()
    return jpeg_roundtrip(ref, 30), ref


def _score(m: Metric, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x, ref) if m.kind == "fr" else m(x)


def _state(m: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_untouched(m: Metric, before: Dict[str, torch.Tensor], s0: torch.Tensor, x, ref, what: str) -> None:
    assert [n for n, mod in m.named_modules() if mod.training] == [], what
    after = _state(m)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"{what}: buffers/parameters changed: {changed}"
    assert all(p.grad is None for p in m.parameters()), what
    assert torch.equal(_score(m, x, ref), s0), what


@pytest.mark.parametrize("name", _names())
def test_created_metrics_stay_in_eval_mode_through_attacks_defend_and_calibration(name, images):
    x, ref = images
    m = _create(name)
    assert m.training is False
    assert [n for n, mod in m.named_modules() if mod.training] == []
    grads = [p.requires_grad for p in m.parameters()]
    before = _state(m)
    s0 = _score(m, x, ref)
    r = ref if m.kind == "fr" else None
    attack = IFGSM(eps=2 / 255, steps=2)

    x_adv = attack(m, x, ref=r)
    assert not torch.equal(x_adv, x)
    _assert_untouched(m, before, s0, x, ref, "after I-FGSM")

    dm = defend(m, create_defense("jpeg", q=50))
    assert [n for n, mod in dm.named_modules() if mod.training] == []
    attack(dm, x, ref=r)  # adaptive (BPDA through JPEG)
    _assert_untouched(m, before, s0, x, ref, "after an attack through defend()")

    calibrate_bounds(m, x[:1])
    _assert_untouched(m, before, s0, x, ref, "after calibrate_bounds")
    assert [p.requires_grad for p in m.parameters()] == grads  # requires_grad restored


def test_builtin_models_have_batchnorm_and_it_is_never_trained(images):
    """The regression this file guards: a BatchNorm in training mode normalises with batch statistics
    (scores depend on the batch) and overwrites its running statistics."""
    x, _ = images
    m = _create("builtin-nr")
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 8 and all(not bn.training for bn in bns)
    s0 = _score(m, x, None)
    torch.testing.assert_close(torch.cat([_score(m, x[i:i + 1], None) for i in range(2)]), s0)  # batch-independent
    stats = [(bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)) for bn in bns]
    IFGSM(eps=4 / 255, steps=3)(m, x)
    for bn, (mean, var, n) in zip(bns, stats):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert int(bn.num_batches_tracked) == n
    assert torch.equal(_score(m, x, None), s0)


def test_frozen_restores_each_submodule_flag_and_runs_batchnorm_in_eval(images):
    """A metric a user put (partly) in training mode: the attack still runs every BatchNorm in eval
    mode, never updates its statistics, and gives back exactly the user's flags."""
    x, _ = images
    m = _create("builtin-nr")
    m.train()
    m.net.backbone.stages[1].eval()  # mixed flags
    flags = {n: mod.training for n, mod in m.named_modules()}
    before = _state(m)
    seen = []
    hook = [bn.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
            for bn in m.modules() if isinstance(bn, nn.BatchNorm2d)]
    IFGSM(eps=2 / 255, steps=1)(m, x)
    calibrate_bounds(m, x[:1])
    for h in hook:
        h.remove()
    assert seen and not any(seen)  # every BatchNorm forward ran in eval mode
    assert {n: mod.training for n, mod in m.named_modules()} == flags
    assert all(torch.equal(v, _state(m)[k]) for k, v in before.items())
    with frozen(m):
        assert not any(mod.training for mod in m.modules()) and not any(p.requires_grad for p in m.parameters())
    assert {n: mod.training for n, mod in m.named_modules()} == flags
    assert all(p.requires_grad for p in m.parameters())


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(1, 2, 3))


def test_any_metric_leaves_its_constructor_in_eval_mode():
    """Also a wrapped user module (created in training mode) and a subclass that adds its
    submodules after Metric.__init__."""
    wrapped = M.create(_BNNet(), bounds=(0.0, 1.0))
    assert not any(mod.training for mod in wrapped.modules())

    class Late(Metric):
        def __init__(self) -> None:
            super().__init__()
            self.net = _BNNet()  # assigned after Metric.__init__, in training mode

        def score(self, x, ref=None):
            return self.net(x)

    late = Late()
    assert not late.training and not late.net.training and not late.net.bn.training
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    s0 = _score(late, x, None)
    mean = late.net.bn.running_mean.clone()
    IFGSM(eps=2 / 255, steps=2)(late, x)
    assert torch.equal(late.net.bn.running_mean, mean) and torch.equal(_score(late, x, None), s0)
    assert np.isfinite(s0.numpy()).all()
