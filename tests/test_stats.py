"""Benchmark statistics (Guardians of Image Quality Table 2, A.4, Table 5, Figure 3a) against hand formulas and scipy."""
import numpy as np
import pytest
from scipy import stats as sps

from iqaguard.bench import stats, stats_tests
from iqaguard.bench.store import Store

N_IMG = 10
METRICS = {"m-up": (0.0, 10.0, False), "m-down": (1.0, 0.0, True)}  # (worst, best, lower_better)
#: defense -> preset -> (noise on the defended scores, fraction of the attack gain kept)
DEFENSES = {"blur": {"0": (0.05, 0.2), "1": (0.6, 0.5)}, "jpeg": {"0": (0.9, 0.3), "1": (0.02, 0.1)}}


def _rows():
    rng = np.random.default_rng(7)
    mos = np.linspace(1.0, 5.0, N_IMG)
    rows = []
    for metric, (worst, best, lower) in METRICS.items():
        diam, sign = abs(best - worst), (-1.0 if lower else 1.0)
        clean = worst + sign * diam * (0.1 + 0.15 * (mos - 1.0) + rng.normal(0, 0.02, N_IMG))
        for attack_preset, strength in (("weak", 0.1), ("strong", 0.3)):
            attacked = clean + sign * diam * strength * rng.uniform(0.2, 1.0, N_IMG)
            base = dict(dataset="d1", metric=metric, attack="ifgsm", attack_preset=attack_preset,
                        bound_worst=worst, bound_best=best, lower_better=lower, spec_version="t-1")
            for i in range(N_IMG):
                rows.append(dict(base, image=f"i{i}", defense="none", defense_preset="-", mode="non-adaptive",
                                 mos=mos[i], clean=clean[i], attacked=attacked[i], defended_clean=clean[i],
                                 defended_attacked=attacked[i], psnr=40.0 + i, ssim=0.9, mse=1e-3, linf=0.01,
                                 t_attack=0.1, t_defense=0.0))
            for defense, presets in DEFENSES.items():
                for preset, (noise, keep) in presets.items():
                    for mode, k in (("non-adaptive", keep), ("adaptive", min(1.0, 2 * keep))):
                        dclean = clean + sign * diam * noise * 0.1 * rng.normal(0, 1, N_IMG)
                        dadv = dclean + (attacked - clean) * k
                        for i in range(N_IMG):
                            rows.append(dict(base, image=f"i{i}", defense=defense, defense_preset=preset, mode=mode,
                                             mos=mos[i], clean=clean[i], attacked=attacked[i],
                                             defended_clean=dclean[i], defended_attacked=dadv[i],
                                             psnr=30.0 + rng.normal(), ssim=0.8 + 0.01 * i, mse=2e-3, linf=0.1,
                                             t_attack=0.1, t_defense=0.001 * (1 + int(preset))))
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("stats") / "r.duckdb")
    s.insert(_rows())
    yield s
    s.close()


def _arrays(store, where):
    cond = " AND ".join(f"{k} = '{v}'" for k, v in where.items())
    rows = store.df(f"SELECT * FROM results WHERE {cond} ORDER BY image")
    return {c: np.array([r[c] for r in rows], dtype=float) for c in
            ("mos", "clean", "defended_clean", "defended_attacked", "psnr", "t_defense", "bound_worst", "bound_best")}


def test_group_scores_match_hand_formulas(store):
    groups = stats.group_scores(store)
    # metrics x attack presets x (baseline + defenses x presets x modes), one seed
    assert len(groups) == 2 * 2 * (1 + 2 * 2 * 2) and {g["seed"] for g in groups} == {0}
    for g in groups:
        a = _arrays(store, {k: g[k] for k in stats.BASE_KEY})
        diam = abs(a["bound_best"][0] - a["bound_worst"][0])
        assert g["n"] == N_IMG
        assert g["d_score"] == pytest.approx(100 * np.mean(np.abs(a["defended_attacked"] - a["clean"])) / diam)
        moved = np.abs(a["defended_attacked"] - a["defended_clean"])
        assert g["d_score_d"] == pytest.approx(100 * np.mean(moved) / diam)
        lo, hi = sorted((a["bound_worst"][0], a["bound_best"][0]))
        room = np.maximum(hi - a["clean"], a["clean"] - lo)
        change = np.maximum(np.abs(a["clean"] - a["defended_attacked"]), 1e-6 * diam)
        assert g["r_score"] == pytest.approx(np.mean(np.log10(room / change)))
        sign = -1.0 if g["metric"] == "m-down" else 1.0  # correlations are oriented for lower-better metrics
        assert g["srocc_adv"] == pytest.approx(sign * sps.spearmanr(a["defended_attacked"], a["mos"]).statistic)
        assert g["plcc_clean"] == pytest.approx(sign * sps.pearsonr(a["defended_clean"], a["mos"]).statistic)
        assert g["psnr"] == pytest.approx(a["psnr"].mean())
        assert g["time_s"] == pytest.approx(a["t_defense"].mean())


def test_correlations_are_null_without_mos(tmp_path):
    rows = [dict(r, dataset="nips", mos=None) for r in _rows() if r["defense"] == "none"]
    with Store(tmp_path / "n.duckdb") as s:
        s.insert(rows)
        g = stats.group_scores(s)
    assert g and all(x["srocc_adv"] is None and x["plcc_clean"] is None and x["n_mos"] == 0 for x in g)
    assert all(x["d_score"] is not None and x["d_score"] > 0 for x in g)


def test_sources_and_filters(store):
    by_con = stats.group_scores(store.con, where={"metric": "m-up", "mode": ["adaptive"]})
    assert by_con == stats.group_scores(store, where={"metric": "m-up", "mode": "adaptive"})
    assert {g["metric"] for g in by_con} == {"m-up"} and {g["mode"] for g in by_con} == {"adaptive"}
    with pytest.raises(ValueError, match="unknown column"):
        stats.group_scores(store, where={"nope": 1})
    with pytest.raises(FileNotFoundError):
        stats.group_scores(store.path.parent / "missing.duckdb")
    per_image = stats.group_scores(store, by=["image"], where={"defense": "none"})
    assert len(per_image) == 2 * 2 * N_IMG and all(g["n"] == 1 and g["srocc_adv"] is None for g in per_image)


def test_defense_table_averages_group_scores(store):
    groups = stats.group_scores(store)
    table = stats.defense_table(store, "non-adaptive")
    assert [(r["defense"], r["defense_preset"]) for r in table] == [
        ("blur", "0"), ("blur", "1"), ("jpeg", "0"), ("jpeg", "1"), ("none", "-")]
    for r in table:
        members = [g for g in groups if g["mode"] == "non-adaptive" and g["defense"] == r["defense"]
                   and g["defense_preset"] == r["defense_preset"]]
        assert r["n_groups"] == len(members) == 4
        for col in ("srocc_adv", "d_score_d", "r_score", "psnr"):
            assert r[col] == pytest.approx(np.mean([g[col] for g in members]))


def test_best_preset_and_leaderboard(store):
    for mode in stats.MODES:
        table = stats.defense_table(store, mode)
        best = stats.best_presets(store, mode)
        for defense in ("blur", "jpeg"):
            rows = [r for r in table if r["defense"] == defense]
            assert best[defense] == max(rows, key=lambda r: r["srocc_adv"])["defense_preset"]
        assert best == {"blur": "0", "jpeg": "1", "none": "-"}  # the low-noise presets by construction
        board = stats.leaderboard(store, mode)
        assert sorted(r["defense"] for r in board) == sorted(best)
        assert all(r["defense_preset"] == best[r["defense"]] for r in board)
        for a, b in zip(board, board[1:]):  # best SROCC_adv first, ties broken by lower D_score^(D)
            assert (-a["srocc_adv"], a["d_score_d"]) <= (-b["srocc_adv"], b["d_score_d"])
    # the adaptive mode has no baseline rows: the non-adaptive ones stand in (Guardians of Image Quality Table 2)
    na = {r["defense"]: r for r in stats.leaderboard(store, "non-adaptive")}
    ad = {r["defense"]: r for r in stats.leaderboard(store, "adaptive")}
    assert ad["none"]["d_score"] == na["none"]["d_score"] and ad["blur"]["d_score"] > na["blur"]["d_score"]
    by_d = stats.best_presets(store, "non-adaptive", key="d_score_d")
    assert by_d["jpeg"] == min((r for r in stats.defense_table(store, "non-adaptive") if r["defense"] == "jpeg"),
                               key=lambda r: r["d_score_d"])["defense_preset"]


def test_breakdown_by_attack_preset(store):
    rows = stats.breakdown(store, "attack_preset", mode="non-adaptive")
    assert {r["attack_preset"] for r in rows} == {"weak", "strong"}
    for r in rows:
        groups = stats.group_scores(store, where={"attack_preset": r["attack_preset"], "mode": "non-adaptive",
                                                  "defense": r["defense"], "defense_preset": r["defense_preset"]})
        assert r["d_score"] == pytest.approx(np.mean([g["d_score"] for g in groups]))
    with pytest.raises(ValueError):
        stats.breakdown(store, "image")


def _per_image_d(store, defense, preset, mode, metric, attack_preset):
    a = _arrays(store, dict(defense=defense, defense_preset=preset, mode=mode, metric=metric,
                            attack_preset=attack_preset, dataset="d1", attack="ifgsm"))
    return 100 * np.abs(a["defended_attacked"] - a["defended_clean"]) / abs(a["bound_best"][0] - a["bound_worst"][0])


def test_wilcoxon_matches_scipy_with_bonferroni(store):
    presets = {"blur": "0", "jpeg": "1", "none": "-"}
    res = stats_tests.win_rate_matrix(store, "non-adaptive", score="d_score_d", presets=presets)
    names, exps = res["defenses"], res["experiments"]
    assert names == ["blur", "jpeg", "none"] and len(exps) == 2 * 2  # metric x attack preset (one dataset, attack)
    assert res["bonferroni_factor"] == res["n_tests"] == len(names) * (len(names) - 1) * len(exps)
    m = res["n_tests"]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                assert res["win_fraction"][i][j] is None
                continue
            for k, e in enumerate(exps):
                x = _per_image_d(store, a, presets[a], "non-adaptive", e["metric"], e["attack_preset"])
                y = _per_image_d(store, b, presets[b], "non-adaptive", e["metric"], e["attack_preset"])
                p = 1.0 if not np.any(x - y) else sps.wilcoxon(x, y, alternative="less").pvalue
                assert res["p_raw"][i][j][k] == pytest.approx(p)
                assert res["p_adjusted"][i][j][k] == pytest.approx(min(1.0, p * m))
                assert res["significant"][i][j][k] == (min(1.0, p * m) < 0.05)
            frac = np.mean(res["significant"][i][j])
            assert res["win_fraction"][i][j] == pytest.approx(frac)
        assert res["win_rate"][a] == pytest.approx(np.mean([res["win_fraction"][i][j] for j in range(3) if j != i]))
    # every defense keeps less of the attack than no defense: the baseline never wins, both beat it
    assert res["win_rate"]["none"] == 0.0
    assert res["win_fraction"][0][2] == 1.0 and res["win_fraction"][1][2] == 1.0


def test_wilcoxon_direction_pooling_and_group_level(store):
    presets = {"blur": "0", "jpeg": "1", "none": "-"}
    pooled = stats_tests.win_rate_matrix(store, "adaptive", score="r_score", presets=presets, within=())
    assert len(pooled["experiments"]) == 1 and pooled["n_tests"] == 6 and pooled["higher_better"]
    assert pooled["presets"]["none"] == "-"  # adaptive baseline falls back to the non-adaptive rows
    groups = stats.group_scores(store)
    srocc = stats_tests.win_rate_matrix(store, "non-adaptive", score="srocc_adv", presets=presets)
    assert srocc["within"] == [] and srocc["n_tests"] == 6

    def vals(d):
        return [g["srocc_adv"] for g in sorted(groups, key=lambda g: (g["metric"], g["attack_preset"]))
                if g["mode"] == "non-adaptive" and g["defense"] == d and g["defense_preset"] == presets[d]]

    x, y = np.array(vals("jpeg")), np.array(vals("none"))
    assert np.any(x != y) and srocc["p_raw"][1][2][0] == pytest.approx(sps.wilcoxon(x, y, alternative="greater").pvalue)
    assert srocc["p_raw"][0][1][0] == 1.0  # identical samples (both SROCC 1): no evidence either way
    with pytest.raises(ValueError):
        stats_tests.win_rate_matrix(store, "non-adaptive", score="srocc_adv", within=("image",))


def test_kruskal_table_matches_scipy():
    samples = {"d_score": [[1.0, 2.0, 3.5], [2.0, 4.0, 5.0, 6.0], [0.5, 1.5]], "flat": [[1.0, 1.0], [1.0]]}
    out = {r["score"]: r for r in stats_tests.kruskal_table(samples)}
    ref = sps.kruskal(*samples["d_score"])
    means = [np.mean(s) for s in samples["d_score"]]
    assert out["d_score"]["p_value"] == pytest.approx(ref.pvalue)
    assert out["d_score"]["statistic"] == pytest.approx(ref.statistic)
    assert out["d_score"]["mean"] == pytest.approx(np.mean(means))
    assert out["d_score"]["variance_of_means"] == pytest.approx(np.var(means, ddof=1))
    assert out["flat"]["p_value"] is None and out["flat"]["mean"] == 1.0


def _biased_samplings(bias: float = 0.02, n_config: int = 40, k: int = 10, seed: int = 0):
    """``k`` samplings of the same ``n_config`` configurations: a configuration effect with spread
    0.2, per-sampling noise 0.002, and ``bias`` added to every configuration of sampling 0."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.5, 0.2, n_config)
    return [{("m", "d", f"cfg{c}"): float(v) for c, v in
             enumerate(effect + rng.normal(0, 0.002, n_config) + (bias if j == 0 else 0.0))} for j in range(k)]


def test_friedman_detects_a_shared_configuration_bias_that_kruskal_misses():
    blocks = _biased_samplings()
    kw = stats_tests.kruskal_table({"d_score": [list(b.values()) for b in blocks]})[0]
    fr = stats_tests.friedman_table({"d_score": blocks})[0]
    assert kw["p_value"] > 0.5  # pooled ranks: the 0.02 shift drowns in the 0.2 spread of configurations
    assert fr["friedman_p_value"] < 1e-6 and fr["n_blocks"] == 40 and fr["n_samplings"] == 10
    table = np.array([[b[c] for c in sorted(blocks[0])] for b in blocks])
    ref = sps.friedmanchisquare(*table)
    assert fr["friedman_statistic"] == pytest.approx(ref.statistic)
    assert fr["friedman_p_value"] == pytest.approx(ref.pvalue)
    # sampling 0 ranks first in every block: chi2 = 12/(n k (k+1)) sum R_j^2 - 3 n (k+1) with R_0 = 10 n
    # and the other nine rank sums of 1..9 -> here exactly the scipy value (no ties)
    ranks = sps.rankdata(table, axis=0).sum(axis=1)
    assert ranks[0] == 10 * 40
    assert fr["friedman_statistic"] == pytest.approx(12 / (40 * 10 * 11) * (ranks**2).sum() - 3 * 40 * 11)
    unbiased = stats_tests.friedman_table({"d_score": _biased_samplings(bias=0.0)})[0]
    assert unbiased["friedman_p_value"] > 1e-3  # no shift: nothing to detect


def test_friedman_uses_complete_blocks_only_and_reports_undefined_cases():
    blocks = _biased_samplings(n_config=6, k=4)
    del blocks[2][("m", "d", "cfg0")]  # cfg0 missing from one sampling: that block is dropped
    fr = stats_tests.friedman_table({"x": blocks, "two": blocks[:2], "flat": [{"a": 1.0, "b": 2.0}] * 3})
    by = {r["score"]: r for r in fr}
    assert by["x"]["n_blocks"] == 5
    table = [[b[("m", "d", f"cfg{c}")] for c in range(1, 6)] for b in blocks]
    assert by["x"]["friedman_p_value"] == pytest.approx(sps.friedmanchisquare(*table).pvalue)
    assert by["two"]["friedman_p_value"] is None  # Friedman needs three samplings
    assert by["flat"]["friedman_p_value"] is None  # every block tied


def test_sampling_validity_over_image_subsets(store):
    subsets = {"s0": ["i0", "i1", "i2", "i3", "i4"], "s1": ["i5", "i6", "i7", "i8", "i9"],
               "s2": ["i0", "i2", "i4", "i6", "i8"]}
    out = {r["score"]: r for r in stats_tests.sampling_validity(store, subsets, where={"mode": "non-adaptive"})}
    assert set(out) == {"d_score", "srocc_adv", "srocc_clean", "ssim"}
    samples = []
    for names in subsets.values():
        g = stats.group_scores(store, where={"mode": "non-adaptive", "image": names})
        samples.append([x["d_score"] for x in g])
    assert out["d_score"]["p_value"] == pytest.approx(sps.kruskal(*samples).pvalue)
    assert out["d_score"]["n_samplings"] == 3
    assert out["d_score"]["mean"] == pytest.approx(np.mean([np.mean(s) for s in samples]))
    # Friedman beside it: the same configurations (every group key) in the three samplings
    assert out["d_score"]["n_blocks"] == len(samples[0]) == 2 * 2 * (1 + 2 * 2)
    assert out["d_score"]["friedman_p_value"] == pytest.approx(sps.friedmanchisquare(*samples).pvalue)


def test_seeds_are_samplings(tmp_path):
    rows = [r for r in _rows() if r["mode"] == "non-adaptive"]
    shifted = [dict(r, seed=1, defended_attacked=r["defended_attacked"] * (1.0 + 0.01 * (int(r["image"][1:]) % 3)))
               for r in rows]  # seed 1: the same images, slightly different attacked scores
    with Store(tmp_path / "seeds.duckdb") as s:
        s.insert([dict(r, seed=0) for r in rows] + shifted)
        groups = stats.group_scores(s)
        assert {g["seed"] for g in groups} == {0, 1} and all(g["n"] == N_IMG for g in groups)
        table = {(r["defense"], r["defense_preset"]): r for r in stats.defense_table(s, "non-adaptive")}
        members = [g["d_score"] for g in groups if g["defense"] == "jpeg" and g["defense_preset"] == "0"]
        assert table[("jpeg", "0")]["n_groups"] == 8
        assert table[("jpeg", "0")]["d_score"] == pytest.approx(np.mean(members))
        out = {r["score"]: r for r in stats_tests.sampling_validity(s)}  # one sampling per seed
        per_seed = [[g["srocc_adv"] for g in groups if g["seed"] == k] for k in (0, 1)]
        assert out["srocc_adv"]["n_samplings"] == 2
        assert out["srocc_adv"]["p_value"] == pytest.approx(sps.kruskal(*per_seed).pvalue)
        assert out["srocc_adv"]["friedman_p_value"] is None  # two samplings: Friedman needs three
        assert out["d_score"]["n_blocks"] == len(per_seed[0])  # seeds share every configuration
        res = stats_tests.win_rate_matrix(s, "non-adaptive", "d_score", presets={"blur": "0", "none": "-"})
        assert len(res["experiments"]) == 8 and {e["seed"] for e in res["experiments"]} == {0, 1}


def test_pareto_front_on_hand_points():
    pts = [{"name": "a", "d_score_d": 1.0, "srocc_adv": 0.5}, {"name": "b", "d_score_d": 2.0, "srocc_adv": 0.7},
           {"name": "c", "d_score_d": 2.5, "srocc_adv": 0.6}, {"name": "d", "d_score_d": 3.0, "srocc_adv": 0.9},
           {"name": "e", "d_score_d": 1.0, "srocc_adv": 0.4}, {"name": "f", "d_score_d": None, "srocc_adv": 1.0},
           {"name": "g", "d_score_d": 2.0, "srocc_adv": 0.7}]
    out = stats.pareto_front(pts)
    assert [p["name"] for p in out if p["pareto"]] == ["a", "b", "d", "g"]  # ties are both kept
    assert [p["name"] for p in out] == [p["name"] for p in pts] and "pareto" not in pts[0]
    swapped = stats.pareto_front([{"x": 1, "y": 1}, {"x": 2, "y": 2}], x="x", y="y")
    assert [p["pareto"] for p in swapped] == [True, True]


def test_path_source_matches_open_store(tmp_path):
    path = tmp_path / "p.duckdb"
    with Store(path) as s:
        s.insert([r for r in _rows() if r["metric"] == "m-up"])
        live = stats.defense_table(s, "adaptive")
    from_path = stats.defense_table(path, "adaptive")  # opened read-only, closed again
    assert from_path == live and len(live) == 5
    with Store(path) as s:  # the file is not left locked
        assert s.count() > 0
