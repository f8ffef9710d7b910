"""Tests of iqaguard.metrics.functional against hand values and independent MATLAB-convention code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import structural_similarity

from iqaguard.errors import InputError
from iqaguard.metrics import functional as F


def _photo(name: str) -> torch.Tensor:
    arr = getattr(data, name)().astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return _photo("astronaut")  # 512 x 512 -> ssim.m downsamples by f = 2


@pytest.fixture(scope="module")
def coffee() -> torch.Tensor:
    return _photo("coffee")  # 400 x 600 -> f = round(400 / 256) = 2


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    arr = x[0].numpy()
    out = np.stack([ndimage.gaussian_filter(c, sigma, mode="nearest") for c in arr])
    return torch.from_numpy(out).unsqueeze(0).float()


# ------------------------------------------------------------------ independent reference code


def _luma_np(x: torch.Tensor) -> np.ndarray:
    """MATLAB rgb2ycbcr Y on the 0..255 scale, in float64."""
    r, g, b = x[0].double().numpy()
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _matlab_downsample(a: np.ndarray, f: int) -> np.ndarray:
    """imfilter(a, ones(f)/f^2, 'symmetric', 'same') then a(1:f:end, 1:f:end), with numpy."""
    before, after = (f - 1) // 2, f - 1 - (f - 1) // 2
    p = np.pad(a, ((before, after), (before, after)), mode="symmetric")
    h, w = -(-a.shape[0] // f), -(-a.shape[1] // f)
    return p[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def _ssim_matlab(y_dist: np.ndarray, y_ref: np.ndarray) -> float:
    f = max(1, int(math.floor(min(y_ref.shape) / 256 + 0.5)))
    if f > 1:
        y_dist, y_ref = _matlab_downsample(y_dist, f), _matlab_downsample(y_ref, f)
    return structural_similarity(
        y_dist, y_ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


def _ssim_cs_np(a: np.ndarray, b: np.ndarray):
    """Mean SSIM and mean contrast-structure with a 'valid' 11x11 Gaussian window (scipy)."""
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(z):
        z = ndimage.correlate1d(z, g, axis=0, mode="constant")
        z = ndimage.correlate1d(z, g, axis=1, mode="constant")
        return z[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = filt(a), filt(b)
    va, vb, cov = filt(a * a) - ma**2, filt(b * b) - mb**2, filt(a * b) - ma * mb
    cs = (2 * cov + c2) / (va + vb + c2)
    lum = (2 * ma * mb + c1) / (ma**2 + mb**2 + c1)
    return float((lum * cs).mean()), float(cs.mean())


def _ms_ssim_np(a: np.ndarray, b: np.ndarray) -> float:
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    out = 1.0
    for j, w in enumerate(weights):
        s, cs = _ssim_cs_np(a, b)
        out *= (s if j == 4 else cs) ** w
        a, b = _matlab_downsample(a, 2), _matlab_downsample(b, 2)
    return out


# ------------------------------------------------------------------ tests


def test_rgb_to_luma_matches_bt601_constants():
    colors = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    x = colors.view(5, 3, 1, 1).expand(5, 3, 2, 2).contiguous()
    y = F.rgb_to_luma(x)
    assert y.shape == (5, 1, 2, 2)
    expected = torch.tensor([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]) / 255.0
    torch.testing.assert_close(y[:, 0, 0, 0], expected, rtol=0, atol=1e-6)


def test_psnr_constant_offset_by_hand():
    ref = torch.full((2, 3, 8, 8), 0.4)
    x = ref + 0.05
    rgb = torch.full((2,), 10 * math.log10(1 / 0.05**2))  # RGB: MSE = 0.05^2 -> 26.0206 dB
    torch.testing.assert_close(F.psnr(x, ref), rgb)  # RGB is the default
    torch.testing.assert_close(F.psnr(x, ref, luma=False), rgb)  # the older keyword still works
    torch.testing.assert_close(F.psnr(x, ref, y_channel=False), rgb)
    # luma: Y moves by (65.481 + 128.553 + 24.966) / 255 * 0.05 = 219/255 * 0.05
    dy = 219.0 / 255.0 * 0.05
    y = torch.full((2,), 10 * math.log10(1 / dy**2))
    torch.testing.assert_close(F.psnr(x, ref, y_channel=True), y, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(F.psnr(x, ref, luma=True), y, rtol=1e-5, atol=1e-4)
    # data_range scales the peak: 255 on the 8-bit scale == 1 on [0, 1] with MSE in [0, 1] units
    torch.testing.assert_close(F.psnr(x, ref, data_range=2.0) - F.psnr(x, ref), torch.full((2,), 20 * math.log10(2.0)))
    with pytest.raises(InputError, match="luma"):
        F.psnr(x, ref, y_channel=True, luma=False)


def test_psnr_is_floored_at_the_quantisation_noise():
    ref = torch.full((1, 3, 8, 8), 0.4)
    best = 10 * math.log10(12 * 255**2)  # MSE floor (1/255)^2 / 12 -> 58.9226 dB
    assert F.PSNR_BEST == pytest.approx(best) and F.QUANTIZATION_MSE == pytest.approx(1 / (12 * 255**2))
    for y_channel in (False, True):
        assert F.psnr(ref, ref, y_channel=y_channel).item() == pytest.approx(best, abs=1e-4)
    tiny = ref + 1e-4  # MSE 1e-8, far below the floor: saturates, finite gradient
    x = tiny.clone().requires_grad_(True)
    out = F.psnr(x, ref)
    assert out.item() == pytest.approx(best, abs=1e-4)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    above = ref + 2.0 / 255  # MSE (2/255)^2 above the floor: exact unfloored value
    assert F.psnr(above, ref).item() == pytest.approx(20 * math.log10(255 / 2), abs=1e-3)


def test_mse_and_linf_by_hand():
    ref = torch.zeros(1, 3, 4, 4)
    x = ref.clone()
    x[0, 1, 2, 3] = 0.5
    x[0, 0, 0, 0] = 0.25
    assert F.mse(x, ref).item() == pytest.approx((0.25 + 0.0625) / 48)
    assert F.linf(x, ref).item() == pytest.approx(0.5)


def test_identical_images_score_one(astronaut):
    assert F.ssim(astronaut, astronaut).item() == pytest.approx(1.0, abs=1e-6)
    assert F.ms_ssim(astronaut, astronaut).item() == pytest.approx(1.0, abs=1e-6)
    assert F.ssim(astronaut, astronaut, luma=False).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
@pytest.mark.parametrize("distortion", ["noise", "blur"])
def test_ssim_agrees_with_matlab_conventions(photo, distortion, request):
    ref = request.getfixturevalue(photo)
    dist = _noisy(ref, 0.08) if distortion == "noise" else _blurred(ref, 2.0)
    expected = _ssim_matlab(_luma_np(dist), _luma_np(ref))
    got = F.ssim(dist, ref).item()
    assert got == pytest.approx(expected, rel=1e-3)
    assert got < 0.95  # the distortion is visible: the comparison is not trivially at 1


def test_ssim_rgb_is_mean_of_channel_ssims(coffee):
    dist = _noisy(coffee, 0.05, seed=3)
    a, b = dist[0].double().numpy() * 255, coffee[0].double().numpy() * 255
    per_channel = [_ssim_matlab(a[c], b[c]) for c in range(3)]
    assert F.ssim(dist, coffee, luma=False).item() == pytest.approx(np.mean(per_channel), rel=1e-3)


def test_ms_ssim_agrees_with_independent_implementation(astronaut):
    for dist in (_noisy(astronaut, 0.1, seed=1), _blurred(astronaut, 1.5)):
        expected = _ms_ssim_np(_luma_np(dist), _luma_np(astronaut))
        assert F.ms_ssim(dist, astronaut).item() == pytest.approx(expected, rel=1e-3)


def test_quality_orders_with_distortion_strength(astronaut):
    ref = astronaut[..., :256, :256]
    light, heavy = _noisy(ref, 0.02), _noisy(ref, 0.15)
    for fn in (F.ssim, F.ms_ssim, F.psnr):
        assert fn(light, ref).item() > fn(heavy, ref).item()


def test_downsample_factor_follows_ssim_m():
    assert F.ssim_downsample_factor(512, 512) == 2
    assert F.ssim_downsample_factor(383, 1000) == 1  # round(1.496) = 1
    assert F.ssim_downsample_factor(384, 384) == 2  # round(1.5) = 2
    assert F.ssim_downsample_factor(640, 900) == 3  # MATLAB rounds 2.5 away from zero
    assert F.ssim_downsample_factor(100, 100) == 1


def test_mean_downsample_anchor_and_symmetric_border():
    row = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]).view(1, 1, 1, 5).expand(1, 1, 2, 5)
    out = F._mean_downsample(row, 2)  # kernel anchored at its first tap: (a+b)/2, (c+d)/2, (e+e)/2
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.5, 6.0, 16.0]))
    rng = np.random.default_rng(0)
    a = rng.random((10, 11))
    for f in (2, 3, 4):
        got = F._mean_downsample(torch.from_numpy(a).view(1, 1, 10, 11), f)[0, 0].numpy()
        np.testing.assert_allclose(got, _matlab_downsample(a, f), rtol=1e-12)


def test_downsampling_kicks_in_at_512(astronaut):
    dist = _noisy(astronaut, 0.08)
    down = F.ssim(dist, astronaut)
    full = F.ssim(dist, astronaut, downsample=False)
    assert abs(down.item() - full.item()) > 0.01  # the 2x average removes much of the noise
    pooled = torch.nn.functional.avg_pool2d
    manual = F.ssim(pooled(dist, 2), pooled(astronaut, 2), downsample=False)  # even size: plain 2x2 blocks
    torch.testing.assert_close(down, manual, rtol=1e-5, atol=1e-6)


def test_batch_is_independent(astronaut):
    d1, d2 = _noisy(astronaut, 0.05, 1), _blurred(astronaut, 1.0)
    both = F.ssim(torch.cat([d1, d2]), torch.cat([astronaut, astronaut]))
    torch.testing.assert_close(both, torch.cat([F.ssim(d1, astronaut), F.ssim(d2, astronaut)]))


def test_gradcheck_ssim_and_psnr():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 13, 14, generator=g, dtype=torch.float64) * 0.8 + 0.1
    x = (ref + 0.05 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0.05, 0.95)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: F.ssim(t, ref), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: F.ssim(t, ref, luma=False), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: F.psnr(t, ref), (x,), eps=1e-6, atol=1e-4, fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: F.psnr(t, ref, y_channel=True), (x,), eps=1e-6, atol=1e-4,
                                    fast_mode=True)


@pytest.mark.parametrize("fn", [F.ms_ssim, F.ssim], ids=["ms_ssim", "ssim_downsampled"])
def test_directional_derivative_on_large_images(astronaut, fn):
    """Too large for gradcheck: compare the gradient with a central difference along one direction."""
    size = 192 if fn is F.ms_ssim else 512  # 512: ssim.m downsampling by 2 is inside the graph
    ref = astronaut[..., :size, :size].double()
    x = _noisy(astronaut, 0.05)[..., :size, :size].double().clamp(0.01, 0.99).requires_grad_(True)
    fn(x, ref).sum().backward()
    g = torch.Generator().manual_seed(5)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64) * 1e-3
    h = 1e-3
    with torch.no_grad():
        fd = (fn(x + h * v, ref) - fn(x - h * v, ref)).item() / (2 * h)
    assert (x.grad * v).sum().item() == pytest.approx(fd, rel=1e-4)


def test_ms_ssim_negative_cs_is_clipped_with_finite_gradient():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 176, 176, generator=g)
    ref = ndimage_smooth(ref)
    x = (1.0 - ref).requires_grad_(True)  # anti-correlated: negative contrast-structure terms
    score = F.ms_ssim(x, ref)
    assert score.item() == 0.0
    score.sum().backward()
    assert torch.isfinite(x.grad).all()


def ndimage_smooth(x: torch.Tensor) -> torch.Tensor:
    arr = np.stack([ndimage.gaussian_filter(c, 4.0) for c in x[0].numpy()])
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    return torch.from_numpy(arr).unsqueeze(0).float()


def test_size_and_input_errors():
    small = torch.rand(1, 3, 175, 200)
    with pytest.raises(InputError, match="176x176"):
        F.ms_ssim(small, small)
    tiny = torch.rand(1, 3, 10, 30)
    with pytest.raises(InputError, match="11x11"):
        F.ssim(tiny, tiny)
    with pytest.raises(InputError, match="y"):
        F.psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        F.ssim(torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 3, 16, 16))
    with pytest.raises(InputError, match="data_range"):
        F.psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), data_range=0)


# ------------------------------------------------------------------ TID2013 calibration pairs (pyiqa wheel)

#: chaofengc/IQA-PyTorch ResultsCalibra/calibration_summary.csv (rows psnr, ssim, ms_ssim): PSNR of
#: skimage on RGB; SSIM of ssim.m on rgb2gray input without its automatic downsampling; MS-SSIM of
#: msssim.m on rgb2gray input (ResultsCalibra.md, notes 2-4).
PUBLISHED = {
    "psnr": {"I03": 21.11, "I04": 20.99, "I06": 27.01, "I08": 23.3, "I19": 21.62},
    "ssim": {"I03": 0.6993, "I04": 0.9978, "I06": 0.9989, "I08": 0.9669, "I19": 0.6519},
    "ms_ssim": {"I03": 0.6733, "I04": 0.9996, "I06": 0.9998, "I08": 0.9566, "I19": 0.8462},
}
#: chaofengc/IQA-PyTorch ResultsCalibra/ms_ssim_org_result.txt: msssim.m on rgb2ycbcr Y input.
MS_SSIM_MATLAB_Y = {"I03": 0.6981, "I04": 0.9998, "I06": 0.9999, "I08": 0.9570, "I19": 0.8547}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def _gray3(a: np.ndarray) -> torch.Tensor:
    """MATLAB rgb2gray (uint8) replicated into three channels: luma=False then scores the gray image."""
    from calibra import rgb2gray_uint8

    return _t(np.repeat(rgb2gray_uint8(a)[..., None], 3, axis=2))


@pytest.fixture(scope="module")
def tid_pairs():
    from calibra import calibration_pairs

    return calibration_pairs()


def test_psnr_equals_skimage_and_published_on_tid2013_pairs(tid_pairs):
    from skimage.metrics import peak_signal_noise_ratio

    for name, (dist, ref) in tid_pairs.items():
        expected = peak_signal_noise_ratio(ref, dist, data_range=255)  # RGB, uint8
        got = F.psnr(_t(dist), _t(ref)).item()
        assert got == pytest.approx(expected, abs=0.01), name
        assert got == pytest.approx(PUBLISHED["psnr"][name], abs=0.005 + 1e-3), name  # published to 2 decimals
        assert F.psnr(_t(dist), _t(ref), y_channel=True).item() != pytest.approx(expected, abs=0.01)


def test_ssim_and_ms_ssim_match_published_matlab_values_on_tid2013_pairs(tid_pairs):
    for name, (dist, ref) in tid_pairs.items():
        gd, gr = _gray3(dist), _gray3(ref)
        # ssim.m on rgb2gray input, automatic downsampling removed (pyiqa's note 2)
        assert F.ssim(gd, gr, luma=False, downsample=False).item() == pytest.approx(PUBLISHED["ssim"][name], abs=2e-4)
        # msssim.m on the rgb2ycbcr luma: our default
        assert F.ms_ssim(_t(dist), _t(ref)).item() == pytest.approx(MS_SSIM_MATLAB_Y[name], abs=2e-4), name
        # msssim.m on rgb2gray: within 0.005 (I03 0.0033, I19 0.0044 off; pyiqa's own MS-SSIM is off
        # by as much there, 0.6707 / 0.8418, so the published rgb2gray row is not reproduced by either)
        assert F.ms_ssim(gd, gr, luma=False).item() == pytest.approx(PUBLISHED["ms_ssim"][name], abs=5e-3), name
