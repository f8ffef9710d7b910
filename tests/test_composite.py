"""Composite ranking (iqaguard.bench.composite): analytic values of the rescaled mean and the ranks,
and the bootstrap intervals on a real store."""
from __future__ import annotations

import numpy as np
import pytest

from iqaguard.bench.composite import CRITERIA, _ranks, composite_ranking, composite_scores


def _values(rows):
    """[R, C, 1] from per-row dicts of the four criteria."""
    return np.array([[[r[k]] for k in CRITERIA] for r in rows], dtype=float)


def test_rescaled_mean_by_hand():
    # d_score_d lower is better; the rest higher is better
    rows = [{"d_score_d": 1.0, "r_score": 3.0, "srocc_clean": 0.9, "srocc_adv": 0.8},   # best everywhere
            {"d_score_d": 4.0, "r_score": 2.0, "srocc_clean": 0.7, "srocc_adv": 0.6},
            {"d_score_d": 5.0, "r_score": 1.0, "srocc_clean": 0.5, "srocc_adv": 0.4}]   # worst everywhere
    c = composite_scores(_values(rows))[:, 0]
    # middle row: (5-4)/(5-1)=0.25, (2-1)/2=0.5, (0.7-0.5)/0.4=0.5, (0.6-0.4)/0.4=0.5 -> mean 0.4375
    assert c == pytest.approx([1.0, 0.4375, 0.0])
    assert list(_ranks(c[:, None])[:, 0]) == [1, 2, 3]


def test_missing_criterion_is_left_out_and_ties_share_a_rank():
    rows = [{"d_score_d": 1.0, "r_score": 2.0, "srocc_clean": np.nan, "srocc_adv": np.nan},
            {"d_score_d": 3.0, "r_score": 1.0, "srocc_clean": np.nan, "srocc_adv": np.nan}]
    c = composite_scores(_values(rows))[:, 0]
    assert c == pytest.approx([1.0, 0.0])  # mean of the two measurable criteria only
    assert list(_ranks(np.array([[0.5], [0.5], [0.1]]))[:, 0]) == [1, 1, 3]


def test_composite_on_a_store(tmp_path):
    from test_runner import run, toy_spec
    from iqaguard.bench.stats import leaderboard, mode_groups

    spec = toy_spec(datasets=[{"name": "toy", "kwargs": {"n": 12}}], modes=["non-adaptive"],
                    attacks=[{"name": "toy-step", "presets": ["weak", "strong"]}],
                    defenses=[{"name": "jpeg", "presets": [0, 4]}, {"name": "toy-noise", "presets": [1]}])
    store = tmp_path / "c.duckdb"
    run(spec, store)
    groups = mode_groups(store)
    board = leaderboard(store, "non-adaptive", groups=groups)
    rows = composite_ranking(store, "non-adaptive", board, n_resamples=200, groups=groups)
    assert len(rows) == len([r for r in board if r["rank"] is not None]) >= 3
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    comps = [r["composite"] for r in rows]
    assert comps == sorted(comps, reverse=True)
    for r in rows:
        lo, hi = r["composite_ci"]
        assert 0.0 <= lo <= hi <= 1.0
        assert r["rank_ci"][0] <= r["rank_ci"][1] and 1 <= r["rank_ci"][0] <= len(rows)
    again = composite_ranking(store, "non-adaptive", board, n_resamples=200, groups=groups)
    assert again == rows  # seeded bootstrap
