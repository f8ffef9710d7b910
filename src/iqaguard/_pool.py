"""Worker-process pools that stop when asked: shared by the benchmark executor and dataset generation.

``ProcessPoolExecutor.shutdown`` lets running tasks finish and, on SIGTERM to the parent, leaves
its workers orphaned. :func:`stop_pool` terminates them instead (SIGTERM, then SIGKILL after
:data:`STOP_GRACE_S`); :func:`ignore_sigint` is the pool initializer that leaves Ctrl-C to the
parent process (without it every worker prints its own ``KeyboardInterrupt`` traceback).
"""
from __future__ import annotations

import signal
import time
from concurrent.futures import ProcessPoolExecutor

#: seconds a terminated worker gets to exit before it is killed
STOP_GRACE_S = 5.0


def ignore_sigint() -> None:
    """Pool initializer: workers ignore SIGINT; the parent handles Ctrl-C and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued tasks of ``pool`` and terminate its worker processes now."""
    procs = list((pool._processes or {}).values())  # ProcessPoolExecutor has no public handle before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join(STOP_GRACE_S)
        # the pool's own management thread may reap the process at the same time (it notices the
        # broken pool); join() then returns before the shared returncode is set, so wait for it
        deadline = time.monotonic() + STOP_GRACE_S
        while proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
