"""``iqaguard attack calibrate``: the calibration protocol from the command line (Guardians A.3.4).

Tiny configurations (a 3-value sweep of stAdv at 1 step on 4 + 2 crops of the builtin
photographs) check the wiring: progress per sweep value, the fitted line, per-preset value,
predicted and held-out budget with its error, the JSON table and its round trip through
``iqaguard attack IMAGE --table``; bad input is one error line. ``iqaguard attack IMAGE`` itself
must behave as before the group existed.
"""
import json
import re

import pytest
from typer.testing import CliRunner

from iqaguard.attacks.calibrate import CalibrationTable
from iqaguard.cli import app
from iqaguard.data.io import load_image, save_png

runner = CliRunner()
TINY = ["--attack", "stadv", "--metric", "builtin-nr", "--dataset", "builtin", "--n", "4", "--held-out", "2",
        "--size", "64", "--values", "0.01,0.02,0.04", "--fix", "steps=1", "--local", "0", "--second", "none"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "t.json"
    res = runner.invoke(app, ["attack", "calibrate", *TINY, "--out", str(out)])
    return res, out


def test_calibrate_prints_sweep_fit_presets_and_writes_the_table(tiny):
    res, out = tiny
    assert res.exit_code == 0, res.stderr + res.stdout
    text = res.stdout
    for i in (1, 2, 3):  # progress on stderr, results on stdout
        assert f"sweep {i}/3: max_flow=" in res.stderr
    assert "held-out weak: linf" in res.stderr and "sweep 1/3" not in text
    fit = re.search(r"fit: linf ~ a \+ b \* max_flow, a = (\S+), b = (\S+), r² = (\S+)", text)
    assert fit and float(fit.group(2)) > 0 and 0 <= float(fit.group(3)) <= 1
    for name in ("weak", "medium", "strong"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{name}: max_flow="))
        assert "target" in line and "predicted" in line and "held-out" in line and "error" in line
    assert f"wrote {out}" in text
    table = CalibrationTable.from_json(out)
    assert table.attack == "stadv" and table.metric == "builtin-nr" and table.dataset == "builtin"
    assert table.split is None and table.size == 64 and table.fixed == {"steps": 1}
    assert [r["value"] for r in table.rows] == [0.01, 0.02, 0.04] and table.n_images == 4
    assert table.n_held_out == 2 and set(table.verification) == {"weak", "medium", "strong"}
    cal = {d["name"] for d in table.images}
    held = {d["name"] for d in table.held_out_images}
    assert len(cal) == 4 and len(held) == 2 and not cal & held  # disjoint
    # printed figures are the table's
    v = table.verification["weak"]
    assert f"error {100 * v['rel_error']:.2f}%" in text
    # JSON round trip
    assert CalibrationTable(**json.loads(out.read_text())) == table
    assert table.kwargs("medium") == {"steps": 1, "max_flow": table.entries["medium"]["max_flow"]}


def test_attack_image_resolves_the_preset_through_a_table(tiny, tmp_path):
    _, table_path = tiny
    table = CalibrationTable.from_json(table_path)
    src = save_png(load_image("src/iqaguard/data/photos/kitten.jpg")[..., :64, :64], tmp_path / "x.png")
    out = runner.invoke(app, ["attack", str(src), "--attack", "stadv", "--preset", "strong", "--table", str(table_path),
                              "--out", str(tmp_path / "adv.png")])
    assert out.exit_code == 0, out.stderr
    assert f"max_flow={table.entries['strong']['max_flow']:.4g}, tau=0.01, steps=1," in out.stdout
    assert f"preset strong from the calibration table {table_path}" in out.stdout
    # a table for another metric is refused
    bad = runner.invoke(app, ["attack", str(src), "--attack", "stadv", "--metric", "builtin-fr", "--ref", str(src),
                              "--table", str(table_path), "--out", str(tmp_path / "adv2.png")])
    assert bad.exit_code == 2 and "calibrated on metric 'builtin-nr'" in bad.stderr


@pytest.mark.parametrize("args, text", [
    (["--metric", "nope"], "nope"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--dataset", "nope"], "nope"),
    (["--attack", "uap"], "universal"),
    (["--metric", "builtin-fr"], "has no reference images"),
    (["--n", "2"], "--n"),
    (["--n", "150", "--held-out", "20"], "lower --n / --held-out"),
    (["--split", "test"], "evaluation split"),
    (["--split", "val"], "has no splits"),
    (["--dataset", "koniq10k"], "--root"),
    (["--fix", "steps"], "KEY=VALUE"),
    (["--fix", "nope=1"], "unknown argument"),
    (["--values", "a,b"], "--values"),
    (["--size", "32"], "at least 64px"),
    (["--restriction", "lpips"], "restriction"),
    (["--second", "nope", "--values", "0.0001,0.0002"], "second"),
])
def test_bad_input_is_one_error_line(tmp_path, args, text):
    out = tmp_path / "t.json"
    res = runner.invoke(app, ["attack", "calibrate", *TINY, *args, "--out", str(out)])
    err = res.stderr.strip()
    assert res.exit_code == 2, (res.stdout, err)
    assert len(err.splitlines()) == 1 and err.startswith("error:") and text in err, err
    assert "Traceback" not in res.stdout + res.stderr and not out.exists()


def test_attack_image_command_is_unchanged(tmp_path):
    helped = runner.invoke(app, ["attack", "--help"])
    assert helped.exit_code == 0
    # the image attack's own help and usage, as before `attack` became a group (not the group's)
    assert re.search(r"Usage: \S+ attack \[OPTIONS\] \S*image", helped.stdout, re.I) and "--out" in helped.stdout
    assert "attack calibrate --help" in helped.stdout
    missing = runner.invoke(app, ["attack"])
    assert missing.exit_code == 2 and re.search(r"Missing argument '(?i:image)'", missing.stderr)
    assert "calibrate" not in missing.stderr
    src = save_png(load_image("src/iqaguard/data/photos/kitten.jpg")[..., :64, :64], tmp_path / "x.png")
    # options before the image, as click allows
    out = runner.invoke(app, ["attack", "--attack", "ifgsm", "--preset", "weak", str(src), "--out", str(tmp_path / "a.png")])
    assert out.exit_code == 0, out.stderr
    assert "ifgsm weak: eps=2/255, steps=10" in out.stdout and "calibration table" not in out.stdout
    top = runner.invoke(app, ["--help"])
    assert "attack" in top.stdout and "calibrate" in top.stdout
    cal_help = runner.invoke(app, ["attack", "calibrate", "--help"])
    assert cal_help.exit_code == 0 and "--held-out" in cal_help.stdout and "--second" in cal_help.stdout


def test_attack_image_uses_the_shipped_table(tmp_path):
    from iqaguard.attacks.calibrate import find_table

    shipped = find_table("stadv", "builtin-nr")
    if shipped is None:
        pytest.skip("no shipped stadv table (run scripts/calibrate_attacks.py)")
    table = CalibrationTable.from_json(shipped)
    src = save_png(load_image("src/iqaguard/data/photos/kitten.jpg")[..., :64, :64], tmp_path / "x.png")
    out = runner.invoke(app, ["attack", str(src), "--attack", "stadv", "--preset", "weak", "--out", str(tmp_path / "a.png")])
    assert out.exit_code == 0, out.stderr
    assert f"max_flow={table.entries['weak']['max_flow']:.4g}" in out.stdout
    assert f"from the calibration table {shipped}" in out.stdout
