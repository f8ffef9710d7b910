"""DiffPure and the shared diffusion core (schedule, sampler, guided-diffusion-layout U-Net, weights)."""
import math

import pytest
import torch
from torch import nn

import iqaguard
from iqaguard.defenses.purification._diffusion import Diffusion, linear_betas
from iqaguard.defenses.purification._unet import UNetModel, infer_config
from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.diffpure import DiffPure
from iqaguard.errors import InputError, MissingWeightsError

TINY = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2],
        "num_heads": 2, "norm_groups": 4}
SHIPPED = WEIGHTS_DIR / "diffpure.safetensors"


class Oracle(nn.Module):
    """An ε-network that returns the true noise."""

    def __init__(self, eps: torch.Tensor) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x, t):
        return self.eps


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(1)
    net = UNetModel(**TINY)
    path = tmp_path_factory.mktemp("dp") / "tiny.safetensors"
    save_model(net, path, TINY)
    return str(path)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- schedule (analytic)
def test_linear_schedule_closed_form():
    b = linear_betas()
    assert b.shape == (1000,) and b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    d = Diffusion(Oracle(torch.zeros(1)))
    i = torch.arange(1000, dtype=torch.float64)
    beta = 1e-4 + (0.02 - 1e-4) * i / 999
    closed = torch.exp(torch.cumsum(torch.log1p(-beta), 0))
    assert torch.allclose(d.alphas_cumprod, closed, rtol=1e-10)
    assert float(d.alphas_cumprod[0]) == pytest.approx(1 - 1e-4)
    # the posterior variance lies between 0 and beta, and the log is finite at t = 0
    assert torch.isfinite(d.post_log_var).all() and (d.post_log_var.exp()[1:] <= b[1:]).all()


def test_t_for_sigma_inverts_the_noise_level():
    d = Diffusion(Oracle(torch.zeros(1)))
    a = d.alphas_cumprod
    for i in (0, 9, 57, 120, 260, 700):
        sigma = float(((1 - a[i]) / a[i]).sqrt()) / 2
        assert d.t_for_sigma(sigma) == i
    level = ((1 - a) / a).sqrt() / 2
    for s in (0.1, 0.25, 0.5):
        i = d.t_for_sigma(s)
        assert abs(float(level[i]) - s) <= abs(float(level[i + 1]) - s) and abs(float(level[i]) - s) <= abs(
            float(level[i - 1]) - s)


def test_q_sample_statistics():
    d = Diffusion(Oracle(torch.zeros(1)))
    x0 = torch.full((20000,), 0.4)
    for t in (9, 499):
        xt = d.q_sample(x0, t, torch.randn(20000, generator=gen(t)))
        a = float(d.alphas_cumprod[t])
        assert float(xt.mean()) == pytest.approx(math.sqrt(a) * 0.4, abs=0.02)
        assert float(xt.std()) == pytest.approx(math.sqrt(1 - a), rel=0.03)
    # per-image steps broadcast like the scalar one
    x = torch.rand(3, 3, 4, 4)
    e = torch.randn(3, 3, 4, 4)
    tb = torch.tensor([0, 5, 50])
    batched = d.q_sample(x, tb, e)
    for k in range(3):
        assert torch.allclose(batched[k], d.q_sample(x[k:k + 1], int(tb[k]), e[k:k + 1])[0])


def test_denoise_one_shot_with_an_oracle_is_exact():
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    eps = torch.randn(2, 3, 8, 8, generator=gen(0))
    d = Diffusion(Oracle(eps))
    for t in (0, 10, 200, 500):
        assert torch.allclose(d.denoise_one_shot(d.q_sample(x0, t, eps), t), x0, atol=1e-4)
    # the last reverse step returns x̂0 itself (mean coefficient 1 on x̂0, no noise)
    assert torch.allclose(d.p_sample(d.q_sample(x0, 0, eps), 0, torch.randn_like(x0)), x0, atol=1e-5)


def test_learned_variance_interpolates_between_the_fixed_ones():
    x = torch.zeros(1, 3, 4, 4)
    z = torch.ones_like(x)
    for v, name in ((-1.0, "small"), (1.0, "large")):
        d = Diffusion(Oracle(torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)))
        ref = Diffusion(Oracle(torch.zeros_like(x)), variance=name)
        assert torch.allclose(d.p_sample(x, 30, z), ref.p_sample(x, 30, z), atol=1e-6)


# ---------------------------------------------------------------- the defense
def test_shape_range_and_odd_sizes(tiny_file):
    p = DiffPure(t=5, weights=tiny_file)
    for shape in ((2, 3, 13, 21), (1, 3, 5, 7), (1, 3, 1, 1)):
        y = p(torch.rand(*shape), generator=gen(0))
        assert y.shape == shape and y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()


def test_presets_registry_and_validation(tiny_file):
    assert DiffPure.presets == [{"t": t} for t in (5, 10, 20, 30, 50)]
    p = iqaguard.defenses.create("diffpure", preset=4, weights=tiny_file)
    assert p.t == 50 and p.randomized and p.differentiable
    with pytest.raises(InputError, match="t"):
        DiffPure(t=0, weights=tiny_file)


def test_seeds_and_per_image_generators(tiny_file):
    p = DiffPure(t=5, weights=tiny_file)
    x = torch.rand(3, 3, 12, 10)
    a, b = p(x, generator=gen(3)), p(x, generator=gen(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, p(x, generator=gen(4)))
    batched = p(x, generator=[gen(10 + k) for k in range(3)])
    for k in range(3):
        assert torch.allclose(batched[k:k + 1], p(x[k:k + 1], generator=gen(10 + k)), atol=1e-5)


def test_adaptive_gradient_finite_nonzero_and_checkpoint_exact(tiny_file):
    metric = iqaguard.metrics.create("builtin-nr")
    p = DiffPure(t=5, weights=tiny_file)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    dm = iqaguard.defend(metric, p, generator=gen(0))
    dm(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    grads = []
    for ck in (True, False):
        p.diffusion.checkpoint = ck
        xi = x.detach().clone().requires_grad_(True)
        (p(xi, generator=gen(5)) * torch.linspace(0, 1, 64)).sum().backward()
        grads.append(xi.grad)
    p.diffusion.checkpoint = True
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


# ---------------------------------------------------------------- weights
def test_official_layout_checkpoint_loads(tmp_path):
    # guided-diffusion's ImageNet flags at mid size: FiLM, resblock up/down, learned sigma, attention
    cfg = {"model_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attention_resolutions": [2, 4],
           "num_head_channels": 16, "learn_sigma": True, "resblock_updown": True, "use_scale_shift_norm": True}
    net = UNetModel(**cfg)
    keys = set(net.state_dict())
    for k in ("time_embed.0.weight", "time_embed.2.weight", "input_blocks.0.0.weight",
              "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.in_layers.2.weight",
              "input_blocks.1.0.emb_layers.1.weight", "input_blocks.1.0.out_layers.0.weight",
              "input_blocks.1.0.out_layers.3.weight", "input_blocks.3.0.in_layers.2.weight",  # resblock down
              "input_blocks.4.0.skip_connection.weight", "input_blocks.4.1.qkv.weight",
              "input_blocks.4.1.proj_out.weight", "input_blocks.4.1.norm.weight",
              "middle_block.0.in_layers.2.weight", "middle_block.1.qkv.weight", "middle_block.2.out_layers.3.weight",
              "output_blocks.2.2.in_layers.2.weight", "output_blocks.8.0.skip_connection.weight",
              "out.0.weight", "out.2.weight"):
        assert k in keys, k
    assert net.state_dict()["out.2.weight"].shape[0] == 6
    inferred = infer_config(net.state_dict())
    for k in ("model_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "learn_sigma",
              "resblock_updown", "use_scale_shift_norm"):
        assert inferred[k] == cfg[k], k
    path = tmp_path / "official.pt"
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, path)
    p = DiffPure(t=3, weights=str(path))
    assert p.config["learn_sigma"] and p.network.multiple == 4
    y = p(torch.rand(1, 3, 9, 11), generator=gen(0))
    assert y.shape == (1, 3, 9, 11) and torch.isfinite(y).all()


def test_the_official_256_uncond_architecture_has_the_adm_widths():
    cfg = {"model_channels": 256, "channel_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
           "attention_resolutions": [8, 16, 32], "num_head_channels": 64, "learn_sigma": True,
           "resblock_updown": True, "use_scale_shift_norm": True}
    with torch.device("meta"):
        net = UNetModel(**cfg)
    state = net.state_dict()
    assert infer_config(state) == {"in_channels": 3, **cfg}
    assert state["input_blocks.0.0.weight"].shape == (256, 3, 3, 3)
    assert state["middle_block.1.qkv.weight"].shape == (3 * 1024, 1024, 1)
    assert state["out.2.weight"].shape == (6, 256, 3, 3)
    assert 5.4e8 < sum(v.numel() for v in state.values()) < 5.7e8   # the ~552M-parameter ADM model


def test_missing_and_wrong_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="train_diffusion"):
        DiffPure(weights=str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, bad)
    with pytest.raises(InputError):
        DiffPure(weights=str(bad))
    wrong = tmp_path / "wrong.safetensors"
    save_model(UNetModel(**TINY), wrong, {**TINY, "model_channels": 16})
    with pytest.raises(InputError):
        DiffPure(weights=str(wrong))


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped weights not trained yet")
def test_shipped_weights_purify():
    p = DiffPure(preset=0)
    x = torch.rand(1, 3, 24, 30)
    y = p(x, generator=gen(0))
    assert y.shape == x.shape and (y - x).abs().mean() < 0.2
