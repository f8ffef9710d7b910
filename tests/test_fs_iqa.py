"""FS-IQA (iqaguard.defenses.fsiqa.fs_iqa): the Jacobian-norm estimators against closed forms and
dense SVDs, Algorithm 1's certificate against independent order statistics, abstention, errors."""
from __future__ import annotations

import pytest
import torch
from scipy import stats

import iqaguard
from iqaguard.defenses.fsiqa.fs_iqa import FSHead, head_file
from iqaguard.ops.jacobian import jacobian_norm
from iqaguard.errors import InputError, MissingWeightsError
from iqaguard.metrics.base import Bounds, Metric


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _known_linear(d=300, k=40, top=3.0, seed=0):
    """``W`` (k x d) with singular values linspace(0.1, top, k)."""
    g = _gen(seed)
    u, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return ((u * torch.linspace(0.1, top, k, dtype=torch.float64)) @ v.T).float()


def test_exact_and_fast_norms_of_a_linear_map_with_a_known_top_singular_value():
    w = _known_linear()
    x = torch.randn(3, 3, 10, 10, generator=_gen(1))
    fn = lambda z: z.flatten(1) @ w.T  # noqa: E731
    ex = jacobian_norm(fn, x, "exact")
    fa = jacobian_norm(fn, x, "fast", tol=1e-3, generator=_gen(2))
    assert torch.allclose(ex.norm, torch.full((3,), 3.0, dtype=torch.float64), rtol=1e-4)
    assert torch.equal(ex.upper, ex.norm)
    assert torch.allclose(fa.norm, torch.full((3,), 3.0, dtype=torch.float64), rtol=1e-2)
    # the certified value is never below the exact norm (Ritz values interlace from below)
    assert bool((fa.upper >= ex.norm * (1 - 1e-6)).all()) and bool((fa.norm <= ex.norm * (1 + 1e-6)).all())


class ToyFeatures(Metric):
    """NR metric with features ``tanh(conv(x))`` average-pooled to 16 values; score = mean of them."""

    kind, lower_better, bounds, name = "nr", False, Bounds(-1.0, 1.0), "toy-features"

    def __init__(self, seed=0, scale=1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(scale)
            self.conv.bias.mul_(scale)

    def feature_map(self, x, ref=None):
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 2).flatten(1)

    def score(self, x, ref=None):
        return self.feature_map(x).mean(1)


def _head(seed=0, in_dim=16):
    torch.manual_seed(seed)
    return FSHead(in_dim, width=32, hidden=8)


def test_the_nonlinear_jacobian_norm_matches_a_dense_svd():
    m = ToyFeatures()
    head = _head()
    c = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=0.25, n=200)
    x = torch.rand(2, 3, 12, 12, generator=_gen(3))
    dense = []
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda z: c.transformed(z.unsqueeze(0))[0], x[i])
        dense.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1).double())[0])
    dense = torch.stack(dense)
    assert torch.allclose(c.jacobian(x).norm, dense, rtol=1e-2)
    exact = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=0.25, n=200, mode="exact")
    assert torch.allclose(exact.jacobian(x).norm, dense, rtol=1e-4)


def test_certificate_is_algorithm_1_with_one_based_order_statistics():
    m, head = ToyFeatures(), _head(1)
    sigma, n, alpha = 0.25, 500, 0.001
    c = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=sigma, n=n, alpha=alpha, mode="exact")
    x = torch.rand(1, 3, 12, 12, generator=_gen(4))
    r = c.certify(x, generator=_gen(5))
    # the same draws: the smoothed samples of the same generator, sorted
    with torch.no_grad():
        s = torch.sort(c.samples(x, n, generator=_gen(5))[0]).values.double()
    ql = int(stats.binom.ppf(alpha, n, stats.norm.cdf(-1.0)))  # ε_f = σ_f: p = Φ(∓1)
    qu = int(stats.binom.ppf(1 - alpha, n, stats.norm.cdf(1.0))) + 1
    assert float(r.lower[0]) == pytest.approx(float(s[ql - 1]), abs=1e-6)
    assert float(r.upper[0]) == pytest.approx(float(s[qu - 1]), abs=1e-6)
    assert float(r.score[0]) == pytest.approx(float(s[n // 2 - 1] + s[n // 2]) / 2, abs=1e-6)  # n even
    assert float(r.eps[0]) == pytest.approx(sigma / float(c.jacobian(x).norm[0]), rel=1e-6)
    assert not bool(r.abstain[0])
    # predict is the median of the same samples, one backbone forward
    assert float(c.predict(x, generator=_gen(5))[0]) == pytest.approx(float(r.score[0]), abs=1e-5)


def test_hidden_space_sampling_has_the_distribution_of_feature_noise():
    # scorer(z + σe), e ~ N(0, I_512), drawn as W1 z + σ L e' in the hidden space: same law (two-sample KS)
    head = FSHead(16, width=64, hidden=8)
    torch.manual_seed(0)
    torch.nn.init.normal_(head.scorer[0].weight, std=0.5)
    z = torch.rand(1, 64, generator=_gen(30))
    with torch.no_grad():
        fast = head.noisy_scores(z, 0.5, 20000, _gen(31))[0]
        explicit = head.score(z + 0.5 * torch.randn((20000, 64), generator=_gen(32)))
    assert stats.ks_2samp(fast.numpy(), explicit.numpy()).pvalue > 0.01
    lo = head.scorer[0].weight.detach().double()
    f = head.noise_factor().double()
    assert torch.allclose(f @ f.T, lo @ lo.T, atol=1e-5)


def test_fast_mode_certifies_a_radius_no_larger_than_the_exact_one():
    m, head = ToyFeatures(), _head(2)
    x = torch.rand(3, 3, 12, 12, generator=_gen(6))
    fast = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=0.1, n=100).certify(x, generator=_gen(7))
    exact = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=0.1, n=100,
                                     mode="exact").certify(x, generator=_gen(7))
    assert torch.equal(fast.lower, exact.lower) and torch.equal(fast.upper, exact.upper)
    assert bool((fast.eps <= exact.eps * 1.000001).all()) and bool((fast.eps >= exact.eps * 0.99).all())


def test_vanishing_jacobian_abstains():
    m = ToyFeatures(scale=0.0)  # features constant in x: J = 0
    c = iqaguard.defenses.create("fs-iqa", metric=m, head=_head(), sigma=0.1, n=100)
    r = c.certify(torch.rand(2, 3, 12, 12, generator=_gen(8)), generator=_gen(9))
    assert r.abstain.all()


def test_attack_gradient_reaches_the_image_through_the_feature_noise():
    c = iqaguard.defenses.create("fs-iqa", metric=ToyFeatures(), head=_head(), sigma=0.1, attack_samples=8,
                                 generator=_gen(10))
    x = torch.rand(2, 3, 12, 12, generator=_gen(11)).requires_grad_(True)
    c(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_errors_name_the_problem_and_the_fix(tmp_path):
    class Plain(Metric):
        name = "plain"

        def score(self, x, ref=None):
            return x.mean((1, 2, 3))

    with pytest.raises(InputError, match="needs a metric with backbone features"):
        iqaguard.defenses.create("fs-iqa", metric=Plain())
    with pytest.raises(MissingWeightsError, match=r"train_fsiqa\.py --metric toy-features --sigma 0\.25"):
        iqaguard.defenses.create("fs-iqa", metric=ToyFeatures(), sigma=0.25)
    from iqaguard.training.checkpoint import save_model
    save_model(FSHead(8, 32, 8), tmp_path / "h.safetensors", {"in_dim": 8, "width": 32, "hidden": 8})
    with pytest.raises(InputError, match="for 8 features, but the metric has 16"):
        iqaguard.defenses.create("fs-iqa", metric=ToyFeatures(), weights=tmp_path / "h.safetensors")
    with pytest.raises(InputError, match="mode"):
        iqaguard.defenses.create("fs-iqa", metric=ToyFeatures(), head=_head(), mode="slow")
    assert head_file("builtin-nr", 0.25)[0].name == "fs-iqa-builtin-nr-0.25.safetensors"


def test_a_saved_head_round_trips(tmp_path):
    from iqaguard.training.checkpoint import save_model

    head = _head(3)
    save_model(head, tmp_path / "h.safetensors", head.config)
    c = iqaguard.defenses.create("fs-iqa", metric=ToyFeatures(), weights=tmp_path / "h.safetensors", sigma=0.1, n=50)
    x = torch.rand(1, 3, 12, 12, generator=_gen(12))
    with torch.no_grad():
        assert torch.allclose(c.head(ToyFeatures().feature_map(x)), head(ToyFeatures().feature_map(x)))


def test_feature_noise_per_image_generators_do_not_depend_on_the_batch():
    from iqaguard.defenses.certified.sampler import feature_noise

    z = torch.rand(3, 16, generator=_gen(13))
    full = feature_noise(z, 0.5, 40, [_gen(20 + i) for i in range(3)])
    alone = torch.cat([feature_noise(z[i:i + 1], 0.5, 40, [_gen(20 + i)]) for i in range(3)])
    assert full.shape == (3, 40, 16) and torch.equal(full, alone)
    e = (full - z.unsqueeze(1)) / 0.5
    assert abs(float(e.mean())) < 0.05 and abs(float(e.std()) - 1) < 0.05
    with pytest.raises(InputError, match="sigma"):
        feature_noise(z, 0.0, 4)


class ToyPairFeatures(ToyFeatures):
    """FR: features of the pair = pooled |tanh(conv(x)) - tanh(conv(ref))| (reference fixed)."""

    kind, lower_better, bounds, name = "fr", True, Bounds(1.0, 0.0), "toy-pair"

    def feature_map(self, x, ref=None):
        a, b = torch.tanh(self.conv(x)), torch.tanh(self.conv(ref))
        return torch.nn.functional.adaptive_avg_pool2d((a - b) ** 2, 2).flatten(1)

    def score(self, x, ref=None):
        return self.feature_map(x, ref).mean(1)


def test_fr_jacobian_is_taken_with_each_image_s_own_reference():
    m, head = ToyPairFeatures(), _head(4)
    x, ref = torch.rand(2, 3, 12, 12, generator=_gen(14)), torch.rand(2, 3, 12, 12, generator=_gen(15))
    dense = []
    for mode in ("fast", "exact"):
        c = iqaguard.defenses.create("fs-iqa", metric=m, head=head, sigma=0.1, n=100, mode=mode)
        if not dense:
            for i in range(2):
                jac = torch.autograd.functional.jacobian(lambda z: c.transformed(z.unsqueeze(0), ref[i:i + 1])[0], x[i])
                dense.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1).double())[0])
        assert torch.allclose(c.jacobian(x, ref).norm, torch.stack(dense), rtol=1e-2 if mode == "fast" else 1e-4)
        r = c.certify(x, ref, generator=_gen(16))
        assert bool(((r.lower <= r.score) & (r.score <= r.upper)).all())


def test_training_script_trains_heads_on_a_user_dataset(tmp_path):
    import sys
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = tmp_path / "koniq"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):  # KonIQ-10k layout, 30 images of 64x64 with varied MOS
        name = f"{1000 + i}.jpg"
        (root / "1024x768").mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
        Image.fromarray(arr).save(root / "1024x768" / name)
        rows.append(f'"{name}",0,0,10,80,5,95,{1 + (i % 5) * 0.8:.2f},0.5,0.1')
    (root / "koniq10k_scores_and_distributions.csv").write_text(
        '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"\n' + "\n".join(rows) + "\n")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import train_fsiqa

    out = tmp_path / "heads"
    assert train_fsiqa.main(["--dataset", "koniq10k", "--dataset-arg", f"root={root}", "--out-dir", str(out),
                             "--sigma", "0.25", "--epochs", "10", "--threads", "1"]) == 0
    head = out / "fs-iqa-builtin-nr-0.25.safetensors"
    assert head.is_file() and "koniq10k" in (out / "MODEL_CARD.md").read_text()
    c = iqaguard.defenses.create("fs-iqa", metric=iqaguard.metrics.create("builtin-nr"), sigma=0.25, n=200,
                                 weights=head)
    r = c.certify(torch.rand(1, 3, 64, 64, generator=_gen(40)), generator=_gen(41))
    assert bool(r.lower[0] <= r.score[0] <= r.upper[0]) or bool(r.abstain[0])
