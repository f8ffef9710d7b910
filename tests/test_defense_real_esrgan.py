"""Real-ESRGAN purification: shipped weights, size/range/determinism, gradients, official BasicSR
checkpoints (``params_ema`` layout, architecture read off the shapes) and the error paths."""
from __future__ import annotations

import pytest
import torch

import iqaguard
from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.real_esrgan import RealESRGAN, RRDBNet
from iqaguard.errors import InputError, MissingWeightsError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shipped():
    return iqaguard.defenses.create("real-esrgan")


def _x(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_create_loads_the_shipped_weights(shipped):
    assert isinstance(shipped, RealESRGAN) and shipped.differentiable and not shipped.randomized
    assert shipped.weights_path() == WEIGHTS_DIR / "real-esrgan.safetensors"
    assert shipped.config["scale"] in (1, 2, 4) and shipped.config["residual"] is True
    assert RealESRGAN.presets == [{}] and RealESRGAN.defaults["weights"] is None
    assert all(not q.requires_grad for q in shipped.network.parameters()) and not shipped.training


@pytest.mark.parametrize("h, w", [(96, 96), (37, 50), (4, 5), (13, 4)])
def test_same_size_range_and_deterministic(shipped, h, w):
    x = _x(2, 3, h, w)
    y = shipped(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    torch.testing.assert_close(shipped(x), y, rtol=0, atol=0)
    # image i of a batch is purified as it would be alone
    torch.testing.assert_close(shipped(x[1:]), y[1:], atol=1e-6, rtol=0)


def test_too_small_and_bad_strength_are_input_errors(tmp_path):
    st = tmp_path / "x1.safetensors"  # scale 1: reflect padding to a multiple of 4 needs H, W >= 4
    cfg = {"num_in_ch": 3, "num_out_ch": 3, "scale": 1, "num_feat": 8, "num_block": 1, "num_grow_ch": 4,
           "residual": False}
    save_model(RRDBNet(**{k: v for k, v in cfg.items() if k != "residual"}), st, cfg)
    p = RealESRGAN(weights=str(st))
    assert p(_x(1, 3, 4, 7)).shape == (1, 3, 4, 7)
    with pytest.raises(InputError, match="at least 4x4"):
        p(_x(1, 3, 3, 8))
    with pytest.raises(InputError, match="denoise_strength"):
        RealESRGAN(denoise_strength=1.5)


def test_denoise_strength_scales_the_restoration(shipped):
    x = _x(1, 3, 24, 24)
    full = shipped(x)
    torch.testing.assert_close(RealESRGAN(denoise_strength=0.0)(x), x)
    half = RealESRGAN(denoise_strength=0.5)(x)
    torch.testing.assert_close(half, (x + 0.5 * (full - x)).clamp(0, 1), atol=1e-6, rtol=0)


def test_gradient_through_defend_reaches_the_input(shipped):
    dm = iqaguard.defend(iqaguard.metrics.create("builtin-nr"), shipped)
    x = _x(1, 3, 64, 64).requires_grad_(True)
    (g,) = torch.autograd.grad(dm(x).sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_official_params_ema_checkpoint_matches_safetensors(tmp_path):
    torch.manual_seed(3)
    for scale in (1, 2, 4):
        cfg = {"num_in_ch": 3, "num_out_ch": 3, "scale": scale, "num_feat": 8, "num_block": 2, "num_grow_ch": 4,
               "residual": False}
        net = RRDBNet(**{k: v for k, v in cfg.items() if k != "residual"})
        pth, st = tmp_path / f"x{scale}.pth", tmp_path / f"x{scale}.safetensors"
        # the official layout: BasicSR key names inside {"params_ema": ...}, module. prefixes allowed
        torch.save({"params_ema": {f"module.{k}": v for k, v in net.state_dict().items()}}, pth)
        save_model(net, st, cfg)
        a, b = RealESRGAN(weights=str(pth)), RealESRGAN(weights=str(st))
        assert a.config == b.config == cfg  # read off the official keys and shapes
        x = _x(1, 3, 21, 18, seed=scale)
        ya = a(x)
        assert ya.shape == x.shape
        torch.testing.assert_close(ya, b(x), rtol=0, atol=0)
        if scale == 4:  # outscale 1: the x4 output, box-averaged back to H x W
            with torch.no_grad():
                ref = torch.nn.functional.avg_pool2d(net(x), 4).clamp(0, 1)
            torch.testing.assert_close(ya, ref, atol=1e-6, rtol=0)


def test_shipped_weights_in_the_official_layout_load_the_same_tensors(shipped, tmp_path):
    pth = tmp_path / "shipped_as_official.pth"
    torch.save({"params_ema": shipped.network.state_dict()}, pth)
    official = RealESRGAN(weights=str(pth))
    for k, v in shipped.network.state_dict().items():
        torch.testing.assert_close(official.network.state_dict()[k], v, rtol=0, atol=0)
    # a file without metadata is read as an official (non-residual) network of the same shapes
    assert {k: official.config[k] for k in ("scale", "num_feat", "num_block", "num_grow_ch")} == \
        {k: shipped.config[k] for k in ("scale", "num_feat", "num_block", "num_grow_ch")}
    assert official.config["residual"] is False


def test_infer_config_of_the_official_x4_network(shipped):
    # RealESRGAN_x4plus / ESRGAN: RRDBNet x4, 23 blocks, 64 features, growth 32
    state = RRDBNet(scale=4, num_feat=64, num_block=23, num_grow_ch=32).state_dict()
    cfg = shipped.infer_config(state)
    assert cfg == {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32,
                   "residual": False}
    # the published size of ESRGAN's RRDBNet x4 (16.7M; 16,697,987 in independent implementations)
    assert sum(v.numel() for v in state.values()) == 16_697_987
    x2 = RRDBNet(scale=2, num_feat=16, num_block=3, num_grow_ch=8).state_dict()
    assert shipped.infer_config(x2)["scale"] == 2 and shipped.infer_config(x2)["num_block"] == 3
    assert shipped.infer_config({"foo": torch.zeros(1)}) == {}


def test_missing_file_and_wrong_keys(tmp_path):
    with pytest.raises(MissingWeightsError, match="train_real_esrgan.py"):
        RealESRGAN(weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"params_ema": {"conv.weight": torch.zeros(4, 3, 3, 3)}}, bad)
    with pytest.raises(InputError, match="does not match"):
        RealESRGAN(weights=str(bad))
