"""Training-based defenses (adv-training, nt, robust-block): the shared loop, NT's penalty against
finite differences, determinism, save/reload with the architecture, and the benchmark training a
variant once and reusing it.

Importing this file registers ``toy-trainable`` (a small conv net with parameters) and
``toy-split`` (a dataset with train/val/test splits that logs every load to ``$TOY_SPLIT_LOG``).
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
import torch

import iqaguard
from iqaguard.data.base import Dataset
from iqaguard.errors import InputError, ScoreError
from iqaguard.metrics.base import Bounds, Metric
from iqaguard.registry import DATASETS, METRICS

THIS_FILE = str(Path(__file__).resolve())


class ToyTrainable(Metric):
    """Higher-better NR metric with trainable weights: mean of a conv + tanh + linear map."""

    kind, lower_better, bounds, name = "nr", False, Bounds(0.0, 5.0), "toy-trainable"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()
        self.out = torch.nn.Linear(4, 1)
        with torch.no_grad():
            self.out.weight.fill_(1.0)
            self.out.bias.fill_(2.5)

    def score(self, x, ref=None):
        return self.out(torch.tanh(self.conv(x - 0.5)).mean(dim=(2, 3))).squeeze(1)


def toy_split(split: str = "train", n: int = 8, size: int = 24) -> Dataset:
    log = os.environ.get("TOY_SPLIT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(split + "\n")
    from test_runner import _ToySample, _toy_image

    off = {"train": 0, "val": 100, "test": 200}[split]
    samples = [_ToySample(name=f"{split}{i:02d}", mos=float(1 + i % 5), meta={},
                          loader=(lambda i=i: _toy_image(off, i, size, 0.0)), ref_loader=None) for i in range(n)]
    ds = Dataset(samples)
    ds.name, ds.full_reference = "toy-split", False
    return ds


for _reg, _name, _obj in ((METRICS, "toy-trainable", ToyTrainable), (DATASETS, "toy-split", toy_split)):
    if _name not in _reg:
        _reg.register(_name)(_obj)

TINY = dict(dataset="toy-split", images=6, val_images=4, epochs=1, batch=2, patch=16)


# ---------------------------------------------------------------- the one loop
def test_fit_keeps_the_best_evaluated_state_and_stops_on_nan():
    from iqaguard.training import fit

    p = torch.nn.Parameter(torch.tensor([3.0]))
    net = torch.nn.Module()
    net.p = p
    opt = torch.optim.SGD([p], lr=0.25)
    # minimise (p - 1)^2; evaluation -|p - 2| is best near p = 2, passed on the way down
    res = fit(net, lambda s: (p - 1) ** 2, 8, opt, evaluate=lambda: -abs(float(p.detach()) - 2), eval_steps=set(range(1, 9)),
              eval_start=True)
    assert float(p.detach()) == pytest.approx(2.0)  # 3 -> 2 after one step (grad 4 * 0.25), kept
    assert res.best_step == 1 and len(res.curve) == 9
    with pytest.raises(ScoreError, match="step 1"):
        fit(net, lambda s: p * float("nan"), 3, opt)


# ---------------------------------------------------------------- NT
def _fd_penalty(metric, x, h=1e-4):
    """``(‖∇ₓ f / diam‖₁)²`` by central finite differences over every input value."""
    flat = x.clone().reshape(-1)
    g = torch.empty_like(flat)
    with torch.no_grad():  # finite differences need no graph
        for i in range(flat.numel()):
            e = torch.zeros_like(flat)
            e[i] = h
            g[i] = (metric.score((flat + e).view_as(x)) - metric.score((flat - e).view_as(x))).sum() / (2 * h)
    return float((g.abs().sum() / metric.bounds.diam) ** 2)


def test_nt_penalty_equals_finite_differences_and_its_weight_gradient_too():
    from iqaguard.defenses.trained.nt import gradient_penalty

    m = ToyTrainable().double()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pen = gradient_penalty(m, x, create_graph=False)
    assert float(pen) == pytest.approx(_fd_penalty(m, x), rel=1e-6)
    # double backpropagation: d penalty / d weight equals the finite difference of the penalty
    w = m.out.weight
    pen = gradient_penalty(m, x)
    (gw,) = torch.autograd.grad(pen, w)
    h = 1e-5
    with torch.no_grad():
        w[0, 1] += h
        up = float(gradient_penalty(m, x, create_graph=False))
        w[0, 1] -= 2 * h
        down = float(gradient_penalty(m, x, create_graph=False))
        w[0, 1] += h
    assert float(gw[0, 1]) == pytest.approx((up - down) / (2 * h), rel=1e-5)
    assert float(gw[0, 1]) != 0.0


def test_nt_training_is_deterministic_under_a_seed_and_changes_the_weights():
    base = ToyTrainable()
    a = iqaguard.defenses.create("nt", metric=base, cache=False, progress=False, **TINY)
    b = iqaguard.defenses.create("nt", metric=base, cache=False, progress=False, **TINY)
    c = iqaguard.defenses.create("nt", metric=base, cache=False, progress=False, seed=1, **TINY)
    sa, sb, sc = (d.inner.state_dict() for d in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not torch.equal(sa["conv.weight"], base.state_dict()["conv.weight"])  # base untouched, copy trained
    assert a.kind == "nr" and a.bounds == base.bounds and a.log["train_images"] == 6


def test_nt_lowers_the_input_gradient_norm():
    from iqaguard.defenses.trained.nt import gradient_penalty

    base = ToyTrainable()
    d = iqaguard.defenses.create("nt", metric=base, cache=False, progress=False, lam=1.0,
                                 **{**TINY, "epochs": 5, "lr": 1e-2})
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert float(gradient_penalty(d.inner, x, create_graph=False)) < 0.5 * float(gradient_penalty(base, x, create_graph=False))


def test_adv_training_attacks_the_loss_and_adjusts_the_mos(monkeypatch):
    from iqaguard.defenses.trained import adv_training

    seen = []
    real = adv_training.distance

    def spy(m, x, x_adv):
        seen.append(float((x_adv - x).abs().max()))
        return real(m, x, x_adv)

    monkeypatch.setattr(adv_training, "distance", spy)
    d = iqaguard.defenses.create("adv-training", metric=ToyTrainable(), preset=4, cache=False, progress=False, **TINY)
    assert d.recipe == {"fr": "ssim", "eps": 4 / 255, "steps": 2, "adjustment": "ssim"}
    assert seen and max(seen) <= 4 / 255 + 1e-6 and max(seen) > 0  # attacked within the budget
    assert d.log["adjustment_metric"] == "ssim"


def test_adv_training_lpips_offline_downloads_nothing_and_keys_the_stand_in(monkeypatch):
    """Downloads are opt-in: offline, LPIPS's missing weights are not fetched (no connection is
    attempted), builtin-fr stands in, and the stand-in is part of the cache key."""
    from conftest import no_network

    monkeypatch.delenv("IQAGUARD_ALLOW_DOWNLOAD", raising=False)
    attempts = no_network(monkeypatch)
    kw = {**TINY, "dataset_kwargs": {"size": 40}, "patch": 32}
    d = iqaguard.defenses.create("adv-training", metric=ToyTrainable(), preset=1, cache=False, progress=False, **kw)
    assert attempts == []
    assert d.recipe["adjustment"] == d.log["adjustment_metric"] == "builtin-fr" and "allow_download" not in d.recipe
    from iqaguard.defenses.trained import adv_training

    def installed(name, allow_download=None):  # as if LPIPS's weights were there
        m = iqaguard.metrics.create("ssim")
        m.name = "piq:lpips"
        return m

    monkeypatch.setattr(adv_training, "adjustment_metric", installed)
    real = iqaguard.defenses.create("adv-training", metric=ToyTrainable(), preset=1, cache=False, progress=False, **kw)
    assert real.recipe["adjustment"] == "piq:lpips" and real.key != d.key  # the stand-in's variant is not reused


def test_bad_recipe_arguments_are_one_line_errors():
    with pytest.raises(InputError, match="unknown argument"):
        iqaguard.defenses.create("nt", metric=ToyTrainable(), gamma=1, **TINY)
    with pytest.raises(InputError, match="lam"):
        iqaguard.defenses.create("nt", metric=ToyTrainable(), lam=-1, **TINY)
    with pytest.raises(InputError, match="preset"):
        iqaguard.defenses.create("adv-training", metric=ToyTrainable(), preset=9, **TINY)
    with pytest.raises(iqaguard.errors.DatasetError, match="split"):
        iqaguard.defenses.create("nt", metric=ToyTrainable(), dataset="toy", cache=False, progress=False)


# ---------------------------------------------------------------- cache and reload
def test_trained_variant_is_cached_and_reloads_with_identical_scores(tmp_path, monkeypatch):
    from iqaguard.defenses.trained.base import TrainedMetric

    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path))
    a = iqaguard.defenses.create("nt", metric=ToyTrainable(), progress=False, **TINY)
    assert a.path.is_file() and a.path.parent == tmp_path / "trained"

    def no_training(self, base):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(TrainedMetric, "run_recipe", no_training)
    b = iqaguard.defenses.create("nt", metric=ToyTrainable(), progress=False, **TINY)
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a(x), b(x))
    assert b.log["train_images"] == 6
    # another recipe parameter is another key
    monkeypatch.undo()
    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path))
    c = iqaguard.defenses.create("nt", metric=ToyTrainable(), progress=False, lam=0.001, **TINY)
    assert c.key != a.key


def test_checkpoint_round_trip_with_architecture_edits(tmp_path):
    """A builtin network with structural edits saves and reloads through metrics.create(weights=)."""
    from iqaguard.defenses.trained.pruning import prune
    from iqaguard.training import save_model

    m = iqaguard.metrics.create("builtin-nr")
    rec = prune(m.net, "l1", 0.1)
    cfg = {**m.config, "edits": [rec]}
    path = save_model(m.net, tmp_path / "pruned.safetensors", cfg)
    again = iqaguard.metrics.create("builtin-nr", weights=path)
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(5))
    assert torch.equal(m(x), again(x))
    plain = iqaguard.metrics.create("builtin-nr")
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in plain.parameters())


# ---------------------------------------------------------------- benchmark
def _nt_spec(version, modes):
    """A one-metric, one-attack spec with the tiny ``nt`` defense on the toy plugins."""
    from test_runner import THIS_FILE as RUNNER_FILE

    return {"version": version, "imports": [RUNNER_FILE, THIS_FILE], "metrics": ["toy-trainable"],
            "datasets": [{"name": "toy-split", "kwargs": {"split": "test", "n": 4}}],
            "attacks": [{"name": "ifgsm", "presets": ["weak"], "kwargs": {"steps": 2}}],
            "defenses": [{"name": "nt", "presets": [0], "kwargs": {**TINY, "progress": False}}],
            "modes": modes, "seeds": [0], "batch_size": 4}


def test_benchmark_trains_a_variant_once_and_reuses_it(tmp_path, monkeypatch):
    from test_runner import run

    log = tmp_path / "loads.txt"
    monkeypatch.setenv("TOY_SPLIT_LOG", str(log))
    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path / "cache"))
    spec = _nt_spec("trained-1", ["non-adaptive", "adaptive"])
    store = tmp_path / "t.duckdb"
    run(spec, store)
    trained = log.read_text().split().count("train")
    assert trained == 1  # one training (its train split loaded once), whatever the number of tasks
    con = duckdb.connect(str(store), read_only=True)
    rows = con.execute("SELECT mode, count(*), count(defended_attacked) FROM results WHERE defense = 'nt' "
                       "GROUP BY mode ORDER BY mode").fetchall()
    status = dict(con.execute("SELECT defense, status FROM defense_presets").fetchall())
    con.close()
    assert rows == [("adaptive", 4, 4), ("non-adaptive", 4, 4)] and status == {"nt": "ok"}
    assert run(spec, store).tasks_run == 0  # resume: nothing to do, nothing trained
    run(spec, tmp_path / "fresh.duckdb")  # a new store: the cached variant is reused
    assert log.read_text().split().count("train") == 1


def test_robust_block_recipe_reloads_with_its_architecture(tmp_path, monkeypatch):
    """RobustBlock + pruning on builtin-nr: the cached file reloads through the defense and through
    metrics.create("builtin-nr", weights=...) with identical scores."""
    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path))
    base = iqaguard.metrics.create("builtin-nr")
    kw = dict(dataset="toy-split", dataset_kwargs={"size": 96}, images=4, val_images=3, epochs=0.5, batch=2,
              patch=64, prune_samples=4, prune_epochs=0.5, progress=False)
    a = iqaguard.defenses.create("robust-block", metric=base, preset=0, **kw)
    ops = [e["op"] for e in a.log["edits"]]
    assert ops == ["robust-block", "prune"] and len(a.log["stages"]) == 2
    b = iqaguard.defenses.create("robust-block", metric=base, preset=0, **kw)  # from the cache
    c = iqaguard.metrics.create("builtin-nr", weights=a.path)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))
    assert not torch.equal(a(x), base(x))


def test_cli_train_trains_once_reports_and_copies(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from iqaguard.cli import app

    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path / "cache"))
    args = ["train", "--defense", "nt", "--metric", "toy-trainable", "--arg", "dataset=toy-split", "--arg", "images=6",
            "--arg", "val_images=4", "--arg", "epochs=1", "--arg", "batch=2", "--arg", "patch=16",
            "--arg", "progress=false", "--out", str(tmp_path / "nt.safetensors")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "validation SROCC" in res.output and (tmp_path / "nt.safetensors").is_file()
    bad = CliRunner().invoke(app, ["train", "--defense", "jpeg"])
    assert bad.exit_code != 0 and "not a trained defense" in bad.output and "Traceback" not in bad.output


def test_bench_validate_neither_trains_nor_times_trained_defenses(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import yaml
    from iqaguard.cli import app

    log = tmp_path / "loads.txt"
    monkeypatch.setenv("TOY_SPLIT_LOG", str(log))
    monkeypatch.setenv("IQAGUARD_CACHE", str(tmp_path / "cache"))
    spec = _nt_spec("trained-v", ["adaptive"])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    res = CliRunner().invoke(app, ["bench", "validate", str(path)])
    assert res.exit_code == 0, res.output
    assert "trained defenses: 1" in res.output and "estimated time" in res.output
    assert "train" not in (log.read_text().split() if log.exists() else [])
