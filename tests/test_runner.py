"""Benchmark engine with the local executor, and the toy plugins every engine test uses.

Importing this file registers tiny, fast plugins: metrics ``toy-nr`` / ``toy-fr``, dataset
``toy`` (16x16 images), attack ``toy-step`` (one signed-gradient step; logs each call to the file
named by ``$TOY_ATTACK_LOG``) and the randomized defense ``toy-noise``. Ray workers and
subprocesses get them through a spec's ``imports: [<this file>]``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import duckdb
import numpy as np
import pytest
import torch

import iqaguard.attacks.ifgsm
from iqaguard.attacks.base import Attack
from iqaguard.data.base import Dataset, Sample
from iqaguard.data.io import load_image
from iqaguard.defenses.base import Purification
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import ATTACKS, DATASETS, DEFENSES, METRICS

THIS_FILE = str(Path(__file__).resolve())


def _register(registry, name: str, obj):
    if name not in registry:  # this file may be imported twice (pytest + a spec's imports)
        registry.register(name)(obj)
    return obj


def _toy_conv() -> torch.Tensor:
    return torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)) / 3


class ToyNR(Metric):
    """Higher-better NR metric in (0, 1): sigmoid of the mean tanh response of a fixed conv."""

    kind, lower_better, bounds, name = "nr", False, Bounds(0.0, 1.0), "toy-nr"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", _toy_conv())

    def score(self, x, ref=None):
        return torch.sigmoid(4 * torch.tanh(torch.nn.functional.conv2d(x - 0.5, self.w)).mean(dim=(1, 2, 3)))

    def feature_map(self, x, ref=None):  # per-channel means of the tanh responses (FS-IQA tests)
        return torch.tanh(torch.nn.functional.conv2d(x - 0.5, self.w)).mean(dim=(2, 3))


class ToyFR(ToyNR):
    """Lower-better FR distance: mean absolute difference of the fixed conv responses."""

    kind, lower_better, bounds, name = "fr", True, Bounds(1.0, 0.0), "toy-fr"

    def score(self, x, ref=None):
        conv = torch.nn.functional.conv2d
        return (conv(x, self.w) - conv(ref, self.w)).abs().mean(dim=(1, 2, 3))

    def feature_map(self, x, ref=None):
        conv = torch.nn.functional.conv2d
        return (conv(x, self.w) - conv(ref, self.w)).abs().mean(dim=(2, 3))


@dataclass
class _ToySample(Sample):
    ref_loader: Optional[Callable[[], torch.Tensor]] = None

    @property
    def ref(self):
        return None if self.ref_loader is None else self.ref_loader()


def _toy_image(seed: int, i: int, size: int, noise: float = 0.0) -> torch.Tensor:
    rng = np.random.default_rng([seed, i])
    base = rng.uniform(0.2, 0.8, size=(3, 1, 1)) + 0.15 * rng.standard_normal((3, size, size))
    base += noise * np.random.default_rng([seed, i, 1]).standard_normal((3, size, size))
    return torch.from_numpy(np.round(np.clip(base, 0, 1) * 255) / 255).float().unsqueeze(0)


def toy_dataset(n: int = 6, size: int = 16, seed: int = 0, fr: bool = False) -> Dataset:
    """``n`` deterministic 8-bit images (distorted versions of references when ``fr``)."""
    samples = [_ToySample(name=f"img{i:02d}", mos=float(1 + (7 * i) % n), meta={},
                          loader=(lambda i=i: _toy_image(seed, i, size, 0.1 if fr else 0.0)),
                          ref_loader=(lambda i=i: _toy_image(seed, i, size)) if fr else None)
               for i in range(n)]
    ds = Dataset(samples)
    ds.name, ds.full_reference = "toy", fr
    return ds


class ToyStep(Attack):
    """One signed-gradient step of size ``eps`` (``zero`` is the identity); optional ``delay``."""

    restriction = "linf"
    presets = {"zero": {"eps": 0.0}, "weak": {"eps": 2 / 255}, "strong": {"eps": 8 / 255}}

    def __init__(self, eps: float = 2 / 255, delay: float = 0.0) -> None:
        pass  # the shared mechanism sets self.eps / self.delay

    def run(self, metric, x, ref, generator):
        log = os.environ.get("TOY_ATTACK_LOG")
        if log:
            with open(log, "a") as f:
                for img in x:
                    f.write(f"{metric.name} {self.preset} {float(img.sum()):.4f}\n")
        time.sleep(self.delay)
        x_adv = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.objective(metric, x_adv, ref).sum(), x_adv)
        return x + self.eps * grad.sign()


class ToyNoise(Purification):
    """Randomized, differentiable: adds uniform noise of amplitude ``amp`` from ``generator``."""

    differentiable, randomized = True, True
    presets = [{"amp": a} for a in (0.01, 0.02, 0.04, 0.08, 0.16)]
    defaults = {"amp": 0.02}

    def apply(self, x, generator=None):
        noise = torch.rand(x.shape, generator=generator, device=x.device) - 0.5
        return x + self.amp * noise


_register(METRICS, "toy-nr", ToyNR)
_register(METRICS, "toy-fr", ToyFR)
_register(DATASETS, "toy", toy_dataset)
_register(ATTACKS, "toy-step", ToyStep)
_register(DEFENSES, "toy-noise", ToyNoise)


def toy_spec(**over) -> dict:
    """A small grid: 6 toy images, toy-step weak/strong + ifgsm weak, jpeg 0/4 + toy-noise 1, both modes."""
    spec = {"version": "toy-1", "imports": [THIS_FILE], "metrics": ["toy-nr"],
            "datasets": [{"name": "toy", "kwargs": {"n": 6}}],
            "attacks": [{"name": "toy-step", "presets": ["weak", "strong"]}, {"name": "ifgsm", "presets": ["weak"],
                                                                                "kwargs": {"steps": 2}}],
            "defenses": [{"name": "jpeg", "presets": [0, 4]}, {"name": "toy-noise", "presets": [1]}],
            "modes": ["non-adaptive", "adaptive"], "seeds": [0], "batch_size": 4}
    spec.update(over)
    return spec


def rows_by_key(store_path) -> dict:
    """``{key tuple: row dict}`` of a store's results (read-only)."""
    from iqaguard.bench.store import KEY_COLUMNS, Store

    with Store(store_path) as s:
        return {tuple(r[k] for k in KEY_COLUMNS): r for r in s.df()}


SCORE_COLUMNS = ("mos", "clean", "attacked", "defended_clean", "defended_attacked", "psnr", "ssim", "mse", "linf",
                 "bound_worst", "bound_best")
EXACT_COLUMNS = ("lower_better", "seed", "gen_seed", "spec_hash", "spec_version", "version")


def assert_same_results(a_store: Path, b_store: Path) -> int:
    """Two stores of the same spec hold the same result rows (scores to 1e-6) and byte-identical
    adversarial PNGs (in ``<stem>_adv``); returns the number of rows."""
    a, b = rows_by_key(a_store), rows_by_key(b_store)
    assert set(a) == set(b)
    for key, row in a.items():
        for c in SCORE_COLUMNS:
            assert row[c] == pytest.approx(b[key][c], abs=1e-6, nan_ok=True), (key, c)
        for c in EXACT_COLUMNS:
            assert row[c] == b[key][c], (key, c)
    a_adv, b_adv = (s.with_name(s.stem + "_adv") for s in (a_store, b_store))
    pngs = sorted(p.relative_to(a_adv) for p in a_adv.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(b_adv) for p in b_adv.rglob("*.png"))
    assert all((a_adv / p).read_bytes() == (b_adv / p).read_bytes() for p in pngs)
    return len(a)


def run(spec: dict, store_path, executor=None):
    from iqaguard.bench.runner import run_spec
    from iqaguard.bench.spec import Spec

    return run_spec(Spec.model_validate(spec), store_path, executor=executor, progress=False)


# ----------------------------------------------------------------------------------------------


def test_full_grid_rows_schema_and_invariants(tmp_path):
    summary = run(toy_spec(), tmp_path / "s.duckdb")
    rows = rows_by_key(tmp_path / "s.duckdb")
    # non-adaptive: 6 images x 3 attack presets x (none + 3 defense presets); adaptive: 6 x 3 x 3
    assert len(rows) == 6 * 3 * 4 + 6 * 3 * 3 == summary.rows_written
    assert {(k[3], k[4]) for k in rows} == {("toy-step", "weak"), ("toy-step", "strong"), ("ifgsm", "weak")}
    assert {(k[5], k[6], k[7]) for k in rows} == {
        ("none", "-", "non-adaptive"), ("jpeg", "0", "non-adaptive"), ("jpeg", "4", "non-adaptive"),
        ("toy-noise", "1", "non-adaptive"), ("jpeg", "0", "adaptive"), ("jpeg", "4", "adaptive"),
        ("toy-noise", "1", "adaptive")}
    for k, r in rows.items():
        assert r["spec_version"] == "toy-1" and len(r["spec_hash"]) == 16 and r["version"]
        assert r["bound_worst"] == 0.0 and r["bound_best"] == 1.0 and r["lower_better"] is False
        if k[5] == "none":
            assert r["defended_attacked"] == r["attacked"] and r["defended_clean"] == r["clean"]
            assert r["t_defense"] == 0.0 and r["attacked"] > r["clean"]  # the attack improves the score
            eps = {"weak": 2 / 255, "strong": 8 / 255}[k[4]]
            assert r["linf"] <= eps + 0.5 / 255 + 1e-7
        assert (r["gen_seed"] is not None) == (k[5] == "toy-noise")
    # one attack computation per (attack, preset, image): every defense row shares its t_attack
    for k, r in rows.items():
        if k[7] == "non-adaptive":
            assert r["t_attack"] == rows[k[:5] + ("none", "-", "non-adaptive", 0)]["t_attack"]


def test_attack_runs_once_regardless_of_defense_count(tmp_path, monkeypatch):
    calls = []
    real = iqaguard.attacks.ifgsm.IFGSM.run
    monkeypatch.setattr(iqaguard.attacks.ifgsm.IFGSM, "run",
                        lambda self, m, x, ref, g: calls.append(x.shape[0]) or real(self, m, x, ref, g))
    grid = dict(attacks=[{"name": "ifgsm", "presets": ["weak", "strong"], "kwargs": {"steps": 2}}],
                modes=["non-adaptive"])
    run(toy_spec(defenses=[], **grid), tmp_path / "a.duckdb")
    assert sum(calls) == 6 * 2
    calls.clear()
    many = [{"name": "jpeg", "presets": "all"}, {"name": "toy-noise", "presets": "all"}]
    run(toy_spec(defenses=many, **grid), tmp_path / "b.duckdb")
    assert sum(calls) == 6 * 2  # 10 defense presets, still one attack per (preset, image)
    assert len(rows_by_key(tmp_path / "b.duckdb")) == 6 * 2 * 11


def test_resume_skips_done_tasks_and_new_defenses_reuse_png_cache(tmp_path, monkeypatch):
    log = tmp_path / "attacks.log"
    monkeypatch.setenv("TOY_ATTACK_LOG", str(log))
    base = dict(attacks=[{"name": "toy-step", "presets": ["weak", "strong"]}], modes=["non-adaptive"])
    store = tmp_path / "s.duckdb"
    run(toy_spec(defenses=[{"name": "jpeg", "presets": [0]}], **base), store)
    assert len(log.read_text().splitlines()) == 12
    first = rows_by_key(store)
    again = run(toy_spec(defenses=[{"name": "jpeg", "presets": [0]}], **base), store)
    assert again.tasks_run == 0 and again.tasks_skipped == again.tasks_total and rows_by_key(store) == first
    grown = toy_spec(defenses=[{"name": "jpeg", "presets": [0, 4]}, {"name": "toy-noise", "presets": [2]}], **base)
    summary = run(grown, store)
    assert len(log.read_text().splitlines()) == 12  # no attack recomputed: PNGs reused
    assert summary.attacks_reused == 4  # 2 presets x 2 batches
    resumed = rows_by_key(store)
    assert all(resumed[k] == v for k, v in first.items()) and len(resumed) == 6 * 2 * 4
    run(grown, tmp_path / "fresh.duckdb")
    fresh = rows_by_key(tmp_path / "fresh.duckdb")
    for k, r in fresh.items():  # the 8-bit cache gives the same numbers as an uninterrupted run
        for c in ("clean", "attacked", "defended_clean", "defended_attacked", "psnr", "ssim", "linf"):
            assert r[c] == pytest.approx(resumed[k][c], abs=1e-6), (k, c)


def test_png_cache_holds_the_scored_quantised_images(tmp_path):
    store = tmp_path / "s.duckdb"
    run(toy_spec(defenses=[], modes=["non-adaptive"], attacks=[{"name": "toy-step", "presets": ["strong"]}]), store)
    con = duckdb.connect(str(store), read_only=True)
    adv = con.execute("SELECT image, path FROM adversarial ORDER BY image").fetchall()
    linf = dict(con.execute("SELECT image, linf FROM results").fetchall())
    con.close()
    ds = toy_dataset(6)
    assert [a[0] for a in adv] == [f"img{i:02d}" for i in range(6)]
    for i, (name, rel) in enumerate(adv):
        assert rel == f"s0/toy/toy-nr/toy-step/strong/{name}.png"
        x_adv = load_image(tmp_path / "s_adv" / rel)
        assert float((x_adv - ds[i].image).abs().max()) == pytest.approx(linf[name], abs=1e-7)


def test_randomized_defense_shares_generator_between_clean_and_attacked(tmp_path):
    spec = toy_spec(attacks=[{"name": "toy-step", "presets": ["zero", "weak"]}], modes=["non-adaptive"],
                    defenses=[{"name": "toy-noise", "presets": [4]}])
    run(spec, tmp_path / "s.duckdb")
    rows = rows_by_key(tmp_path / "s.duckdb")
    zero = [r for k, r in rows.items() if k[4] == "zero" and k[5] == "toy-noise"]
    weak = [r for k, r in rows.items() if k[4] == "weak" and k[5] == "toy-noise"]
    assert len(zero) == 6
    # identity attack + the same noise draw for clean and attacked => identical defended scores
    assert all(r["defended_attacked"] == r["defended_clean"] and r["attacked"] == r["clean"] for r in zero)
    assert all(r["defended_attacked"] != r["defended_clean"] for r in weak)
    assert len({r["gen_seed"] for r in zero}) == 6  # one generator seed per image


def test_full_reference_metric_and_mode_limits(tmp_path):
    spec = toy_spec(metrics=["toy-fr"], datasets=[{"name": "toy", "kwargs": {"fr": True},
                                                   "mode_limits": {"adaptive": 2}}])
    run(spec, tmp_path / "s.duckdb")
    rows = rows_by_key(tmp_path / "s.duckdb")
    assert len(rows) == 6 * 3 * 4 + 2 * 3 * 3
    assert {k[1] for k in rows if k[7] == "adaptive"} == {"img00", "img01"}
    none = [r for k, r in rows.items() if k[5] == "none"]
    assert all(r["lower_better"] and r["attacked"] < r["clean"] for r in none)  # lower = better for FR


def test_metric_limit_caps_images_per_metric_and_combines_with_mode_limits(tmp_path):
    spec = toy_spec(metrics=["toy-nr", {"name": "toy-nr", "label": "toy-nr-small", "limit": 3}],
                    datasets=[{"name": "toy", "mode_limits": {"adaptive": 4}}])
    run(spec, tmp_path / "s.duckdb")
    rows = rows_by_key(tmp_path / "s.duckdb")
    images = lambda metric, mode: {k[1] for k in rows if k[2] == metric and k[7] == mode}  # noqa: E731
    assert images("toy-nr", "non-adaptive") == {f"img{i:02d}" for i in range(6)}
    assert images("toy-nr", "adaptive") == {f"img{i:02d}" for i in range(4)}
    assert images("toy-nr-small", "non-adaptive") == images("toy-nr-small", "adaptive") == {"img00", "img01", "img02"}


def test_fr_metric_on_nr_dataset_is_a_spec_error(tmp_path):
    from iqaguard.bench.spec import SpecError

    with pytest.raises(SpecError, match=r"metrics\[0\]\.name: 'toy-fr' is full-reference"):
        run(toy_spec(metrics=["toy-fr"]), tmp_path / "s.duckdb")


def test_cli_run_and_export(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from iqaguard.bench.cli import bench_app

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(toy_spec(modes=["non-adaptive"], defenses=[])))
    cli = CliRunner()
    res = cli.invoke(bench_app, ["run", str(spec_file), "--store", str(tmp_path / "s.duckdb"), "--quiet"])
    assert res.exit_code == 0, res.output
    for ext in ("parquet", "csv"):
        out = tmp_path / f"rows.{ext}"
        res = cli.invoke(bench_app, ["export", str(tmp_path / "s.duckdb"), "--out", str(out)])
        assert res.exit_code == 0, res.output
        n = duckdb.connect().execute(f"SELECT COUNT(*), COUNT(DISTINCT image) FROM '{out}'").fetchone()
        assert n == (6 * 3, 6)
    bad = cli.invoke(bench_app, ["export", str(tmp_path / "s.duckdb"), "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and ".parquet or .csv" in bad.output


def test_limits_on_a_kmeans_subset_keep_a_round_robin_prefix_and_psnr_is_finite(tmp_path):
    """A metric ``limit`` and ``mode_limits`` keep the first images of the KMeans selection, which is
    in round-robin cluster order: 3 images come from 3 different clusters. Unattacked rows (the
    zero attack) have identical images: their PSNR is the 58.92 dB floor, not +inf."""
    from iqaguard.data.sampling import cluster_labels, cluster_subset, sampling_features
    from iqaguard.metrics.functional import PSNR_BEST

    spec = toy_spec(metrics=["toy-nr", {"name": "toy-nr", "label": "small", "limit": 3}],
                    datasets=[{"name": "toy", "kwargs": {"n": 24},
                               "subset": {"method": "kmeans", "k_per_cluster": 2, "n_clusters": 4},
                               "mode_limits": {"adaptive": 2}}],
                    attacks=[{"name": "toy-step", "presets": ["zero"]}], defenses=[{"name": "jpeg", "presets": [0]}])
    store = tmp_path / "s.duckdb"
    run(spec, store)
    ds = toy_dataset(24)
    order = [ds[i].name for i in cluster_subset(ds, 2, n_clusters=4, seed=0)]
    labels = cluster_labels(sampling_features(ds), 4, seed=0)
    rows = rows_by_key(store)
    images = lambda metric, mode: {k[1] for k in rows if k[2] == metric and k[7] == mode}  # noqa: E731
    assert images("toy-nr", "non-adaptive") == set(order) and len(order) == 8
    assert images("small", "non-adaptive") == set(order[:3])
    assert images("toy-nr", "adaptive") == images("small", "adaptive") == set(order[:2])
    assert len({int(labels[[s.name for s in ds].index(n)]) for n in order[:3]}) == 3
    none = [r for k, r in rows.items() if k[5] == "none"]
    assert none and all(r["psnr"] == pytest.approx(PSNR_BEST, abs=1e-4) for r in none)
    with duckdb.connect(str(store), read_only=True) as con:
        worst = con.execute("SELECT max(psnr), avg(psnr), count(*) FILTER (WHERE isinf(psnr) OR isnan(psnr)) "
                            "FROM results").fetchone()
    assert worst[0] == pytest.approx(PSNR_BEST, abs=1e-4) and np.isfinite(worst[1]) and worst[2] == 0
