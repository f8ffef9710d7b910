"""Every registered attack runs in the benchmark (spec -> tasks -> worker -> store) on NR and FR metrics.

Universal attacks (fitted once on a spec's ``fit`` images) are tested in
``test_bench_universal_transfer.py``.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import iqaguard
from iqaguard.attacks.universal import UniversalAttack
from iqaguard.bench.store import Store
from iqaguard.registry import ATTACKS

from test_runner import run, toy_spec

SMALL = {"steps": 2, "max_queries": 24, "epochs": 1, "population": 6,  # keep every attack cheap
         # FACPA ships a generator for builtin-nr only: on the toy metrics it runs as a transfer attack
         "weights": str(Path(iqaguard.__file__).parent / "attacks" / "weights" / "facpa-builtin-nr.safetensors")}


def _small_kwargs(factory) -> dict:
    params = inspect.signature(factory).parameters
    return {k: v for k, v in SMALL.items() if k in params}


PER_IMAGE = [n for n in ATTACKS.names()  # the package's own attacks (test modules register toys)
             if ATTACKS.get(n).__module__.startswith("iqaguard.") and not issubclass(ATTACKS.get(n), UniversalAttack)]


@pytest.mark.parametrize("name", PER_IMAGE)
def test_attack_runs_in_the_benchmark_on_nr_and_fr(tmp_path, name):
    factory = ATTACKS.get(name)
    spec = toy_spec(metrics=["toy-nr", "toy-fr"],
                    datasets=[{"name": "toy", "kwargs": {"n": 2, "fr": True}}],
                    attacks=[{"name": name, "presets": ["weak"], "kwargs": _small_kwargs(factory)}],
                    defenses=[{"name": "jpeg", "presets": [2]}], modes=["non-adaptive"], batch_size=2)
    summary = run(spec, tmp_path / "s.duckdb")
    assert summary.rows_written == 2 * 2 * 2  # 2 metrics x 2 images x (no defense, jpeg)
    with Store(tmp_path / "s.duckdb", read_only=True) as s:
        rows = s.df()
    assert {r["attack"] for r in rows} == {name} and all(r["attacked"] is not None for r in rows)

