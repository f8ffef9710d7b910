"""Content-diverse subset sampling (Guardians of Image Quality §4 and appendix A.3.1).

Seed 002 partitions a dataset "into 10 clusters using K-Means based on 3 parameters: Spatial
Information (SI), Colorfulness (CF), and Mean Opinion Scores (MOS)" and draws k random images
from each cluster (k=100 -> the 1000-image KonIQ subset; k=5 -> the 50-image black-box and
calibration subset), using MOS "where possible". Repeating the draw with 10 seeds gives the
sampling-validity study of Table 5 (Kruskal-Wallis over the 10 subsets).

Procedure implemented here:

1. per image, SI (ITU-T P.910) and CF (Hasler & Süsstrunk, 2003) on the 0..255 scale, after an
   optional area downscale so that the long side is at most ``max_side`` (speed; both features
   shrink a little with the downscale, identically for every image of similar size);
2. the feature matrix ``[N, 3]`` (SI, CF, MOS) or ``[N, 2]`` when the dataset has no MOS;
3. each column standardised to zero mean, unit variance (constant columns left at zero);
4. ``sklearn.cluster.KMeans(n_clusters, random_state=seed, n_init=10)``;
5. from every cluster, ``k`` indices drawn without replacement by
   ``numpy.random.default_rng(seed)`` (all of a cluster's members when it has fewer than k),
   clusters visited in label order;
6. the drawn indices are returned in **round-robin order** over the clusters
   (:func:`round_robin`): the clusters in an order permuted by the same generator, one draw of
   every cluster, then a second one of every cluster, and so on; with ``groups`` (by default the
   reference photograph of each image of an FR dataset) each turn takes the cluster's draw of
   the least-used group first. So every prefix of the subset (the benchmark's ``limit``, a
   metric's ``limit`` and ``mode_limits`` keep the first N selected images) spreads over as many
   clusters, and then photographs, as it can: N <= n_clusters images come from N different
   clusters. The set of indices is the same as with sorted output; sort it for index order.

For full-reference KADID, Guardians of Image Quality instead keeps every distortion of 8 randomly chosen
references (:func:`reference_subset`).
"""
from __future__ import annotations

import warnings
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..ops.color import BT601
from ..validation import check_image
from .base import Dataset

#: ITU-R BT.601 luma weights (R, G, B).
LUMA_WEIGHTS = BT601

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def spatial_information(x: torch.Tensor) -> torch.Tensor:
    """Spatial Information of ITU-T Rec. P.910 for still images.

    ``SI = std_space(|Sobel(Y)|)``: the population standard deviation over pixels of the
    Sobel gradient magnitude ``sqrt(Gx^2 + Gy^2)`` (unnormalised 3x3 Sobel kernels) of the
    BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` on the 0..255 scale. The gradient is
    taken on valid pixels only (the one-pixel border is excluded, no padding).

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1], ``H, W >= 3``.

    Returns:
        ``[B]`` float32 SI values (0 for a constant image; typically 0..~250).
    """
    check_image(x, "x")
    if x.shape[-2] < 3 or x.shape[-1] < 3:
        raise InputError(f"x: spatial_information needs H, W >= 3, got {list(x.shape)}")
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (x * 255.0 * w).sum(dim=1, keepdim=True)
    kx = torch.tensor(_SOBEL_X, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    gx = F.conv2d(y, kx)
    gy = F.conv2d(y, kx.transpose(-1, -2))
    magnitude = torch.sqrt(gx * gx + gy * gy)
    return magnitude.flatten(1).std(dim=1, unbiased=False).float()


def colourfulness(x: torch.Tensor) -> torch.Tensor:
    """Colourfulness ``M`` of Hasler & Süsstrunk (2003).

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` on the 0..255 scale,
    ``M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)`` (population statistics over pixels).

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1].

    Returns:
        ``[B]`` float32 values (0 for any gray image; ~0..200 for natural images).
    """
    check_image(x, "x")
    r, g, b = (x[:, c].flatten(1) * 255.0 for c in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    sigma = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mu = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return (sigma + 0.3 * mu).float()


colorfulness = colourfulness


def _downscale(x: torch.Tensor, max_side: Optional[int]) -> torch.Tensor:
    """Area-downscale ``x`` so that its long side is at most ``max_side`` (no upscaling)."""
    h, w = x.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return x
    s = max_side / max(h, w)
    size = (max(3, round(h * s)), max(3, round(w * s)))
    return F.interpolate(x, size=size, mode="area")


def sampling_features(dataset: Dataset, max_side: Optional[int] = 512, use_mos: Optional[bool] = None) -> np.ndarray:
    """Per-image clustering features of Guardians of Image Quality appendix A.3.1: SI, CF and (where possible) MOS.

    Every image is loaded once (the distorted image for FR datasets), area-downscaled so its
    long side is at most ``max_side`` (``None`` keeps full resolution), then SI and CF are
    computed with :func:`spatial_information` and :func:`colourfulness`.

    Args:
        dataset: any :class:`~iqaguard.data.base.Dataset`.
        max_side: long-side cap in pixels for speed (>= 3), or ``None``.
        use_mos: ``None``: add the MOS column when every sample has one (warn if only some
            do); ``True``: require MOS; ``False``: never add it.

    Returns:
        ``[N, 3]`` (SI, CF, MOS) or ``[N, 2]`` (SI, CF) float64 array, rows in dataset order.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 3):
        raise InputError(f"max_side: expected None or an integer >= 3, got {max_side!r}")
    if len(dataset) == 0:
        raise InputError("dataset: is empty; cannot compute sampling features")
    mos = [s.mos for s in dataset]
    have = sum(m is not None for m in mos)
    if use_mos is None:
        use_mos = have == len(mos)
        if 0 < have < len(mos):
            warnings.warn(f"{have} of {len(mos)} samples have a MOS; clustering on SI and CF only", UserWarning,
                          stacklevel=2)
    elif use_mos and have < len(mos):
        raise InputError(f"use_mos=True but {len(mos) - have} of {len(mos)} samples have no MOS")
    rows = []
    with torch.no_grad():
        for sample in dataset:
            x = _downscale(sample.image, max_side)
            rows.append([float(spatial_information(x)[0]), float(colourfulness(x)[0])])
    feats = np.asarray(rows, dtype=np.float64)
    if use_mos:
        feats = np.concatenate([feats, np.asarray(mos, dtype=np.float64)[:, None]], axis=1)
    return feats


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _as_features(data: Union[Dataset, np.ndarray], max_side: Optional[int]) -> np.ndarray:
    if isinstance(data, Dataset):
        return sampling_features(data, max_side=max_side)
    feats = np.asarray(data, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise InputError(f"features: expected a non-empty [N, D] array, got shape {list(feats.shape)}")
    if not np.isfinite(feats).all():
        raise InputError("features: contains NaN or Inf values")
    return feats


def cluster_labels(features: np.ndarray, n_clusters: int = 10, seed: int = 0) -> np.ndarray:
    """K-Means cluster label of each row of the standardised ``features``.

    Args:
        features: ``[N, D]`` array (e.g. from :func:`sampling_features`), ``N >= n_clusters``.
        n_clusters: number of clusters (10 in Guardians of Image Quality).
        seed: ``random_state`` of ``KMeans`` (``n_init=10``).

    Returns:
        ``[N]`` int array of labels in ``0..n_clusters-1``.
    """
    from sklearn.cluster import KMeans

    feats = _as_features(features, None)
    n_clusters = _check_int(n_clusters, "n_clusters", 1)
    seed = _check_int(seed, "seed", 0)
    if feats.shape[0] < n_clusters:
        raise InputError(f"features: {feats.shape[0]} rows cannot form n_clusters={n_clusters} clusters")
    sd = feats.std(axis=0)
    z = (feats - feats.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit_predict(z).astype(np.int64)


def round_robin(per_cluster: Sequence[Sequence[int]], rng: np.random.Generator,
                groups: Optional[Mapping[int, Hashable]] = None) -> List[int]:
    """Interleave per-cluster index lists: one from each cluster per round (step 6 above).

    Args:
        per_cluster: each cluster's indices in draw order (empty lists allowed).
        rng: generator of the cluster visiting order (a permutation of the clusters).
        groups: optional group of each index (e.g. its source photograph). Without it every
            round visits the clusters in the permuted order and takes each cluster's next index
            in draw order. With it, each pick of a round takes, among the clusters not yet
            visited in that round, a draw whose group has been taken least often so far
            (:func:`_least_used`: clusters with fewer such choices first, then the permuted
            order; within a cluster, draw order), so a prefix also spreads over as many groups
            as it can. Either way every round visits every cluster that has indices left.

    Returns:
        All indices: one from every non-empty cluster, then a second one from every cluster
        that has one left, and so on.
    """
    order = [int(c) for c in rng.permutation(len(per_cluster))] if len(per_cluster) else []
    queues = [list(c) for c in per_cluster]
    used: Dict[Hashable, int] = {}
    out: List[int] = []
    while any(queues):
        pending = [c for c in order if queues[c]]
        while pending:
            if groups is None:
                c, j = pending[0], 0
            else:
                c, j = _least_used(pending, queues, groups, used)
            i = int(queues[c].pop(j))
            pending.remove(c)
            if groups is not None:
                used[groups[i]] = used.get(groups[i], 0) + 1
            out.append(i)
    return out


def _least_used(pending: List[int], queues: List[List[int]], groups: Mapping[int, Hashable],
                used: Dict[Hashable, int]) -> Tuple[int, int]:
    """``(cluster, position)`` of the next pick of a round with groups (see :func:`round_robin`).

    Per pending cluster: its least-used group count ``m`` and the number ``a`` of distinct groups
    at that count among its remaining draws. The cluster with the smallest ``(m, a)`` goes first
    (a cluster with one choice before one with several, so the latter can still take an unused
    group; ties: the permuted cluster order), with its first draw at count ``m``.
    """
    best = None
    for rank, c in enumerate(pending):
        counts = [used.get(groups[i], 0) for i in queues[c]]
        m = min(counts)
        at_m = [t for t, n in enumerate(counts) if n == m]
        key = (m, len({groups[queues[c][t]] for t in at_m}), rank)
        if best is None or key < best[0]:
            best = (key, c, at_m[0])
    assert best is not None
    return best[1], best[2]


def cluster_subset(
    dataset_or_features: Union[Dataset, np.ndarray],
    k_per_cluster: int,
    n_clusters: int = 10,
    seed: int = 0,
    max_side: Optional[int] = 512,
    groups: Optional[Sequence[Hashable]] = None,
) -> List[int]:
    """Indices of a K-Means-stratified subset (Guardians of Image Quality appendix A.3.1), round-robin ordered.

    Args:
        dataset_or_features: a dataset (features computed with :func:`sampling_features`) or
            an ``[N, D]`` feature array.
        k_per_cluster: images drawn per cluster (100 for the 1000-image KonIQ subset, 5 for
            the 50-image black-box subset of Guardians of Image Quality).
        n_clusters: number of K-Means clusters (10).
        seed: seeds ``KMeans``, the per-cluster draw and the cluster order; the same seed gives
            the same subset in the same order.
        max_side: downscale cap used when features are computed from a dataset.
        groups: ``[N]`` group of every image (e.g. its source photograph) that the order also
            spreads over; default for a dataset whose every sample has a reference: the
            reference (``ref_path``, the source photograph of KADID-style datasets), else none.
            It changes the order only, never which indices are drawn.

    Returns:
        Distinct indices, ``min(k, |cluster|)`` from each cluster, in round-robin order over the
        clusters (:func:`round_robin`): the first ``m`` indices come from ``min(m, c)``
        different clusters, ``c`` the number of non-empty clusters; within a round, the
        least-used groups first.
    """
    feats = _as_features(dataset_or_features, max_side)
    k = _check_int(k_per_cluster, "k_per_cluster", 1)
    if groups is None and isinstance(dataset_or_features, Dataset):
        refs = [s.ref_path for s in dataset_or_features]
        groups = None if any(r is None for r in refs) else [str(r) for r in refs]
    if groups is not None and len(groups) != feats.shape[0]:
        raise InputError(f"groups: expected one group per image ({feats.shape[0]}), got {len(groups)}")
    labels = cluster_labels(feats, n_clusters, seed)
    rng = np.random.default_rng(seed)
    picked: List[List[int]] = []
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=min(k, members.size), replace=False).tolist() if members.size else [])
    return round_robin(picked, rng, None if groups is None else dict(enumerate(groups)))


def reference_subset(dataset: Dataset, n_references: int = 8, seed: int = 0) -> List[int]:
    """All distorted versions of ``n_references`` randomly drawn references (FR datasets).

    Seed 002 appendix A.3.1: the KADID subset "contains all distortions from 8 images"
    (8 references x 25 types x 5 levels = 1000 images), keeping every distortion.

    Args:
        dataset: a full-reference dataset whose samples have ``ref_path`` set (e.g. ``kadid10k``).
        n_references: number of distinct references to draw (capped at the number available).
        seed: seed of the ``numpy.random.default_rng`` draw over the sorted reference paths.

    Returns:
        Sorted indices of every sample whose reference was drawn.
    """
    n_references = _check_int(n_references, "n_references", 1)
    seed = _check_int(seed, "seed", 0)
    refs = [s.ref_path for s in dataset]
    if not refs or any(r is None for r in refs):
        raise InputError("dataset: reference_subset needs a non-empty full-reference dataset (every ref_path set)")
    unique = sorted({str(r) for r in refs})
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(unique, size=min(n_references, len(unique)), replace=False).tolist())
    return [i for i, r in enumerate(refs) if str(r) in chosen]


def repeated_subsets(
    dataset_or_features: Union[Dataset, np.ndarray],
    k_per_cluster: int,
    repeats: int = 10,
    n_clusters: int = 10,
    seed: int = 0,
    max_side: Optional[int] = 512,
) -> List[List[int]]:
    """``repeats`` independent cluster subsets for the sampling-validity study (002 Table 5).

    Features are computed once; subset ``r`` is ``cluster_subset(features, k, n_clusters,
    seed + r)``, so the clustering and the draws both change between repeats.

    Returns:
        ``repeats`` index lists, each in :func:`cluster_subset`'s round-robin order.
    """
    feats = _as_features(dataset_or_features, max_side)
    repeats = _check_int(repeats, "repeats", 1)
    seed = _check_int(seed, "seed", 0)
    return [cluster_subset(feats, k_per_cluster, n_clusters, seed + r) for r in range(repeats)]
