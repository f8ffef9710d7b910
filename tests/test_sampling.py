"""Subset sampling of Guardians of Image Quality appendix A.3.1: SI, CF, features and K-Means cluster subsets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from iqaguard.data.base import Dataset, Sample
from iqaguard.data.sampling import (
    cluster_labels,
    cluster_subset,
    colourfulness,
    reference_subset,
    repeated_subsets,
    round_robin,
    sampling_features,
    spatial_information,
)
from iqaguard.errors import InputError


def _si_reference(img: np.ndarray) -> float:
    """P.910 SI computed independently: scipy Sobel on BT.601 luma (0..255), border excluded."""
    y = 255.0 * (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])
    gx = ndimage.sobel(y, axis=1)
    gy = ndimage.sobel(y, axis=0)
    mag = np.hypot(gx, gy)[1:-1, 1:-1]
    return float(mag.std())


def test_si_constant_image_is_zero():
    x = torch.full((2, 3, 9, 11), 0.37)
    assert torch.allclose(spatial_information(x), torch.zeros(2), atol=1e-4)


def test_si_matches_independent_sobel():
    rng = np.random.default_rng(3)
    stripes = np.zeros((3, 16, 20))
    stripes[:, :, ::4] = 1.0  # vertical lines every 4 px
    noise = rng.random((3, 16, 20))
    x = torch.tensor(np.stack([stripes, noise]), dtype=torch.float32)
    si = spatial_information(x)
    assert si.shape == (2,)
    for i in range(2):
        assert float(si[i]) == pytest.approx(_si_reference(x[i].double().numpy()), rel=1e-4)
    assert float(si[0]) > 100  # strong edges on the 0..255 scale


def test_si_of_step_edge_by_hand():
    # Luma step 0 -> 255 between columns 2 and 3 of a 5x6 gray image: valid region is 3x4,
    # the Sobel |Gx| is 4*255 on the two columns adjacent to the step, 0 on the other two.
    x = torch.zeros(1, 3, 5, 6)
    x[..., 3:] = 1.0
    vals = np.array([0, 4 * 255, 4 * 255, 0] * 3, dtype=float)
    assert float(spatial_information(x)[0]) == pytest.approx(vals.std(), rel=1e-5)


def test_cf_gray_is_zero_and_two_colour_matches_formula():
    gray = torch.rand(1, 1, 8, 8).expand(1, 3, 8, 8).contiguous()
    assert float(colourfulness(gray)[0]) == pytest.approx(0.0, abs=1e-3)
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, :2] = 1.0  # left half pure red (255, 0, 0)
    x[0, 2, :, 2:] = 1.0  # right half pure blue (0, 0, 255)
    rg = np.array([255.0] * 8 + [0.0] * 8)
    yb = np.array([127.5] * 8 + [-255.0] * 8)
    expected = np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert float(colourfulness(x)[0]) == pytest.approx(expected, rel=1e-5)


def test_feature_functions_validate_input():
    with pytest.raises(InputError, match="x"):
        spatial_information(torch.zeros(3, 8, 8))
    with pytest.raises(InputError, match="H, W >= 3"):
        spatial_information(torch.zeros(1, 3, 2, 8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        colourfulness(torch.full((1, 3, 4, 4), 2.0))


def _dataset(images, mos):
    return Dataset([Sample(name=f"{i}", mos=m, loader=(lambda t=t: t)) for i, (t, m) in enumerate(zip(images, mos))])


def test_sampling_features_columns_and_downscale():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(1, 3, 40, 64, generator=g), torch.full((1, 3, 30, 20), 0.5)]
    feats = sampling_features(_dataset(imgs, [3.5, 1.0]), max_side=None)
    assert feats.shape == (2, 3) and feats.dtype == np.float64
    assert feats[0, 0] == pytest.approx(float(spatial_information(imgs[0])[0]), rel=1e-6)
    assert feats[1, :2] == pytest.approx([0.0, 0.0], abs=1e-3) and list(feats[:, 2]) == [3.5, 1.0]
    small = sampling_features(_dataset(imgs, [None, None]), max_side=16)
    assert small.shape == (2, 2)  # no MOS column without MOS
    down = torch.nn.functional.interpolate(imgs[0], size=(10, 16), mode="area")
    assert small[0, 0] == pytest.approx(float(spatial_information(down)[0]), rel=1e-6)
    with pytest.warns(UserWarning, match="1 of 2"):
        assert sampling_features(_dataset(imgs, [2.0, None]), max_side=16).shape == (2, 2)


def _blobs(n_clusters=10, per=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0 * i, 5.0 * (i % 3), 100.0 * (i % 2)] for i in range(n_clusters)])
    feats = np.concatenate([c + 0.1 * rng.standard_normal((per, 3)) for c in centres])
    truth = np.repeat(np.arange(n_clusters), per)
    return feats, truth


def test_cluster_subset_k_per_well_separated_cluster():
    feats, truth = _blobs()
    idx = cluster_subset(feats, k_per_cluster=5, seed=0)
    assert len(idx) == 50 and len(set(idx)) == 50
    assert np.bincount(truth[idx], minlength=10).tolist() == [5] * 10  # every true cluster hit k times
    assert cluster_subset(feats, 5, seed=0) == idx
    assert cluster_subset(feats, 5, seed=1) != idx
    labels = cluster_labels(feats, 10, seed=0)
    assert len(set(zip(labels.tolist(), truth.tolist()))) == 10  # recovers the blobs exactly


def test_cluster_subset_small_clusters_and_errors():
    feats, truth = _blobs(n_clusters=3, per=4)
    idx = cluster_subset(feats, k_per_cluster=10, n_clusters=3, seed=2)
    assert sorted(idx) == list(range(12))  # fewer than k members -> the whole cluster
    assert len(set(truth[idx[:3]].tolist())) == 3  # round-robin: the first three from three clusters
    with pytest.raises(InputError, match="n_clusters"):
        cluster_subset(feats[:2], 1, n_clusters=3)
    with pytest.raises(InputError, match="k_per_cluster"):
        cluster_subset(feats, 0, n_clusters=3)
    with pytest.raises(InputError, match="NaN"):
        cluster_subset(np.array([[np.nan, 1.0]] * 5), 1, n_clusters=2)


def test_cluster_subset_from_dataset_and_repeats():
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(1, 3, 12, 12, generator=g) * (i % 4 + 1) / 4 for i in range(16)]
    ds = _dataset(imgs, [float(i % 5) for i in range(16)])
    idx = cluster_subset(ds, k_per_cluster=1, n_clusters=4, seed=0)
    assert len(idx) == 4 and len(set(idx)) == 4 and all(0 <= i < 16 for i in idx)
    feats, _ = _blobs()
    reps = repeated_subsets(feats, 2, repeats=4, seed=7)
    assert len(reps) == 4 and all(len(r) == 20 for r in reps)
    assert reps[0] == cluster_subset(feats, 2, seed=7) and reps[3] == cluster_subset(feats, 2, seed=10)
    assert len({tuple(r) for r in reps}) == 4


def test_limited_subset_is_round_robin_over_clusters_and_deterministic():
    """Any prefix of a subset (the benchmark's limits keep prefixes) spreads over the clusters."""
    feats, truth = _blobs()  # 10 well-separated clusters, found exactly by KMeans
    idx = cluster_subset(feats, k_per_cluster=5, seed=0)
    labels = cluster_labels(feats, 10, seed=0)
    assert len(set(labels[idx[:5]].tolist())) == 5  # 5 images from 5 different clusters
    assert len(set(truth[idx[:5]].tolist())) == 5
    assert len(set(labels[idx[:10]].tolist())) == 10  # the first round visits every cluster once
    for r in range(5):  # round r holds the r-th draw of every cluster
        assert sorted(labels[idx[10 * r:10 * (r + 1)]].tolist()) == list(range(10))
    assert cluster_subset(feats, 5, seed=0) == idx  # deterministic for the seed
    other = cluster_subset(feats, 5, seed=3)
    assert other != idx and len(set(cluster_labels(feats, 10, seed=3)[other[:5]].tolist())) == 5
    # the old behaviour, sorted indices, puts the first five all in one cluster here
    assert len(set(truth[sorted(idx)[:5]].tolist())) == 1


def test_round_robin_spreads_groups_within_rounds():
    # two clusters of photographs A, A, B and C, C, D (draw order); without groups the first two
    # rounds give A, C then A, C; with groups each pick prefers the least-used photograph
    per_cluster = [[0, 1, 2], [3, 4, 5]]
    groups = {0: "A", 1: "A", 2: "B", 3: "C", 4: "C", 5: "D"}
    plain = round_robin(per_cluster, np.random.default_rng(0))
    spread = round_robin(per_cluster, np.random.default_rng(0), groups)
    assert sorted(plain) == sorted(spread) == list(range(6))
    assert [groups[i] for i in plain[2:4]] in (["A", "C"], ["C", "A"])
    assert {groups[i] for i in spread[:4]} == {"A", "B", "C", "D"}  # four photographs in two rounds
    assert {tuple(sorted(spread[2 * r:2 * r + 2])) for r in range(3)} == {(0, 3), (2, 5), (1, 4)}
    # a third cluster holding only photograph A: it is still visited in the first round
    three = round_robin([[0, 1, 2], [3, 4, 5], [6]], np.random.default_rng(1), {**groups, 6: "A"})
    assert 6 in three[:3]


def test_cluster_subset_of_a_reference_dataset_spreads_over_photographs(monkeypatch):
    """FR datasets: the reference (source photograph) of each image is a group by default."""
    import iqaguard.data.sampling as sampling

    feats, truth = _blobs(n_clusters=5, per=6)
    monkeypatch.setattr(sampling, "sampling_features", lambda ds, max_side=None: feats)  # no image decoding
    # clusters 0 and 1 hold photograph P0 only, 2 -> P1, 3 -> P2, cluster 4 alternates P0 / P3
    photo = {0: [0] * 6, 1: [0] * 6, 2: [1] * 6, 3: [2] * 6, 4: [0, 3] * 3}
    refs = [f"/k/P{photo[c][j]}.png" for c in range(5) for j in range(6)]
    ds = Dataset([Sample(name=f"d{i:02d}.png", ref_path=refs[i], mos=float(feats[i, 2])) for i in range(30)])
    for seed in range(4):
        idx = cluster_subset(ds, 6, n_clusters=5, seed=seed)  # groups = ref_path by default
        assert cluster_subset(feats, 6, n_clusters=5, seed=seed, groups=refs) == idx
        assert len(set(truth[idx[:5]].tolist())) == 5  # five clusters ...
        assert len({refs[i] for i in idx[:5]}) == 4  # ... and all four photographs
        assert sorted(cluster_subset(feats, 6, n_clusters=5, seed=seed)) == sorted(idx)  # order only
    with pytest.raises(InputError, match="groups"):
        cluster_subset(feats, 4, n_clusters=5, groups=refs[:3])


def test_reference_subset_keeps_all_distortions_of_drawn_references():
    samples = [Sample(name=f"I{r:02d}_{d:02d}.png", ref_path=f"/k/I{r:02d}.png", mos=1.0)
               for r in range(1, 11) for d in range(1, 6)]
    ds = Dataset(samples)
    idx = reference_subset(ds, n_references=3, seed=4)
    refs = {str(samples[i].ref_path) for i in idx}
    assert len(refs) == 3 and len(idx) == 15 and idx == sorted(idx)
    assert all(str(s.ref_path) not in refs for j, s in enumerate(samples) if j not in idx)
    assert reference_subset(ds, 3, seed=4) == idx and reference_subset(ds, 3, seed=5) != idx
    with pytest.raises(InputError, match="full-reference"):
        reference_subset(Dataset([Sample(name="a", mos=1.0)]))
