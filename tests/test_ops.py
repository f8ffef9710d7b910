"""iqaguard.ops: the shared image operations reproduce the functions they replaced, number for number,
and the new filters and codecs match their references (scipy, Pillow)."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from iqaguard import ops
from iqaguard.data.distortions import _ops as dist_ops
from iqaguard.errors import InputError
from iqaguard.metrics import builtin, cells, functional, nss
from iqaguard.ops import arrays


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- the replaced functions, as they were
def old_cells_luma(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def old_luma255(x):
    w = torch.tensor((65.481, 128.553, 24.966), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) + 16.0


def old_gaussian_taps(size, sigma, dtype=torch.float32, device=torch.device("cpu")):
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def old_builtin_gaussian_blur(z, sigma, radius=3):
    c, k = z.shape[1], 2 * radius + 1
    g = old_gaussian_taps(k, sigma, z.dtype, z.device)
    z = F.pad(z, (radius,) * 4, mode="reflect" if min(z.shape[-2:]) > radius else "replicate")
    z = F.conv2d(z, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(z, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def old_filter_valid(x, g):
    k = g.numel()
    y = x.reshape(1, -1, *x.shape[-2:])
    c = y.shape[1]
    y = F.conv2d(y, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    y = F.conv2d(y, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return y.reshape(*x.shape[:-2], *y.shape[-2:])


def old_correlate1d(x, taps, dim, stride=1):
    k = len(taps)
    n_out = (x.shape[dim] - k) // stride + 1
    span = (n_out - 1) * stride + 1
    out = None
    for j, t in enumerate(taps):
        sl = x[..., j:j + span:stride] if dim == -1 else x[..., j:j + span:stride, :]
        out = sl * t if out is None else out + sl * t
    return out


def old_nss_gaussian_filter(x, padding):
    r = 3
    taps = old_gaussian_taps(7, 7 / 6, torch.float64).tolist()
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    y = F.pad(y, (r, r, r, r), mode="constant" if padding == "zeros" else "replicate")
    y = old_correlate1d(old_correlate1d(y, taps, -1), taps, -2)
    return y.reshape(shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lumas_reproduce_the_old_functions_exactly(dtype):
    x = _rand(3, 3, 37, 53, dtype=dtype)
    assert torch.equal(ops.luma(x), old_cells_luma(x))
    assert torch.equal(cells.luma(x), old_cells_luma(x))
    assert torch.equal(ops.studio_luma255(x), old_luma255(x))
    assert torch.equal(functional.rgb_to_luma(x), old_luma255(x) / 255.0)
    assert torch.equal(functional._to255(x, True), old_luma255(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size, sigma", [(11, 1.5), (7, 7 / 6), (5, 1.1)])
def test_gaussian_taps_and_filters_reproduce_the_old_functions_exactly(dtype, size, sigma):
    assert torch.equal(ops.gaussian_taps(size, sigma, dtype), old_gaussian_taps(size, sigma, dtype))
    assert functional.gaussian_taps is ops.gaussian_taps
    x = _rand(2, 4, 29, 33, seed=1, dtype=dtype)
    g = old_gaussian_taps(size, sigma, dtype)
    assert torch.equal(functional._filter_valid(torch.stack([x, x * x]), g), old_filter_valid(torch.stack([x, x * x]), g))
    for z in (x, x[..., :3, :3]):  # reflected, and replicated on maps too small to reflect
        assert torch.equal(builtin.gaussian_blur(z, sigma), old_builtin_gaussian_blur(z, sigma))
    for padding in ("zeros", "replicate"):
        assert torch.equal(nss.gaussian_filter(x, padding), old_nss_gaussian_filter(x, padding))
    taps = g.tolist()
    for dim, stride in ((-1, 1), (-2, 2)):
        assert torch.equal(ops.correlate1d(x, taps, dim, stride), old_correlate1d(x, taps, dim, stride))


def test_mscn_of_the_builtin_models_is_unchanged():
    x = _rand(2, 3, 40, 48, seed=2)
    y = old_cells_luma(x)
    mu = old_builtin_gaussian_blur(y, 7 / 6)
    var = (old_builtin_gaussian_blur(y * y, 7 / 6) - mu * mu).clamp(min=0)
    assert torch.equal(builtin.mscn(x), (y - mu) / ((var + 1e-10).sqrt() + 1 / 255))


def test_numpy_array_ops_are_the_distortions_own():
    # one implementation: the distortions (and so builtin-kadid) use ops.arrays unchanged
    for name in ("luma", "rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_lab", "lab_to_rgb", "blur", "LUMA"):
        assert getattr(dist_ops, name) is getattr(arrays, name)
    img = _rand(3, 21, 17).permute(1, 2, 0).numpy()
    want = ndimage.gaussian_filter(img, (1.3, 1.3, 0), mode="reflect")
    assert np.array_equal(arrays.blur(img, 1.3), want)


def test_torch_ycbcr_matches_numpy_and_inverts():
    x = _rand(2, 3, 9, 11, seed=3)
    ycc = ops.rgb_to_ycbcr(x)
    want = arrays.rgb_to_ycbcr(x[0].permute(1, 2, 0).numpy())
    np.testing.assert_allclose(ycc[0].permute(1, 2, 0).numpy(), want, atol=1e-6)
    torch.testing.assert_close(ops.ycbcr_to_rgb(ycc), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(ops.ycbcr_to_rgb(ops.rgb_to_ycbcr(x * 255, 128.0), 128.0), x * 255, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- the new filters against scipy
@pytest.mark.parametrize("k", [3, 5, 11])
def test_median_blur_equals_scipy_with_replicated_borders(k):
    x = _rand(2, 3, 23, 30, seed=4)
    want = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="nearest")
    assert np.array_equal(ops.median_blur(x, k).numpy(), want)


def test_median_blur_in_bands_equals_one_pass(monkeypatch):
    x = _rand(1, 3, 31, 17, seed=5)
    whole = ops.median_blur(x, 5)
    monkeypatch.setattr("iqaguard.ops.filters._MEDIAN_CHUNK", 3 * 17 * 25 * 2)  # two rows per band
    assert torch.equal(ops.median_blur(x, 5), whole)


@pytest.mark.parametrize("k, sigma", [(3, 0.8), (11, 2.0)])
def test_gaussian_blur_equals_scipy_mirror_correlation(k, sigma):
    x = _rand(1, 3, 19, 26, seed=6, dtype=torch.float64)
    g = ops.gaussian_taps(k, sigma, torch.float64).numpy()
    want = ndimage.correlate1d(ndimage.correlate1d(x.numpy(), g, axis=-1, mode="mirror"), g, axis=-2, mode="mirror")
    np.testing.assert_allclose(ops.gaussian_blur(x, sigma, k, "reflect").numpy(), want, atol=1e-12)


def test_unsharp_mask_is_detail_boost_and_identity_at_zero_amount():
    x = _rand(1, 3, 16, 16, seed=7)
    blurred = ops.gaussian_blur(x, 1.0, 5)
    torch.testing.assert_close(ops.unsharp_mask(x, 1.0, 5, 1.0), 2 * x - blurred)
    assert torch.equal(ops.unsharp_mask(x, 1.0, 5, 0.0), x)
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(ops.unsharp_mask(flat, 1.0, 5, 1.0), flat)


# ---------------------------------------------------------------- JPEG
def _pillow(x, q):
    buf = io.BytesIO()
    Image.fromarray(ops.to_uint8(x)).save(buf, format="JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("q", range(1, 101))
def test_quantization_tables_equal_the_ones_pillow_writes(q):
    dec = _pillow(_rand(1, 3, 16, 16), q)
    qy, qc = ops.quantization_tables(q)
    assert qy.flatten().tolist() == list(dec.quantization[0])
    assert qc.flatten().tolist() == list(dec.quantization[1])


def test_jpeg_roundtrip_is_pillow_bit_for_bit_at_odd_sizes():
    x = _rand(2, 3, 19, 35, seed=8)
    out = ops.jpeg_roundtrip(x, 40)
    for i in range(2):
        want = np.asarray(_pillow(x[i], 40).convert("RGB"), dtype=np.float32) / 255
        assert torch.equal(out[i], torch.from_numpy(want).permute(2, 0, 1))
    for bad in (0, 101, 50.0, True):
        with pytest.raises(InputError, match="quality"):
            ops.jpeg_roundtrip(x, bad)


@pytest.mark.parametrize("rounding", ["ste", "cubic", "identity", "hard"])
def test_diff_jpeg_is_close_to_real_jpeg_and_has_the_declared_slope(rounding):
    x = ops.gaussian_blur(_rand(1, 3, 40, 56, seed=9), 1.5, 7)  # a smooth image, as photographs
    real = ops.jpeg_roundtrip(x, 50)
    d = ops.diff_jpeg(x, 50, rounding)
    assert d.shape == x.shape
    assert (d - real).abs().mean() < 2 / 255  # within 8-bit rounding and integer-DCT differences
    if rounding in ("ste", "identity", "hard"):  # the same exact-rounding forward
        assert torch.equal(d, ops.diff_jpeg(x, 50, "hard"))
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ops.diff_jpeg(xs, 50, rounding).sum(), xs)
    assert torch.isfinite(g).all()
    if rounding == "hard":
        assert g.abs().max() < 1e-6  # rounding has no useful gradient: hence the surrogate
    else:
        assert g.abs().mean() > 0.05


def test_diff_jpeg_rounding_slopes():
    z = torch.tensor([0.2, 1.4, -2.3], dtype=torch.float64, requires_grad=True)
    from iqaguard.ops.jpeg import _round

    r = torch.round(z.detach())
    for mode, value, slope in (("cubic", r + (z.detach() - r) ** 3, 3 * (z.detach() - r) ** 2),
                               ("ste", r, 3 * (z.detach() - r) ** 2), ("identity", r, torch.ones(3)),
                               ("hard", r, torch.zeros(3))):
        out = _round(z, mode)
        (g,) = torch.autograd.grad(out.sum(), z, allow_unused=True) if out.requires_grad else (torch.zeros(3),)
        torch.testing.assert_close(out.detach(), value)
        torch.testing.assert_close(g, slope.to(g.dtype))


def test_diff_jpeg_rejects_unknown_rounding():
    with pytest.raises(InputError, match="rounding"):
        ops.diff_jpeg(torch.rand(1, 3, 8, 8), 50, "floor")
