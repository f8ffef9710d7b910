"""FCN neural filter (Gushchin et al. 2024): contract, shipped weights, gradients, the official layout."""
import pytest
import torch

import iqaguard
from iqaguard import defenses
from iqaguard.data.builtin import PHOTOS_DIR
from iqaguard.data.io import load_image
from iqaguard.data.kadid_builtin import split_sources
from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.fcn import FCN, FCNet
from iqaguard.errors import InputError, MissingWeightsError

SHIPPED = WEIGHTS_DIR / "fcn.safetensors"
OFFICIAL = {"widths": [64, 16], "kernel_size": 3, "norm": "instance", "residual": False}


@pytest.fixture(scope="module")
def crops():
    """Central 64x76 crops (the metric needs 64) of 3 photographs of the builtin-kadid test split."""
    out = []
    for s in split_sources(0)["test"][:3]:
        x = load_image(PHOTOS_DIR / f"{s}.jpg")
        h, w = x.shape[-2:]
        out.append(x[..., h // 2 - 32:h // 2 + 32, w // 2 - 38:w // 2 + 38])
    return torch.cat(out)


def official_net(seed=0):
    """A randomly initialised network of the official layout (64 / 16 / 3, instance norm, tanh)."""
    torch.manual_seed(seed)
    net = FCNet(OFFICIAL["widths"], 3, "instance", residual=False)
    for p in net.parameters():  # random last layer too (the residual zero-init does not apply)
        p.data.normal_(0, 0.1)
    return net


def test_registered_contract():
    p = defenses.create("fcn")
    assert isinstance(p, FCN) and p.presets == [{}] and p.defaults == {"weights": None}
    assert p.differentiable and not p.randomized and p.min_size == 1
    assert p.config == {**FCN.arch} and p.config["widths"] == [64, 32]
    assert all(not q.requires_grad for q in p.parameters()) and not p.training


def test_shape_range_determinism(crops):
    p = defenses.create("fcn", preset=0)
    y = p(crops)
    assert y.shape == crops.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, p(crops))
    assert torch.allclose(p(crops[1:2]), y[1:2], atol=1e-6)  # per image, batch-independent
    odd = p(crops[:1, :, :13, :17])
    assert odd.shape == (1, 3, 13, 17)
    assert float((y - crops).abs().mean()) < 0.05  # a light filter, not a repaint


def test_gradient_through_defended_metric(crops):
    dm = iqaguard.defend(iqaguard.metrics.create("builtin-nr"), defenses.create("fcn"))
    x = crops[:2].clone().requires_grad_(True)
    dm(x).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_official_pth_loads_like_safetensors(tmp_path, crops):
    net = official_net()
    pth = tmp_path / "fcn_official.pth"
    torch.save({"epoch": 7, "model": net.state_dict()}, pth)  # the official container
    st = tmp_path / "fcn_same.safetensors"
    save_model(net, st, OFFICIAL)
    a, b = FCN(weights=pth), FCN(weights=str(st))
    assert a.config == b.config == OFFICIAL  # the official configuration read off the keys
    assert sorted(net.state_dict()) == [f"conv{i}.{k}" for i in (1, 2, 3) for k in ("bias", "weight")]
    ya, yb = a(crops), b(crops)
    assert torch.allclose(ya, yb, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(ya, net(crops).clamp(0, 1), atol=1e-6)


def test_missing_file():
    with pytest.raises(MissingWeightsError, match="train_fcn.py"):
        FCN(weights="/nonexistent/fcn.pth")


def test_wrong_keys(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(4, 3, 3, 3)}}, bad)
    with pytest.raises(InputError, match="conv1"):
        FCN(weights=bad)
    st = tmp_path / "bad.safetensors"
    save_model(torch.nn.Conv2d(3, 3, 1), st, dict(FCN.arch))
    with pytest.raises(InputError, match="missing"):
        FCN(weights=st)
    with pytest.raises(InputError, match="unknown argument"):
        FCN(sigma=1)


def test_shipped_file_has_config():
    assert SHIPPED.is_file()
    from safetensors import safe_open
    with safe_open(str(SHIPPED), framework="pt") as f:
        assert '"residual": true' in f.metadata()["config"]
