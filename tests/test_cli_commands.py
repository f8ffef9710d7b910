"""The CLI commands added for the field: list tables, score over folders/globs with formats, defend,
bench validate / specs, one worker default, bench run --strict, and markup-free user text.

Each test notes what the code before this change did.
"""
import csv
import io
import json
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

import iqaguard
from iqaguard import scores
from iqaguard.bench import cli as bench_cli
from iqaguard.cli import app
from iqaguard.data.io import jpeg_roundtrip, load_image, save_png
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import METRICS

runner = CliRunner()


def _img(path, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return save_png(torch.rand(1, 3, size, size, generator=g), path)


def _row(text: str, name: str) -> str:
    """The table line whose first cell is ``name``."""
    return next(ln for ln in text.splitlines() if re.match(rf"^\W*{re.escape(name)}\s", ln))


# ---- list -------------------------------------------------------------------------------------------------

class _ProbeMetric(Metric):
    """Probe metric of the listing test."""

    kind, lower_better, bounds, name, min_size = "fr", True, Bounds(7.5, 0.25), "cli-probe", 13

    def score(self, x, ref=None):
        return (x - ref).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def probe_metric():
    METRICS.register("cli-probe")(_ProbeMetric)
    yield
    METRICS._items.pop("cli-probe")


def test_list_metrics_is_a_table_of_the_class_attributes(probe_metric):
    # before: `list metrics` printed bare names, no kind, direction, bounds, size or notes
    out = runner.invoke(app, ["list", "metrics"])
    assert out.exit_code == 0, out.output
    probe = _row(out.stdout, "cli-probe")
    assert all(s in probe for s in ("FR", "lower better", "(7.5, 0.25)", "13x13", "Probe metric of the listing test."))
    nr = iqaguard.metrics.create("builtin-nr")
    row = _row(out.stdout, "builtin-nr")
    assert "NR" in row and "higher better" in row and f"({nr.bounds.worst:.4g}, {nr.bounds.best:.4g})" in row
    assert "64x64" in row
    # prefix factories: the optional extra they need, brackets intact (no markup parsing)
    assert re.search(r"\[pyiqa\] extra (installed|.*pip install \"iqaguard\[pyiqa\]\")", _row(out.stdout, "pyiqa:<name>"))


def test_list_metrics_names_a_missing_extra_with_its_install_command(monkeypatch):
    """A prefix factory whose optional extra is absent says how to install it, brackets intact
    (rich markup would print `pip install "iqaguard"`)."""
    from importlib import metadata

    real = metadata.version

    def version(dist):
        if dist == "pyiqa":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)
    out = runner.invoke(app, ["list", "metrics"])
    assert 'needs the [pyiqa] extra: pip install "iqaguard[pyiqa]"' in " ".join(out.stdout.split())
    assert "needs" not in _row(out.stdout, "builtin-nr")


def test_list_attacks_defenses_datasets_details():
    # before: bare names only
    attacks = runner.invoke(app, ["list", "attacks"]).stdout
    assert "linf" in _row(attacks, "ifgsm")
    assert all(f"{p}: eps={k}/255, steps=10" in attacks for p, k in (("weak", 2), ("medium", 4), ("strong", 8)))
    defenses = runner.invoke(app, ["list", "defenses"]).stdout
    jpeg = _row(defenses, "jpeg")
    assert "purification" in jpeg and "0: q=90" in jpeg and "BPDA" in jpeg and "4: q=10" in defenses
    datasets = runner.invoke(app, ["list", "datasets"]).stdout
    assert "builtin" in _row(datasets, "builtin").split("│")[4]
    koniq = _row(datasets, "koniq10k")
    assert "NR" in koniq and "download" in koniq and "database.mmsp-kn.de" in koniq
    assert "FR" in _row(datasets, "kadid10k") and "your folder" in _row(datasets, "folder")


# ---- score over folders and globs, formats ------------------------------------------------------------------

def test_score_folder_glob_and_formats(tmp_path):
    folder = tmp_path / "shots"
    a, b = _img(folder / "a.png", seed=1), _img(folder / "b.png", seed=2)
    (folder / "notes.txt").write_text("not an image")
    m = iqaguard.metrics.create("builtin-nr")
    with torch.no_grad():
        expected = {str(p): float(m(load_image(p))[0]) for p in (a, b)}
    # before: a folder argument was refused ("is a directory"), exit 2
    out = runner.invoke(app, ["score", str(folder), "--format", "json"])
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert [r["image"] for r in records] == [str(a), str(b)]
    assert all(r["metric"] == "builtin-nr" and r["score"] == pytest.approx(expected[r["image"]], abs=1e-6)
               for r in records)
    # before: a quoted glob was taken as a file name: "not found"
    out = runner.invoke(app, ["score", str(folder / "*.png"), "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["image"] for r in rows] == [str(a), str(b)]
    assert float(rows[1]["score"]) == pytest.approx(expected[str(b)], abs=1e-6)
    # errors on stderr, one line each; stdout stays a valid document; exit 1 when some failed
    out = runner.invoke(app, ["score", str(a), str(tmp_path / "nothing-*.png"), "--format", "json"])
    assert out.exit_code == 1
    assert [r["image"] for r in json.loads(out.stdout)] == [str(a)]
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("error:")] == [
        ln for ln in out.stderr.splitlines() if "no image file matches the pattern" in ln]
    # exit 2 when all failed
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.invoke(app, ["score", str(empty), "--format", "csv"])
    assert out.exit_code == 2 and out.stdout == "image,metric,score\n" and "no image files" in out.stderr
    bad = runner.invoke(app, ["score", str(a), "--format", "xml"])
    assert bad.exit_code == 2 and "--format" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# ---- defend -----------------------------------------------------------------------------------------------

def test_defend_writes_the_purified_png_and_prints_its_fidelity(tmp_path):
    x_path = _img(tmp_path / "x.png", size=48, seed=5)
    out_path = tmp_path / "out" / "[q50] x.png"
    # before: there was no `defend` command (usage error)
    out = runner.invoke(app, ["defend", str(x_path), "--defense", "jpeg", "--preset", "2", "--out", str(out_path)])
    assert out.exit_code == 0, out.output
    x = load_image(x_path)
    px = jpeg_roundtrip(x, 50)
    assert torch.equal(load_image(out_path), px)  # preset 2 is q=50, written losslessly as 8-bit PNG
    assert f"PSNR {float(scores.psnr(px, x)[0]):.2f} dB" in out.stdout
    assert f"SSIM {float(scores.ssim(px, x)[0]):.4f}" in out.stdout
    assert "[q50] x.png" in out.stdout and "q=50" in out.stdout


@pytest.mark.parametrize("args, says", [
    (["--defense", "jpg", "--out", "o.png"], "Did you mean 'jpeg'"),
    (["--defense", "jpeg", "--preset", "9", "--out", "o.png"], "preset: expected an index 0..4"),
    (["--defense", "jpeg", "--out", "o.jpg"], "--out: expected a .png file"),
    (["--defense", "jpeg", "--out", "o.png", "--seed", "-1"], None),  # a usage error from typer itself
])
def test_defend_bad_input_is_one_line(tmp_path, monkeypatch, args, says):
    # before: no `defend` command at all
    monkeypatch.chdir(tmp_path)
    _img(tmp_path / "x.png", size=32)
    out = runner.invoke(app, ["defend", "x.png", *args])
    assert out.exit_code == 2 and "Traceback" not in out.output
    if says is not None:
        assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # nothing written


# ---- bench validate / specs -------------------------------------------------------------------------------

def _toy_spec_file(tmp_path, **over):
    from test_runner import toy_spec

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(toy_spec(**over)))
    return path


def test_validate_counts_tasks_without_running_or_storing(tmp_path, monkeypatch):
    spec = _toy_spec_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    # before: no `bench validate` command
    out = runner.invoke(app, ["bench", "validate", str(spec), "--no-time"])
    assert out.exit_code == 0, out.output
    # toy spec: 6 images, batch 4 -> 2 batches; 3 attack presets (toy-step weak/strong, ifgsm weak);
    # 3 defense presets (jpeg 0, 4; toy-noise 1) scored non-adaptively and attacked adaptively.
    # clean: 2 tasks; non-adaptive: 3 x 2 = 6 tasks of 4 rows per image (none + 3) -> 3 * 6 * 4 = 72 rows;
    # adaptive: 3 x 2 x 3 = 18 tasks, 1 row per image -> 3 * 6 * 3 = 54 rows
    # clean-score rows: 6 images x (none + 3 defense presets) = 24
    assert "tasks: 2 clean + 24 attack = 26; 126 result rows (+ 24 clean-score rows); 6 images" in out.stdout
    assert "without KMeans" in out.stdout
    row = _row(out.stdout, "toy-nr").split("│")
    assert [c.strip() for c in row[2:9]] == ["clean", "-", "-", "none, jpeg 0,4, toy-noise 1", "2", "6", "24"]
    adaptive = [ln for ln in out.stdout.splitlines() if "adaptive" in ln and "non-adaptive" not in ln]
    assert len(adaptive) == 9 and all(re.search(r"│ 2 +│ 6 +│ 6 +│", ln) for ln in adaptive)
    assert list(tmp_path.rglob("*.duckdb")) == [] and "estimated" not in out.stdout


def test_validate_exact_selects_in_a_temporary_store(tmp_path, monkeypatch):
    spec = _toy_spec_file(tmp_path, datasets=[{"name": "toy", "kwargs": {"n": 24},
                                               "subset": {"method": "kmeans", "k_per_cluster": 2, "n_clusters": 4}}],
                          modes=["non-adaptive"])
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["bench", "validate", str(spec), "--exact", "--no-time"])
    assert out.exit_code == 0, out.output
    assert "8 images" in out.stdout and "temporary store" in out.stdout
    assert list(tmp_path.rglob("*.duckdb")) == []


def test_validate_estimate_extrapolates_single_image_tasks(tmp_path, monkeypatch):
    """One clean task per metric and one attack task per metric x attack x mode run, each on one
    image; the estimate is their per-image time times every task's images."""
    import iqaguard.bench.executors.worker as worker
    from iqaguard.bench.spec import load_spec
    from iqaguard.bench.tasks import expand

    clock = [0.0]
    ran = []

    def fake_run(task):
        ran.append(task)
        clock[0] += 1.0 if type(task).__name__ == "CleanTask" else 2.0  # seconds per (one-image) task

    monkeypatch.setattr(worker, "run_task", fake_run)
    monkeypatch.setattr(bench_cli.time, "perf_counter", lambda: clock[0])
    sp = load_spec(_toy_spec_file(tmp_path))
    clean, attacks = expand(sp, bench_cli.count_selections(sp))
    serial, _ = bench_cli.time_tasks(clean, attacks)
    assert all(len(t.names) == 1 for t in ran)
    assert len(ran) == 1 + 2 * 2  # one metric; attacks toy-step and ifgsm; two modes
    # clean tasks cover 6 images at 1 s each; attack tasks cover 18 + 54 images at 2 s each
    assert serial == pytest.approx(6 * 1.0 + (18 + 54) * 2.0)


def test_validate_reports_spec_problems_in_one_error(tmp_path):
    fr = _toy_spec_file(tmp_path, metrics=["toy-fr"])
    out = runner.invoke(app, ["bench", "validate", str(fr), "--no-time"])
    assert out.exit_code == 2 and "full-reference" in out.stderr and "Traceback" not in out.output
    missing = runner.invoke(app, ["bench", "validate", str(tmp_path / "[v2] spec.yaml")])
    assert missing.exit_code == 2 and "[v2] spec.yaml" in missing.stderr


def test_bench_specs_lists_the_builtin_specs():
    # before: no `bench specs` command
    out = runner.invoke(app, ["bench", "specs"])
    assert out.exit_code == 0, out.output
    assert "demo" in _row(out.stdout, "demo") and "The builtin demo benchmark" in out.stdout


# ---- one worker default, --strict ----------------------------------------------------------------------------

def test_bench_run_and_demo_share_the_worker_default(tmp_path, monkeypatch):
    import iqaguard.bench.executors as executors
    import iqaguard.bench.runner as runner_mod
    from iqaguard.bench.executors.local import default_workers
    from iqaguard.bench.runner import RunSummary
    from iqaguard.bench.store import Store

    seen = {}

    class _Ex:
        name = "fake"

        def close(self):
            pass

    def fake_make(kind, **kw):
        seen["workers"] = kw["workers"]
        return _Ex()

    def fake_run(spec, store, **kw):
        Store(store).close()
        return RunSummary("r1", store, 1, 0, 1, 0, 3, 0.1)

    skipped = [("toy", 0, "img03", "image is 8x8 pixels, smaller than the 16-pixel minimum side")]
    monkeypatch.setattr(executors, "make_executor", fake_make)
    monkeypatch.setattr(runner_mod, "run_spec", fake_run)
    monkeypatch.setattr(runner_mod, "skipped_images", lambda store, spec: skipped)
    spec = _toy_spec_file(tmp_path)
    store = tmp_path / "[s].duckdb"
    # before: bench run passed workers=None (one in-process worker), demo one per core
    out = runner.invoke(app, ["bench", "run", str(spec), "--store", str(store), "--quiet"])
    assert out.exit_code == 0, out.output
    assert seen == {"workers": default_workers(1)}
    assert "[s].duckdb" in out.stderr and "1 image(s) skipped" in out.stderr and "img03" in out.stderr
    # --strict makes a run with skipped images exit 1 (before: no such flag)
    out = runner.invoke(app, ["bench", "run", str(spec), "--store", str(store), "--quiet", "--workers", "3",
                              "--strict"])
    assert out.exit_code == 1 and seen == {"workers": 3} and "img03" in out.stderr
    skipped.clear()
    assert runner.invoke(app, ["bench", "run", str(spec), "--store", str(store), "--strict"]).exit_code == 0
    # the two --help texts document the same default
    squash = lambda s: " ".join(s.split())  # noqa: E731
    words = squash(bench_cli.WORKERS_HELP)[:60]
    for cmd in (["bench", "run", "--help"], ["demo", "--help"]):
        help_text = runner.invoke(app, cmd, terminal_width=300).stdout
        assert words in squash(re.sub(r"[│╭╮╰╯─]", " ", help_text)), cmd


def test_user_text_is_printed_without_markup(tmp_path, monkeypatch):
    """rich markup eats "[s]" (a strike-through tag) in paths and "[pyiqa]" in install hints; before,
    the `bench run` and `bench export` summaries printed the paths as markup."""
    from rich.console import Console

    from iqaguard.bench.store import Store

    store = tmp_path / "[s] rows.duckdb"
    Store(store).close()
    out = runner.invoke(app, ["bench", "export", str(store), "--out", str(tmp_path / "[r].csv")])
    assert out.exit_code == 0, out.output
    assert "[s] rows.duckdb" not in out.stderr and "[r].csv" in out.stderr
    probe = Console(file=io.StringIO(), width=40)
    monkeypatch.setattr(bench_cli, "console", probe)
    hint = 'pyiqa:dbcnn needs the optional extra: pip install "iqaguard[pyiqa]" [/bold]'
    bench_cli.print_error(hint)
    assert probe.file.getvalue() == f"error: {hint}\n"  # one line, brackets intact, not wrapped at 40


# ---- iqaguard attack (before: no such command) ----
def test_attack_writes_the_png_raises_the_score_and_keeps_the_budget(tmp_path):
    src = save_png(load_image("src/iqaguard/data/photos/kitten.jpg")[..., :64, :64], tmp_path / "x.png")
    out = runner.invoke(app, ["attack", str(src), "--metric", "builtin-nr", "--attack", "ifgsm", "--preset", "weak",
                              "--out", str(tmp_path / "adv.png")])
    assert out.exit_code == 0, out.stderr
    x, adv = load_image(src), load_image(tmp_path / "adv.png")
    assert round(float((adv - x).abs().max()) * 255) <= 2  # 8-bit PNG, eps 2/255
    m = iqaguard.metrics.create("builtin-nr")
    with torch.no_grad():
        before, after = float(m(x)[0]), float(m(adv)[0])
    assert after > before
    shown = re.search(r"clean ([-\d.]+) -> attacked ([-\d.]+)", out.stdout)
    assert shown and float(shown.group(1)) == pytest.approx(before, abs=1e-4)
    assert float(shown.group(2)) == pytest.approx(after, abs=1e-4)  # the printed score is the saved image's
    assert "eps=2/255" in out.stdout and "L-inf 2.00/255" in out.stdout


@pytest.mark.parametrize("args, text", [
    (["--metric", "ssim"], "metric 'ssim' is full-reference: pass --ref"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--out", "adv.jpg"], "--out: expected a .png file"),
])
def test_attack_errors_are_one_line(tmp_path, args, text):
    src = _img(tmp_path / "x.png")
    base = ["attack", str(src), "--out", str(tmp_path / "adv.png")]
    out = runner.invoke(app, base + args)
    assert out.exit_code == 2 and text in out.stderr and "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "adv.png").exists()


def test_list_attacks_shows_family_restriction_and_varied_parameter():
    out = runner.invoke(app, ["list", "attacks"])
    assert out.exit_code == 0
    row = next(ln for ln in out.stdout.splitlines() if ln.strip("│ ").startswith("ifgsm"))
    assert "gradient (white-box)" in row and "linf" in row and "eps" in row
