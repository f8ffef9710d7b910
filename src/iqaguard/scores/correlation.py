"""Correlation of metric scores with subjective scores: SROCC and PLCC (Guardians of Image Quality §3.5).

``SROCC_clear`` / ``SROCC_adv`` of Guardians of Image Quality are :func:`srocc` of the clean / (defended) attacked
scores against MOS; PLCC is reported in its appendix A.6.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
from scipy import stats

from ..errors import ScoreError
from ._arrays import to_pair


def _checked(pred: Any, mos: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Convert ``pred``/``mos`` and reject inputs with no defined correlation."""
    p, m = to_pair(pred, mos, "pred", "mos")
    if p.size < 2:
        raise ScoreError("pred: a correlation needs at least two images")
    for name, arr in (("pred", p), ("mos", m)):
        if np.ptp(arr) == 0:
            raise ScoreError(
                f"{name}: all {arr.size} values are equal ({arr[0]:.6g}); the correlation is undefined "
                "for constant input"
            )
    return p, m


def srocc(pred: Any, mos: Any) -> float:
    """Spearman rank-order correlation between predictions and MOS (↑), in [-1, 1].

    Ties get average ranks (``scipy.stats.spearmanr``). The sign is the raw one: a lower-better
    metric that works well gives a value near -1 against higher-better MOS.

    Args:
        pred: ``[N]`` metric scores.
        mos: ``[N]`` subjective scores.

    Raises:
        ScoreError: NaN, fewer than two images, mismatched lengths or constant input.
    """
    p, m = _checked(pred, mos)
    return float(stats.spearmanr(p, m).statistic)


def plcc(pred: Any, mos: Any) -> float:
    """Pearson linear correlation between predictions and MOS (↑), in [-1, 1].

    Plain Pearson on the raw scores: no logistic (nonlinear) regression is fitted first, so the
    value is comparable across defenses of one metric without a fitting step that could itself
    absorb attack effects.

    Args:
        pred: ``[N]`` metric scores.
        mos: ``[N]`` subjective scores.

    Raises:
        ScoreError: NaN, fewer than two images, mismatched lengths or constant input.
    """
    p, m = _checked(pred, mos)
    return float(stats.pearsonr(p, m).statistic)
