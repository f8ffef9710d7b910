"""The classic purifications of Guardians of Image Quality Table 8: contract, presets, numbers,
BPDA (identity and surrogate) and EOT against toy defenses with known gradients."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard import defenses, ops
from iqaguard.data.builtin import photo_paths
from iqaguard.data.io import load_image
from iqaguard.defenses import defend, match_size
from iqaguard.defenses.base import Purification, draw
from iqaguard.errors import InputError
from iqaguard.metrics.functional import psnr
from iqaguard.registry import DEFENSES

CLASSIC = ["gaussian-blur", "median-blur", "unsharp", "jpeg", "diffjpeg", "color-quantization", "flip", "upscale",
           "resize", "random-rotate", "random-crop", "random-noise"]
#: Table 8's varied parameter and grid, weakest first (Flip: Table 8 varies nothing)
GRIDS = {
    "gaussian-blur": ("kernel_size", [3, 5, 7, 9, 11]), "median-blur": ("kernel_size", [3, 5, 7, 9, 11]),
    "unsharp": ("kernel_size", [3, 5, 7, 9, 11]), "jpeg": ("q", [90, 70, 50, 30, 10]),
    "diffjpeg": ("q", [90, 70, 50, 30, 10]), "color-quantization": ("npp", [25, 20, 16, 5, 2]),
    "flip": ("axis", ["horizontal"]), "upscale": ("scale", [0.9, 0.75, 0.5, 0.25, 0.1]),
    "resize": ("scale", [0.9, 0.75, 0.5, 0.25, 0.1]), "random-rotate": ("angle", [10, 15, 20, 30, 50]),
    "random-crop": ("size", [288, 256, 128, 64, 32]),
    "random-noise": ("sigma", [2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255]),
}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _photo(h=96, w=128, index=0):
    """A central crop of a builtin photograph (real image statistics, small)."""
    x = load_image(photo_paths()[index])
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w].contiguous()


def _batch():
    return torch.cat([_photo(index=0), _photo(index=1)])


# ---------------------------------------------------------------- contract of every defense
def test_every_classic_defense_is_registered_as_a_purification():
    for name in CLASSIC:
        assert issubclass(DEFENSES.get(name), Purification), name


@pytest.mark.parametrize("name", CLASSIC)
def test_presets_follow_table_8_weakest_first(name):
    key, grid = GRIDS[name]
    cls = DEFENSES.get(name)
    assert [p[key] for p in cls.presets] == pytest.approx(grid) if key != "axis" else [p[key] for p in cls.presets]
    x = _photo(index=3)
    # weakest first: the distance to the input grows with the preset index (same draw for randomized)
    dist = [float((match_size(defenses.create(name, preset=i)(x, generator=_gen(5)), x) - x).abs().mean())
            for i in range(len(cls.presets))]
    assert all(a <= b + 1e-6 for a, b in zip(dist, dist[1:])), dist
    if len(dist) > 1:
        assert dist[-1] > dist[0], dist


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("hw", [(64, 64), (37, 53)])
def test_shape_range_dtype_and_declared_size(name, hw):
    x = torch.rand(2, 3, *hw, generator=_gen(0))
    for i in range(len(DEFENSES.get(name).presets)):
        p = defenses.create(name, preset=i)
        y = p(x, generator=_gen(1))
        assert tuple(y.shape) == (2, 3, *p.output_size(*hw)), (p, y.shape)
        assert y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
        if name != "resize":
            assert p.output_size(*hw) == hw  # only Resize changes the size (at these presets)


@pytest.mark.parametrize("name", CLASSIC)
def test_determinism_under_a_seed(name):
    x = _batch()
    p = defenses.create(name, preset=len(DEFENSES.get(name).presets) - 1)  # strongest: crops even small images
    a, b = p(x, generator=_gen(3)), p(x, generator=_gen(3))
    assert torch.equal(a, b)
    c = p(x, generator=_gen(4))
    assert torch.equal(a, c) != p.randomized  # randomized: a new seed gives a new draw; else no effect
    # one generator per image = each image alone with its own generator (batching changes nothing)
    seeds = [11, 12]
    batched = p(x, generator=[_gen(s) for s in seeds])
    single = torch.cat([p(x[i:i + 1], generator=_gen(s)) for i, s in enumerate(seeds)])
    assert torch.equal(batched, single)


def test_bad_arguments_raise_one_line_input_errors():
    bad = {"gaussian-blur": {"kernel_size": 4}, "median-blur": {"kernel_size": 0}, "unsharp": {"amount": -1.0},
           "jpeg": {"q": 0}, "diffjpeg": {"rounding": "floor"}, "color-quantization": {"npp": 1},
           "flip": {"axis": "diagonal"}, "upscale": {"scale": 1.5}, "resize": {"scale": 0.0},
           "random-rotate": {"padding": "wrap"}, "random-crop": {"size": 0}, "random-noise": {"sigma": -0.1}}
    for name, kw in bad.items():
        with pytest.raises(InputError) as e:
            defenses.create(name, **kw)
        assert list(kw)[0] in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="unknown argument"):
        defenses.create("gaussian-blur", radius=3)
    with pytest.raises(InputError, match="preset"):
        defenses.create("flip", preset=1)
    p = defenses.create("random-noise")
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(InputError, match="generator"):
        p(x, generator=[_gen(0)])
    with pytest.raises(InputError, match="generator"):
        p(x, generator=3)
    with pytest.raises(InputError, match="at least 6x6"):
        defenses.create("gaussian-blur", kernel_size=11)(torch.rand(1, 3, 5, 40))
    with pytest.raises(InputError, match="x"):
        p(torch.rand(1, 3, 8, 8) * 2)


# ---------------------------------------------------------------- numbers of individual defenses
@pytest.mark.parametrize("preset", range(5))
def test_jpeg_equals_pillows_encoder_bit_for_bit(preset):
    p = defenses.create("jpeg", preset=preset)
    x = torch.cat([_photo(61, 83, index=2), torch.rand(1, 3, 61, 83, generator=_gen(2))])
    out = p(x)
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(ops.to_uint8(x[i])).save(buf, format="JPEG", quality=p.q)
        want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(out[i], torch.from_numpy(want).permute(2, 0, 1))


def _diffjpeg_gaps(paths, qualities=(30, 50, 70)):
    gaps = []
    for path in paths:
        x = load_image(path)
        for q in qualities:
            real = psnr(defenses.create("jpeg", q=q)(x), x).item()
            diff = psnr(defenses.create("diffjpeg", q=q)(x), x).item()
            gaps.append(diff - real)
    return np.array(gaps)


def test_diffjpeg_within_1db_of_real_jpeg_on_builtin_photographs():
    gaps = _diffjpeg_gaps(photo_paths()[::20])  # 9 photographs spread over the set
    assert np.abs(gaps).max() < 1.0, gaps


@pytest.mark.slow
def test_diffjpeg_within_1db_of_real_jpeg_on_all_builtin_photographs():
    gaps = _diffjpeg_gaps(photo_paths())
    assert np.abs(gaps).max() < 1.0, (np.abs(gaps).max(), gaps.mean())


def test_gaussian_blur_sigma_follows_table_8():
    for k in (3, 5, 7, 9, 11):
        assert defenses.create("gaussian-blur", kernel_size=k).sigma == pytest.approx(0.15 * k + 0.35)
    x = _photo()
    torch.testing.assert_close(defenses.create("gaussian-blur", preset=2)(x), ops.gaussian_blur(x, 1.4, 7).clamp(0, 1))


def test_colour_quantisation_levels():
    x = torch.rand(1, 3, 20, 20, generator=_gen(0))
    for n in (2, 5, 16):
        y = defenses.create("color-quantization", npp=n)(x)
        assert sorted(set((y * (n - 1)).round().flatten().tolist())) == list(map(float, range(n)))
        torch.testing.assert_close(y * (n - 1), (y * (n - 1)).round(), atol=1e-5, rtol=0)


def test_flip_mirrors_and_resize_upscale_sizes():
    x = _photo(32, 48)
    assert torch.equal(defenses.create("flip")(x), x.flip(-1))
    assert torch.equal(defenses.create("flip", axis="vertical")(x), x.flip(-2))
    r = defenses.create("resize", scale=0.25)
    assert r.output_size(384, 512) == (96, 128) and r(x).shape[-2:] == (8, 12)
    flat = torch.full((1, 3, 40, 40), 0.4)
    torch.testing.assert_close(defenses.create("upscale", scale=0.1)(flat), flat)
    assert match_size(r(x), x).shape == x.shape


def test_random_rotate_geometry_and_angles():
    x = _photo(24, 24)
    p = defenses.create("random-rotate", angle=30.0)
    a = p.angles(torch.zeros(64, 3, 2, 2), _gen(0))
    assert a.abs().max() <= 30 and a.min() < -15 and a.max() > 15  # uniform over [-30, 30]
    exact = defenses.create("random-rotate", angle=90.0)
    exact.angles = lambda x, generator=None: torch.full((x.shape[0],), 90.0)
    # +90 degrees turns the content counter-clockwise, as torch.rot90 (pixel centres map onto centres)
    torch.testing.assert_close(exact(x), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    zero = defenses.create("random-rotate", angle=10.0)
    zero.angles = lambda x, generator=None: torch.zeros(x.shape[0])
    torch.testing.assert_close(zero(x), x, atol=1e-6, rtol=0)


def test_random_crop_windows_and_rescale_flag():
    p = defenses.create("random-crop", size=64)
    assert p.window(384, 512) == (64, 85) and p.window(40, 30) == (40, 30)  # small images: no crop
    x = _photo(96, 128)
    offs = p.offsets(x, _gen(7))
    assert ((offs >= 0) & (offs <= torch.tensor([96 - 64, 128 - 85]))).all()
    windows = defenses.create("random-crop", size=64, rescale=False)
    w = windows(x, generator=_gen(7))
    r, c = offs[0].tolist()
    assert w.shape[-2:] == (64, 85) and torch.equal(w[0], x[0, :, r:r + 64, c:c + 85])


def test_random_noise_statistics():
    x = torch.full((4, 3, 64, 64), 0.5)
    y = defenses.create("random-noise", sigma=8 / 255)(x, generator=_gen(0))
    assert abs((y - x).std().item() - 8 / 255) < 0.002 and abs((y - x).mean().item()) < 0.001


# ---------------------------------------------------------------- BPDA, surrogates and EOT with toys
from test_jpeg_defend import Quadratic  # noqa: E402  (NR, sum(w * x^2): gradient 2 w x)


class Affine(Purification):
    """Differentiable ``S(x) = 0.5 x + 0.25``: the surrogate of :class:`QuantisedAffine`."""

    differentiable = True

    def apply(self, x, generator=None):
        return 0.5 * x + 0.25


class QuantisedAffine(Purification):
    """Non-differentiable ``P(x) = round(8 S(x)) / 8`` with the surrogate ``S``."""

    def apply(self, x, generator=None):
        return torch.round((0.5 * x + 0.25) * 8) / 8

    def surrogate(self):
        return Affine()


class Gain(Purification):
    """Randomized, differentiable ``S(x) = u x`` with one ``u ~ U[0.5, 1)`` per image."""

    differentiable = True
    randomized = True

    def apply(self, x, generator=None):
        return (0.5 + 0.5 * draw(x, generator, (1, 1, 1))) * x


class QuantisedGain(Gain):
    """Randomized, non-differentiable ``P(x) = round(16 u x) / 16`` with the surrogate :class:`Gain`."""

    differentiable = False

    def apply(self, x, generator=None):
        return torch.round(super().apply(x, generator) * 16) / 16

    def surrogate(self):
        return Gain()


def _w(h=16):
    return torch.rand(1, 3, h, h, generator=_gen(1))


def _x(b=2, h=16, seed=0):
    return 0.1 + 0.8 * torch.rand(b, 3, h, h, generator=_gen(seed))


def _grad(metric, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(metric(x).sum(), x)
    return g


def test_bpda_through_a_surrogate_has_the_surrogates_gradient_and_the_defenses_value():
    w, x = _w(), _x()
    p = QuantisedAffine()
    dm = defend(Quadratic(w), p)
    px = p(x)
    assert torch.equal(dm(x), Quadratic(w)(px))
    # d/dx f(P(x)) by BPDA: J_S^T grad f(P(x)) = 0.5 * 2 w P(x)
    torch.testing.assert_close(_grad(dm, x), w * px, atol=1e-6, rtol=1e-6)


def test_bpda_surrogate_of_a_randomized_defense_replays_its_draws():
    w, x, k = _w(), _x(), 3
    dm = defend(Quadratic(w), QuantisedGain(), eot_samples=k, generator=_gen(9))
    value, grad = dm(x), None
    dm2 = defend(Quadratic(w), QuantisedGain(), eot_samples=k, generator=_gen(9))
    grad = _grad(dm2, x)
    g = _gen(9)
    us = [0.5 + 0.5 * draw(x, g, (1, 1, 1)) for _ in range(k)]
    pxs = [torch.round(u * x * 16) / 16 for u in us]
    torch.testing.assert_close(value, sum(Quadratic(w)(p) for p in pxs) / k, atol=1e-5, rtol=1e-6)
    # gradient: mean over draws of u_k * 2 w P_k(x) -- the surrogate saw the defense's u_k
    torch.testing.assert_close(grad, sum(u * 2 * w * p for u, p in zip(us, pxs)) / k, atol=1e-6, rtol=1e-6)
    # the generator continued after the defense's k draws (the replays did not consume it)
    assert torch.equal(dm2.generator.get_state(), g.get_state())


def test_eot_over_a_real_randomized_defense():
    w, x, k = _w(), _x(), 4
    p = defenses.create("random-noise", sigma=2 / 255)
    dm = defend(Quadratic(w), p, eot_samples=k, generator=_gen(3))
    grad = _grad(dm, x)
    g = _gen(3)
    draws = [(x + p.sigma * draw(x, g, x.shape[1:], normal=True)).clamp(0, 1) for _ in range(k)]
    torch.testing.assert_close(grad, sum(2 * w * d for d in draws) / k, atol=1e-6, rtol=1e-6)


def test_diffjpeg_hard_rounding_uses_the_ste_surrogate():
    w, x = _w(24), _x(h=24)
    hard = defenses.create("diffjpeg", q=50, rounding="hard")
    assert not hard.differentiable and hard.surrogate().rounding == "ste"
    assert defenses.create("diffjpeg").differentiable  # the property follows the parameters
    px = hard(x)
    xs = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad((ops.diff_jpeg(xs, 50, "ste").clamp(0, 1) * (2 * w * px)).sum(), xs)
    torch.testing.assert_close(_grad(defend(Quadratic(w), hard), x), want, atol=1e-6, rtol=1e-5)


def test_exact_gradients_through_differentiable_defenses_match_finite_differences():
    torch.manual_seed(0)
    x = _x(b=1, h=12).double()
    w = _w(12).double()
    for name, kw in (("gaussian-blur", {}), ("median-blur", {}), ("unsharp", {}), ("upscale", {}),
                     ("resize", {}), ("flip", {})):
        p = defenses.create(name, **kw)
        assert p.differentiable

        h, w_ = p.output_size(12, 12)

        def f(z, p=p, h=h, w_=w_):
            return (w[..., :h, :w_] * p.apply(z) ** 2).sum()

        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5), name


def test_defended_metric_rejects_purified_images_below_the_metric_minimum():
    class Big(Quadratic):
        min_size = 32

    m = Big(torch.ones(1, 3, 1, 1))
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(InputError, match="minimum 32x32"):
        defend(m, defenses.create("resize", scale=0.5))(x)
    assert defend(m, defenses.create("resize", scale=0.9))(x).shape == (1,)
