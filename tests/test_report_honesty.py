"""Honest report statistics: n on every aggregate, same-image baselines, n < 10 greyed and unranked,
bootstrap intervals, skipped samples (Guardians of Image Quality (ICML 2025) Table 2 protocol:
aggregates are means of per-group values).

Every store here is built from synthetic rows whose per-image values are simple functions of the
image index, so the expected numbers can be computed by hand.
"""
import html as _html
import re
import time
import zlib

import numpy as np
import pytest
from scipy import stats as sps

from iqaguard.bench import bootstrap, report, stats, stats_tests
from iqaguard.bench.store import Store
from iqaguard.errors import InputError

PRESETS = ("weak", "medium", "strong")


def _image(i):
    """Per-image values of image ``i``: MOS, clean score and attack gain (bounds 0..1, higher better)."""
    mos = 1.0 + 4.0 * ((i * 37) % 101) / 100.0
    return mos, 0.1 + 0.15 * mos, 0.1 + 0.01 * (i % 5)


def _rows(images, defense="none", preset="-", mode="non-adaptive", metric="m", attack_preset="medium",
          noise=0.0, keep=1.0, seed=0, monotone=False):
    """Result rows of one group. ``noise``: spread of the defended scores (seeded by the group);
    ``keep``: share of the attack gain left by the defense; ``monotone``: defended scores ordered
    like MOS (SROCC 1)."""
    rng = np.random.default_rng(zlib.crc32(repr((defense, preset, mode, metric, attack_preset, seed)).encode()))
    out = []
    for i in images:
        mos, clean, gain = _image(i)
        dclean = 0.05 * mos if monotone else clean + noise * rng.normal()
        out.append(dict(dataset="d", image=f"i{i:03d}", metric=metric, attack="ifgsm", attack_preset=attack_preset,
                        defense=defense, defense_preset=preset, mode=mode, seed=seed, mos=mos, clean=clean,
                        attacked=clean + gain, defended_clean=dclean, defended_attacked=dclean + keep * gain,
                        bound_worst=0.0, bound_best=1.0, lower_better=False, psnr=40.0 - (i % 7), ssim=0.9,
                        mse=1e-3 * (1 + i % 3), linf=0.01, t_attack=0.1, t_defense=0.001, spec_version="t-1"))
    return out


def _store(path, rows):
    with Store(path) as s:
        s.insert(rows)
    return path


def _lb(html, tid):
    """``[(defense, {data-key: (data-value, class, title, text)})]`` of the table ``tid``."""
    body = re.search(rf'<table class="lb sortable" id="{re.escape(tid)}".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    out = []
    for defense, cells in re.findall(r'<tr data-defense="([^"]+)"[^>]*>(.*?)</tr>', body, re.S):
        found = re.findall(r'<td data-key="([^"]+)" data-value="([^"]*)"(?: class="([^"]*)")?(?: title="([^"]*)")?>'
                           r'(.*?)</td>', cells, re.S)
        out.append((defense, {k: (v, c, _html.unescape(t), txt) for k, v, c, t, txt in found}))
    return out


# ---------------------------------------------------------------- n in every row


def test_every_aggregate_row_carries_images_and_groups(tmp_path):
    # old behaviour: an aggregate's n was its row count (3 presets x 12 images = 36) and groups had
    # no n_groups; now n = distinct images, n_rows = rows, n_groups = groups averaged
    rows = [r for p in PRESETS for r in _rows(range(12), attack_preset=p) + _rows(range(12), "jpeg", "0",
                                                                                     attack_preset=p, noise=0.02)]
    path = _store(tmp_path / "n.duckdb", rows)
    for g in stats.group_scores(path):
        assert (g["n"], g["n_groups"], g["n_clean"], g["n_adv"], g["low_n"]) == (12, 1, 12, 12, [])
    table = {r["defense"]: r for r in stats.defense_table(path, "non-adaptive")}
    assert (table["jpeg"]["n"], table["jpeg"]["n_rows"], table["jpeg"]["n_groups"]) == (12, 36, 3)
    assert table["jpeg"]["support"]["srocc_adv"] == {"n": 12, "n_groups": 3, "min_n": 12}
    for by in stats.BREAKDOWN_BY:
        for r in stats.breakdown(path, by, "non-adaptive"):
            assert r["n"] == 12 and r["n_groups"] == (1 if by == "attack_preset" else 3)
    assert all(r["n"] == 12 and r["n_groups"] == 3 and r["rank"] in (1, 2)
               for r in stats.leaderboard(path, "non-adaptive"))


# ---------------------------------------------------------------- n < 10: greyed, not ranked


@pytest.fixture(scope="module")
def small_group(tmp_path_factory):
    """gaussian-blur/0 on 2 images with SROCC 1 (the best value, from 2 images); jpeg/0 and median-blur/1 on
    12 images; median-blur/0 on 2 images with SROCC 1."""
    rows = (_rows(range(12)) + _rows(range(12), "jpeg", "0", noise=0.05, keep=0.3)
            + _rows(range(2), "gaussian-blur", "0", monotone=True, keep=0.1)
            + _rows(range(2), "median-blur", "0", monotone=True, keep=0.1)
            + _rows(range(12), "median-blur", "1", noise=0.05, keep=0.5))
    path = _store(tmp_path_factory.mktemp("small") / "s.duckdb", rows)
    page = report.write_report(path, path.parent / "out")
    return path, page.read_text(encoding="utf-8")


def test_two_image_group_is_not_ranked(small_group):
    path, _ = small_group
    board = {r["defense"]: r for r in stats.leaderboard(path, "non-adaptive")}
    blur = board["gaussian-blur"]
    assert blur["srocc_adv"] == pytest.approx(1.0) and blur["n"] == 2
    assert "srocc_adv" in blur["low_n"] and not stats.rankable(blur, "srocc_adv")
    # old behaviour: gaussian-blur ranked first with SROCC 1.000 from 2 images
    assert blur["rank"] is None
    assert [r["defense"] for r in stats.leaderboard(path, "non-adaptive")][-1] == "gaussian-blur"
    assert sorted(r["rank"] for r in board.values() if r["rank"]) == [1, 2, 3]
    # old behaviour: median-blur's 2-image preset 0 (SROCC 1) was chosen over its 12-image preset 1
    assert stats.best_presets(path, "non-adaptive")["median-blur"] == "1"
    assert "gaussian-blur" not in stats.best_presets(path, "non-adaptive", ranked_only=True)
    table = stats.defense_table(path, "non-adaptive")
    front = {(p["defense"], p["defense_preset"]) for p in stats.pareto_front(table) if p["pareto"]}
    assert ("gaussian-blur", "0") not in front and ("median-blur", "0") not in front and front


def test_two_image_group_is_greyed_in_the_html_and_left_out_of_charts(small_group):
    _, html = small_group
    rows = dict(_lb(html, "lb-purification-non-adaptive"))
    value, cls, title, text = rows["gaussian-blur"]["srocc_adv"]
    assert float(value) == pytest.approx(1.0) and cls == "low-n" and title.startswith("n < 10: not ranked")
    assert rows["gaussian-blur"]["rank"][3] == "—" and rows["gaussian-blur"]["n"][0] == "2"
    assert rows["jpeg"]["srocc_adv"][1] == "" and rows["jpeg"]["rank"][0] in ("1", "2", "3")
    assert "table.lb td.low-n" in html  # the class is styled (grey)
    presets = {(d, c["defense_preset"][0]): c for d, c in _lb(html, "presets-non-adaptive")}
    assert presets[("median-blur", "0")]["srocc_adv"][1] == "low-n"
    assert presets[("median-blur", "1")]["srocc_adv"][1] == ""
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    scatter = next(s for s in svgs if "chart scatter" in s)
    assert scatter.count("<circle") == 2  # jpeg/0 and median-blur/1; not the 2-image presets
    assert "gaussian-blur / 0" not in scatter and "median-blur / 0" not in scatter
    bars = [s for s in svgs if "chart bars" in s]
    assert bars and all("<title>gaussian-blur:" not in s and "preset 0 (n = 2" not in s for s in bars)
    heat = next(s for s in svgs if "chart heatmap" in s)
    assert "gaussian-blur" not in heat and "jpeg / 0 (n = 12)" in heat and "median-blur / 1 (n = 12)" in heat


# ---------------------------------------------------------------- same-image baseline


def test_adaptive_baseline_uses_only_the_adaptive_images(tmp_path):
    # baseline non-adaptive on 12 images per attack preset; the adaptive jpeg rows cover images 0-2
    # (weak) and 3-5 (strong); no adaptive baseline rows
    rows = [r for p in ("weak", "strong") for r in _rows(range(12), attack_preset=p)
            + _rows(range(12), "jpeg", "0", attack_preset=p, keep=0.5)]
    rows += _rows(range(0, 3), "jpeg", "0", "adaptive", attack_preset="weak", keep=0.8)
    rows += _rows(range(3, 6), "jpeg", "0", "adaptive", attack_preset="strong", keep=0.8)
    path = _store(tmp_path / "a.duckdb", rows)
    groups = {(g["defense"], g["attack_preset"]): g for g in stats.mode_groups(path, "adaptive")}
    base = groups[("none", "weak")]
    # D score of the baseline = 100 * mean(gain) / diam, gain = 0.1 + 0.01 * (i % 5)
    assert base["n"] == 3 and base["d_score"] == pytest.approx(100 * (0.1 + 0.01 * (0 + 1 + 2) / 3))  # 11.0
    assert groups[("none", "strong")]["d_score"] == pytest.approx(100 * (0.1 + 0.01 * (3 + 4 + 0) / 3))
    # old behaviour: all 12 non-adaptive images, 100 * (0.1 + 0.01 * 21 / 12) = 11.75
    assert base["d_score"] != pytest.approx(11.75)
    board = {r["defense"]: r for r in stats.leaderboard(path, "adaptive")}
    assert board["none"]["n"] == 6 and board["none"]["n_groups"] == 2
    assert board["none"]["d_score"] == pytest.approx((11.0 + 100 * (0.1 + 0.07 / 3)) / 2)
    # the non-adaptive baseline is untouched (its defended rows cover the same 12 images)
    na = {g["attack_preset"]: g for g in stats.mode_groups(path, "non-adaptive") if g["defense"] == "none"}
    assert na["weak"]["n"] == 12 and na["weak"]["d_score"] == pytest.approx(11.75)
    units = stats_tests._image_units(path, "adaptive", "d_score", {"none": "-", "jpeg": "0"})
    assert sorted({u["image"] for u in units if u["defense"] == "none"}) == [f"i{i:03d}" for i in range(6)]


def test_own_adaptive_baseline_rows_are_restricted_too(tmp_path):
    rows = _rows(range(12)) + _rows(range(12), mode="adaptive") + _rows(range(4), "jpeg", "0", "adaptive")
    path = _store(tmp_path / "own.duckdb", rows)
    base = next(g for g in stats.mode_groups(path, "adaptive") if g["defense"] == "none")
    assert base["n"] == 4 and base["mode"] == "adaptive"
    with pytest.raises(InputError, match="mode: expected one of"):
        stats.mode_groups(path, "adaptve")


# ---------------------------------------------------------------- bootstrap intervals


def _one_group_store(path, n, noise=0.08, seed=0):
    return _store(path, _rows(range(n), "jpeg", "0", noise=noise, keep=0.4, seed=seed) + _rows(range(n), seed=seed))


def test_intervals_contain_the_estimate_and_are_deterministic(tmp_path):
    path = _one_group_store(tmp_path / "b.duckdb", 40)
    board = stats.leaderboard(path, "non-adaptive")
    first = bootstrap.aggregate_intervals(path, "non-adaptive", board)
    assert first == bootstrap.aggregate_intervals(path, "non-adaptive", board)  # seeded
    other = bootstrap.aggregate_intervals(path, "non-adaptive", board, seed=1)
    assert other[0]["ci"]["srocc_adv"] != first[0]["ci"]["srocc_adv"]
    for row in first:
        assert row["ci_level"] == 0.95 and row["ci_resamples"] == 1000
        for col in ("srocc_clean", "srocc_adv", "plcc_adv", "d_score", "d_score_d", "r_score", "psnr", "mse"):
            lo, hi = row["ci"][col]
            assert lo <= row[col] <= hi, (row["defense"], col)
    jpeg = next(r for r in first if r["defense"] == "jpeg")
    assert jpeg["ci"]["srocc_adv"][1] - jpeg["ci"]["srocc_adv"][0] > 0.01  # noisy: a real interval
    with pytest.raises(InputError, match="n_resamples"):
        bootstrap.aggregate_intervals(path, "non-adaptive", board, n_resamples=0)
    with pytest.raises(InputError, match="confidence"):
        bootstrap.aggregate_intervals(path, "non-adaptive", board, confidence=95)


def test_intervals_shrink_with_more_images(tmp_path):
    widths = {}
    for n in (20, 320):
        path = _one_group_store(tmp_path / f"w{n}.duckdb", n)
        row = bootstrap.aggregate_intervals(path, "non-adaptive", stats.leaderboard(path, "non-adaptive"))
        jpeg = next(r for r in row if r["defense"] == "jpeg")
        widths[n] = {c: jpeg["ci"][c][1] - jpeg["ci"][c][0] for c in ("srocc_adv", "d_score_d", "psnr")}
    for col, small in widths[20].items():  # 16x the images: about 1/4 of the width
        assert widths[320][col] < 0.5 * small, col


def test_correlation_interval_matches_scipy_percentile_bootstrap(tmp_path):
    path = _one_group_store(tmp_path / "sp.duckdb", 30)
    row = next(r for r in stats.leaderboard(path, "non-adaptive") if r["defense"] == "jpeg")
    ours = bootstrap.aggregate_intervals(path, "non-adaptive", [row], n_resamples=4000)[0]["ci"]["srocc_adv"]
    data = Store(path, read_only=True)
    try:
        pts = data.query("SELECT defended_attacked, mos FROM results WHERE defense = 'jpeg' ORDER BY image")
    finally:
        data.close()
    pred, mos = (np.array(v) for v in zip(*pts))
    ref = sps.bootstrap((pred, mos), lambda x, y: sps.spearmanr(x, y).statistic, paired=True, vectorized=False,
                        n_resamples=4000, method="percentile", rng=np.random.default_rng(5)).confidence_interval
    width = ref.high - ref.low
    # Monte-Carlo error of a 2.5% / 97.5% quantile of 4000 resamples: about 1% of the width each
    assert ours[0] == pytest.approx(ref.low, abs=0.08 * width) and ours[1] == pytest.approx(ref.high, abs=0.08 * width)


@pytest.mark.parametrize("shared", [True, False])
def test_mean_over_groups_matches_scipy_multi_sample_bootstrap(tmp_path, shared):
    # two groups: the same 25 images under two attack presets (one draw per resample, scipy's
    # paired=True), or two datasets of 25 images each (independent draws, paired=False)
    rows = [dict(r, dataset="d" if shared or p == "weak" else "e")
            for p in ("weak", "strong") for r in _rows(range(25), "jpeg", "0", attack_preset=p, noise=0.05,
                                                        keep=0.6 if p == "weak" else 0.3)]
    path = _store(tmp_path / "two.duckdb", rows)
    row = stats.leaderboard(path, "non-adaptive")[0]
    assert row["n_groups"] == 2 and row["n"] == (25 if shared else 50)
    ours = bootstrap.aggregate_intervals(path, "non-adaptive", [row], n_resamples=4000)[0]["ci"]["d_score_d"]
    per = []
    for p in ("weak", "strong"):
        rs = sorted((r for r in rows if r["attack_preset"] == p), key=lambda r: r["image"])
        per.append(np.array([100 * abs(r["defended_attacked"] - r["defended_clean"]) for r in rs]))
    ref = sps.bootstrap(tuple(per), lambda a, b, axis: (a.mean(axis=axis) + b.mean(axis=axis)) / 2, paired=shared,
                        n_resamples=4000, method="percentile", rng=np.random.default_rng(3)).confidence_interval
    assert row["d_score_d"] == pytest.approx((per[0].mean() + per[1].mean()) / 2)
    width = ref.high - ref.low
    assert ours[0] == pytest.approx(ref.low, abs=0.08 * width) and ours[1] == pytest.approx(ref.high, abs=0.08 * width)


def test_leaderboard_cells_show_the_interval(tmp_path):
    path = _one_group_store(tmp_path / "c.duckdb", 40)
    html = report.write_report(path, tmp_path / "out").read_text(encoding="utf-8")
    cells = dict(_lb(html, "lb-purification-non-adaptive"))["jpeg"]
    row = bootstrap.aggregate_intervals(path, "non-adaptive", stats.leaderboard(path, "non-adaptive"))
    lo, hi = next(r for r in row if r["defense"] == "jpeg")["ci"]["srocc_adv"]
    value, cls, title, text = cells["srocc_adv"]
    assert f'<span class="ci">[{lo:.3f}, {hi:.3f}]</span>' in text and f"95% CI [{lo:.3f}, {hi:.3f}]" in title
    assert "n = 40 images" in title and cls == ""


# ---------------------------------------------------------------- skipped samples, citation


def test_skipped_samples_are_listed_and_escaped(tmp_path):
    # old behaviour: the report never looked at the skipped table
    path = _one_group_store(tmp_path / "k.duckdb", 12)
    with Store(path) as s:
        s.con.execute("DROP TABLE IF EXISTS skipped")  # a store written before the table existed
    html = report.write_report(path, tmp_path / "old").read_text(encoding="utf-8")
    assert 'id="skipped"' not in html and "Skipped samples" not in html
    with Store(path) as s:
        s.con.execute("CREATE TABLE IF NOT EXISTS skipped (dataset VARCHAR, seed BIGINT, image VARCHAR, "
                      "reason VARCHAR, run_id VARCHAR, PRIMARY KEY (dataset, seed, image))")
    html = report.write_report(path, tmp_path / "empty").read_text(encoding="utf-8")
    assert 'id="skipped"' not in html  # the table exists but has no rows
    with Store(path) as s:
        s.con.execute("INSERT INTO skipped VALUES ('d', 0, 'bad.png', 'unreadable: <truncated> & \"odd\"', 'r1'), "
                      "('d', 0, 'tiny.png', 'too small for m', 'r1'), ('e', 1, 'x.png', 'unreadable', 'r2')")
    html = report.write_report(path, tmp_path / "out").read_text(encoding="utf-8")
    section = html[html.index('<section id="skipped">'):]
    assert "Skipped samples" in section and "3 in all: d: 2, e: 1." in section
    assert "unreadable: &lt;truncated&gt; &amp; &#34;odd&#34;" in section and "<truncated>" not in html
    assert section.count("<tr>") == 4  # header + 3 rows
    assert "<dt>skipped images</dt><dd>3 " in html


def test_report_cites_the_paper_by_title(small_group):
    _, html = small_group
    assert "Guardians of Image Quality (ICML 2025)" in html
    assert not re.search(r"seed\s*0\d\d", html, re.I)


# ---------------------------------------------------------------- the demo, shaped


def _demo_rows():
    """The shape of ``iqaguard demo``: builtin-nr on 50 images and builtin-fr on 5, I-FGSM at three
    presets, JPEG at five presets non-adaptive, adaptive on 2 images against preset 2 only."""
    rows = []
    for metric, n in (("builtin-nr", 50), ("builtin-fr", 5)):
        for p in PRESETS:
            rows += _rows(range(n), metric=metric, attack_preset=p)
            for k in range(5):
                rows += _rows(range(n), "jpeg", str(k), metric=metric, attack_preset=p, noise=0.02 * (k + 1),
                              keep=0.8 - 0.15 * k)
            rows += _rows(range(2), "jpeg", "2", "adaptive", metric=metric, attack_preset=p, noise=0.06, keep=0.7)
    return rows


def test_demo_report_shows_n_everywhere_and_never_ranks_n_below_ten(tmp_path):
    path = _store(tmp_path / "demo.duckdb", _demo_rows())
    t0 = time.perf_counter()
    html = report.write_report(path, tmp_path / "out").read_text(encoding="utf-8")
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"report took {elapsed:.1f} s"  # 2 shared cores; about 0.5 s here
    ids = re.findall(r'<table class="lb sortable" id="([^"]+)"', html)
    assert {"lb-purification-non-adaptive", "lb-purification-adaptive", "presets-adaptive"} <= set(ids)
    assert len([i for i in ids if i.startswith("bd-")]) == 2 * len(stats.BREAKDOWN_BY)
    for tid in ids:  # every aggregate row shows its images and groups
        for defense, cells in _lb(html, tid):
            assert int(cells["n"][0]) >= 1 and int(cells["n_groups"][0]) >= 1, (tid, defense)
            for key, (value, _, title, _) in cells.items():
                if value and key in stats.SCORE_COLUMNS:
                    assert "n = " in title and "images" in title, (tid, defense, key)
            if "rank" in cells and cells["rank"][0]:  # ranked: rests on >= 10 images
                assert int(cells["n"][0]) >= 10 and cells["srocc_adv"][1] != "low-n", (tid, defense)
    adaptive = dict(_lb(html, "lb-purification-adaptive"))
    assert all(c["rank"][0] == "" for c in adaptive.values())  # 2 images: nothing ranked
    assert adaptive["none"]["n"][0] == "2"  # the adaptive baseline is on the 2 adaptive images
    assert adaptive["jpeg"]["srocc_adv"][1] == "low-n"
    ranked = dict(_lb(html, "lb-purification-non-adaptive"))
    assert {c["rank"][0] for c in ranked.values()} == {"1", "2"} and ranked["jpeg"]["n"][0] == "50"
    # builtin-fr's 5-image correlations are greyed in the per-metric breakdown, builtin-nr's not
    by_metric = _lb(html, "bd-metric-non-adaptive")
    assert re.search(r'data-value="builtin-fr"', html)
    for _, cells in by_metric:
        assert (cells["srocc_adv"][1] == "low-n") == (cells["metric"][0] == "builtin-fr")
    # charts: every mark's tooltip (bars, dots, points, heat-map cells) carries n; nothing adaptive is drawn
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    tips = [t for chart in svgs for t in re.findall(r"<(?:circle|rect)\b[^>]*><title>([^<]*)</title>", chart)]
    assert len(tips) > 20 and all("n = " in t for t in tips), [t for t in tips if "n = " not in t]
    scatters = [s for s in svgs if "chart scatter" in s]
    assert scatters[0].count("<circle") == 5 and scatters[1].count("<circle") == 0
    assert all('class="bar"' not in s for s in svgs)  # the adaptive bars rest on 2 images
    assert len([s for s in svgs if "chart heatmap" in s]) == 1
    assert "No adaptive comparison: fewer than two ranked defenses" in html
