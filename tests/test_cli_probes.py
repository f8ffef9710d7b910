"""CLI probes: score keeps going past bad files, empty folders are named as folders, --version."""
import subprocess
import sys

import torch
from typer.testing import CliRunner

import iqaguard
from iqaguard.cli import app
from iqaguard.data.io import save_png

runner = CliRunner()


def _img(path, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return save_png(torch.rand(1, 3, size, size, generator=g), path)


def test_score_scores_good_files_and_reports_each_bad_one(tmp_path):
    a = _img(tmp_path / "a.png", seed=1)
    b = _img(tmp_path / "b.png", seed=2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    folder = tmp_path / "shots"
    folder.mkdir()
    missing = tmp_path / "missing.png"
    args = ["score", str(a), str(bad), str(folder), str(missing), str(b)]
    out = runner.invoke(app, args)
    assert out.exit_code == 1, out.stdout
    good = runner.invoke(app, ["score", str(a), str(b)])
    assert good.exit_code == 0, good.stdout
    # the good files get the same table rows as a clean run
    rows = [ln for ln in good.stdout.splitlines() if "a.png" in ln or "b.png" in ln]
    assert len(rows) == 2 and all(r in out.stdout for r in rows)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert "bad.png" in errors[0] and "cannot read" in errors[0]
    # an empty folder: named as a folder with no images (a folder with images is scored whole)
    assert "shots" in errors[1] and "directory with no image files" in errors[1] and "not found" not in errors[1]
    assert "missing.png" in errors[2] and "not found" in errors[2]


def test_score_image_too_small_or_mismatched_is_one_line_each(tmp_path):
    ref = _img(tmp_path / "ref.png", size=64)
    x = _img(tmp_path / "x.png", size=64, seed=3)
    tiny = _img(tmp_path / "[tiny] t.png", size=8)
    # psnr: the 64x64 image scores, the 8x8 one does not match the reference
    out = runner.invoke(app, ["score", str(x), str(tiny), "--metric", "psnr", "--ref", str(ref)])
    assert out.exit_code == 1, out.stdout
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "[tiny] t.png" in errors[0] and "same shape" in errors[0]
    assert "x.png" in out.stdout and "1 of 2 images failed" in out.stderr
    # ssim against a tiny reference: the tiny image is too small for the 11x11 window
    tiny_ref = _img(tmp_path / "tref.png", size=8, seed=4)
    out = runner.invoke(app, ["score", str(tiny), "--metric", "ssim", "--ref", str(tiny_ref)])
    assert out.exit_code == 2, out.stdout  # nothing could be scored (tests/test_cli.py contract)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "[tiny] t.png" in errors[0] and "11x11" in errors[0]
    out = runner.invoke(app, ["score", str(x), "--metric", "ssim", "--ref", str(ref)])
    assert out.exit_code == 0 and "error" not in out.output


def test_empty_directory_says_directory_and_suggests_files(tmp_path):
    folder = tmp_path / "[set] imgs"
    folder.mkdir()
    out = runner.invoke(app, ["score", str(folder)])
    assert out.exit_code == 2
    assert "[set] imgs" in out.stderr and "directory with no image files" in out.stderr and "*.png" in out.stderr
    assert "not found" not in out.stderr
    x = _img(tmp_path / "x.png")
    # --ref is one image: a folder is refused as a folder
    out = runner.invoke(app, ["score", str(x), "--metric", "psnr", "--ref", str(folder)])
    assert out.exit_code == 2 and "directory" in out.stderr and "not found" not in out.stderr


def test_version_flag_and_python_m():
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.stdout.strip() == f"iqaguard {iqaguard.__version__}"
    proc = subprocess.run([sys.executable, "-m", "iqaguard", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"iqaguard {iqaguard.__version__}"
    # subcommands still work under the new root callback
    assert runner.invoke(app, ["list", "metrics"]).exit_code == 0
