"""Acceptance: the Ray executor (local 2-CPU cluster) and the local executor give identical rows."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


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
    assert toys.assert_same_results(tmp_path / "local.duckdb", tmp_path / "ray.duckdb") == 6 * 3 * 4 + 6 * 3 * 3
    ex.close()  # the executor did not start this Ray session, so it leaves it running
    assert ray_cluster.is_initialized()
