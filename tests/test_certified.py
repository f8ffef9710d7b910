"""Certified smoothing core (iqaguard.defenses.certified): certificate arithmetic against scipy and
simulation, analytic cases on a linear metric, the sampler's reproducibility, denoisers."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import iqaguard
from iqaguard.defenses.certified.certificates import (bin_edges, class_interval, class_value, classes,
                                                       clopper_pearson_lower, median_interval, order_indices, pick,
                                                       rs_radius)
from iqaguard.defenses.certified.sampler import noisy_scores
from iqaguard.errors import InputError
from iqaguard.metrics.base import Bounds, Metric


class Linear(Metric):
    """``f(x) = w·x / d`` (d = number of values), bounds [-1, 1]: an exactly Gaussian smoothed score."""

    kind, lower_better, bounds, name = "nr", False, Bounds(-1.0, 1.0), "linear"

    def __init__(self, shape=(3, 8, 8), seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(shape, generator=g))

    def score(self, x, ref=None):
        return (x * self.w).flatten(1).sum(1) / self.w.numel()

    @property
    def l2(self) -> float:  # ||grad f||_2
        return float(self.w.norm()) / self.w.numel()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ order statistics
def test_order_indices_boundaries_are_infinite():
    q_l, q_u = order_indices(5, sigma=0.1, eps=0.1, alpha=0.001)
    assert (q_l, q_u) == (0, 6)  # p_l = 0.159, p_u = 0.841 with only 5 samples: no finite bound
    s = torch.arange(5.0).view(1, 5)
    assert pick(s, 0).item() == -math.inf and pick(s, 6).item() == math.inf
    assert pick(s, 1).item() == 0.0 and pick(s, 5).item() == 4.0  # 1-based
    lo, hi = median_interval(s, 0.1, 0.1, 0.001)
    assert lo.item() == -math.inf and hi.item() == math.inf


def test_order_indices_against_the_binomial_cdf():
    # q_l is the largest index with P(Binom(n, p_l) <= q_l - 1) < alpha; q_u - 1 the smallest k with cdf(k) >= 1 - alpha
    for n, sigma, eps, alpha in [(1000, 0.12, 0.05, 0.001), (2000, 0.25, 0.25, 0.001), (101, 0.5, 0.1, 0.05)]:
        q_l, q_u = order_indices(n, sigma, eps, alpha)
        p_l, p_u = stats.norm.cdf(-eps / sigma), stats.norm.cdf(eps / sigma)
        assert stats.binom.cdf(q_l - 1, n, p_l) < alpha <= stats.binom.cdf(q_l, n, p_l)
        assert stats.binom.cdf(q_u - 2, n, p_u) < 1 - alpha <= stats.binom.cdf(q_u - 1, n, p_u)


def test_one_based_bounds_cover_the_percentiles_and_zero_based_ones_do_not():
    # samples of N(0, 1): the true p-percentile is Phi^-1(p); the bounds may miss it with probability <= alpha
    rng = np.random.default_rng(0)
    n, sigma, eps, alpha, trials = 41, 1.0, 0.5, 0.05, 20000
    q_l, q_u = order_indices(n, sigma, eps, alpha)
    h_l, h_u = stats.norm.ppf(stats.norm.cdf(-eps / sigma)), stats.norm.ppf(stats.norm.cdf(eps / sigma))
    y = np.sort(rng.standard_normal((trials, n)), axis=1)
    miss_low = np.mean(y[:, q_l - 1] > h_l)      # ours: element sorted[q_l - 1]
    miss_up = np.mean(y[:, q_u - 1] < h_u)
    miss_low_0based = np.mean(y[:, q_l] > h_l)   # the public copies' sorted[q_l]
    se = math.sqrt(alpha * (1 - alpha) / trials)
    assert miss_low <= alpha + 3 * se and miss_up <= alpha + 3 * se
    assert miss_low_0based > alpha + 3 * se      # one order statistic too high breaks the guarantee


def test_clopper_pearson_against_scipy_binomtest():
    for k, n, alpha in [(0, 100, 0.001), (1, 100, 0.001), (990, 1000, 0.001), (1000, 1000, 0.001), (37, 50, 0.05)]:
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        got = float(clopper_pearson_lower(torch.tensor([k]), n, alpha)[0])
        assert got == pytest.approx(ref, abs=1e-12)


def test_rs_radius_and_abstention():
    p = torch.tensor([0.4, 0.5, 0.9, 0.999], dtype=torch.float64)
    r, abstain = rs_radius(p, 0.25)
    assert abstain.tolist() == [True, True, False, False]
    assert r[2].item() == pytest.approx(0.25 * stats.norm.ppf(0.9)) and r[0].item() == 0.0


def test_classes_edges_and_values():
    e = bin_edges(0.0, 1.0, 10)
    c = classes(torch.tensor([-0.1, 0.0, 0.05, 0.1, 0.999, 1.0, 1.5]), e)
    assert c.tolist() == [0, 1, 1, 2, 10, 10, 11]
    low, high = class_interval(c, e)
    assert low[0] == -math.inf and high[-1] == math.inf and (low[2].item(), high[2].item()) == pytest.approx((0.0, 0.1))
    assert class_value(c, e).tolist() == pytest.approx([0.0, 0.05, 0.05, 0.15, 0.95, 0.95, 1.0])


# ------------------------------------------------------------------ a linear metric: closed forms
def test_median_smoothing_of_a_linear_metric():
    m = Linear()
    x = torch.rand(2, 3, 8, 8, generator=_gen(1)) * 0.5 + 0.25
    sigma, eps, n = 0.12, 0.05, 2000
    c = iqaguard.defenses.create("ms", metric=m, sigma=sigma, eps=eps, n=n, alpha=0.001)
    r = c.certify(x, generator=_gen(2))
    f, spread = m(x).double(), sigma * m.l2  # f(x + e) ~ N(f(x), (sigma ||w||)^2)
    # median -> f(x); the certified percentiles -> f(x) -/+ eps ||w|| (exact worst case of a linear f)
    assert torch.allclose(r.score, f, atol=4 * spread / math.sqrt(n))
    assert bool((r.lower <= f - eps * m.l2).all() and (r.upper >= f + eps * m.l2).all())
    assert bool((r.lower >= f - eps * m.l2 - 0.25 * spread).all() and (r.upper <= f + eps * m.l2 + 0.25 * spread).all())
    assert not bool(r.abstain.any()) and r.samples == n and bool((r.eps == eps).all())


def test_randomized_smoothing_of_a_linear_metric():
    m = Linear()
    x = torch.full((1, 3, 8, 8), 0.5) + 0.0 * torch.rand(1, 3, 8, 8)
    f = float(m(x))
    c = iqaguard.defenses.create("rs", metric=m, sigma=0.05, n=1000, n0=100, bins=10)
    r = c.certify(x, generator=_gen(3))
    edges = bin_edges(-1.0, 1.0, 10)
    k = int(classes(torch.tensor([f]), edges))
    assert float(r.score) == pytest.approx(float(class_value(torch.tensor([k]), edges)))
    # P(class k) for N(f, (sigma ||w||)^2): the radius is sigma Phi^-1 of its lower confidence bound
    sd = 0.05 * m.l2
    p_true = stats.norm.cdf((float(edges[k]) - f) / sd) - stats.norm.cdf((float(edges[k - 1]) - f) / sd)
    assert p_true > 0.9 and not bool(r.abstain)
    # the Clopper-Pearson bound is below p_true (w.p. 1 - alpha) and within a few standard errors of it
    p_low = stats.norm.cdf(float(r.radius) / 0.05)
    assert p_true - 5 * math.sqrt(p_true * (1 - p_true) / 1000) <= p_low <= p_true
    assert (float(r.lower), float(r.upper)) == pytest.approx((float(edges[k - 1]), float(edges[k])))


# ------------------------------------------------------------------ sampler and denoisers
def test_per_image_draws_do_not_depend_on_batch_or_chunk():
    m = Linear()
    x = torch.rand(3, 3, 8, 8, generator=_gen(4))
    gens = lambda: [_gen(10 + i) for i in range(3)]  # noqa: E731
    full = noisy_scores(m, x, 0.1, 37, gens(), chunk=5)
    alone = torch.cat([noisy_scores(m, x[i:i + 1], 0.1, 37, [_gen(10 + i)], chunk=37) for i in range(3)])
    assert torch.equal(full, alone)


def test_denoised_variant_runs_its_denoiser():
    m = Linear()
    x = torch.rand(1, 3, 8, 8, generator=_gen(5))
    calls = []

    def halve_noise(z):
        calls.append(z.shape[0])
        return 0.5 * z + 0.5 * x.expand_as(z)

    plain = iqaguard.defenses.create("ms", metric=m, n=64).certify(x, generator=_gen(6))
    den = iqaguard.defenses.create("dms", metric=m, n=64, denoiser=halve_noise).certify(x, generator=_gen(6))
    assert sum(calls) == 64
    assert not torch.equal(plain.lower, den.lower)


def test_shipped_denoiser_is_the_default_of_drs_and_dms_and_denoises(monkeypatch, tmp_path):
    from iqaguard.defenses.certified import denoiser as D
    from iqaguard.errors import MissingWeightsError
    from iqaguard.metrics import functional as FM

    m = Linear()
    for name in ("drs", "dms"):
        c = iqaguard.defenses.create(name, metric=m)
        assert isinstance(c.denoiser, D.DnCNN) and not any(q.requires_grad for q in c.denoiser.parameters())
    x = iqaguard.data.load_image(Path(iqaguard.__file__).resolve().parent / "data" / "photos" / "kitten.jpg")[..., :96, :96]
    z = x + 0.25 * torch.randn(x.shape, generator=_gen(50))
    with torch.no_grad():
        assert float(FM.psnr(D.load_denoiser()(z).clamp(0, 1), x)) > float(FM.psnr(z.clamp(0, 1), x)) + 5
    monkeypatch.setattr(D, "WEIGHTS_FILE", tmp_path / "none.safetensors")
    with pytest.raises(MissingWeightsError, match="train_denoiser.py"):
        iqaguard.defenses.create("dms", metric=m)


def test_attack_gradient_flows_through_the_smoothed_metric():
    m = Linear()
    for name in ("ms", "rs"):
        c = iqaguard.defenses.create(name, metric=m, attack_samples=8, generator=_gen(7))
        x = torch.rand(2, 3, 8, 8, generator=_gen(8)).requires_grad_(True)
        c(x).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


def test_bad_arguments_are_one_line_errors():
    m = Linear()
    for kw in ({"sigma": 0}, {"n": 0}, {"alpha": 0.7}, {"preset": 9}, {"chunk": 0}):
        with pytest.raises(InputError) as e:
            iqaguard.defenses.create("ms", metric=m, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="expected an iqaguard Metric"):
        iqaguard.defenses.create("ms", metric="builtin-nr")


# ------------------------------------------------------------------ diffusion-based smoothing
def test_ddrs_one_shot_denoiser_inverts_an_exact_noise_prediction(monkeypatch):
    from iqaguard.defenses.certified.diffusion_rs import OneShotDenoiser

    sigma = 0.12
    d = OneShotDenoiser(sigma)
    diff = d.diffusion
    a = float(diff.alphas_cumprod[d.t])
    assert math.sqrt((1 - a) / a) == pytest.approx(2 * sigma, rel=0.03)  # the step whose noise matches sigma
    x = torch.rand(2, 3, 13, 17, generator=_gen(20)) * 0.8 + 0.1
    z = x + sigma * torch.randn(x.shape, generator=_gen(21))

    def oracle(x_t, t):  # the true noise of the padded image: x_t = sqrt(a) x0 + sqrt(1 - a) eps
        x0 = torch.nn.functional.pad(2 * x - 1, (0, x_t.shape[-1] - x.shape[-1], 0, x_t.shape[-2] - x.shape[-2]),
                                     mode="reflect")
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a), None

    monkeypatch.setattr(diff, "model_output", oracle)
    assert torch.allclose(d(z), x, atol=1e-5)


def test_ddrs_runs_the_diffusion_denoiser():
    m = Linear()
    x = torch.rand(1, 3, 8, 8, generator=_gen(22))
    plain = iqaguard.defenses.create("rs", metric=m, n=32, n0=8).samples(x, 16, generator=_gen(23))
    ddrs = iqaguard.defenses.create("ddrs", metric=m, n=32, n0=8)
    assert "t*=" in ddrs.params["denoiser"]
    assert not torch.equal(plain, ddrs.samples(x, 16, generator=_gen(23)))
    r = ddrs.certify(x, generator=_gen(24))
    assert r.samples == 40 and r.radius is not None


def test_densepure_votes_and_is_reproducible_per_image():
    m = Linear()
    x = torch.rand(2, 3, 8, 8, generator=_gen(25))
    c = iqaguard.defenses.create("densepure", metric=m, sigma=0.05, n=6, n0=3, k=3)
    assert 1 <= c.t < 100
    s = c.samples(x, 4, generator=[_gen(30), _gen(31)])
    alone = c.samples(x[1:], 4, generator=[_gen(31)])
    assert torch.equal(s[1:], alone)
    values = class_value(torch.arange(12), c.edges).to(s.dtype)
    assert bool(torch.isin(s, values).all())  # every sample is a voted class value
    r = c.certify(x, generator=[_gen(32), _gen(33)])
    assert r.samples == 9 and r.score.shape == (2,)


# ------------------------------------------------------------------ RS-Reg and Cert-Reg
def test_needed_validity_solves_the_binomial_equation():
    from iqaguard.defenses.certified.regression import needed_validity

    for m, k, pv in [(1000, 100, 0.9), (1000, 0, 0.9), (50, 5, 0.99)]:
        p_s = needed_validity(m, k, pv)
        assert stats.binom.cdf(k, m, 1 - p_s) == pytest.approx(pv, abs=1e-9)
    assert needed_validity(10, 10, 0.9) == 0.0
    assert needed_validity(1000, 0, 0.9) == pytest.approx(0.9 ** (1 / 1000), rel=1e-9)  # closed form at k = 0


@pytest.mark.parametrize("name,kw", [("cert-reg", {"trim": 0.1}), ("rs-reg", {"tau": 0.01})])
def test_regression_certificates_on_a_linear_metric(name, kw):
    m = Linear()
    x = torch.full((1, 3, 8, 8), 0.5)
    sigma, tol, pv = 0.12, 0.05, 0.9
    c = iqaguard.defenses.create(name, metric=m, sigma=sigma, n=2000, tolerance=tol, p_valid=pv, **kw)
    r = c.certify(x, generator=_gen(40))
    f, sd, band = float(m(x)), sigma * m.l2, tol * 2.0  # tolerance is a fraction of diam = 2
    assert not bool(r.abstain) and float(r.radius) > 0
    assert (float(r.lower), float(r.upper)) == pytest.approx((f - band, f + band))
    from iqaguard.defenses.certified.regression import needed_validity

    p_s = needed_validity(c.m, c.k_max(f), pv)
    p_true = 2 * stats.norm.cdf(band / sd) - 1  # P(|f(x + e) - f(x)| < band)
    assert float(r.radius) <= sigma * (stats.norm.ppf(p_true) - stats.norm.ppf(p_s)) + 1e-9  # p_A bounded from below
    # soundness at the radius in the worst direction (along w): samples stay valid with probability >= p_s
    d = float(r.radius) * m.l2
    p_shift = stats.norm.cdf((band - d) / sd) - stats.norm.cdf((-band - d) / sd)
    assert p_shift >= p_s - 1e-9


def test_cert_reg_trims_and_rs_reg_averages():
    m = Linear()
    s = torch.tensor([[0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5, 0.5, 1.0]], dtype=torch.float64)
    trimmed = iqaguard.defenses.create("cert-reg", metric=m, trim=0.1).statistic(s)
    assert float(trimmed) == pytest.approx(float(torch.tensor([0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.5, 3.0]).mean()))
    assert float(iqaguard.defenses.create("rs-reg", metric=m).statistic(s)) == pytest.approx(float(s.mean()))
    with pytest.raises(InputError, match="tau"):
        iqaguard.defenses.create("rs-reg", metric=m, tolerance=0.05, tau=0.05)


# ------------------------------------------------------------------ DMS-IQA
def test_rank_loss_is_zero_on_ordered_batches_and_the_mean_hinge_otherwise():
    from iqaguard.training.finetune import rank_loss

    y = torch.tensor([1.0, 2.0, 3.0])
    assert float(rank_loss(torch.tensor([0.1, 0.5, 0.9]), y)) == 0.0
    assert float(rank_loss(torch.tensor([0.3, 0.3, 0.3]), torch.ones(3))) == 0.0  # no pair with distinct targets
    # pred [0.9, 0.5, 0.1]: pairs (2>1): 0.4, (3>1): 0.8, (3>2): 0.4 -> mean 1.6 / 3
    p = torch.tensor([0.9, 0.5, 0.1], requires_grad=True)
    loss = rank_loss(p, y)
    assert loss.item() == pytest.approx(1.6 / 3)
    loss.backward()
    # d/dp: p1 appears as +1 in two pairs, p3 as -1 in two pairs, p2 once each way
    assert torch.allclose(p.grad, torch.tensor([2.0, 0.0, -2.0]) / 3)


def test_dms_iqa_loss_adds_pixel_mse_score_mse_and_rank_terms():
    from iqaguard.defenses.certified.dms_iqa import dms_iqa_loss

    x = torch.zeros(2, 3, 4, 4)
    den = torch.full_like(x, 0.1)
    pred, target = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])
    # pixel 0.01; score ((1-2)^2 + (3-1)^2) / 2 / 4^2 = 2.5 / 16; rank: target_1 > target_2, pred 1 < 3: 2 / 4
    got = dms_iqa_loss(den, x, pred, target, diam=4.0, w_score=1.0, w_rank=1.0)
    assert float(got) == pytest.approx(0.01 + 2.5 / 16 + 0.5)
    assert float(dms_iqa_loss(den, x, pred, target, 4.0, w_score=0.0, w_rank=0.0)) == pytest.approx(0.01)


def test_dms_iqa_loads_the_denoiser_of_its_metric_or_names_the_training_command(monkeypatch, tmp_path):
    from iqaguard.defenses.certified import denoiser as D
    from iqaguard.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"train_dms_iqa\.py --metric linear"):
        iqaguard.defenses.create("dms-iqa", metric=Linear())
    from iqaguard.defenses.purification import _neural
    monkeypatch.setattr(_neural, "WEIGHTS_DIR", tmp_path)  # where per-metric weights are looked up
    net = D.load_denoiser()
    torch.nn.init.zeros_(net.body[-1].bias)
    with torch.no_grad():
        net.body[-1].weight.mul_(0.5)
    from iqaguard.training.checkpoint import save_model
    save_model(net, tmp_path / "dms-iqa-linear.safetensors", dict(D.ARCH))
    c = iqaguard.defenses.create("dms-iqa", metric=Linear(), n=64)
    assert isinstance(c.denoiser, D.DnCNN)
    assert torch.equal(c.denoiser.body[-1].weight, net.body[-1].weight)
    x = torch.rand(1, 3, 8, 8, generator=_gen(60))
    plain = iqaguard.defenses.create("ms", metric=Linear(), n=64).certify(x, generator=_gen(61))
    r = c.certify(x, generator=_gen(61))
    assert not torch.equal(plain.score, r.score) and bool(r.lower <= r.score) and bool(r.score <= r.upper)


def test_shipped_dms_iqa_denoiser_of_builtin_nr_is_not_the_dms_one():
    from iqaguard.defenses.certified import denoiser as D

    path, _ = D.dms_iqa_weights("builtin-nr")
    a, b = D.load_denoiser(path), D.load_denoiser()
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
