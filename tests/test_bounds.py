"""Tests of calibrate_bounds (Guardians of Image Quality appendix A.3.2) on toy metrics with known ranges."""
from __future__ import annotations

from typing import List, Optional, Tuple

import pytest
import torch

from iqaguard.errors import InputError, ScoreError
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.metrics.bounds import calibrate_bounds, collect_scores


class MeanBrightness(Metric):
    """NR toy metric: mean pixel value. JPEG keeps pure black and pure white exactly."""

    kind = "nr"
    name = "mean-brightness"

    def __init__(self, lower_better: bool = False) -> None:
        super().__init__()
        self.lower_better = lower_better
        self.calls: List[Tuple[int, ...]] = []

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3))


class NegL1(Metric):
    """FR toy metric: ``-mean|x - ref|`` (0 for identical images, higher is better)."""

    kind = "fr"
    name = "neg-l1"

    def __init__(self) -> None:
        super().__init__()
        self.pairs: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.pairs.append((x.clone(), ref.clone()))
        return -(x - ref).abs().mean(dim=(1, 2, 3))


class Constant(Metric):
    kind = "nr"
    name = "constant"

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.full((x.shape[0],), self.value)


class Contrast(Metric):
    """NR toy: standard deviation of the pixels."""

    kind = "nr"
    name = "contrast"

    def __init__(self, lower_better: bool = False) -> None:
        super().__init__()
        self.lower_better = lower_better

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x.flatten(1).std(dim=1, unbiased=False)


class InfOnBlack(Metric):
    """NR toy: +inf on an all-black image, else the mean (non-finite pristine values are skipped)."""

    kind = "nr"
    name = "inf-on-black"

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.where(x.amax(dim=(1, 2, 3)) == 0, torch.full_like(m, float("inf")), m)


@pytest.fixture()
def black_white() -> torch.Tensor:
    return torch.cat([torch.zeros(1, 3, 16, 24), torch.ones(1, 3, 16, 24)])


def test_higher_better_toy_has_known_bounds(black_white):
    # best = max over pristine = 1 (white); worst = min over JPEG/noise = 0 (JPEG of black is black)
    assert calibrate_bounds(MeanBrightness(), black_white) == Bounds(worst=0.0, best=1.0)


def test_lower_better_toy_swaps_the_extremes(black_white):
    # best = min over pristine = 0 (black); worst = max over distorted = 1 (JPEG of white)
    assert calibrate_bounds(MeanBrightness(lower_better=True), black_white) == Bounds(worst=1.0, best=0.0)


def test_full_reference_uses_pristine_as_reference(black_white):
    m = NegL1()
    b = calibrate_bounds(m, black_white, seed=3)
    assert b.best == 0.0  # f(x, x)
    # noise U[0,1] against black or white: mean |difference| ~ 0.5
    assert -0.55 < b.worst < -0.45
    for x, ref in m.pairs:
        assert torch.equal(ref, black_white)  # every comparison is against the pristine images
    assert torch.equal(m.pairs[0][0], black_white)  # first call: pristine vs itself


def test_noise_is_seeded(black_white):
    pristine1, distorted1 = collect_scores(NegL1(), black_white, seed=0)
    _, distorted2 = collect_scores(NegL1(), black_white, seed=0)
    _, distorted3 = collect_scores(NegL1(), black_white, seed=torch.Generator().manual_seed(1))
    assert torch.equal(distorted1, distorted2)
    assert not torch.equal(distorted1, distorted3)
    assert pristine1.shape == (2,) and distorted1.shape == (4,)


def test_lists_of_different_sizes_are_batched_by_size():
    imgs = [torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 20, 12), torch.ones(1, 3, 16, 16), torch.zeros(3, 16, 16)]
    m = MeanBrightness()
    assert calibrate_bounds(m, imgs, batch_size=2) == Bounds(worst=0.0, best=1.0)
    # three 16x16 images (batches of 2 + 1) and one 20x12 image; three calls per batch
    assert sorted(set(m.calls)) == [(1, 3, 16, 16), (1, 3, 20, 12), (2, 3, 16, 16)]
    assert len(m.calls) == 3 * 3


def test_non_finite_pristine_values_are_skipped():
    imgs = torch.cat([torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.6)])
    b = calibrate_bounds(InfOnBlack(), imgs)
    assert b.best == pytest.approx(0.6, abs=1e-6)
    assert b.worst < b.best


def test_degenerate_nan_and_inverted_ranges_raise(black_white):
    with pytest.raises(ScoreError, match="degenerate"):
        calibrate_bounds(Constant(0.5), black_white)
    with pytest.raises(ScoreError, match="NaN"):
        calibrate_bounds(Constant(float("nan")), black_white)
    with pytest.raises(ScoreError, match="no finite"):
        calibrate_bounds(Constant(float("inf")), black_white)
    # pixel checkerboards have the highest contrast; flagged lower-better, pristine scores worst
    board = ((torch.arange(16).view(-1, 1) + torch.arange(16).view(1, -1)) % 2).float().expand(2, 3, 16, 16)
    with pytest.raises(ScoreError, match="lower_better"):
        calibrate_bounds(Contrast(lower_better=True), board)
    assert calibrate_bounds(Contrast(), board).best == pytest.approx(0.5)


def test_bad_arguments_raise_input_errors(black_white):
    with pytest.raises(InputError, match="images"):
        calibrate_bounds(MeanBrightness(), [])
    with pytest.raises(InputError, match=r"images\[1\]"):
        calibrate_bounds(MeanBrightness(), [torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 2.0)])
    with pytest.raises(InputError, match="metric"):
        calibrate_bounds(lambda x: x.mean(), black_white)
    with pytest.raises(InputError, match="seed"):
        calibrate_bounds(MeanBrightness(), black_white, seed=1.5)
    with pytest.raises(InputError, match="batch_size"):
        calibrate_bounds(MeanBrightness(), black_white, batch_size=0)
