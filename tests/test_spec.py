"""Benchmark spec: validation errors name the key path and the allowed values; task expansion."""
from __future__ import annotations

from pathlib import Path

import pytest

from iqaguard.bench.spec import Spec, SpecError, load_plugins, load_spec
from iqaguard.bench.tasks import AttackTask, Selection, expand, pending
from iqaguard.errors import InputError

(TOYS,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])


def _error(**over) -> str:
    with pytest.raises(SpecError) as e:
        Spec.model_validate(TOYS.toy_spec(**over))
    return str(e.value)


def test_wrong_attack_preset_names_path_and_allowed_values():
    msg = _error(attacks=[{"name": "ifgsm", "presets": ["weak", "hard"]}])
    assert "attacks[0].presets[1]: unknown preset 'hard' for attack 'ifgsm'; allowed: weak, medium, strong" in msg


def test_unknown_names_list_the_registered_ones():
    msg = _error(metrics=["toy-nr", "nope"], datasets=["toy", {"name": "toi"}])
    assert "metrics[1].name: unknown metric 'nope'; allowed:" in msg and "toy-nr" in msg.split("metrics[1]")[1]
    assert "datasets[1].name: unknown dataset 'toi'; allowed:" in msg and "toy" in msg.split("datasets[1]")[1]
    assert "metrics[0]" not in msg  # only the wrong entries are reported


def test_defense_preset_mode_seed_and_key_errors():
    msg = _error(defenses=[{"name": "jpeg", "presets": [0, 5]}], modes=["adaptiv"], seeds=[0, -1],
                 datasets=[{"name": "toy", "subsett": {"limit": 2}}])
    assert "defenses[0].presets[1]: preset index 5 out of range for defense 'jpeg'; allowed: 0..4 or all" in msg
    assert "modes[0]: Input should be 'non-adaptive' or 'adaptive'" in msg
    assert "seeds[1]: Input should be greater than or equal to 0" in msg
    assert "datasets[0].subsett: unknown key; allowed keys: name, kwargs, label, subset, mode_limits" in msg
    assert isinstance(SpecError("x"), InputError)


def test_duplicates_missing_and_subset_errors():
    assert "attacks[1].label: duplicate attack 'toy-step'" in _error(attacks=["toy-step", "toy-step"])
    assert "defenses[0].presets[1]: duplicate value 0" in _error(defenses=[{"name": "jpeg", "presets": [0, 0]}])
    assert "datasets[0].subset.method: give method: kmeans and/or limit" in _error(datasets=[{"name": "toy",
                                                                                             "subset": {}}])
    assert "datasets[0].mode_limits.adaptive: expected a positive image count" in _error(
        datasets=[{"name": "toy", "mode_limits": {"adaptive": 0}}])
    with pytest.raises(SpecError, match=r"metrics: Field required"):
        Spec.model_validate({"datasets": ["toy"], "attacks": ["toy-step"]})
    with pytest.raises(SpecError, match=r"imports: cannot import 'no_such_plugin_mod'"):
        Spec.model_validate(TOYS.toy_spec(imports=["no_such_plugin_mod"]))


def test_all_presets_shorthands_and_hash():
    s = Spec.model_validate(TOYS.toy_spec(attacks=["ifgsm"], defenses=[{"name": "jpeg", "presets": "all"}]))
    assert s.attacks[0].presets == ["weak", "medium", "strong"] and s.defenses[0].presets == [0, 1, 2, 3, 4]
    same = Spec.model_validate(dict(reversed(list(TOYS.toy_spec(attacks=["ifgsm"],
                                                                defenses=["jpeg"]).items()))))
    assert same.hash == s.hash and len(s.hash) == 16
    assert Spec.model_validate(TOYS.toy_spec(seeds=[1])).hash != Spec.model_validate(TOYS.toy_spec()).hash


def test_load_spec_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: [toy-nr]\ndatasets: [toy]\nattacks: [{name: ifgsm, presets: [strong, huge]}]\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:\n  attacks\[0\]\.presets\[1\]: unknown preset 'huge'"):
        load_spec(bad)
    bad.write_text("metrics: [toy-nr\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="no builtin spec 'nosuch'; allowed: attacks, builtin-full, defenses, demo"):
        load_spec("nosuch")


def test_relative_plugin_import_is_resolved_against_the_spec_folder(tmp_path):
    (tmp_path / "plug.py").write_text(
        "from iqaguard.registry import METRICS\nimport sys\nsys.modules[__name__].LOADED = True\n")
    (tmp_path / "s.yaml").write_text("imports: [plug.py]\nmetrics: [toy-nr]\ndatasets: [toy]\nattacks: [toy-step]\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.imports == [str((tmp_path / "plug.py").resolve())]
    assert load_plugins(spec.imports)[0].LOADED is True


def test_expand_batches_modes_and_pending():
    spec = Spec.model_validate(TOYS.toy_spec(batch_size=4, datasets=[{"name": "toy", "mode_limits": {"adaptive": 3}}]))
    names = tuple(f"img{i:02d}" for i in range(6))
    clean, attacks = expand(spec, {("toy", 0): Selection(tuple(range(6)), names)})
    assert [c.names for c in clean] == [names[:4], names[4:]]  # clean covers the widest mode
    non = [t for t in attacks if t.mode == "non-adaptive"]
    ada = [t for t in attacks if t.mode == "adaptive"]
    assert len(non) == 3 * 2 and all(len(t.defenses) == 3 and t.target is None for t in non)
    assert len(ada) == 3 * 1 * 3 and all(t.names == names[:3] and not t.defenses for t in ada)
    t = non[0]
    done = set(t.keys())
    assert pending(t, done) is None
    done.discard((t.dataset.label, "img00", "toy-nr", t.attack.label, t.preset, "jpeg", "4", "non-adaptive", 0))
    rest = pending(t, done)
    assert isinstance(rest, AttackTask) and [d.key for d in rest.defenses] == [("jpeg", "4")]


def test_builtin_demo_spec_is_valid():
    from iqaguard.registry import DATASETS, METRICS

    if "builtin-kadid" not in DATASETS or "builtin-nr" not in METRICS:
        pytest.skip("builtin-kadid / builtin-nr are not registered in this build")
    spec = load_spec("demo")
    assert set(spec.modes) == {"non-adaptive", "adaptive"} and spec.datasets[0].subset.method == "kmeans"


def test_adaptive_presets_select_the_adaptively_attacked_presets():
    spec = Spec.model_validate(TOYS.toy_spec(defenses=[{"name": "jpeg", "presets": [0, 1], "adaptive_presets": [3]},
                                                       {"name": "toy-noise", "presets": [4]}]))
    assert spec.defenses[0].presets_for("adaptive") == [3] and spec.defenses[1].presets_for("adaptive") == [4]
    clean, attacks = expand(spec, {("toy", 0): Selection(tuple(range(6)), tuple(f"i{i}" for i in range(6)))})
    assert {t.target.key for t in attacks if t.mode == "adaptive"} == {("jpeg", "3"), ("toy-noise", "4")}
    assert {d.key for d in clean[0].defenses} == {("jpeg", "0"), ("jpeg", "1"), ("jpeg", "3"), ("toy-noise", "4")}
    msg = _error(defenses=[{"name": "jpeg", "adaptive_presets": [9]}])
    assert "defenses[0].adaptive_presets[0]: preset index 9 out of range for defense 'jpeg'; allowed: 0..4" in msg


def test_every_shipped_spec_validates_and_the_attack_suite_names_every_package_attack():
    from iqaguard.bench.spec import SPECS_DIR, load_spec
    from iqaguard.bench.tasks import expand, fit_tasks, transfer_tasks, Selection
    from iqaguard.registry import ATTACKS

    for path in sorted(SPECS_DIR.glob("*.yaml")):
        spec = load_spec(path)
        sel = {(d.key, s): Selection(tuple(range(20)), tuple(f"i{i}" for i in range(20)))
               for d in spec.datasets for s in spec.seeds}
        clean, attacks = expand(spec, sel)
        assert clean and attacks
        # universal attacks: one fit per (metric, preset), no adaptive task
        uni = [a for a in spec.attacks if a.universal]
        assert len(fit_tasks(spec)) == sum(len(a.presets) for a in uni) * len(spec.metrics)
        assert not [t for t in attacks if t.mode == "adaptive" and t.attack.label in {a.key for a in uni}]
        if spec.transfer:
            assert transfer_tasks(spec, sel)
    suite = load_spec("attacks")
    package = {n for n in ATTACKS.names() if ATTACKS.get(n).__module__.startswith("iqaguard.")}
    assert {a.name for a in suite.attacks} == package
