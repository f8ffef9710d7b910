"""Gradient-masking flags (iqaguard.bench.masking) on defenses built to mask gradients, and silence on
plain differentiable ones; skipped defense presets (iqaguard.bench.defense_check).

Importing this file registers three toy defenses (subprocesses get them through ``imports``):
``mask-round`` rounds to 8 levels and declares itself differentiable, so autograd gives an
all-zero gradient (the textbook obfuscated gradient: a quantiser attacked without BPDA);
``plain-smooth`` is a differentiable contraction towards grey with a real gradient;
``needs-big`` refuses images under 64 pixels.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import torch

from iqaguard.bench.masking import adaptive_gain_share, is_query_attack, masking_flags
from iqaguard.defenses.base import Purification
from iqaguard.registry import DEFENSES

from test_runner import THIS_FILE as RUNNER_FILE, _register, run

THIS_FILE = str(Path(__file__).resolve())


class MaskRound(Purification):
    """Quantise to ``levels`` grey levels; claims to be differentiable (it is not: d round = 0)."""

    differentiable = True
    presets = [{"levels": 8}]
    defaults = {"levels": 8}

    def apply(self, x, generator=None):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class PlainSmooth(Purification):
    """``0.75 x + 0.125``: differentiable, deterministic, exact gradient 0.75."""

    differentiable = True
    presets = [{"k": 0.75}]
    defaults = {"k": 0.75}

    def apply(self, x, generator=None):
        return self.k * x + (1 - self.k) / 2


class NeedsBig(PlainSmooth):
    @property
    def min_size(self) -> int:
        return 64


class NeedsWeights(PlainSmooth):
    """A neural defense whose weights are not installed."""

    def __init__(self, preset=None, **kwargs):
        from iqaguard.errors import MissingWeightsError

        raise MissingWeightsError("weights for defense 'needs-weights' not found: /nowhere/w.safetensors")


_register(DEFENSES, "needs-weights", NeedsWeights)
_register(DEFENSES, "mask-round", MaskRound)
_register(DEFENSES, "plain-smooth", PlainSmooth)
_register(DEFENSES, "needs-big", NeedsBig)


def _spec(defenses, attacks=None, eot=1):
    return {"version": "mask-1", "imports": [RUNNER_FILE, THIS_FILE], "metrics": ["toy-nr"],
            "datasets": [{"name": "toy", "kwargs": {"n": 4}}],
            "attacks": attacks or [{"name": "ifgsm", "presets": ["strong"], "kwargs": {"steps": 10}},
                                   {"name": "square", "presets": ["strong"], "kwargs": {"max_queries": 60}}],
            "defenses": [{"name": d, "presets": [0], "eot_samples": eot} for d in defenses],
            "modes": ["non-adaptive", "adaptive"], "seeds": [0], "batch_size": 4}


@pytest.fixture(scope="module")
def flagged(tmp_path_factory):
    store = tmp_path_factory.mktemp("mask") / "m.duckdb"
    run(_spec(["mask-round", "plain-smooth"]), store)
    return store, {(r["defense"], r["defense_preset"]): r for r in masking_flags(store)}


def test_masking_defense_is_flagged(flagged):
    _, rows = flagged
    r = rows[("mask-round", "0")]
    assert r["checks"]["gradient"]["flag"] is True
    assert "4 of 4 images with an all-zero gradient" in r["checks"]["gradient"]["detail"]
    # with no gradient the adaptive I-FGSM cannot move, so the ignorant attack is stronger, and so is Square
    assert r["checks"]["adaptive_weaker"]["flag"] is True
    assert r["checks"]["black_box"]["flag"] is True
    assert r["checks"]["eot"] == {"flag": False, "detail": "deterministic"}


def test_plain_differentiable_defense_is_silent(flagged):
    _, rows = flagged
    r = rows[("plain-smooth", "0")]
    assert r["flagged"] == [], r["checks"]
    assert "0 of 4 images" in r["checks"]["gradient"]["detail"]


def test_gradient_rows_match_the_analytic_gradient(flagged):
    store, _ = flagged
    from test_runner import ToyNR, toy_dataset
    from iqaguard.defenses import defend

    con = duckdb.connect(str(store), read_only=True)
    got = dict(con.execute("SELECT image, grad_l1 FROM gradient_checks WHERE defense = 'plain-smooth'").fetchall())
    con.close()
    m, ds = ToyNR(), toy_dataset(4)
    for s in ds:
        x = s.image.clone().requires_grad_(True)
        defend(m, PlainSmooth())(x).sum().backward()
        assert got[s.name] == pytest.approx(float(x.grad.abs().sum()), rel=1e-5)


def test_randomized_defense_without_eot_is_flagged(tmp_path):
    attacks = [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 2}}]
    run(_spec(["toy-noise"], attacks, eot=1), tmp_path / "a.duckdb")
    run(_spec(["toy-noise"], attacks, eot=3), tmp_path / "b.duckdb")
    (a,) = masking_flags(tmp_path / "a.duckdb")
    (b,) = masking_flags(tmp_path / "b.duckdb")
    assert a["checks"]["eot"]["flag"] is True and "eot_samples" in a["checks"]["eot"]["detail"]
    assert b["checks"]["eot"]["flag"] is False
    assert b["checks"]["black_box"] == {"flag": None, "detail": "not measured"}  # no query attack ran


def test_adaptive_gain_share_counts_defenses(flagged):
    store, _ = flagged
    share = adaptive_gain_share(store)
    by = {r["defense"]: r for r in share["rows"]}
    assert by["plain-smooth"]["higher"] and not by["mask-round"]["higher"]
    assert share["share"] == 0.5


def test_query_attack_kinds():
    assert is_query_attack("square") is True and is_query_attack("pgd") is False
    assert is_query_attack("no-such-attack") is None


def test_too_small_images_and_missing_weights_skip_the_preset_not_the_run(tmp_path):
    from iqaguard.bench.report import write_report

    store = tmp_path / "s.duckdb"
    attacks = [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 1}}]
    summary = run(_spec(["needs-big", "plain-smooth", "needs-weights"], attacks), store)
    assert summary.rows_written > 0
    con = duckdb.connect(str(store), read_only=True)
    status = dict(con.execute("SELECT defense, status FROM defense_presets").fetchall())
    reason = con.execute("SELECT reason FROM defense_presets WHERE defense = 'needs-big'").fetchone()[0]
    defended = {d for (d,) in con.execute("SELECT DISTINCT defense FROM results").fetchall()}
    con.close()
    assert status == {"needs-big": "skipped", "plain-smooth": "ok", "needs-weights": "skipped"}
    assert "16x16" in reason and "64x64" in reason
    assert defended == {"none", "plain-smooth"}
    html = write_report(store, tmp_path / "r").read_text(encoding="utf-8")
    row = html[html.index('<tr data-defense="needs-weights"'):]
    assert "skipped: no weights: weights for defense &#39;needs-weights&#39; not found" in row[:row.index("</tr>")]


def test_report_shows_defenses_flags_and_links(flagged, tmp_path):
    import re

    from iqaguard.bench.report import write_report

    store, rows = flagged
    html = write_report(store, tmp_path / "r").read_text(encoding="utf-8")
    for sid in ("composite", "defenses", "masking"):
        assert f'<section id="{sid}">' in html
    table = html[html.index('id="masking-flags"'):html.index("</table>", html.index('id="masking-flags"'))]
    mask_row = re.search(r'<tr data-defense="mask-round">(.*?)</tr>', table, re.S).group(1)
    anchor = re.search(r'data-check="gradient" data-flag="True"[^>]*><a href="#(mask-\d+)">', mask_row).group(1)
    assert f'<li id="{anchor}"><strong>toy-nr / mask-round / 0</strong>' in html
    smooth_row = re.search(r'<tr data-defense="plain-smooth">(.*?)</tr>', table, re.S).group(1)
    assert "⚑" not in smooth_row
    assert 'data-status="ok"' in html
