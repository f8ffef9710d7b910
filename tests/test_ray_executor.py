"""Acceptance: the Ray executor (local 2-CPU cluster) and the local executor give identical rows."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


NO_CLUSTER = ("no Ray cluster at 'auto': start one with `ray start --head` or omit --address to start a local "
              "Ray instance")


def test_address_without_a_cluster_is_one_line(monkeypatch):
    """Old behaviour: Ray's ConnectionError (a traceback through the CLI)."""
    import ray

    from iqaguard.bench.executors import make_executor
    from iqaguard.errors import InputError

    def no_cluster(*args, **kwargs):  # what ray 2.60 raises for address="auto" with no cluster (0.6 s)
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    ex = make_executor("ray", address="auto")
    with pytest.raises(InputError) as e:
        list(ex.map(abs, [-1]))
    assert str(e.value) == NO_CLUSTER


def test_ray_init_leaves_the_callers_sigterm_handler(monkeypatch):
    """ray.init installs its own SIGTERM handler (sys.exit) in the driver; the runner's clean stop
    must survive it (old behaviour: SIGTERM exited a Ray run with status 15, the run "failed")."""
    import signal

    import ray

    from iqaguard.bench.executors.ray_exec import RayExecutor

    def like_ray_init(*args, **kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    def ours(signum, frame):
        raise AssertionError("not called")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", like_ray_init)
    old = signal.signal(signal.SIGTERM, ours)
    try:
        RayExecutor()._init()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, old)


def test_real_ray_init_without_a_cluster(tmp_path):
    import ray

    from iqaguard.bench.executors.ray_exec import RayExecutor
    from iqaguard.errors import InputError

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster may be running on this machine")
    with pytest.raises(InputError, match="no Ray cluster at 'auto'"):
        RayExecutor(address="auto")._init()
    assert not ray.is_initialized()


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
