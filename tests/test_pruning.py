"""Structured filter pruning (l1, l2, PLS/VIP) and smooth-activation replacement
("Robustness as Architecture", §4, §6.1, §7)."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import PLSRegression
from torch import nn

from iqaguard import metrics
from iqaguard.defenses.trained.activations import replace_activations
from iqaguard.defenses.trained.pls import vip
from iqaguard.defenses.trained.pruning import allocate, apply_pruning, filter_importance, prunable_units, prune
from iqaguard.errors import InputError, UnknownNameError


def _filters(model):
    """Filter count of every unit, read from the actual weight shapes, and their consistency."""
    counts = {}
    for u in prunable_units(model):
        conv, nxt = model.get_submodule(u.conv), model.get_submodule(u.next_conv)
        k = conv.weight.shape[0]
        assert nxt.weight.shape[1] == k
        if u.bn is not None:
            bn = model.get_submodule(u.bn)
            assert bn.weight.shape[0] == bn.running_mean.shape[0] == bn.running_var.shape[0] == k
        counts[u.conv] = k
    return counts


def _samples(n=24, size=64):
    """Deterministic images in [0, 1] of varied content: smooth colour gradients plus noise of varied strength."""
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0, 1, size)
    base = 0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=g) * (ramp[None, None, :, None] + ramp[None, None, None, :]) / 2
    sigma = torch.linspace(0.0, 0.3, n).view(n, 1, 1, 1)
    return (base + sigma * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def images():
    return _samples()


@pytest.mark.parametrize("method", ["l1", "l2", "pls"])
def test_builtin_nr_prunes_exactly_ten_percent(method, images):
    m = metrics.create("builtin-nr")
    before, keys = _filters(m), set(m.state_dict())
    assert list(before) == [f"net.backbone.stages.{i}.0" for i in range(4)] + ["net.head.0"]
    total = sum(before.values())
    rec = prune(m, method, 0.1, samples=images if method == "pls" else None)
    after = _filters(m)
    assert total - sum(after.values()) == round(0.1 * total) == 27
    assert all(k >= 1 for k in after.values())
    assert {p: len(v) for p, v in rec["kept"].items()} == after
    assert set(m.state_dict()) == keys
    assert m.net.backbone.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    y = m(images[:2])
    assert y.shape == (2,) and torch.isfinite(y).all()
    assert rec["op"] == "prune" and rec["method"] == method and rec["share"] == 0.1


def _handmade():
    """Conv(2->6, 3x3) -> BN -> ReLU -> Conv(6->3): filters with known L1 and L2 norms (18 weights each).

    f0 one spike 3 (L1 3, L2 3); f1 all 0.25 (L1 4.5, L2 1.06); f2 all 1 (18, 4.24);
    f3 all 2 (36, 8.49); f4 one spike 5 (5, 5); f5 all 0.5 (9, 2.12).
    """
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 3, 1)).eval()
    w = torch.zeros(6, 2, 3, 3)
    w[0, 0, 1, 1], w[4, 1, 0, 2] = 3.0, -5.0
    for i, c in [(1, 0.25), (2, 1.0), (3, -2.0), (5, 0.5)]:
        w[i] = c
    with torch.no_grad():
        net[0].weight.copy_(w)
    return net


@pytest.mark.parametrize("method, kept", [("l1", [2, 3, 5]), ("l2", [2, 3, 4])])
def test_norm_criteria_remove_the_smallest_filters(method, kept):
    net = _handmade()
    imp = filter_importance(net, method)["0"]
    l1 = torch.tensor([3, 4.5, 18, 36, 5, 9.0])
    r = math.sqrt(18)
    l2 = torch.tensor([3, 0.25 * r, r, 2 * r, 5, 0.5 * r])
    assert torch.allclose(imp, l1 if method == "l1" else l2)
    x = torch.rand(2, 2, 8, 8)
    rec = prune(net, method, 0.5)
    assert rec["kept"] == {"0": kept}
    assert net[0].weight.shape == (3, 2, 3, 3) and net[1].running_var.shape == (3,) and net[3].in_channels == 3
    assert net(x).shape == (2, 3, 8, 8)


def test_allocation_rounds_and_keeps_one_filter_per_unit():
    assert allocate([5, 4], 0.3) == [2, 1]  # round(2.7) = 3: floors 1 + 1, the remainder to the larger fraction
    assert allocate([16, 32, 64, 96, 64], 0.1) == [2, 3, 6, 10, 6]
    assert allocate([1, 1, 10], 0.5) == [0, 0, 6]  # single-filter units are never emptied
    with pytest.raises(InputError, match="would empty a unit"):
        allocate([1, 1], 0.9)


def test_chained_units_prune_and_run():
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.LeakyReLU(0.1), nn.Conv2d(4, 2, 1))
    assert [(u.conv, u.bn, u.next_conv, u.n) for u in prunable_units(net)] == [("0", None, "2", 5), ("2", None, "4", 4)]
    rec = prune(net, "l1", 0.3)
    assert [len(v) for v in rec["kept"].values()] == [3, 3]
    assert net[2].weight.shape == (3, 3, 3, 3) and net(torch.rand(1, 3, 9, 9)).shape == (1, 2, 5, 5)


def test_removing_filters_without_outgoing_weights_is_exact():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.normal_()
        net[1].bias.normal_()
        net[3].weight[:, [1, 5]] = 0.0
    net.eval()
    x = torch.rand(2, 3, 12, 12)
    y0 = net(x)
    apply_pruning(net, {"0": [0, 2, 3, 4, 6, 7]})
    assert net[0].bias.shape == (6,) and net[1].num_features == 6
    assert torch.allclose(net(x), y0, atol=1e-6)


def test_other_module_types_are_not_units():
    class Block(nn.Module):
        def forward(self, x):
            return x

    class Conv(nn.Conv2d):
        pass

    assert prunable_units(nn.Sequential(nn.Conv2d(3, 4, 1), Block(), nn.Conv2d(4, 4, 1))) == []
    assert prunable_units(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1, groups=2))) == []
    assert prunable_units(nn.Sequential(Conv(3, 4, 1), nn.Conv2d(4, 4, 1))) == []
    assert prunable_units(nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 1))) == []


def test_vip_squares_sum_to_the_number_of_predictors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 12)), rng.normal(size=50)
    pls = PLSRegression(n_components=3).fit(x, y)
    v = vip(pls.x_weights_, pls.x_scores_, pls.y_loadings_)
    assert abs((v ** 2).sum() - 12) < 1e-6


def test_vip_ranks_the_informative_predictor_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 10))
    y = 3.0 * x[:, 4] + 0.05 * rng.normal(size=60)
    pls = PLSRegression(n_components=2).fit(x, y)
    v = vip(pls.x_weights_, pls.x_scores_, pls.y_loadings_)
    assert int(v.argmax()) == 4 and v[4] > 1.0 > np.delete(v, 4).max()


def test_pls_importance_through_hooks_finds_the_predictive_filter():
    """1x1 filters read green, blue, red, green + blue; the targets are the images' mean red."""
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 1, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(0))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1.0]]).view(4, 3, 1, 1))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(40, 3, 1, 1, generator=g) * 0.8 + 0.1 * torch.rand(40, 3, 8, 8, generator=g)).clamp(0, 1)
    imp = filter_importance(net, "pls", x, targets=x[:, 0].mean((1, 2)), batch=7)["0"]
    assert int(imp.argmax()) == 2 and abs(float((imp ** 2).sum()) - 4) < 1e-5
    rec = prune(net, "pls", 0.25, x, targets=x[:, 0].mean((1, 2)))
    assert 2 in rec["kept"]["0"] and len(rec["kept"]["0"]) == 3


def test_pls_on_builtin_fr_with_a_feature_forward_and_mos_targets(images):
    """The forward may return anything (here the backbone's stage maps) when targets are given."""
    m = metrics.create("builtin-fr")
    total = sum(_filters(m).values())
    mos = torch.linspace(1.0, 5.0, len(images))
    rec = prune(m, "pls", 0.1, images, targets=mos, forward=lambda mm, x: mm.net.backbone(x), batch=10)
    assert total - sum(_filters(m).values()) == round(0.1 * total) == 21
    assert m(images[:2], images[2:4]).shape == (2,) and rec["method"] == "pls"
    with pytest.raises(InputError, match="forward") as e:
        filter_importance(m, "pls", images, forward=lambda mm, x: mm.net.backbone(x))
    _one_line(e)


def test_replay_then_strict_load_gives_identical_outputs(images):
    m = metrics.create("builtin-nr")
    rec = json.loads(json.dumps(prune(m, "l2", 0.1)))
    fresh = metrics.create("builtin-nr")
    apply_pruning(fresh, rec["kept"])
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    fresh.load_state_dict(m.state_dict(), strict=True)
    assert torch.equal(fresh(images[:2]), m(images[:2]))


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value) and str(excinfo.value)


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1, "0.1"])
def test_share_out_of_range(share):
    with pytest.raises(InputError, match="share") as e:
        prune(_handmade(), "l2", share)
    _one_line(e)


def test_typed_errors(images):
    net = _handmade()
    with pytest.raises(UnknownNameError, match="l3") as e:
        prune(net, "l3")
    _one_line(e)
    with pytest.raises(InputError, match="samples") as e:
        filter_importance(metrics.create("builtin-nr"), "pls")
    _one_line(e)
    with pytest.raises(InputError, match="at least 2 samples") as e:
        filter_importance(metrics.create("builtin-nr"), "pls", images[:1])
    _one_line(e)
    with pytest.raises(InputError, match="n_components"):
        filter_importance(metrics.create("builtin-nr"), "pls", images[:2])
    with pytest.raises(InputError, match="targets"):
        filter_importance(metrics.create("builtin-nr"), "pls", images[:4], targets=torch.ones(3))
    with pytest.raises(InputError, match="no prunable unit"):
        prune(nn.Sequential(nn.Conv2d(3, 4, 1)), "l2")
    for kept, msg in [({"0": [0, 1], "3": [0]}, "not a prunable unit"), ({"0": [0, 6]}, r"\[0, 6\)"),
                      ({"0": []}, "at least one"), ({"0": [1, 1]}, "unique")]:
        with pytest.raises(InputError, match=msg) as e:
            apply_pruning(net, kept)
        _one_line(e)
    assert net[0].weight.shape[0] == 6  # a rejected plan changes nothing


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_full_replacement_replaces_every_leaky_relu(images):
    m = metrics.create("builtin-nr")
    y0 = m(images[:2])
    assert _count(m, nn.LeakyReLU) == 9
    rec = replace_activations(m, "gelu")
    assert _count(m, nn.LeakyReLU) == 0 and _count(m, nn.GELU) == 9 and len(rec["replaced"]) == 9
    assert rec == json.loads(json.dumps(rec)) and rec["scope"] == "full" and rec["modules"] == []
    fresh = metrics.create("builtin-nr")
    assert replace_activations(fresh, "gelu", "full", rec["modules"]) == rec  # a record's replay
    assert [type(a).__name__ for a in fresh.modules()] == [type(a).__name__ for a in m.modules()]
    x = images[:2].clone().requires_grad_(True)
    y = m(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and not torch.allclose(y, y0) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind, cls", [("elu", nn.ELU), ("silu", nn.SiLU), ("gelu", nn.GELU)])
def test_partial_replacement_only_touches_the_head(kind, cls, images):
    m = metrics.create("builtin-nr")
    y0 = m(images[:2])
    rec = replace_activations(m, kind, "partial")
    assert rec["modules"] == ["net.head"] and rec["replaced"] == ["net.head.1"]
    assert _count(m.net.backbone, nn.LeakyReLU) == 8 and _count(m.net.head, nn.LeakyReLU) == 0
    assert isinstance(m.net.head[1], cls)
    y = m(images[:2])
    assert torch.isfinite(y).all() and not torch.allclose(y, y0)
    fresh = metrics.create("builtin-nr")
    assert replace_activations(fresh, kind, "partial", rec["modules"]) == rec
    assert [type(a).__name__ for a in fresh.modules()] == [type(a).__name__ for a in m.modules()]
    fresh.load_state_dict(m.state_dict(), strict=True)
    assert torch.equal(fresh(images[:2]), y)


def test_activation_errors():
    m = metrics.create("builtin-nr")
    with pytest.raises(UnknownNameError, match="tanhh") as e:
        replace_activations(m, "tanhh")
    _one_line(e)
    with pytest.raises(InputError, match="scope"):
        replace_activations(m, "elu", "half")
    with pytest.raises(InputError, match="net.tail"):
        replace_activations(m, "elu", "partial", ["net.tail"])
    with pytest.raises(InputError, match="only scope='partial'"):
        replace_activations(m, "elu", "full", ["net.head"])
    with pytest.raises(InputError, match="backbone"):
        replace_activations(nn.Sequential(nn.ReLU()), "elu", "partial")
    assert _count(m, nn.LeakyReLU) == 9  # nothing replaced by a rejected call
