"""Universal attacks in the benchmark (fitted once per (metric, attack, preset), cached, reused on
resume), stored attack parameters and query counts, and the transfer phase."""
from __future__ import annotations

import json

import pytest

import iqaguard
from iqaguard.data.io import load_image

from iqaguard.attacks.universal import UniversalAttack
from iqaguard.bench.report import write_report
from iqaguard.bench.spec import Spec, SpecError
from iqaguard.bench.store import Store

from test_runner import run, toy_spec

FIT = {"dataset": {"name": "toy", "kwargs": {"n": 4, "seed": 7, "fr": True}}, "images": 3}


def _uap_spec(**over) -> dict:
    spec = toy_spec(metrics=["toy-nr", "toy-fr"], datasets=[{"name": "toy", "kwargs": {"n": 4, "fr": True}}],
                    attacks=[{"name": "uap", "presets": ["weak", "strong"], "kwargs": {"epochs": 1, "size": 16},
                              "fit": FIT}],
                    defenses=[{"name": "jpeg", "presets": [2]}], modes=["non-adaptive", "adaptive"], batch_size=2)
    spec.update(over)
    return spec


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    original = UniversalAttack.fit

    def counted(self, metric, images, ref=None, generator=None):
        calls.append((metric.name, self.params["eps"], tuple(images.shape)))
        return original(self, metric, images, ref=ref, generator=generator)

    monkeypatch.setattr(UniversalAttack, "fit", counted)
    return calls


def test_a_universal_attack_is_fitted_once_per_metric_and_preset_and_never_refitted_on_resume(tmp_path, count_fits):
    store = tmp_path / "s.duckdb"
    summary = run(_uap_spec(), store)
    # 2 metrics x 2 presets, each fitted once on the 3 training images, though 2 batches x 2 defenses use it
    assert len(count_fits) == 4 and {c[2] for c in count_fits} == {(3, 3, 16, 16)}
    with Store(store, read_only=True) as s:
        uni = s.df("SELECT * FROM universal ORDER BY metric, attack_preset")
        rows = s.df("SELECT * FROM results")
    assert [(u["metric"], u["attack_preset"]) for u in uni] == [("toy-fr", "strong"), ("toy-fr", "weak"),
                                                              ("toy-nr", "strong"), ("toy-nr", "weak")]
    assert all(json.loads(u["fit_images"]) and (store.parent / "s_adv" / u["path"]).is_file() for u in uni)
    # universal attacks are non-adaptive only: 2 metrics x 4 images x 2 presets x (none + jpeg)
    assert summary.rows_written == len(rows) == 2 * 4 * 2 * 2
    assert {r["mode"] for r in rows} == {"non-adaptive"}
    # each row carries the resolved parameters; eps is the preset's, and L-inf holds on the stored images
    for r in rows:
        eps = json.loads(r["attack_params"])["eps"]
        assert eps == pytest.approx({"weak": 2 / 255, "strong": 8 / 255}[r["attack_preset"]])
        if r["defense"] == "none":
            assert r["linf"] <= eps + 0.5 / 255 + 1e-6  # the 8-bit rounding of the cached PNG
    # a resumed run after losing the result rows (not the fits) refits nothing
    with Store(store) as s:
        s.con.execute("DELETE FROM results WHERE metric = 'toy-nr'")
        s.con.execute("DELETE FROM adversarial WHERE metric = 'toy-nr'")
    again = run(_uap_spec(), store)
    assert len(count_fits) == 4 and again.rows_written == 4 * 2 * 2
    # the same perturbation gives the same rows as before
    with Store(store, read_only=True) as s:
        after = {(r["metric"], r["image"], r["attack_preset"], r["defense"]): r["attacked"] for r in s.df()}
    assert after == {(r["metric"], r["image"], r["attack_preset"], r["defense"]): r["attacked"] for r in rows}


def test_the_spec_requires_a_fit_set_for_universal_attacks_and_refuses_the_evaluated_images():
    for name in ("uap", "opt-uap"):
        with pytest.raises(SpecError, match=f"'{name}' is a universal attack: it is fitted once on training images; "
                                            "add fit:"):
            Spec.model_validate(toy_spec(attacks=[{"name": name, "presets": ["weak"]}]))
    same = {"dataset": {"name": "toy", "kwargs": {"n": 6}}, "images": 2}
    with pytest.raises(SpecError, match=r"attacks\[0\]\.fit\.dataset: is the evaluated dataset 'toy'"):
        Spec.model_validate(toy_spec(attacks=[{"name": "uap", "presets": ["weak"], "fit": same}]))
    with pytest.raises(SpecError, match=r"attacks\[0\]\.fit: 'ifgsm' is a per-image attack"):
        Spec.model_validate(toy_spec(attacks=[{"name": "ifgsm", "presets": ["weak"], "fit": FIT}]))
    with pytest.raises(SpecError, match=r"images"):
        Spec.model_validate(toy_spec(attacks=[{"name": "uap", "fit": dict(FIT, images=0)}]))


def test_query_attacks_store_their_query_counts_and_gradient_attacks_none(tmp_path):
    spec = toy_spec(attacks=[{"name": "square", "presets": ["medium"], "kwargs": {"max_queries": 30}},
                             {"name": "pgd", "presets": ["medium"], "kwargs": {"steps": 2}}],
                    datasets=[{"name": "toy", "kwargs": {"n": 3}}], defenses=[], modes=["non-adaptive"])
    run(spec, tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb", read_only=True) as s:
        rows = s.df()
    square = [r for r in rows if r["attack"] == "square"]
    assert len(square) == 3 and all(1 <= r["queries"] <= 30 for r in square)
    assert json.loads(square[0]["attack_params"])["max_queries"] == 30
    pgd = [r for r in rows if r["attack"] == "pgd"]
    assert all(r["queries"] is None for r in pgd)
    params = json.loads(pgd[0]["attack_params"])
    assert params["eps"] == pytest.approx(4 / 255) and params["steps"] == 2

def test_transfer_scores_each_metrics_adversarial_images_with_the_other_metric(tmp_path):
    spec = toy_spec(metrics=["toy-nr", "toy-fr"], datasets=[{"name": "toy", "kwargs": {"n": 3, "fr": True}}],
                    attacks=[{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 2}}],
                    defenses=[{"name": "jpeg", "presets": [2]}], modes=["non-adaptive"], transfer=True, batch_size=2)
    store = tmp_path / "s.duckdb"
    run(spec, store)
    with Store(store, read_only=True) as s:
        tr = s.df("SELECT * FROM transfer")
        res = {(r["metric"], r["image"], r["defense"]): r for r in s.df()}
        clean = {(r[0], r[1], r[2]): r[3] for r in s.query(
            "SELECT metric, image, defense, score FROM clean_scores")}
    # 2 ordered pairs x 3 images x (none + jpeg)
    assert len(tr) == 2 * 3 * 2 and {(t["source"], t["metric"]) for t in tr} == {("toy-nr", "toy-fr"),
                                                                              ("toy-fr", "toy-nr")}
    for t in tr:
        # the target metric's clean score is the one the benchmark's clean phase computed
        assert t["defended_clean"] == pytest.approx(clean[(t["metric"], t["image"], t["defense"])], abs=1e-6)
    # the undefended transfer score is the target metric on the source's cached adversarial PNG
    with Store(store, read_only=True) as s:
        paths = {(r[0], r[1]): r[2] for r in s.query("SELECT metric, image, path FROM adversarial")}
    ds = iqaguard.data.create("toy", n=3, fr=True)
    refs = {ds[i].name: ds[i].ref for i in range(len(ds))}
    target = iqaguard.metrics.create("toy-fr")
    for t in (t for t in tr if t["source"] == "toy-nr" and t["defense"] == "none"):
        adv = load_image(store.parent / "s_adv" / paths[("toy-nr", t["image"])])
        assert t["attacked"] == pytest.approx(float(target(adv, refs[t["image"]])), abs=1e-6)
    # toy-nr's images scored by toy-nr itself are the white-box rows; transfer rows hold another metric's score
    nr_on_fr = {t["image"]: t["attacked"] for t in tr if t["source"] == "toy-nr" and t["defense"] == "none"}
    assert set(nr_on_fr) == {r[1] for r in res if r[0] == "toy-nr"}
    page = write_report(store, tmp_path / "report").read_text()
    assert 'id="transfer"' in page and "→ toy-fr" in page and "→ toy-nr" in page
    again = run(spec, store)  # resume: nothing left to transfer
    with Store(store, read_only=True) as s:
        assert s.count("transfer") == len(tr)
    assert again.tasks_run == 0


def test_the_worker_resolves_presets_through_the_shipped_table_of_attack_and_metric():
    from iqaguard.attacks.calibrate import CalibrationTable, find_table
    from iqaguard.bench.executors.worker import make_attack
    from iqaguard.bench.tasks import Ref

    table = CalibrationTable.from_json(find_table("stadv", "builtin-nr"))
    atk = make_attack(Ref("stadv", "stadv"), "medium", "builtin-nr")
    assert atk.params["max_flow"] == table.entries["medium"]["max_flow"] != iqaguard.attacks.create(
        "stadv", preset="medium").params["max_flow"]
    assert atk.preset == "medium"
    # no table for a metric: the class preset; the spec's kwargs win over both
    assert make_attack(Ref("stadv", "stadv"), "medium", "toy-nr").params["max_flow"] == 0.5
    assert make_attack(Ref("stadv", "stadv", '{"steps": 3}'), "medium", "builtin-nr").params["steps"] == 3
