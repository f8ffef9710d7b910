"""Scores: pure functions on arrays (Guardians of Image Quality eqs. 5-7, Robustness as Architecture eqs. 8-9, fidelity, certification).

Robustness: :func:`r_score`, :func:`r_score_d`, :func:`d_score`, :func:`d_score_d`,
:func:`abs_gain`, :func:`abs_gain_auc`, :func:`r_score_auc`. Correlation with MOS: :func:`srocc`,
:func:`plcc`. Fidelity: :func:`psnr`, :func:`ssim`, :func:`mse`, :func:`linf`. Certification:
:func:`cert_radius`, :func:`cert_rel_delta` (with :func:`certified_delta`), :func:`abstain_rate`.
See ``docs/scores.md``.
"""
from __future__ import annotations

from .certified import abstain_rate, cert_radius, cert_rel_delta, certified_delta
from .correlation import plcc, srocc
from .fidelity import fidelity, linf, mse, psnr, ssim
from .robustness import R_FLOOR, abs_gain, abs_gain_auc, d_score, d_score_d, r_score, r_score_auc, r_score_d

__all__ = [
    "R_FLOOR", "abs_gain", "abs_gain_auc", "abstain_rate", "cert_radius", "cert_rel_delta", "certified_delta",
    "d_score", "d_score_d", "linf", "mse", "plcc", "psnr", "r_score", "r_score_auc", "r_score_d", "srocc", "ssim", "fidelity",
]
