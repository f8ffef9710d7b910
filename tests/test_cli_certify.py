"""``iqaguard certify``: the certified score of one image, one-line errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import iqaguard
from iqaguard.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 96x96 crop of a builtin photograph, as a PNG (small: 100 noisy copies stay fast)."""
    from iqaguard.data.io import load_image, save_png

    x = load_image(Path(iqaguard.__file__).resolve().parent / "data" / "photos" / "kitten.jpg")[..., :96, :96]
    path = tmp_path_factory.mktemp("certify") / "crop.png"
    save_png(x, path)
    return str(path)


def test_certify_ms_prints_score_inside_its_interval(image):
    out = runner.invoke(app, ["certify", image, "--defense", "ms", "--n", "100", "--seed", "3"])
    assert out.exit_code == 0, out.output
    score = float(re.search(r"score (-?\d+\.\d+)", out.stdout).group(1))
    lo, hi = (float(v) for v in re.search(r"interval \[(-?\d+\.\d+), (-?\d+\.\d+)\]", out.stdout).groups())
    assert lo <= score <= hi and "L2 perturbation <= 0.0500" in out.stdout
    again = runner.invoke(app, ["certify", image, "--defense", "ms", "--n", "100", "--seed", "3"])
    assert again.stdout == out.stdout  # seeded


def test_certify_rs_prints_a_radius(image):
    out = runner.invoke(app, ["certify", image, "--defense", "rs", "--n", "100", "--sigma", "0.05"])
    assert out.exit_code == 0, out.output
    assert "certified L2 radius" in out.stdout or "abstained" in out.output


def test_certify_errors_are_one_line(image):
    for args, text in ((["--defense", "jpeg"], "is not a certified defense"),
                       (["--metric", "builtin-fr"], "full-reference"),
                       (["--defense", "ms", "--alpha", "0.9"], "alpha")):
        out = runner.invoke(app, ["certify", image, *args])
        assert out.exit_code != 0 and text in out.output, out.output
        assert "Traceback" not in out.output


def test_certify_fs_iqa_prints_the_input_radius_of_the_shipped_head(image):
    out = runner.invoke(app, ["certify", image, "--defense", "fs-iqa", "--n", "500", "--seed", "1"])
    assert out.exit_code == 0, out.output
    score = float(re.search(r"score (-?\d+\.\d+)", out.stdout).group(1))
    lo, hi = (float(v) for v in re.search(r"interval \[(-?\d+\.\d+), (-?\d+\.\d+)\]", out.stdout).groups())
    eps = float(re.search(r"L2 perturbation <= (\d+\.\d+)", out.stdout).group(1))
    assert lo <= score <= hi and eps > 0
