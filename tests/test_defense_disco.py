"""DISCO purification: shipped weights, size/range/determinism, gradients, the LIIF query at the
input's own grid, official DISCO checkpoints (``ckpt["model"]["sd"]``, ``encoder`` / ``imnet``
keys, architecture read off the shapes) and the error paths."""
from __future__ import annotations

import pytest
import torch

import iqaguard
from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.disco import DISCO, LIIF
from iqaguard.errors import InputError, MissingWeightsError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shipped():
    return iqaguard.defenses.create("disco")


def _x(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _official_cfg(**kw):
    cfg = {"n_colors": 3, "n_feats": 8, "n_resblocks": 2, "hidden_list": [16, 16], "feat_unfold": True,
           "local_ensemble": True, "cell_decode": True, "residual": False}
    return {**cfg, **kw}


def test_create_loads_the_shipped_weights(shipped):
    assert isinstance(shipped, DISCO) and shipped.differentiable and not shipped.randomized
    assert shipped.weights_path() == WEIGHTS_DIR / "disco.safetensors"
    assert shipped.config["residual"] is True and shipped.config["feat_unfold"] and shipped.config["cell_decode"]
    assert DISCO.presets == [{}] and DISCO.defaults == {"weights": None}
    assert all(not q.requires_grad for q in shipped.network.parameters()) and not shipped.training


@pytest.mark.parametrize("h, w", [(64, 64), (37, 50), (1, 7), (9, 2)])
def test_same_size_range_and_deterministic(shipped, h, w):
    x = _x(2, 3, h, w)
    y = shipped(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    torch.testing.assert_close(shipped(x), y, rtol=0, atol=0)
    torch.testing.assert_close(shipped(x[1:]), y[1:], atol=1e-6, rtol=0)


def test_gradient_through_defend_reaches_the_input(shipped):
    dm = iqaguard.defend(iqaguard.metrics.create("builtin-nr"), shipped)
    x = _x(1, 3, 64, 64).requires_grad_(True)
    (g,) = torch.autograd.grad(dm(x).sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_interior_query_uses_the_nearest_code():
    # at the input's own grid the local ensemble weights the code under the pixel by ~1
    torch.manual_seed(0)
    net = LIIF(**_official_cfg()).eval()
    x = _x(1, 3, 10, 12) * 2 - 1
    with torch.no_grad():
        y = net(x)
        feat = torch.nn.functional.unfold(net.encoder(x), 3, padding=1).view(1, 72, 10, 12).permute(0, 2, 3, 1)
        extra = torch.tensor([0.0, 0.0, 2.0, 2.0]).expand(1, 10, 12, 4)
        direct = net.imnet(torch.cat([feat, extra], -1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(y[..., :-1, :-1], direct[..., :-1, :-1], atol=1e-5, rtol=1e-5)


def test_official_checkpoint_layout_matches_safetensors(tmp_path):
    torch.manual_seed(1)
    cfg = _official_cfg()
    net = LIIF(**cfg)
    sd = dict(net.state_dict())
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):  # EDSR's MeanShift: saved, unused by forward
        sd[f"encoder.{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
        sd[f"encoder.{name}.bias"] = sign * torch.tensor([0.4488, 0.4371, 0.4040])
    pth, st = tmp_path / "epoch-last.pth", tmp_path / "disco.safetensors"
    torch.save({"model": {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline",
                                                                     "args": {"no_upsampling": True}}},
                          "sd": sd},
                "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": {}}, "epoch": 3}, pth)
    save_model(net, st, cfg)
    a, b = DISCO(weights=str(pth)), DISCO(weights=str(st))
    assert a.config == b.config == cfg
    x = _x(1, 3, 19, 14)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_shipped_weights_as_a_plain_state_dict_load_the_same_tensors(shipped, tmp_path):
    pth = tmp_path / "shipped.pth"
    torch.save({"state_dict": shipped.network.state_dict()}, pth)
    other = DISCO(weights=str(pth))
    for k, v in shipped.network.state_dict().items():
        torch.testing.assert_close(other.network.state_dict()[k], v, rtol=0, atol=0)
    keys = ("n_feats", "n_resblocks", "hidden_list", "feat_unfold", "cell_decode")
    assert {k: other.config[k] for k in keys} == {k: shipped.config[k] for k in keys}


def test_infer_config_of_the_official_widths(shipped):
    state = LIIF().state_dict()  # official DISCO: EDSR-baseline 16 x 64, imnet 256 x 4, 580 inputs
    assert state["imnet.layers.0.weight"].shape == (256, 64 * 9 + 4)
    assert shipped.infer_config(state) == {"n_colors": 3, "n_feats": 64, "n_resblocks": 16,
                                           "hidden_list": [256, 256, 256, 256], "feat_unfold": True,
                                           "local_ensemble": True, "cell_decode": True, "residual": False}
    plain = LIIF(**_official_cfg(feat_unfold=False, cell_decode=False)).state_dict()
    cfg = shipped.infer_config(plain)
    assert cfg["feat_unfold"] is False and cfg["cell_decode"] is False and cfg["n_resblocks"] == 2
    assert shipped.infer_config({"foo": torch.zeros(1)}) == {}


def test_missing_file_and_wrong_keys(tmp_path):
    with pytest.raises(MissingWeightsError, match="train_disco.py"):
        DISCO(weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"encoder.stem.weight": torch.zeros(4, 3, 3, 3)}}, bad)
    with pytest.raises(InputError, match="does not match"):
        DISCO(weights=str(bad))
