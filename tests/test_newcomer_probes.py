"""The new-user probes, as a new user runs them: each asserts the clear error text or the right value.

One test per probe, in the order of the issue "What a new user hits first". Every one of them
failed on the code before that issue (the old behaviour is in each docstring). Deeper unit tests
of the same behaviour live next to the code they test (``test_io_bitdepth``, ``test_min_size``,
``test_attack_budgets``, ``test_store``, ``test_store_lock``, ``test_report_honesty``,
``test_validation_probes``, ``test_spec_probes``, ``test_skipped_samples``, ``test_progress``);
the SIGTERM probe needs a live process tree and lives in ``test_signals``.
"""
from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import iqaguard
from iqaguard.cli import app
from iqaguard.data.io import save_png
from iqaguard.errors import InputError

from test_runner import THIS_FILE, run, toy_spec

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()


def _png(path: Path, h: int = 64, w: int = 64, seed: int = 0) -> Path:
    return save_png(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)), path)


def _errors(result) -> list:
    return [ln for ln in result.stderr.splitlines() + result.stdout.splitlines() if ln.startswith("error:")]


def _one_error(result, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = _errors(result)
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ silent wrong answers
def test_dark_16bit_png_is_not_257x_too_bright(tmp_path):
    """Old: the bit depth was guessed from the maximum value, so max 200/65535 loaded as 200/255."""
    a = np.full((8, 8), 200, np.uint16)
    Image.fromarray(a).save(tmp_path / "dark16.png")
    x = iqaguard.data.load_image(tmp_path / "dark16.png")
    assert float(x.max()) == pytest.approx(200 / 65535, abs=1e-7)


@pytest.mark.parametrize("h, w, metric, minimum", [(1, 1, "builtin-nr", 64), (8, 8, "builtin-nr", 64),
                                                    (20, 20, "ssim", 11)])
def test_too_small_images_are_refused_naming_the_minimum(tmp_path, h, w, metric, minimum):
    """Old: a 1x1 image scored 4.99 on builtin-nr (above its own best bound), an 8x8 grey above a photo."""
    if metric == "ssim":  # an FR metric: the reference is as small
        img = _png(tmp_path / "x.png", 8, 8)
        line = _one_error(cli.invoke(app, ["score", str(img), "--metric", metric, "--ref", str(img)]))
        minimum, h, w = 11, 8, 8
    else:
        img = _png(tmp_path / "x.png", h, w)
        line = _one_error(cli.invoke(app, ["score", str(img), "--metric", metric]))
    assert f"{h}x{w}" in line or f"{w}x{h}" in line or f"{h} x {w}" in line, line
    assert metric in line and str(minimum) in line


def test_eps_on_the_0_255_scale_suggests_the_intended_budget():
    """Old: ``ifgsm eps=4`` was accepted and destroyed the image (L-inf 1.0)."""
    with pytest.raises(InputError, match=r"4/255"):
        iqaguard.attacks.create("ifgsm", eps=4)


def test_export_into_somebody_elses_duckdb_is_refused_and_leaves_it_untouched(tmp_path):
    """Old: `bench export` reported success and added five iqaguard tables to the foreign file."""
    foreign = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE sales (id INTEGER)")
    con.close()
    line = _one_error(cli.invoke(app, ["bench", "export", str(foreign), "--out", str(tmp_path / "x.csv")]))
    assert "not an iqaguard store" in line and "sales" in line
    con = duckdb.connect(str(foreign), read_only=True)
    assert [t for (t,) in con.execute("SHOW TABLES").fetchall()] == ["sales"]
    con.close()


def test_report_on_a_sqlite_file_never_reaches_for_an_extension(tmp_path):
    """Old: DuckDB tried to download its sqlite extension to read the file."""
    path = tmp_path / "results.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    line = _one_error(cli.invoke(app, ["bench", "report", str(path), "--out", str(tmp_path / "r")]))
    assert "not an iqaguard store" in line and "SQLite" in line


def test_two_image_correlation_is_neither_shown_as_ranked_nor_compared_on_other_images(tmp_path):
    """Old: the adaptive leaderboard ranked an SROCC of -1.000 from 2 images against a 165-row baseline."""
    from iqaguard.bench import stats

    spec = toy_spec(datasets=[{"name": "toy", "kwargs": {"n": 12}, "mode_limits": {"adaptive": 2}}],
                    attacks=[{"name": "toy-step", "presets": ["weak"]}],
                    defenses=[{"name": "jpeg", "presets": [2]}])
    run(spec, tmp_path / "s.duckdb")
    board = {r["defense"]: r for r in stats.leaderboard(tmp_path / "s.duckdb", "adaptive")}
    assert {r["n"] for r in board.values()} == {2}  # the baseline too: the same two images
    assert all(r["rank"] is None for r in board.values())
    full = {r["defense"]: r for r in stats.leaderboard(tmp_path / "s.duckdb", "non-adaptive")}
    assert {r["n"] for r in full.values()} == {12} and all(r["rank"] is not None for r in full.values())


# ------------------------------------------------------------------ tracebacks -> one line naming the fix
def test_cuda_on_a_cpu_build(tmp_path):
    """Old: torch's 'Torch not compiled with CUDA enabled' traceback."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = _one_error(cli.invoke(app, ["score", str(_png(tmp_path / "a.png")), "--device", "cuda"]))
    assert "no CUDA" in line and "device='cpu'" in line


def test_float64_input():
    """Old: a dtype mismatch deep inside conv2d."""
    m = iqaguard.metrics.create("builtin-nr")
    with pytest.raises(InputError, match=r"float64.*x\.float\(\)"):
        m(torch.rand(1, 3, 64, 64, dtype=torch.float64))


def test_binary_file_as_a_spec(tmp_path):
    """Old: a UnicodeDecodeError traceback."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(bytes(range(256)))
    line = _one_error(cli.invoke(app, ["bench", "run", str(spec), "--store", str(tmp_path / "s.duckdb")]))
    assert "spec.yaml" in line and "not a text" in line.lower()


def test_yaml_error_keeps_its_bracketed_excerpt(tmp_path):
    """Old: rich markup ate the text inside square brackets of the YAML excerpt."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: x\nmetrics: [builtin-nr\ndatasets: [builtin-kadid]\n")
    result = cli.invoke(app, ["bench", "run", str(spec), "--store", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    assert "[builtin-nr" in result.stderr + result.stdout


def test_user_text_with_brackets_is_printed_verbatim(tmp_path):
    """Old: the pyiqa hint printed `pip install "iqaguard"` (markup ate "[pyiqa]")."""
    line = _one_error(cli.invoke(app, ["score", str(_png(tmp_path / "a.png")), "--metric", "nope[pyiqa]"]))
    assert "nope[pyiqa]" in line


def test_unknown_dataset_kwarg_in_a_spec(tmp_path):
    """Old: a TypeError from the loader's constructor, raised inside the first task."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: x\nmetrics: [builtin-nr]\nattacks: [ifgsm]\n"
                    "datasets:\n  - name: builtin-kadid\n    kwargs: {splt: test}\n")
    result = cli.invoke(app, ["bench", "run", str(spec), "--store", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    err = result.stderr  # a spec error lists each problem on its own line under one error: line
    assert _errors(result)[0].startswith("error: invalid benchmark spec") and "splt" in err and "split" in err


def test_text_file_as_a_store(tmp_path):
    """Old: DuckDB's own 'not a valid DuckDB database file' traceback."""
    path = tmp_path / "notes.duckdb"
    path.write_text("hello\n")
    line = _one_error(cli.invoke(app, ["bench", "report", str(path), "--out", str(tmp_path / "r")]))
    assert "not an iqaguard store" in line and "not a DuckDB database" in line


def test_locked_store_names_the_pid_and_readers_take_a_snapshot(tmp_path, caplog):
    """Old: DuckDB's lock traceback for writers and readers alike."""
    store = tmp_path / "s.duckdb"
    run(toy_spec(defenses=[{"name": "jpeg", "presets": [2]}], attacks=[{"name": "toy-step", "presets": ["weak"]}],
                 modes=["non-adaptive"]), store)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from iqaguard.bench.store import Store
        s = Store({str(store)!r})
        print("open", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        spec = tmp_path / "spec.yaml"
        spec.write_text(json.dumps(toy_spec()))
        line = _one_error(cli.invoke(app, ["bench", "run", str(spec), "--store", str(store)]))
        assert f"PID {holder.pid}" in line and "another --store" in line
        out = cli.invoke(app, ["bench", "export", str(store), "--out", str(tmp_path / "rows.csv")])
        assert out.exit_code == 0, out.stderr
        assert f"reading a snapshot: a run (PID {holder.pid}) is writing this store" in caplog.text
        assert (tmp_path / "rows.csv").read_text().count("\n") > 1
    finally:
        holder.kill()
        holder.wait()


def test_ray_address_auto_without_a_cluster(monkeypatch):
    """Old: Ray's ConnectionError traceback."""
    import ray

    from iqaguard.bench.executors import make_executor

    def no_cluster(*args, **kwargs):  # what ray 2.60 raises for address="auto" with no cluster
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(InputError, match=r"no Ray cluster at 'auto': start one with `ray start --head`"):
        list(make_executor("ray", address="auto").map(lambda t: t, [1]))


def test_builtin_fr_on_a_too_small_image(tmp_path):
    """Old: a conv2d 'kernel size can't be greater than actual input size' traceback."""
    a, b = _png(tmp_path / "a.png", 16, 16, 1), _png(tmp_path / "b.png", 16, 16, 2)
    line = _one_error(cli.invoke(app, ["score", str(a), "--metric", "builtin-fr", "--ref", str(b)]))
    assert "builtin-fr" in line and "32" in line


def test_directory_given_as_an_image_is_not_called_missing(tmp_path):
    """Old: 'image file not found' for a folder that exists."""
    (tmp_path / "shots").mkdir()
    line = _one_error(cli.invoke(app, ["score", str(tmp_path / "shots")]))
    assert "directory" in line and "not found" not in line


# ------------------------------------------------------------------ benchmarks that keep going
def _bad_folder(root: Path) -> Path:
    root.mkdir()
    for i in range(4):
        _png(root / f"good{i}.png", 16, 16, i)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.mark.parametrize("strict, code", [(False, 0), (True, 1)])
def test_folder_run_skips_a_bad_image_and_exits_nonzero_only_when_strict(tmp_path, strict, code):
    """Old: the unreadable file aborted the whole run (TaskError) with no row for the good images."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"version": "p", "imports": [THIS_FILE], "metrics": ["toy-nr"],
                                "datasets": [{"name": "folder", "kwargs": {"root": str(_bad_folder(tmp_path / "i"))}}],
                                "attacks": [{"name": "toy-step", "presets": ["weak"]}],
                                "defenses": [{"name": "jpeg", "presets": [2]}], "modes": ["non-adaptive"]}))
    store = tmp_path / "s.duckdb"
    result = cli.invoke(app, ["bench", "run", str(spec), "--store", str(store), "--workers", "1"]
                        + (["--strict"] if strict else []))
    assert result.exit_code == code, result.stderr
    assert "1 image(s) skipped" in result.stderr and "broken.png" in result.stderr
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT COUNT(DISTINCT image) FROM results").fetchone()[0] == 4
    assert con.execute("SELECT image FROM skipped").fetchall() == [("broken.png",)]
    con.close()


def test_score_keeps_going_past_a_bad_file(tmp_path):
    """Old: `iqaguard score a.png bad.png b.jpg` printed nothing for the good files."""
    a, b = _png(tmp_path / "a.png", seed=1), tmp_path / "b.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(b)
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = cli.invoke(app, ["score", str(a), str(tmp_path / "bad.png"), str(b)])
    assert result.exit_code == 1
    assert "a.png" in result.stdout and "b.jpg" in result.stdout
    assert len(_errors(result)) == 1 and "bad.png" in _errors(result)[0]


# ------------------------------------------------------------------ process hygiene
def test_a_killed_run_is_shown_interrupted_on_the_next_open(tmp_path):
    """Old: a SIGKILLed run stayed `running` in the runs table forever."""
    from iqaguard.bench.store import Store

    code = (f"from iqaguard.bench.store import Store; s = Store({str(tmp_path / 's.duckdb')!r}); "
            "s.log_run({'run_id': 'dead', 'status': 'running', 'spec_version': 'x'}); import os; os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9  # dies without closing the store
    with Store(tmp_path / "s.duckdb") as s:
        assert s.query("SELECT status FROM runs WHERE run_id = 'dead'") == [("interrupted",)]


def test_progress_is_printed_when_stderr_is_not_a_terminal(tmp_path):
    """Old: rich's progress bar printed nothing to a pipe: minutes of silence in CI logs."""
    from iqaguard.bench.runner import run_spec
    from iqaguard.bench.spec import Spec

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    run_spec(Spec.model_validate(toy_spec()), tmp_path / "s.duckdb", console=console)
    text = buf.getvalue()
    assert re.search(r"clean scores \d+/\d+ \(100%\), elapsed \d+:\d\d:\d\d", text), text
    assert re.search(r"attacks \d+/\d+ \(100%\)", text) and "screening images of toy" in text


# ------------------------------------------------------------------ docs for a user of the package
def test_user_facing_text_cites_papers_by_title_and_has_no_outside_paths():
    """Old: README/docs/messages cited 'seed 002' and pointed to ../shared/."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "src" / "iqaguard").rglob("*.py")), *sorted((ROOT / "src" / "iqaguard").rglob("*.md")),
             *sorted((ROOT / "src" / "iqaguard").rglob("*.j2")), *sorted((ROOT / "src" / "iqaguard").rglob("*.yaml"))]
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files
           for m in re.finditer(r"seed 00\d|\.\./shared", p.read_text(encoding="utf-8"))]
    assert not bad, bad
