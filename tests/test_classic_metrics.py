"""Tests of the registered weightless FR metrics psnr / ssim / ms-ssim and their bounds."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import iqaguard.metrics.classic as classic
from iqaguard.data.io import jpeg_roundtrip, pil_to_tensor
from iqaguard.errors import InputError
from iqaguard.metrics import functional as F
from iqaguard.metrics.base import Bounds
from iqaguard.metrics.bounds import calibrate_bounds
from iqaguard.registry import METRICS

NAMES = ("psnr", "ssim", "ms-ssim")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_classic_bounds.py"


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return pil_to_tensor(Image.fromarray(data.astronaut()))[..., 128:384, 128:384].contiguous()


@pytest.fixture(scope="module")
def noisy(photo) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (photo + 0.05 * torch.randn(photo.shape, generator=g)).clamp(0, 1)


def test_registered_with_fr_higher_better_and_bounds():
    for name in NAMES:
        m = METRICS.create(name)
        assert m.kind == "fr" and m.lower_better is False and m.name == name
        assert isinstance(m.bounds, Bounds)
        assert m.bounds.worst < m.bounds.best
    assert METRICS.create("ssim").bounds.best == 1.0
    assert METRICS.create("ms-ssim").bounds.best == 1.0
    assert METRICS.create("psnr").bounds.best == pytest.approx(10 * math.log10(12 * 255**2))
    assert METRICS.create("psnr").bounds.best == pytest.approx(58.9226, abs=1e-4)
    assert METRICS.create("ssim", luma=False).bounds.worst == classic.CALIBRATED_WORST[("ssim", (False, True))]


def test_pristine_against_itself_scores_best(photo):
    for name in NAMES:
        m = METRICS.create(name)
        assert m(photo, photo).item() == pytest.approx(m.bounds.best, abs=1e-5)


def test_scores_match_functional(photo, noisy):
    torch.testing.assert_close(METRICS.create("ssim")(noisy, photo), F.ssim(noisy, photo))
    torch.testing.assert_close(METRICS.create("ssim", luma=False, downsample=False)(noisy, photo),
                               F.ssim(noisy, photo, luma=False, downsample=False))
    torch.testing.assert_close(METRICS.create("ms-ssim")(noisy, photo), F.ms_ssim(noisy, photo))
    torch.testing.assert_close(METRICS.create("psnr", luma=False)(noisy, photo), F.psnr(noisy, photo, luma=False))
    torch.testing.assert_close(METRICS.create("psnr")(noisy, photo), F.psnr(noisy, photo))
    torch.testing.assert_close(METRICS.create("psnr", y_channel=True)(noisy, photo),
                               F.psnr(noisy, photo, y_channel=True))


def test_psnr_is_rgb_by_default_and_equals_skimage(photo, noisy):
    from skimage.metrics import peak_signal_noise_ratio

    to8 = lambda t: (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    a, b = to8(noisy), to8(photo)
    expected = peak_signal_noise_ratio(b, a, data_range=255)
    got = METRICS.create("psnr")(pil_to_tensor(Image.fromarray(a)), pil_to_tensor(Image.fromarray(b))).item()
    assert got == pytest.approx(expected, abs=1e-3)
    m = METRICS.create("psnr")
    assert m.y_channel is False and METRICS.create("psnr", luma=True).y_channel is True
    assert m.bounds.worst == classic.CALIBRATED_WORST[("psnr", (False,))]
    assert METRICS.create("psnr", y_channel=True).bounds.worst == classic.CALIBRATED_WORST[("psnr", (True,))]


def test_psnr_metric_on_tid2013_pairs_equals_skimage():
    from calibra import calibration_pairs
    from skimage.metrics import peak_signal_noise_ratio

    m = METRICS.create("psnr")
    t = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()  # noqa: E731
    for name, (dist, ref) in calibration_pairs().items():
        assert m(t(dist), t(ref)).item() == pytest.approx(peak_signal_noise_ratio(ref, dist, data_range=255),
                                                         abs=0.01), name


def test_psnr_saturates_at_quantisation_noise_with_finite_gradient(photo):
    for y_channel in (False, True):
        m = METRICS.create("psnr", y_channel=y_channel)
        x = (photo + 1e-4).clamp(0, 1).requires_grad_(True)  # MSE far below (1/255)^2 / 12
        score = m(x, photo)
        assert score.item() == pytest.approx(classic.PSNR_BEST)
        score.sum().backward()
        assert torch.isfinite(x.grad).all()
        assert m(photo, photo).item() == pytest.approx(10 * math.log10(12 * 255**2), abs=1e-4)  # finite


def test_gradients_reach_the_distorted_image_only(photo, noisy):
    for name in NAMES:
        x = noisy.clone().requires_grad_(True)
        ref = photo.clone().requires_grad_(False)
        METRICS.create(name)(x, ref).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert ref.grad is None


def test_ascending_the_gradient_improves_the_score(photo, noisy):
    """Attacks on FR metrics move x along the gradient: a small step must raise the score."""
    for name in NAMES:
        m = METRICS.create(name)
        x = noisy.clone().requires_grad_(True)
        before = m(x, photo)
        before.sum().backward()
        stepped = (x + 1e-3 * x.grad.sign()).clamp(0, 1).detach()
        assert m(stepped, photo).item() > before.item()


def test_bad_calls_raise_input_errors(photo):
    m = METRICS.create("ssim")
    with pytest.raises(InputError, match="reference"):
        m(photo)
    with pytest.raises(InputError, match="11x11"):
        m(photo[..., :8, :8], photo[..., :8, :8])
    with pytest.raises(InputError, match="176x176"):
        METRICS.create("ms-ssim")(photo[..., :100, :], photo[..., :100, :])
    with pytest.raises(InputError, match="ref"):
        METRICS.create("psnr")(photo, photo[..., :10])


def test_bounds_override():
    b = Bounds(worst=0.2, best=0.9)
    assert METRICS.create("ssim", bounds=b).bounds == b


def test_stored_worst_lies_below_jpeg10_and_noise_scores(photo):
    """The stored worst is a minimum over JPEG q=10 and noise images of the calibration photos."""
    g = torch.Generator().manual_seed(1)
    jpeg = jpeg_roundtrip(photo, 10)
    noise = torch.rand(photo.shape, generator=g)
    for name in NAMES:
        m = METRICS.create(name)
        assert m(jpeg, photo).item() >= m.bounds.worst - 0.05 * m.bounds.diam
        assert m(noise, photo).item() >= m.bounds.worst - 0.05 * m.bounds.diam
        assert m(jpeg, photo).item() < m.bounds.best


def test_calibration_script_reproduces_calibrate_bounds(tmp_path, photo, capsys):
    Image.fromarray((photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "a.png")
    spec = importlib.util.spec_from_file_location("calibrate_classic_bounds", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path), "--json", str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    table = {}
    exec(printed.split("\n", 1)[1], {}, table)  # the printed CALIBRATED_WORST literal
    worst = table["CALIBRATED_WORST"]
    assert set(worst) == set(classic.CALIBRATED_WORST)
    img = pil_to_tensor(Image.open(tmp_path / "a.png"))
    expected = calibrate_bounds(classic.SSIM(), [img], seed=0).worst
    assert worst[("ssim", (True, True))] == pytest.approx(expected, abs=1e-4)
    assert worst[("psnr", (True,))] == pytest.approx(calibrate_bounds(classic.PSNR(y_channel=True), [img]).worst,
                                                      abs=1e-4)
    assert (tmp_path / "out.json").is_file()


def test_calibration_script_leaves_out_the_builtin_kadid_test_photographs(tmp_path, photo, monkeypatch, capsys):
    """The default builtin folder is filtered: no photograph of split_sources(0)["test"] enters."""
    from iqaguard.data.kadid_builtin import split_sources

    spec = importlib.util.spec_from_file_location("calibrate_classic_bounds", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    splits = split_sources(0)
    assert script.held_out_sources(0) == splits["test"] and len(splits["test"]) == 24
    img = Image.fromarray((photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    kept = splits["train"][0]
    for stem in (splits["test"][0], splits["test"][5], kept, splits["val"][0]):
        img.save(tmp_path / f"{stem}.png")
    monkeypatch.setattr(script, "builtin_folder", lambda: tmp_path)
    assert script.main(["--json", str(tmp_path / "out.json")]) == 0
    import json

    source = json.loads((tmp_path / "out.json").read_text())["source"]
    assert "(2 images, builtin-kadid train+val only" in source
    assert script.main(["--include-test"]) == 0
    assert "(4 images)" in capsys.readouterr().out


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> list:
    from skimage.metrics import structural_similarity
    return [structural_similarity(p.permute(1, 2, 0).double().numpy(), q.permute(1, 2, 0).double().numpy(),
                                  channel_axis=2, data_range=1) for p, q in zip(a, b)]


def test_fidelity_ssim_equals_scikit_image_on_rgb(photo, noisy):
    """The SSIM restriction is Guardians of Image Quality's measure: scikit-image's structural_similarity
    (RGB channels, 7x7 uniform window, sample covariance, data_range 1), not ssim.m's luma SSIM."""
    g = torch.Generator().manual_seed(3)
    tinted = (photo * torch.tensor([1.08, 0.95, 0.9]).view(1, 3, 1, 1)).clamp(0, 1)
    odd = torch.rand(2, 3, 37, 53, generator=g)
    for a, b in ((noisy, photo), (tinted, photo), (odd, odd.flip(0))):
        got = F.fidelity_ssim(a.double(), b.double())
        np.testing.assert_allclose(got.numpy(), _skimage_ssim(a, b), rtol=0, atol=1e-10)
        np.testing.assert_allclose(F.fidelity_ssim(a, b).numpy(), _skimage_ssim(a, b), rtol=0, atol=2e-5)
    assert float(F.fidelity_ssim(photo, photo)) == pytest.approx(1.0, abs=1e-6)
    # a batch-1 reference is broadcast
    torch.testing.assert_close(F.fidelity_ssim(torch.cat([noisy, tinted]), photo),
                               torch.cat([F.fidelity_ssim(noisy, photo), F.fidelity_ssim(tinted, photo)]))


def test_fidelity_ssim_sees_a_recolouring_that_luma_ssim_does_not(photo):
    """Swapping chroma at (nearly) constant BT.601 luma: luma SSIM stays ~1, the RGB restriction drops."""
    swapped = photo[:, [2, 1, 0]]
    recoloured = (swapped + (F.rgb_to_luma(photo) - F.rgb_to_luma(swapped))).clamp(0, 1)  # luma nearly kept
    assert float(F.ssim(recoloured, photo)) > 0.99
    assert float(F.fidelity_ssim(recoloured, photo)) < float(F.ssim(recoloured, photo)) - 0.05
    with pytest.raises(InputError, match="7x7"):
        F.check_fidelity_ssim_size(photo[..., :6, :30])
    for bad in (photo[..., :40, :40], torch.cat([photo, photo])[..., :50, :50]):  # another size; batch 2 vs 3
        with pytest.raises(InputError, match="y"):
            F.fidelity_ssim(photo[..., :50, :50].expand(3, -1, -1, -1).contiguous(), bad)
