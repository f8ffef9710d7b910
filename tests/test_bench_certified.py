"""Certified smoothing defenses in the benchmark engine: a defense that wraps the metric is scored,
attacked adaptively (EOT over its noise) and reported like a purification; it has no fidelity."""
from __future__ import annotations

import duckdb
import pytest

from test_runner import THIS_FILE as RUNNER_FILE, run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    spec = {"version": "cert-1", "imports": [RUNNER_FILE], "metrics": ["toy-nr"],
            "datasets": [{"name": "toy", "kwargs": {"n": 4}}],
            "attacks": [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 2}}],
            "defenses": [{"name": "ms", "presets": [0], "kwargs": {"n": 32, "attack_samples": 4}},
                         {"name": "rs", "presets": [0], "kwargs": {"n": 32, "n0": 8, "attack_samples": 4}},
                         {"name": "jpeg", "presets": [2]}],
            "modes": ["non-adaptive", "adaptive"], "seeds": [0], "batch_size": 4}
    path = tmp_path_factory.mktemp("cert") / "c.duckdb"
    run(spec, path)
    return path, spec


def test_smoothing_rows_exist_in_both_modes_without_fidelity(store):
    path, _ = store
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT defense, mode, count(*), count(psnr), count(defended_attacked) FROM results "
                       "WHERE defense IN ('ms', 'rs') GROUP BY ALL ORDER BY ALL").fetchall()
    status = dict(con.execute("SELECT defense, status FROM defense_presets").fetchall())
    con.close()
    assert rows == [("ms", "adaptive", 4, 0, 4), ("ms", "non-adaptive", 4, 0, 4),
                    ("rs", "adaptive", 4, 0, 4), ("rs", "non-adaptive", 4, 0, 4)]
    assert status == {"ms": "ok", "rs": "ok", "jpeg": "ok"}


def test_smoothed_scores_are_the_predict_of_the_defense(store):
    import torch

    import iqaguard
    from iqaguard.bench.tasks import gen_seed
    from test_runner import ToyNR, toy_dataset

    path, spec = store
    con = duckdb.connect(str(path), read_only=True)
    got = dict(con.execute("SELECT image, score FROM clean_scores WHERE defense = 'ms'").fetchall())
    con.close()
    c = iqaguard.defenses.create("ms", metric=ToyNR(), preset=0, n=32, attack_samples=4)
    for s in toy_dataset(4):
        g = torch.Generator().manual_seed(gen_seed(0, "toy", s.name, "ms", 0))
        assert got[s.name] == pytest.approx(float(c.predict(s.image, generator=[g])[0]), abs=1e-6)


def test_report_lists_the_certified_family(store, tmp_path):
    from iqaguard.bench.report import write_report

    path, _ = store
    html = write_report(path, tmp_path / "r").read_text(encoding="utf-8")
    assert "Certified defenses" in html and 'data-defense="ms"' in html


def test_certify_phase_writes_certificates_once(store):
    from iqaguard.bench.store import Store

    path, spec = store
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT defense, count(*), count(radius), count(eps), bool_and(samples > 0), "
                       "bool_and(abstain OR (lower <= score AND score <= upper)) FROM certified "
                       "GROUP BY defense ORDER BY defense").fetchall()
    con.close()
    assert rows == [("ms", 4, 0, 4, True, True), ("rs", 4, 4, 0, True, True)]
    summary = run(spec, path)  # resume: nothing left to do
    assert summary.tasks_run == 0
    with Store(path) as st:
        assert st.query("SELECT count(*) FROM certified")[0][0] == 8


def test_report_shows_the_certificates(store, tmp_path):
    import re

    from iqaguard.bench.report import write_report

    path, _ = store
    html = write_report(path, tmp_path / "r2").read_text(encoding="utf-8")
    sec = html[html.index('<section id="certificates">'):]
    sec = sec[:sec.index("</section>")]
    rows = re.findall(r'<tr data-defense="(ms|rs)"><td>toy-nr</td><td>\w+</td><td>0</td><td>4</td>', sec)
    assert rows == ["ms", "rs"]


def test_report_plots_certified_intervals_against_attacked_scores(store, tmp_path):
    import re

    from iqaguard.bench.report import write_report

    path, _ = store
    con = duckdb.connect(str(path), read_only=True)
    expected = con.execute("SELECT count(*) FROM results r JOIN certified c USING (dataset, image, metric, defense, "
                           "defense_preset, seed) WHERE r.mode = 'non-adaptive' AND NOT c.abstain").fetchone()[0]
    outside = con.execute("SELECT count(*) FROM results r JOIN certified c USING (dataset, image, metric, defense, "
                          "defense_preset, seed) WHERE r.mode = 'non-adaptive' AND NOT c.abstain AND "
                          "(r.defended_attacked < c.lower OR r.defended_attacked > c.upper)").fetchone()[0]
    con.close()
    html = write_report(path, tmp_path / "r3").read_text(encoding="utf-8")
    sec = html[html.index('<section id="certificates">'):]
    sec = sec[:sec.index("</section>")]
    assert sec.count('class="chart intervals"') == 2  # ms and rs
    dots = re.findall(r'<circle class="(inside|outside)"', sec)
    assert len(dots) == expected and dots.count("outside") == outside


def test_certificates_section_has_cert_r_cert_rd_and_abstentions(store):
    from iqaguard.bench.report_defenses import certified_section

    path, _ = store
    con = duckdb.connect(str(path), read_only=True)
    rows = {r["defense"]: r for r in certified_section(con)}
    # Guardians of Image Quality §3.5: Cert.RD = certified delta / diam(f), delta = max(upper - s, s - lower)
    rd = con.execute("SELECT avg(greatest(upper - score, score - lower) / abs(bound_best - bound_worst)) "
                     "FROM certified WHERE defense = 'ms' AND NOT abstain").fetchone()[0]
    cr, ab = con.execute("SELECT avg(radius) FILTER (WHERE NOT abstain), 100 * avg(abstain::INT) FROM certified "
                         "WHERE defense = 'rs'").fetchone()
    con.close()
    assert rows["ms"]["rel_delta"] == pytest.approx(rd) and rows["ms"]["radius"] is None
    assert rows["rs"]["rel_delta"] is None and rows["rs"]["abstain"] == pytest.approx(ab)
    assert (rows["rs"]["radius"] is None) if cr is None else rows["rs"]["radius"] == pytest.approx(cr)


@pytest.fixture(scope="module")
def fs_store(tmp_path_factory):
    import torch

    from iqaguard.defenses.fsiqa.fs_iqa import FSHead
    from iqaguard.training.checkpoint import save_model
    from test_runner import ToyNR

    folder = tmp_path_factory.mktemp("fs")
    torch.manual_seed(0)
    head = FSHead(ToyNR().feature_dim, 32, 8)
    save_model(head, folder / "head.safetensors", head.config)
    spec = {"version": "fs-1", "imports": [RUNNER_FILE], "metrics": ["toy-nr"],
            "datasets": [{"name": "toy", "kwargs": {"n": 3}}],
            "attacks": [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 2}}],
            "defenses": [{"name": "fs-iqa", "presets": [1], "kwargs": {"n": 64, "attack_samples": 4,
                                                                        "weights": str(folder / "head.safetensors")}}],
            "modes": ["non-adaptive", "adaptive"], "seeds": [0], "batch_size": 3}
    run(spec, folder / "fs.duckdb")
    return folder / "fs.duckdb"


def test_fs_iqa_runs_in_the_benchmark_with_its_input_radius(fs_store):
    from iqaguard.bench.report_defenses import certified_section

    con = duckdb.connect(str(fs_store), read_only=True)
    modes = con.execute("SELECT mode, count(*) FROM results WHERE defense = 'fs-iqa' GROUP BY ALL ORDER BY 1").fetchall()
    cert = con.execute("SELECT count(*), bool_and(eps > 0), bool_and(abstain OR (lower <= score AND score <= upper)), "
                       "count(radius) FROM certified WHERE defense = 'fs-iqa'").fetchone()
    sec = certified_section(con)
    con.close()
    assert modes == [("adaptive", 3), ("non-adaptive", 3)]
    assert cert == (3, True, True, 0)
    assert [r["defense"] for r in sec] == ["fs-iqa"] and sec[0]["radius"] is None
