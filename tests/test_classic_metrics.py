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


def test_psnr_saturates_at_quantisation_noise_with_finite_gradient(photo):
    m = METRICS.create("psnr")
    x = (photo + 1e-4).clamp(0, 1).requires_grad_(True)  # MSE far below (1/255)^2 / 12
    score = m(x, photo)
    assert score.item() == pytest.approx(classic.PSNR_BEST)
    score.sum().backward()
    assert torch.isfinite(x.grad).all()


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
    assert (tmp_path / "out.json").is_file()
