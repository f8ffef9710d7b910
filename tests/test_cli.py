"""The iqaguard CLI: list, score, bench report errors, and the demo's per-preset tables."""
import math

import numpy as np
import torch
from rich.console import Console
from typer.testing import CliRunner

from iqaguard.bench.demo import preset_label, print_tables
from iqaguard.bench.store import Store
from iqaguard.cli import app
from iqaguard.data.io import save_png

runner = CliRunner()


def test_list_every_kind():
    # --names / -q keep the plain list of names, one per line
    out = runner.invoke(app, ["list", "metrics", "--names"])
    assert out.exit_code == 0 and {"builtin-nr", "psnr", "ssim", "ms-ssim"} <= set(out.stdout.split())
    assert "ifgsm" in runner.invoke(app, ["list", "attacks", "-q"]).stdout.split()
    assert "jpeg" in runner.invoke(app, ["list", "defenses", "--names"]).stdout.splitlines()
    assert "builtin-kadid" in runner.invoke(app, ["list", "datasets", "-q"]).stdout.splitlines()
    bad = runner.invoke(app, ["list", "metric"])
    assert bad.exit_code == 2 and "metrics" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_score_fr_metric_against_hand_value(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 24, 24, generator=g)
    ref = (ref * 255).round() / 255
    x = (ref + 8 / 255).clamp(0, 1)
    save_png(ref, tmp_path / "ref.png")
    save_png(x, tmp_path / "x.png")
    out = runner.invoke(app, ["score", str(tmp_path / "x.png"), "--metric", "psnr", "--ref", str(tmp_path / "ref.png")])
    assert out.exit_code == 0, out.stdout
    # PSNR over the RGB channels (MATLAB psnr, skimage): every sample differs by 8 levels
    # except where the +8 was clipped at 255
    d = ((x - ref) * 255).round()
    expected = 10 * math.log10(255 ** 2 / float((d ** 2).mean()))
    assert f"{expected:.4f}" in out.stdout


def test_score_errors_name_the_problem(tmp_path):
    # errors go to stderr (before: stdout, mixed with the score table)
    out = runner.invoke(app, ["score", str(tmp_path / "missing.png")])
    assert out.exit_code == 2 and "missing.png" in out.stderr and out.stdout == ""
    save_png(torch.zeros(1, 3, 8, 8), tmp_path / "a.png")
    out = runner.invoke(app, ["score", str(tmp_path / "a.png"), "--metric", "ssim"])
    assert out.exit_code == 2 and "--ref" in out.stderr
    out = runner.invoke(app, ["score", str(tmp_path / "a.png"), "--metric", "ssimm"])
    assert out.exit_code == 2 and "Did you mean" in out.stderr
    out = runner.invoke(app, ["bench", "report", str(tmp_path / "nope.duckdb")])
    assert out.exit_code == 2 and "nope.duckdb" in out.stderr
    # user text is printed without markup parsing: square brackets survive
    out = runner.invoke(app, ["score", str(tmp_path / "[draft] missing.png")])
    assert out.exit_code == 2 and "[draft] missing.png" in out.stderr


def test_preset_label_names_the_parameters():
    assert preset_label("jpeg", "4") == "jpeg preset 4 (q=10)"
    assert preset_label("none", "-") == "no defense"


def test_demo_tables_show_seed002_scores(tmp_path):
    clean = np.array([3.0, 3.5, 4.0, 2.0])
    adv = clean + np.array([1.0, 0.5, 0.2, 1.5])
    mos = np.array([2.0, 3.0, 4.0, 1.0])
    rows = []
    for i in range(4):
        base = dict(dataset="d", image=f"i{i}", metric="m", attack="ifgsm", attack_preset="weak", mode="non-adaptive",
                    mos=mos[i], clean=clean[i], attacked=adv[i], bound_worst=1.0, bound_best=5.0, lower_better=False,
                    psnr=40.0, ssim=0.99, mse=1e-4, linf=2 / 255, t_attack=0.1, seed=0)
        rows.append(dict(base, defense="none", defense_preset="-", defended_clean=clean[i], defended_attacked=adv[i],
                         t_defense=0.0))
        rows.append(dict(base, defense="jpeg", defense_preset="2", defended_clean=clean[i] - 0.1,
                         defended_attacked=clean[i] + 0.2, t_defense=0.004))
    with Store(tmp_path / "s.duckdb") as s:
        s.insert(rows)
    console = Console(record=True, width=250)
    print_tables(tmp_path / "s.duckdb", console)
    text = console.export_text()
    assert "no defense" in text and "jpeg preset 2 (q=50)" in text
    # D_score (Guardians of Image Quality eq. 6) = 100/n * sum |f(P(x')) - f(x)| / diam: 100 * 0.2 / 4 = 5.00 for jpeg;
    # undefended: 100 * mean(1, .5, .2, 1.5) / 4 = 20.00
    jpeg_part = text[text.index("jpeg preset 2"):]
    assert "5.00" in jpeg_part and "20.00" in text[:text.index("jpeg preset 2")]


def test_report_and_export_refuse_a_foreign_database_offline(tmp_path, monkeypatch):
    """A SQLite file is refused in one line, before DuckDB could try to fetch an extension."""
    import sqlite3

    from conftest import no_network

    attempts = no_network(monkeypatch)
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("create table t(a)")
    con.commit()
    con.close()
    before = path.read_bytes()
    for args in (["bench", "report", str(path), "--out", str(tmp_path / "rep")],
                 ["bench", "export", str(path), "--out", str(tmp_path / "rows.csv")]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and "not an iqaguard store" in out.output and "Traceback" not in out.output
    assert path.read_bytes() == before and attempts == []
