"""Scores: hand-computed values for every formula (Guardians of Image Quality eqs. 5-7, Robustness as Architecture eqs. 8-9)."""
import math

import numpy as np
import pytest
import torch

from iqaguard.errors import InputError, ScoreError
from iqaguard.metrics.base import Bounds
from iqaguard.scores import (
    abs_gain, abs_gain_auc, abstain_rate, cert_radius, cert_rel_delta, certified_delta, d_score, d_score_d, fidelity,
    linf, mse, plcc, psnr, r_score, r_score_auc, r_score_d, srocc, ssim,
)

B10 = Bounds(0.0, 10.0)  # higher-better, diam 10
L10 = Bounds(worst=10.0, best=0.0)  # lower-better, diam 10


# ---------------------------------------------------------------- R score (Guardians of Image Quality eq. 5)
def test_r_score_hand_values():
    # numerators max{10 - f, f - 0}: 8, 5, 8; changes |f(x) - f(P(x'))|: 1, 0.5, 1
    # log10 ratios: log10 8, log10 10 = 1, log10 8
    expected = (2 * math.log10(8) + 1) / 3
    assert r_score([2, 5, 8], [3, 5.5, 9], B10) == pytest.approx(expected, abs=1e-12)
    # R is symmetric in the direction of change and does not depend on which bound is "best"
    assert r_score([2, 5, 8], [1, 4.5, 7], L10) == pytest.approx(expected, abs=1e-12)


def test_r_score_zero_change_is_floored_not_infinite():
    # unchanged score: denominator floored at 1e-6 * diam = 1e-5 -> log10(5 / 1e-5) = log10(5e5)
    assert r_score([5.0], [5.0], B10) == pytest.approx(math.log10(5e5), abs=1e-12)
    # mixed with a normal image (log10(5 / 1) = log10 5): the mean of both
    mixed = r_score([5.0, 5.0], [5.0, 6.0], B10)
    assert mixed == pytest.approx((math.log10(5e5) + math.log10(5)) / 2, abs=1e-12)
    assert math.isfinite(mixed)
    # a custom floor of 1% of diam: log10(5 / 0.1) = log10 50
    assert r_score([5.0], [5.0], B10, floor=1e-2) == pytest.approx(math.log10(50), abs=1e-12)
    with pytest.raises(ScoreError, match="floor"):
        r_score([5.0], [5.0], B10, floor=0.0)


def test_r_score_d_uses_purified_clean_as_anchor():
    # anchors f(P(x)) = 2, 9: numerators 8 and 9; changes 2 and 0.5 -> log10 4, log10 18
    expected = (math.log10(4) + math.log10(18)) / 2
    assert r_score_d([2, 9], [4, 9.5], B10) == pytest.approx(expected, abs=1e-12)


def test_scores_accept_torch_numpy_and_lists_alike():
    a = r_score(torch.tensor([2.0, 5.0, 8.0]), np.array([3.0, 5.5, 9.0]), (0.0, 10.0))
    b = r_score([2, 5, 8], [3, 5.5, 9], B10)
    assert a == pytest.approx(b, abs=1e-6)


# ---------------------------------------------------------------- D score (Guardians of Image Quality eqs. 6-7)
def test_d_score_hand_value_and_over_correction():
    # |3-2| + |5.5-5| + |9-8| = 2.5 -> 100 * (2.5 / 3) / 10
    assert d_score([2, 5, 8], [3, 5.5, 9], B10) == pytest.approx(100 * 2.5 / 30)
    # the defense over-corrects image 1 (P(x') scored 1, below the clean 2): |1 - 2| counts as 1,
    # a signed sum would give (-1 + 0.5 + 1) = 0.5 instead of 2.5
    assert d_score([2, 5, 8], [1, 5.5, 9], B10) == pytest.approx(100 * 2.5 / 30)
    assert d_score([2, 5, 8], [2, 5, 8], B10) == 0.0


def test_d_score_d_hand_value():
    # |4 - 2| + |9.5 - 9| = 2.5 over 2 images -> 1.25 / 10 * 100
    assert d_score_d([2, 9], [4, 9.5], B10) == pytest.approx(12.5)
    # lower-better metric with negative bounds: diam |(-1) - 1| = 2; |0.5 - 0| / 2 * 100 = 25
    assert d_score_d([0.0], [0.5], Bounds(worst=1.0, best=-1.0)) == pytest.approx(25.0)


# ---------------------------------------------------------------- Abs.Gain (Robustness as Architecture eq. 8)
def test_abs_gain_signed_in_improvement_direction():
    # higher-better: mean(attacked - clean) = mean(1, 2) = 1.5; normalised by diam 10 -> 0.15
    assert abs_gain([4, 6], [5, 8]) == pytest.approx(1.5)
    assert abs_gain([4, 6], [5, 8], bounds=B10) == pytest.approx(0.15)
    # lower-better: the attack lowers the score 4 -> 3 and 6 -> 4, improvements 1 and 2
    assert abs_gain([4, 6], [3, 4], lower_better=True) == pytest.approx(1.5)
    assert abs_gain([4, 6], [3, 4], lower_better=True, bounds=L10) == pytest.approx(0.15)
    # the same numbers read as higher-better are a loss
    assert abs_gain([4, 6], [3, 4]) == pytest.approx(-1.5)


# ---------------------------------------------------------------- AUCs over eps (Robustness as Architecture §4)
def test_abs_gain_auc_of_linear_curve_is_analytic_area():
    # gain = 0.01 * k at eps = k/255: in 1/255 units the area is int_2^10 0.01 k dk = 0.48
    k = np.array([10, 2, 6, 4, 8], dtype=float)  # unsorted on purpose
    assert abs_gain_auc(k / 255, 0.01 * k) == pytest.approx(0.48, abs=1e-12)
    # in [0, 1] units: gain = 2 e on [0, 0.5] -> 0.25
    assert abs_gain_auc([0.0, 0.25, 0.5], [0.0, 0.5, 1.0], eps_unit=1.0) == pytest.approx(0.25)


def test_r_score_auc_trapezoid_hand_value():
    # (1 + 2) / 2 * 2 + (2 + 3) / 2 * 2 = 8 (eps in 1/255 units: 2, 4, 6)
    assert r_score_auc(np.array([2, 4, 6]) / 255, [1.0, 2.0, 3.0]) == pytest.approx(8.0)


def test_auc_rejects_bad_budgets():
    with pytest.raises(ScoreError, match="eps"):
        abs_gain_auc([0.1], [1.0])
    with pytest.raises(ScoreError, match="distinct"):
        abs_gain_auc([0.1, 0.1], [1.0, 2.0])
    with pytest.raises(ScoreError, match="eps"):
        r_score_auc([-0.1, 0.1], [1.0, 2.0])


# ---------------------------------------------------------------- SROCC / PLCC
def test_srocc_hand_values():
    assert srocc([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert srocc([1, 2, 3, 4, 5], [9, 7, 5, 3, 1]) == pytest.approx(-1.0)
    # rank differences d = 0, -1, 1, -1, 1 -> sum d^2 = 4 -> 1 - 6*4 / (5 * 24) = 0.8
    assert srocc([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.8)


def test_plcc_is_plain_pearson_on_raw_scores():
    # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 14/3) = sqrt(27/28)
    assert plcc([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt(27 / 28), abs=1e-12)
    # monotone but not linear -> SROCC 1 while PLCC < 1 (no logistic fit)
    assert srocc([1, 2, 3], [1, 2, 4]) == pytest.approx(1.0)


def test_correlations_reject_degenerate_input():
    with pytest.raises(ScoreError, match="pred.*equal"):
        srocc([1, 1, 1], [1, 2, 3])
    with pytest.raises(ScoreError, match="mos.*equal"):
        plcc([1, 2, 3], [2, 2, 2])
    with pytest.raises(ScoreError, match="mos.*NaN"):
        plcc([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(ScoreError, match="two"):
        srocc([1.0], [2.0])


# ---------------------------------------------------------------- errors shared by all scores
@pytest.mark.parametrize("call, name", [
    (lambda: r_score([1, float("nan")], [1, 2], B10), "clean"),
    (lambda: d_score([1, 2], [1, float("inf")], B10), "defended_attacked"),
    (lambda: d_score_d([], [], B10), "defended_clean"),
    (lambda: r_score_d([1, 2], [1, 2, 3], B10), "defended_attacked"),
    (lambda: d_score([1, 2], [1, 2], Bounds(3.0, 3.0)), "bounds"),
    (lambda: r_score([1], [2], "0..10"), "bounds"),
    (lambda: abs_gain([[1, 2]], [[1, 2]]), "clean"),
    (lambda: abs_gain([1], [2], bounds=(1.0, 1.0)), "bounds"),
])
def test_score_errors_name_the_argument(call, name):
    with pytest.raises(ScoreError, match=name):
        call()


# ---------------------------------------------------------------- fidelity
def test_fidelity_hand_values_and_conventions():
    x = torch.full((1, 3, 16, 16), 0.5)
    y = x.clone()
    y[:, 2] += 0.1  # blue channel only
    # MSE and L-inf on RGB: 0.01 on one of three channels -> 0.01 / 3; max diff 0.1
    assert mse(x, y)[0] == pytest.approx(0.01 / 3, rel=1e-5)
    assert linf(x, y)[0] == pytest.approx(0.1, rel=1e-5)
    # PSNR over the RGB channels: MSE 0.01 / 3 -> 10 log10(3 / 0.01) = 24.77 dB (the luma variant,
    # Y moving by 24.966 * 0.1 / 255, would give 40.18 dB)
    assert psnr(x, y)[0] == pytest.approx(10 * math.log10(3 / 0.01), rel=1e-5)
    out = psnr(x.numpy(), y.numpy())  # numpy input accepted
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (1,)
    # identical images: the MSE floor (1/255)^2 / 12 gives 10 log10(12 * 255^2), never +inf
    assert psnr(x, x)[0] == pytest.approx(10 * math.log10(12 * 255**2), abs=1e-4)


def test_ssim_constant_shift_hand_value():
    # flat images: structure/contrast term is 1, luminance term (2 a b + C1) / (a^2 + b^2 + C1) on
    # each RGB channel of the [0, 1] scale (Guardians of Image Quality's scikit-image SSIM,
    # data_range 1): a = 0, b = 0.1, C1 = 0.01^2; only the blue channel shifted -> mean of (1, 1, s)
    x, y = torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 0.1)
    c1 = 0.01 ** 2
    expected = c1 / (0.1 ** 2 + c1)
    np.testing.assert_allclose(ssim(x, y), [expected, expected], rtol=1e-5)
    np.testing.assert_allclose(ssim(y, y), [1.0, 1.0], rtol=1e-6)
    blue = x.clone()
    blue[:, 2] = 0.1
    np.testing.assert_allclose(ssim(blue, x), [(2 + expected) / 3] * 2, rtol=1e-5)


def test_ssim_equals_scikit_image_structural_similarity():
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 40, 56, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ref = [structural_similarity(p.permute(1, 2, 0).double().numpy(), q.permute(1, 2, 0).double().numpy(),
                                 channel_axis=2, data_range=1) for p, q in zip(b, a)]
    np.testing.assert_allclose(ssim(b, a), ref, atol=2e-5)
    np.testing.assert_allclose(fidelity(b, a)["ssim"], ref, atol=2e-5)


def test_fidelity_rejects_mismatched_images():
    with pytest.raises(InputError, match="y"):
        mse(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(InputError, match="y"):
        fidelity(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(InputError, match="SSIM"):
        fidelity(torch.zeros(1, 3, 6, 8), torch.zeros(1, 3, 6, 8))
    with pytest.raises(InputError, match="SSIM"):
        ssim(torch.zeros(1, 3, 6, 8), torch.zeros(1, 3, 6, 8))


def test_fidelity_all_at_once_hand_values_and_agreement():
    # the blue-channel shift of test_fidelity_hand_values_and_conventions, on a 16x16 image
    x = torch.full((1, 3, 16, 16), 0.5)
    y = x.clone()
    y[:, 2] += 0.1
    out = fidelity(x, y)
    assert set(out) == {"psnr", "ssim", "mse", "linf"}
    assert out["mse"][0] == pytest.approx(0.01 / 3, rel=1e-5)
    assert out["linf"][0] == pytest.approx(0.1, rel=1e-5)
    assert out["psnr"][0] == pytest.approx(10 * math.log10(3 / 0.01), rel=1e-5)
    same = fidelity(x, x)
    assert same["psnr"][0] == pytest.approx(10 * math.log10(12 * 255**2), abs=1e-4) and same["mse"][0] == 0.0
    assert all(np.isfinite(v).all() for v in same.values())
    # textured images at full benchmark size: equal to the separate functions
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 384, 512, generator=g)
    b = (a + 0.05 * torch.randn(2, 3, 384, 512, generator=g)).clamp(0, 1)
    both = fidelity(b, a)
    for name, fn in (("psnr", psnr), ("ssim", ssim), ("mse", mse), ("linf", linf)):
        assert both[name].dtype == np.float64 and both[name].shape == (2,)
        np.testing.assert_allclose(both[name], fn(b, a), rtol=1e-6)


# ---------------------------------------------------------------- certified
def test_cert_radius_and_abstentions():
    radii = [0.5, float("nan"), 0.25, 0.0]
    abstain = [False, True, False, False]
    # mean over the three non-abstained: (0.5 + 0.25 + 0) / 3
    assert cert_radius(radii, abstain) == pytest.approx(0.25)
    assert abstain_rate(abstain) == pytest.approx(25.0)
    assert abstain_rate(torch.tensor([1, 1, 0, 0, 0])) == pytest.approx(40.0)


def test_cert_rel_delta_is_mean_certified_delta_over_diam():
    # Guardians of Image Quality A.3.5: the score changes by no more than delta; Cert.RD = mean(delta) / diam(f).
    # deltas 1, 0, 2 -> mean 1 -> / diam 10
    assert cert_rel_delta([1.0, 0.0, 2.0], B10) == pytest.approx(0.1)
    # the third image abstains (its delta may be NaN): deltas 1, 0 -> 0.5 / 10
    assert cert_rel_delta([1.0, 0.0, float("nan")], B10, abstain=[0, 0, 1]) == pytest.approx(0.05)
    # a lower-better metric: diam is |best - worst| either way
    assert cert_rel_delta([2.5], L10) == pytest.approx(0.25)


def test_certified_delta_from_an_interval():
    # score 5 certified in [4, 7]: it can move by up to max(7 - 5, 5 - 4) = 2 (not the width 3)
    # score 3 in [2, 4] (centred): half the width, 1; score 6 exactly certified: 0
    delta = certified_delta([5.0, 3.0, 6.0], [4.0, 2.0, 6.0], [7.0, 4.0, 6.0])
    np.testing.assert_allclose(delta, [2.0, 1.0, 0.0])
    assert cert_rel_delta(delta, B10) == pytest.approx(0.1)  # mean 1 / diam 10


@pytest.mark.parametrize("call, name", [
    (lambda: cert_radius([0.1, 0.2], [True, True]), "abstain"),
    (lambda: cert_radius([0.1, -0.2], [False, False]), "radii"),
    (lambda: cert_radius([0.1, float("nan")], [False, False]), "radii"),
    (lambda: cert_radius([0.1, 0.2], [0, 2]), "abstain"),
    (lambda: cert_radius([0.1, 0.2], [0]), "abstain"),
    (lambda: cert_rel_delta([-0.5], B10), "delta"),
    (lambda: cert_rel_delta([float("nan")], B10), "delta"),
    (lambda: cert_rel_delta([1.0], Bounds(1.0, 1.0)), "bounds"),
    (lambda: cert_rel_delta([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], B10), "certified_delta"),  # the old (lower, upper) call
    (lambda: cert_rel_delta([1.0, 2.0], [2.0, 2.0], B10), "certified_delta"),
    (lambda: certified_delta([5.0], [6.0], [7.0]), "score"),
    (lambda: certified_delta([5.0], [4.0], [4.5]), "score"),
    (lambda: certified_delta([5.0, 1.0], [4.0], [6.0]), "lower"),
    (lambda: abstain_rate([]), "abstain"),
])
def test_certified_errors(call, name):
    with pytest.raises(ScoreError, match=name):
        call()
