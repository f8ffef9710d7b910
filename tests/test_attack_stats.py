"""Attack-side statistics from stored rows: robustness-curve AUCs, the worst-case ensemble and the
transfer matrix, against hand-computed values (and the report sections that show them)."""
from __future__ import annotations

import json
import math

import pytest

from iqaguard.bench import attack_stats
from iqaguard.bench.report import collect, write_report
from iqaguard.bench.store import Store

BOUNDS = dict(bound_worst=0.0, bound_best=10.0, lower_better=False)  # diam 10


def _row(image, attack, preset, clean, attacked, eps=None, defense="none", dpreset="-", metric="m", mode="non-adaptive",
         **extra):
    params = None if eps is None else json.dumps({"eps": eps, "steps": 10})
    return dict(dataset="d", image=image, metric=metric, attack=attack, attack_preset=preset, defense=defense,
                defense_preset=dpreset, mode=mode, seed=0, mos=3.0, clean=clean, attacked=attacked,
                defended_clean=clean, defended_attacked=attacked, psnr=40.0, ssim=0.99, mse=1e-4, linf=eps or 0.01,
                t_attack=0.1, t_defense=0.0, attack_params=params, **BOUNDS, **extra)


def test_abs_gain_auc_and_r_score_auc_from_the_stored_budgets(tmp_path):
    rows = []
    for i, (c, a2, a8) in enumerate([(5.0, 5.5, 6.0), (4.0, 4.1, 5.0)]):  # gains in diam units: .05/.01, .10/.10
        rows += [_row(f"i{i}", "pgd", "weak", c, a2, eps=2 / 255), _row(f"i{i}", "pgd", "strong", c, a8, eps=8 / 255)]
    rows.append(_row("i0", "one-pixel", "weak", 5.0, 5.2))  # no eps: no curve
    with Store(tmp_path / "s.duckdb") as s:
        s.write(results=rows)
        curves = attack_stats.robustness_curves(s)
    assert len(curves) == 1
    c = curves[0]
    assert [p["eps"] * 255 for p in c["points"]] == pytest.approx([2, 8])
    g2, g8 = (0.05 + 0.01) / 2, (0.10 + 0.10) / 2
    assert [p["abs_gain"] for p in c["points"]] == pytest.approx([g2, g8])
    assert c["abs_gain_auc"] == pytest.approx((g2 + g8) / 2 * 6)  # trapezoid over 2..8 (/255)
    # R^(D) per point: mean of log10(max(10 - c, c - 0) / |a - c|)
    r2 = (math.log10(5 / 0.5) + math.log10(6 / 0.1)) / 2
    r8 = (math.log10(5 / 1.0) + math.log10(6 / 1.0)) / 2
    assert c["r_score_auc"] == pytest.approx((r2 + r8) / 2 * 6)
    assert c["n"] == 2 and set(c["low_n"]) == {"abs_gain_auc", "r_score_auc"}


def test_worst_case_takes_the_strongest_attack_per_image_on_the_images_all_ran_on(tmp_path):
    rows = [_row("i0", "a", "medium", 5.0, 6.0), _row("i0", "b", "medium", 5.0, 5.5),
            _row("i1", "a", "medium", 5.0, 5.0), _row("i1", "b", "medium", 5.0, 7.0),
            _row("i2", "a", "medium", 5.0, 9.0)]  # b did not run on i2: left out
    with Store(tmp_path / "s.duckdb") as s:
        s.write(results=rows)
        (w,) = attack_stats.worst_case(s)
    assert w["attacks"] == ["a", "b"] and w["n"] == 2
    assert w["gain"] == pytest.approx((0.1 + 0.2) / 2)
    assert w["raised"] == 1.0 and w["wins"] == {"a": 1, "b": 1}
    # the best single attack on the same images: a = (0.1 + 0) / 2, b = (0.05 + 0.2) / 2
    assert w["best_single"] == "b" and w["best_single_gain"] == pytest.approx(0.125)
    assert w["gain"] >= w["best_single_gain"]
    # a lower-better metric: "raised" means the score fell
    low = [dict(r, lower_better=True, metric="low") for r in rows]
    with Store(tmp_path / "t.duckdb") as s:
        s.write(results=low)
        (w,) = attack_stats.worst_case(s)
    assert w["gain"] == pytest.approx((-0.05 + 0.0) / 2)  # per image the least bad: -0.05 (b), 0.0 (a)
    assert w["raised"] == 0.0


def test_transfer_matrix_joins_transfer_rows_with_the_white_box_diagonal(tmp_path):
    res = [_row(f"i{i}", "ifgsm", "weak", 5.0, 6.0, eps=2 / 255, metric="A") for i in range(2)]
    tr = [dict(dataset="d", image=f"i{i}", source="A", metric="B", attack="ifgsm", attack_preset="weak",
               defense="none", defense_preset="-", seed=0, clean=2.0, attacked=2.0 + 0.5 * i, defended_clean=2.0,
               defended_attacked=2.0 + 0.5 * i, bound_worst=0.0, bound_best=5.0, lower_better=False) for i in range(2)]
    with Store(tmp_path / "s.duckdb") as s:
        s.write(results=res, transfer=tr)
        m = {(r["source"], r["metric"]): r for r in attack_stats.transfer_matrix(s)}
        ctx = collect(s)
    assert m[("A", "A")]["gain"] == pytest.approx(0.1) and m[("A", "A")]["raised"] == 1.0
    assert m[("A", "B")]["gain"] == pytest.approx((0 + 0.1) / 2) and m[("A", "B")]["raised"] == 0.5
    t = ctx["transfer"]
    assert [h["key"] for h in t["heads"]][-3:] == ["A", "B", "n"]


def test_report_shows_the_attack_sections(tmp_path):
    rows = []
    for atk in ("pgd", "square"):
        for i in range(3):
            rows += [_row(f"i{i}", atk, p, 5.0, 5.0 + k * (1 + i) * (2 if atk == "pgd" else 1) * 0.1, eps=k / 255)
                     for p, k in (("weak", 2), ("medium", 4))]
    with Store(tmp_path / "s.duckdb") as s:
        s.write(results=rows)
    page = write_report(tmp_path / "s.duckdb", tmp_path / "r").read_text()
    assert 'id="curves-non-adaptive"' in page and 'id="worst-non-adaptive"' in page
    assert 'id="transfer-empty"' in page and "AbsGainAUC" in page
