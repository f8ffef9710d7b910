"""Acceptance: the Ray executor (local 2-CPU cluster) and the local executor give identical rows."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

SCORE_COLUMNS = ("mos", "clean", "attacked", "defended_clean", "defended_attacked", "psnr", "ssim", "mse", "linf",
                 "bound_worst", "bound_best")
EXACT_COLUMNS = ("lower_better", "seed", "gen_seed", "spec_hash", "spec_version", "version")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_and_local_rows_identical(tmp_path, ray_cluster):
    from iqaguard.bench.executors.local import LocalExecutor
    from iqaguard.bench.executors.ray_exec import RayExecutor
    from iqaguard.bench.spec import load_plugins

    (toys,) = load_plugins([str(Path(__file__).with_name("test_runner.py"))])
    spec = toys.toy_spec()  # 6 images in batches of 4 + 2; randomized + BPDA defenses; both modes
    local = toys.run(spec, tmp_path / "local.duckdb", executor=LocalExecutor())
    ex = RayExecutor(max_in_flight=4)
    remote = toys.run(spec, tmp_path / "ray.duckdb", executor=ex)
    assert remote.tasks_run == local.tasks_run > 0
    a, b = toys.rows_by_key(tmp_path / "local.duckdb"), toys.rows_by_key(tmp_path / "ray.duckdb")
    assert len(a) == 6 * 3 * 4 + 6 * 3 * 3 and set(a) == set(b)
    for key, row in a.items():
        for c in SCORE_COLUMNS:
            assert row[c] == pytest.approx(b[key][c], abs=1e-6, nan_ok=True), (key, c)
        for c in EXACT_COLUMNS:
            assert row[c] == b[key][c], (key, c)
    ex.close()  # the executor did not start this Ray session, so it leaves it running
    assert ray_cluster.is_initialized()
    adv = sorted(p.relative_to(tmp_path / "ray_adv") for p in (tmp_path / "ray_adv").rglob("*.png"))
    assert adv == sorted(p.relative_to(tmp_path / "local_adv") for p in (tmp_path / "local_adv").rglob("*.png"))
    assert all((tmp_path / "ray_adv" / p).read_bytes() == (tmp_path / "local_adv" / p).read_bytes() for p in adv)
