"""MPRNet (Zamir et al., CVPR 2021): contract, padding, shipped weights, gradients, the official layout."""
import pytest
import torch

import iqaguard
from iqaguard import defenses
from iqaguard.data.builtin import PHOTOS_DIR
from iqaguard.data.io import load_image
from iqaguard.data.kadid_builtin import split_sources
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.mprnet import OFFICIAL_DENOISING, MPRNet, MPRNetwork
from iqaguard.errors import InputError, MissingWeightsError

TINY = dict(OFFICIAL_DENOISING, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)


@pytest.fixture(scope="module")
def crops():
    """Central 64x76 crops (the metric needs 64) of 2 photographs of the builtin-kadid test split."""
    out = []
    for s in split_sources(0)["test"][:2]:
        x = load_image(PHOTOS_DIR / f"{s}.jpg")
        h, w = x.shape[-2:]
        out.append(x[..., h // 2 - 32:h // 2 + 32, w // 2 - 38:w // 2 + 38])
    return torch.cat(out)


def official_state(config, seed=0):
    """A randomly initialised network of the official layout; as in the official network, where one
    ``nn.PReLU`` is shared by every block, all the PReLU slopes are one value."""
    torch.manual_seed(seed)
    net = MPRNetwork(**config)
    for name, p in net.named_parameters():
        if name.endswith("body.1.weight") and p.numel() == 1:
            p.data.fill_(0.17)
        else:
            p.data.normal_(0, 0.05)
    return net


def test_registered_contract():
    p = defenses.create("mprnet")
    assert isinstance(p, MPRNet) and p.presets == [{}] and p.defaults == {"weights": None}
    assert p.differentiable and not p.randomized and p.min_size == 8
    assert {k: p.config[k] for k in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab")} == \
        {"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8, "num_cab": 2}
    assert all(not q.requires_grad for q in p.parameters()) and not p.training


def test_shape_range_determinism_any_size(crops):
    p = defenses.create("mprnet", preset=0)
    y = p(crops)
    assert y.shape == crops.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, p(crops))
    assert torch.allclose(p(crops[1:2]), y[1:2], atol=1e-5)
    for h, w in ((37, 50), (8, 8), (9, 15)):  # reflect-padded to a multiple of 8, cropped back
        assert p(crops[:1, :, :h, :w]).shape == (1, 3, h, w)
    with pytest.raises(InputError, match="at least 8x8"):
        p(crops[:1, :, :7, :20])


def test_gradient_through_defended_metric(crops):
    dm = iqaguard.defend(iqaguard.metrics.create("builtin-nr"), defenses.create("mprnet"))
    x = crops[:1].clone().requires_grad_(True)
    dm(x).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_official_checkpoint_loads_like_safetensors(tmp_path, crops):
    net = official_state(TINY)
    pth = tmp_path / "model_denoising.pth"
    state = {f"module.{k}": v for k, v in net.state_dict().items()}  # as saved from nn.DataParallel
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4}]}}, pth)
    st = tmp_path / "same.safetensors"
    save_model(net, st, TINY)
    a, b = MPRNet(weights=pth), MPRNet(weights=st)
    assert a.config == TINY  # widths read off the official keys
    ya, yb = a(crops), b(crops)
    assert torch.allclose(ya, yb, atol=1e-6)
    x8 = crops[..., :72]  # a multiple of 8: no padding, the raw network's stage-3 image
    with torch.no_grad():
        assert torch.allclose(a(x8), net(x8)[0].clamp(0, 1), atol=1e-5)


def test_official_widths():
    # published size of the (same architecture) deblurring model, n_feat 96, scale_unetfeats 48,
    # scale_orsnetfeats 32: 20.1 M parameters (Zamir et al. 2021; paperswithcode GoPro "Params (M) 20.1")
    deblur = MPRNetwork(n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32)
    assert round(sum(p.numel() for p in deblur.parameters()) / 1e6, 1) == 20.1
    sd = MPRNetwork(**OFFICIAL_DENOISING).state_dict()  # Denoising/MPRNet.py: 80 / 48 / 32, 8 CABs per ORB
    tops = {k.split(".")[0] for k in sd}
    assert tops == {"shallow_feat1", "shallow_feat2", "shallow_feat3", "stage1_encoder", "stage1_decoder",
                    "stage2_encoder", "stage2_decoder", "stage3_orsnet", "sam12", "sam23", "concat12", "concat23",
                    "tail"}
    for k, shape in {"shallow_feat1.0.weight": (80, 3, 3, 3), "shallow_feat1.1.body.1.weight": (1,),
                     "shallow_feat1.1.CA.conv_du.0.weight": (20, 80, 1, 1),
                     "stage1_encoder.encoder_level3.1.body.2.weight": (176, 176, 3, 3),
                     "stage1_encoder.down12.down.1.weight": (128, 80, 1, 1),
                     "stage2_encoder.csff_dec3.weight": (176, 176, 1, 1),
                     "stage1_decoder.skip_attn2.CA.conv_du.2.weight": (128, 32, 1, 1),
                     "stage2_decoder.up32.up.1.weight": (128, 176, 1, 1),
                     "stage3_orsnet.orb3.body.8.weight": (112, 112, 3, 3),
                     "stage3_orsnet.up_dec2.1.up.1.weight": (80, 128, 1, 1),
                     "stage3_orsnet.conv_enc3.weight": (112, 80, 1, 1),
                     "sam23.conv3.weight": (80, 3, 1, 1), "concat23.weight": (112, 160, 3, 3),
                     "tail.weight": (3, 112, 3, 3)}.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("stage1_encoder.csff") for k in sd) and not any(k.endswith(".bias") for k in sd)


def test_missing_file():
    with pytest.raises(MissingWeightsError, match="train_mprnet.py"):
        MPRNet(weights="/nonexistent/model_denoising.pth")


def test_wrong_keys(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, bad)
    with pytest.raises(InputError, match="shallow_feat1"):
        MPRNet(weights=bad)
    st = tmp_path / "bad.safetensors"
    save_model(torch.nn.Conv2d(3, 3, 1), st, TINY)
    with pytest.raises(InputError, match="missing"):
        MPRNet(weights=st)
