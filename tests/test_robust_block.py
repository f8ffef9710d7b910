"""RobustBlock and its orthogonal convolutions (seed 001, §4 "RobustBlock", §5.1).

Orthogonality is checked two ways: through the DFT block diagonalisation
(:func:`circular_conv_singular_values`) and, independently, on the dense operator matrix built
by applying the layer to every basis vector of a ``c x s x s`` input.
"""
import copy
import json
import sys

import pytest
import torch
from torch import nn

import iqaguard
from iqaguard.defenses.trained.orthogonal import (AOLConv2d, CayleyConv2d, circular_conv_singular_values,
                                                  make_orthogonal)
from iqaguard.defenses.trained.robust_block import RobustBlock, insert_robust_block
from iqaguard.errors import InputError, MissingDependencyError, UnknownNameError

TOL = 1e-4
EXACT = ("cayley", "aoc")


def dense_matrix(layer: nn.Module, c: int, s: int) -> torch.Tensor:
    """The layer's ``[c s^2, c s^2]`` matrix: column ``j`` is the layer applied to basis vector ``j``."""
    n = c * s * s
    with torch.no_grad():
        out = layer(torch.eye(n).reshape(n, c, s, s))
    return out.reshape(n, n).T.double()


def perturb(layer: nn.Module, scale: float = 1.0) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("kind", EXACT)
def test_fft_singular_values_are_one(kind):
    layer = make_orthogonal(kind, 4)
    sv = circular_conv_singular_values(layer, 8)
    assert sv.shape == (4 * 8 * 8,)
    assert (sv - 1).abs().max() < TOL
    perturb(layer)
    sv = circular_conv_singular_values(layer, 8)
    assert (sv - 1).abs().max() < TOL


@pytest.mark.parametrize("kind", EXACT)
def test_dense_operator_is_orthogonal(kind):
    layer = make_orthogonal(kind, 4)
    for step in range(2):
        if step:
            perturb(layer)
        m = dense_matrix(layer, 4, 6)  # 144 x 144
        assert m.shape == (144, 144)
        assert (torch.linalg.svdvals(m) - 1).abs().max() < TOL
        x = torch.randn(3, 4, 6, 6)
        with torch.no_grad():
            y = layer(x)
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=TOL)


@pytest.mark.parametrize("c, s", [(3, 2), (2, 1), (1, 5)])
def test_cayley_orthogonal_for_small_sizes(c, s):
    layer = CayleyConv2d(c, 3)  # s < k: the kernel folds onto the torus
    assert (torch.linalg.svdvals(dense_matrix(layer, c, s)) - 1).abs().max() < TOL


@pytest.mark.parametrize("kind", EXACT + ("aol",))
def test_fft_singular_values_match_dense(kind):
    layer = make_orthogonal(kind, 3)
    perturb(layer, 0.5)
    dense = torch.linalg.svdvals(dense_matrix(layer, 3, 5)).sort().values
    fft = circular_conv_singular_values(layer, 5).sort().values
    assert torch.allclose(dense, fft, atol=1e-5)


def test_aol_is_bounded_but_not_orthogonal():
    layer = AOLConv2d(4, 3)
    assert (circular_conv_singular_values(layer, 8) - 1).abs().max() < TOL  # Dirac init: the identity
    perturb(layer)
    sv = circular_conv_singular_values(layer, 8)
    dense = torch.linalg.svdvals(dense_matrix(layer, 4, 6))
    assert sv.max() <= 1 + TOL and dense.max() <= 1 + TOL
    assert sv.min() < 0.9  # almost orthogonal only: a contraction, not an isometry
    x = torch.randn(2, 4, 6, 6)
    assert layer(x).norm() <= x.norm() * (1 + TOL)


@pytest.mark.parametrize("kind", EXACT + ("aol",))
def test_robust_block_shape_and_gradient(kind):
    block = RobustBlock(6, orth=kind)
    assert block.hidden == 3
    x = torch.randn(2, 6, 10, 7, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 6, 7, 7) and y.dtype == torch.float32
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad and p.numel())
    assert block(torch.randn(1, 6, 5, 9)).shape == (1, 6, 5, 5)
    assert RobustBlock(1, orth=kind)(torch.randn(1, 1, 4, 6)).shape == (1, 1, 4, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", EXACT + ("aol",))
def test_cuda(kind):
    block = RobustBlock(8, orth=kind).cuda()
    assert block(torch.randn(2, 8, 9, 12, device="cuda")).shape == (2, 8, 9, 9)
    assert (circular_conv_singular_values(block.orth, 6) - 1).max() < TOL


def _score(metric, x):
    with torch.no_grad():
        return metric(x, x.flip(-1)) if metric.kind == "fr" else metric(x)


@pytest.mark.parametrize("name", ["builtin-nr", "builtin-fr"])
@pytest.mark.parametrize("position", [1, 2, 3, 4])
def test_insert_into_builtin_and_replay(name, position):
    metric = iqaguard.metrics.create(name)
    backbone = metric.net.backbone
    c_in = backbone.in_channels if position == 1 else backbone.widths[position - 2]
    rec = insert_robust_block(metric, position)
    assert rec == {"op": "robust-block", "target": "net.backbone", "position": position, "orth": "cayley",
                   "channels": c_in}
    assert json.loads(json.dumps(rec)) == rec
    assert isinstance(backbone.stages[position - 1][0], RobustBlock)
    x1, x2 = torch.rand(2, 3, 128, 160), torch.rand(1, 3, 96, 96)
    s1, s2 = _score(metric, x1), _score(metric, x2)
    assert s1.shape == (2,) and s2.shape == (1,) and torch.isfinite(s1).all() and torch.isfinite(s2).all()
    fresh = iqaguard.metrics.create(name)
    again = insert_robust_block(fresh, rec["position"], rec["orth"], target=rec["target"])
    assert again == rec
    fresh.load_state_dict(metric.state_dict())  # strict
    assert torch.equal(_score(fresh, x1), s1) and torch.equal(_score(fresh, x2), s2)


@pytest.mark.parametrize("orth", ["aoc", "aol"])
def test_replay_other_orthogonalisations_on_net(orth):
    metric = iqaguard.metrics.create("builtin-nr")
    rec = insert_robust_block(metric.net, 4, orth)
    assert rec["target"] == "backbone" and rec["channels"] == metric.net.backbone.widths[2]
    perturb(metric.net.backbone.stages[3][0], 0.1)  # "trained" block weights
    x = torch.rand(1, 3, 96, 112)
    fresh = iqaguard.metrics.create("builtin-nr")
    insert_robust_block(fresh.net, 4, orth)
    fresh.load_state_dict(metric.state_dict())
    assert torch.equal(_score(fresh, x), _score(metric, x))
    twin = copy.deepcopy(metric)  # checkpoint.restore deep-copies the metric
    assert torch.equal(_score(twin, x), _score(metric, x))


def test_insert_into_backbone_directly():
    backbone = iqaguard.metrics.create("builtin-nr").net.backbone
    rec = insert_robust_block(backbone, 2, "aol")
    assert rec["target"] == "" and rec["channels"] == backbone.widths[0]
    maps = backbone(torch.rand(1, 3, 64, 80))
    assert maps[1].shape[-2:] == (16, 16)


class _Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(12, 6, 3, padding=1))
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3))).squeeze(1)


@pytest.mark.parametrize("position, channels", [(1, 3), (2, 8), (3, 12), (4, 12)])
def test_insert_into_sequential(position, channels):
    seq = _Features().features
    rec = insert_robust_block(seq, position, "cayley")
    assert rec == {"op": "robust-block", "target": "", "position": position, "orth": "cayley", "channels": channels}
    assert isinstance(seq[position - 1][0], RobustBlock)
    assert seq(torch.rand(2, 3, 24, 30)).shape == (2, 6, 12, 12)  # 12 x 15 without the block


def test_insert_with_target_and_replay():
    model = _Features()
    rec = insert_robust_block(model, 3, "aoc", target="features")
    assert rec["target"] == "features" and rec["channels"] == 12
    x = torch.rand(2, 3, 20, 16)
    fresh = _Features()
    assert insert_robust_block(fresh, 3, "aoc", target="features") == rec
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("model, position, target, words", [
    ("nr", 0, None, "1..4"), ("nr", 5, None, "1..4"), ("nr", True, None, "1..4"), ("nr", "4", None, "1..4"),
    ("seq", 5, None, "1..4"), ("nr", 1, "backbone.stages", "ModuleList"), ("nr", 1, "nope", "nope"),
    ("linear", 1, None, "unsupported"), ("noconv", 1, None, "Conv2d")])
def test_invalid_arguments(model, position, target, words):
    m = {"nr": lambda: iqaguard.metrics.create("builtin-nr").net, "seq": lambda: _Features().features,
         "linear": lambda: nn.Linear(2, 2), "noconv": lambda: nn.Sequential(nn.ReLU(), nn.Identity())}[model]()
    keys = set(m.state_dict())
    with pytest.raises(InputError) as e:
        insert_robust_block(m, position, target=target)
    assert "\n" not in str(e.value) and words in str(e.value)
    assert set(m.state_dict()) == keys  # nothing changed


def test_unknown_orth_kind():
    with pytest.raises(UnknownNameError) as e:
        make_orthogonal("householder", 4)
    msg = str(e.value)
    assert "\n" not in msg and all(k in msg for k in ("cayley", "aoc", "aol"))
    with pytest.raises(UnknownNameError):
        RobustBlock(8, orth="bjorck")
    net = iqaguard.metrics.create("builtin-nr").net
    keys = set(net.state_dict())
    with pytest.raises(UnknownNameError):
        insert_robust_block(net, 4, orth="soc")
    assert set(net.state_dict()) == keys
    with pytest.raises(InputError):
        make_orthogonal("cayley", 4, kernel_size=2)


def test_aoc_without_orthogonium(monkeypatch):
    for name in [k for k in sys.modules if k == "orthogonium" or k.startswith("orthogonium.")] + ["orthogonium"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError) as e:
        make_orthogonal("aoc", 4)
    assert "pip install orthogonium" in str(e.value) and "\n" not in str(e.value)
