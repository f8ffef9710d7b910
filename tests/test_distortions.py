"""Tests of iqaguard.data.distortions (the 25 KADID-10k distortion types)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard.data.builtin import PHOTOS_DIR
from iqaguard.data.distortions import (DISTORTIONS, HAS_JPEG2000, N_LEVELS, apply_distortion,
                                       distortion_names, get_distortion)
from iqaguard.data.distortions import _ops
from iqaguard.errors import InputError

KADID_NAMES = {
    1: "gaussian_blur", 2: "lens_blur", 3: "motion_blur", 4: "color_diffusion", 5: "color_shift",
    6: "color_quantization", 7: "color_saturation_hsv", 8: "color_saturation_lab", 9: "jpeg2000",
    10: "jpeg", 11: "white_noise", 12: "white_noise_color", 13: "impulse_noise",
    14: "multiplicative_noise", 15: "denoise", 16: "brighten", 17: "darken", 18: "mean_shift",
    19: "jitter", 20: "non_eccentricity_patch", 21: "pixelate", 22: "quantization", 23: "color_block",
    24: "high_sharpen", 25: "contrast_change",
}
#: types whose output depends on the generator
STOCHASTIC = {3, 5, 11, 12, 13, 14, 15, 18, 19, 20, 23}
#: types whose output does not depend on the generator at all
DETERMINISTIC = {1, 2, 4, 6, 7, 8, 9, 10, 16, 17, 21, 22, 24, 25}


def _photo(name: str, size=(96, 128)) -> np.ndarray:
    with Image.open(PHOTOS_DIR / f"{name}.jpg") as im:
        im = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.LANCZOS)
        return np.asarray(im).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return _photo("eveningglow")


def test_table_matches_kadid_ids_and_names():
    expected = dict(KADID_NAMES)
    if not HAS_JPEG2000:
        expected.pop(9)
    assert {d.id: d.name for d in DISTORTIONS.values()} == expected
    assert list(DISTORTIONS) == sorted(DISTORTIONS)
    assert distortion_names() == [expected[k] for k in sorted(expected)]
    assert len(DISTORTIONS) >= 24
    for d in DISTORTIONS.values():
        assert len(d.levels) == N_LEVELS and d.group in {"blur", "color", "compression", "noise",
                                                         "intensity", "spatial"}


@pytest.mark.parametrize("dist_id", sorted(DISTORTIONS))
def test_shape_range_dtype_and_determinism(img, dist_id):
    before = img.copy()
    for level in range(1, N_LEVELS + 1):
        a = apply_distortion(img, dist_id, level, np.random.default_rng(7))
        b = apply_distortion(img, dist_id, level, np.random.default_rng(7))
        assert a.shape == img.shape and a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 1.0
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, img), f"{DISTORTIONS[dist_id].name} level {level} left the image unchanged"
    np.testing.assert_array_equal(img, before)  # input untouched


@pytest.mark.parametrize("dist_id", sorted(STOCHASTIC))
def test_stochastic_types_depend_on_the_generator(img, dist_id):
    outs = [apply_distortion(img, dist_id, 3, np.random.default_rng(s)) for s in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("dist_id", sorted(DETERMINISTIC & set(DISTORTIONS)))
def test_deterministic_types_ignore_the_generator(img, dist_id):
    a = apply_distortion(img, dist_id, 4, np.random.default_rng(1))
    b = apply_distortion(img, dist_id, 4, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b) ** 2).mean())


@pytest.mark.parametrize("dist_id", sorted(DISTORTIONS))
def test_severity_grows_with_level(dist_id):
    """MSE to the reference, averaged over 3 photographs and 2 seeds, grows with the level."""
    photos = [_photo(n, (128, 160)) for n in ("eveningglow", "kite", "coffee")]
    mse = []
    for level in range(1, N_LEVELS + 1):
        mse.append(np.mean([_mse(apply_distortion(p, dist_id, level, np.random.default_rng(s)), p)
                            for p in photos for s in (0, 1)]))
    assert all(b > a for a, b in zip(mse, mse[1:])), (DISTORTIONS[dist_id].name, mse)


def test_lookup_by_name_equals_lookup_by_id(img):
    a = apply_distortion(img, "motion_blur", 2, np.random.default_rng(3))
    b = apply_distortion(img, 3, 2, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert get_distortion("jpeg").id == 10 and get_distortion(np.int64(10)).name == "jpeg"


def test_int_seed_and_default_rng_are_deterministic(img):
    np.testing.assert_array_equal(apply_distortion(img, "white_noise", 3, 5),
                                  apply_distortion(img, "white_noise", 3, np.random.default_rng(5)))
    np.testing.assert_array_equal(apply_distortion(img, "white_noise", 3),
                                  apply_distortion(img, "white_noise", 3, 0))


@pytest.mark.parametrize("level", [0, 6, -1, 2.5, "3", True, None])
def test_bad_level_raises(img, level):
    with pytest.raises(InputError, match="level"):
        apply_distortion(img, "jpeg", level, 0)


@pytest.mark.parametrize("dist", ["gaussian", "JPEG", 0, 26, 3.0, None])
def test_unknown_distortion_raises(img, dist):
    with pytest.raises(InputError, match="unknown distortion"):
        apply_distortion(img, dist, 1, 0)


@pytest.mark.parametrize("bad, what", [
    (np.zeros((32, 32, 3), np.uint8), "float"),
    (np.zeros((32, 32), np.float32), "H x W x 3"),
    (np.zeros((3, 32, 32), np.float32), "H x W x 3"),
    (np.full((32, 32, 3), 1.5, np.float32), r"\[0, 1\]"),
    (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
    (np.zeros((8, 32, 3), np.float32), ">= 16"),
    (torch.zeros(1, 3, 32, 32), "numpy array"),
])
def test_bad_image_raises(bad, what):
    with pytest.raises(InputError, match=what):
        apply_distortion(bad, "jpeg", 1, 0)


def test_bad_rng_raises(img):
    with pytest.raises(InputError, match="rng"):
        apply_distortion(img, "white_noise", 1, rng="seed")


def test_lab_matches_skimage_and_round_trips():
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 3)).astype(np.float32)
    lab = _ops.rgb_to_lab(x)
    np.testing.assert_allclose(lab, color.rgb2lab(x.astype(np.float64)), atol=0.05)
    np.testing.assert_allclose(_ops.lab_to_rgb(lab), x, atol=1e-4)
    white = _ops.rgb_to_lab(np.ones((1, 1, 3), np.float32))[0, 0]
    np.testing.assert_allclose(white, [100.0, 0.0, 0.0], atol=0.01)


def test_ycbcr_round_trip_and_gray_has_neutral_chroma():
    rng = np.random.default_rng(1)
    x = rng.random((8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_ops.ycbcr_to_rgb(_ops.rgb_to_ycbcr(x)), x, atol=1e-5)
    gray = np.full((2, 2, 3), 0.3, np.float32)
    np.testing.assert_allclose(_ops.rgb_to_ycbcr(gray)[..., 1:], 0.5, atol=1e-6)


def test_hsv_saturation_matches_an_hsv_round_trip():
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(2)
    x = rng.random((16, 16, 3)).astype(np.float32)
    for factor in (0.5, 0.0):
        hsv = color.rgb2hsv(x.astype(np.float64))
        hsv[..., 1] *= factor
        expected = color.hsv2rgb(hsv)
        got = DISTORTIONS[7].fn(x, factor, np.random.default_rng(0))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_kernels_are_normalised_and_sized():
    d = _ops.disk_kernel(3.5)
    assert d.shape == (9, 9) and abs(d.sum() - 1) < 1e-6 and d[4, 4] == d.max()
    k = _ops.line_kernel(10.0, 0.0)
    assert abs(k.sum() - 1) < 1e-6
    rows = np.nonzero(k.sum(axis=1) > 1e-6)[0]
    assert len(rows) == 1  # a horizontal line occupies one row


def test_pixelate_blocks_are_constant():
    y = apply_distortion(_photo("kite", (96, 128)), "pixelate", 2, 0)  # block 3, 96 x 128 -> 32 x 43
    assert np.unique(y[0:3, 0:2].reshape(-1, 3), axis=0).shape[0] == 1


def test_quantization_uses_the_stated_number_of_levels(img):
    y = apply_distortion(img, "quantization", 5, 0)
    assert len(np.unique(np.round(y * 255))) <= DISTORTIONS[22].levels[4]
