"""Backbone features of the adapters (``feature_layer=``, the FS-IQA feature API of base.py).

:class:`ModuleMetric` is tested on toy modules; :class:`PyiqaMetric` on the fake ``pyiqa`` package
of ``test_adapters.py`` (with a toy architecture added to it) and, when the real pyiqa is
installed, on ``cnniqa`` built with ``pretrained=None`` (random weights, nothing to download).
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from iqaguard.errors import InputError, MissingDependencyError
from iqaguard.metrics.adapters import ModuleMetric, PyiqaMetric, _import_pyiqa
from test_adapters import _install_fake_pyiqa

X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def toy() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


class PairNet(nn.Module):
    """FR toy: one backbone on both images, distance of the pooled features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Tanh())
        self.unused = nn.Linear(2, 2)

    def forward(self, x, ref):
        return (self.backbone(x) - self.backbone(ref)).abs().mean(dim=(1, 2, 3))


class TupleOut(nn.Module):
    def forward(self, x):
        return x * 2, "aux"


class FirstMean(nn.Module):
    def forward(self, out):
        return out[0].mean(dim=(1, 2, 3))


def test_features_are_the_pooled_output_of_the_hooked_layer():
    seq = toy()
    m = ModuleMetric(seq, bounds=(0, 1), feature_layer="1")
    assert m.has_features and m.feature_layer == "1"
    f = m.features(X)
    torch.testing.assert_close(f, seq[1](seq[0](X)).mean(dim=(2, 3)))
    assert f.shape == (3, 4) and m.feature_dim == 4
    assert m.features(torch.rand(2, 3, 16, 12)).shape == (2, 4)  # D independent of the image size
    # a 2-D output is kept as it is: [B, 1]
    lin = ModuleMetric(seq, bounds=(0, 1), feature_layer="4")
    torch.testing.assert_close(lin.features(X), seq(X))
    assert len(seq[1]._forward_hooks) == 0 and len(seq[4]._forward_hooks) == 0  # hooks removed


def test_gradient_flows_to_the_image():
    m = ModuleMetric(toy(), bounds=(0, 1), feature_layer="0")
    x = X.clone().requires_grad_(True)
    m.features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_in_place_op_after_the_layer_does_not_change_its_features():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 1))
    m = ModuleMetric(nn.Sequential(seq), bounds=(0, 1), feature_layer="0.0")
    x = X.clone().requires_grad_(True)
    f = m.features(x)
    torch.testing.assert_close(f, seq[0](X).mean(dim=(2, 3)))  # pre-ReLU values, some negative
    assert (f < 0).any()
    f.sum().backward()
    assert x.grad is not None


def test_tuple_output_gives_its_first_tensor():
    m = ModuleMetric(nn.Sequential(TupleOut(), FirstMean()), bounds=(0, 1), feature_layer="0")
    torch.testing.assert_close(m.features(X), (X * 2).mean(dim=(2, 3)))


def test_full_reference_features_of_x_with_ref_fixed():
    net = PairNet()
    m = ModuleMetric(net, kind="fr", lower_better=True, bounds=(1, 0), feature_layer="backbone")
    ref = X.flip(0)
    torch.testing.assert_close(m.features(X, ref), net.backbone(X).mean(dim=(2, 3)))
    with pytest.raises(InputError, match="reference"):
        m.features(X)


def test_unknown_layer_is_one_line_naming_it_and_the_available_ones():
    with pytest.raises(InputError) as err:
        ModuleMetric(toy(), bounds=(0, 1), feature_layer="backbone.3")
    msg = str(err.value)
    assert "\n" not in msg and "'backbone.3'" in msg and "'0'" in msg and "'4'" in msg
    with pytest.raises(InputError, match="feature_layer"):
        ModuleMetric(toy(), bounds=(0, 1), feature_layer="")  # the root is no feature layer
    with pytest.raises(InputError, match="str"):
        ModuleMetric(toy(), bounds=(0, 1), feature_layer=1)
    many = nn.Sequential(*[nn.ReLU() for _ in range(30)])
    with pytest.raises(InputError, match=r"30 in all") as err:
        ModuleMetric(many, bounds=(0, 1), feature_layer="99")
    assert str(err.value).count(", ") <= 10


def test_without_feature_layer_there_are_no_features():
    m = ModuleMetric(toy(), bounds=(0, 1))
    assert not m.has_features and m.feature_layer is None
    with pytest.raises(InputError, match="feature_layer"):
        m.features(X)
    with pytest.raises(InputError, match="features"):
        _ = m.feature_dim
    assert m(X).shape == (3,)  # scoring unchanged


def test_layer_that_does_not_run_is_an_input_error():
    net = PairNet()
    m = ModuleMetric(net, kind="fr", bounds=(1, 0), feature_layer="unused")
    with pytest.raises(InputError, match="did not run in the forward"):
        m.features(X, X)
    assert len(net.unused._forward_hooks) == 0


def test_hook_is_removed_after_an_exception_in_the_forward():
    seq = nn.Sequential(nn.Conv2d(3, 2, 1), Boom())
    m = ModuleMetric(seq, bounds=(0, 1), feature_layer="0")
    with pytest.raises(RuntimeError, match="boom"):
        m.features(X)
    assert len(seq[0]._forward_hooks) == 0


def test_calibrated_passes_feature_layer_through():
    imgs = torch.cat([torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)])
    m = ModuleMetric.calibrated(toy(), imgs, feature_layer="1")
    assert m.has_features and m.features(imgs).shape == (2, 4)


# ------------------------------------------------------------------ pyiqa (fake package)


class ToyArch(nn.Module):
    """A pyiqa-style architecture: a conv backbone and a head, NR or FR."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 1)

    def forward(self, x, ref=None):
        f = self.body(x).mean(dim=(2, 3))
        if ref is not None:
            f = f - self.body(ref).mean(dim=(2, 3))
        return self.head(f)


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    rec = _install_fake_pyiqa(monkeypatch, tmp_path)
    registry = sys.modules["pyiqa.utils.registry"]
    get = registry.ARCH_REGISTRY.get
    monkeypatch.setattr(registry.ARCH_REGISTRY, "get", lambda t: ToyArch if t == "ToyArch" else get(t))
    configs = sys.modules["pyiqa.default_model_configs"].DEFAULT_CONFIGS
    monkeypatch.setitem(configs, "faketoy", {"metric_opts": {"type": "ToyArch"}, "metric_mode": "NR",
                                             "score_range": "0, 1"})
    monkeypatch.setitem(configs, "faketoyfr", {"metric_opts": {"type": "ToyArch"}, "metric_mode": "FR",
                                               "lower_better": True, "score_range": "0, 1"})
    return rec


def test_pyiqa_features_of_a_layer_of_the_wrapped_network(fake):
    m = PyiqaMetric("faketoy", feature_layer="body.0")
    arch = m.net.net
    assert m.has_features and m.feature_dim == 6
    x = X.clone().requires_grad_(True)
    f = m.features(x)
    torch.testing.assert_close(f, arch.body[0](X).mean(dim=(2, 3)))
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert len(arch.body[0]._forward_hooks) == 0
    with torch.no_grad():
        assert not m.features(X).requires_grad  # detached under no_grad, as the scores
    assert torch.is_grad_enabled()


def test_pyiqa_full_reference_features_and_no_feature_layer(fake):
    m = PyiqaMetric("faketoyfr", feature_layer="body")
    torch.testing.assert_close(m.features(X, X.flip(0)), m.net.net.body(X).mean(dim=(2, 3)))
    plain = PyiqaMetric("faketoy")
    assert not plain.has_features
    with pytest.raises(InputError, match="feature_layer"):
        plain.features(X)


def test_pyiqa_unknown_layer_lists_the_network_s_submodules(fake):
    with pytest.raises(InputError) as err:
        PyiqaMetric("faketoy", feature_layer="net.body")
    msg = str(err.value)
    assert "\n" not in msg and "'net.body'" in msg and "'body.0'" in msg and "'head'" in msg
    assert "feature_layer" not in fake.create_kwargs[-1]  # not passed on to pyiqa as an option


# ------------------------------------------------------------------ pyiqa (real, optional)


@pytest.mark.pyiqa
def test_real_pyiqa_cnniqa_features_offline():
    try:
        _import_pyiqa()
    except MissingDependencyError as e:
        pytest.skip(str(e))
    m = PyiqaMetric("cnniqa", pretrained=None, feature_layer="conv1")  # random weights: no download
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    f = m.features(x)
    assert f.shape == (2, 50) == (2, m.feature_dim)
    torch.testing.assert_close(f, m.net.net.conv1(x).mean(dim=(2, 3)))
    f.sum().backward()
    assert x.grad is not None and len(m.net.net.conv1._forward_hooks) == 0
