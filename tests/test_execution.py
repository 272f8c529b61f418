"""Execution backends: a failing unit lets the units in flight finish and be recorded."""

from __future__ import annotations

import time

import pytest

from hstred.errors import RunEnvironmentError
from hstred.execution import DaskBackend, ExecutionConfig, LocalBackend, make_backend


def _unit(name: str) -> str:
    if name == "fails":
        time.sleep(0.3)
        raise ValueError("unit failed")
    time.sleep(3.0)
    return name


def test_units_in_flight_are_yielded_before_the_failure():
    finished = []
    with pytest.raises(ValueError, match="unit failed"):
        for name in LocalBackend(workers=2).imap_unordered(_unit, ["fails", "slow"]):
            finished.append(name)
    assert finished == ["slow"]


def test_missing_scheduler_is_reported_at_once():
    t0 = time.perf_counter()
    with pytest.raises(RunEnvironmentError, match=r"--scheduler tcp://127.0.0.1:1: no Dask "
                                                  r"scheduler answered"):
        DaskBackend(address="tcp://127.0.0.1:1").check()
    assert time.perf_counter() - t0 < 5


def test_execution_settings_live_in_one_config():
    """Workers and scheduler are one typed config, apart from the science options: the
    backend it makes sets the processes of AstroDrizzle's parallel steps too."""
    import dataclasses

    from hstred.calibrate import CalibrateConfig
    from hstred.drizzle import DrizzleConfig
    from hstred.errors import InputError

    backend = make_backend(ExecutionConfig(workers=3))
    assert isinstance(backend, LocalBackend) and backend.slots == backend.local_cores == 3
    assert isinstance(make_backend(ExecutionConfig(scheduler="tcp://127.0.0.1:9")), DaskBackend)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="--workers"):
            ExecutionConfig(workers=bad)
    science = {f.name for c in (CalibrateConfig, DrizzleConfig) for f in dataclasses.fields(c)}
    assert not science & {"workers", "num_cores", "scheduler"}


def _pid_after(seconds: float) -> int:
    import os

    time.sleep(seconds)
    return os.getpid()


def test_a_shared_pool_keeps_concurrent_callers_within_the_workers():
    """Two threads mapping tasks and making single calls at once, within
    ``shared_pool``, use the backend's two worker processes and no others."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    backend = LocalBackend(workers=2)
    with backend.shared_pool(), ThreadPoolExecutor(2) as threads:
        mapped = threads.submit(lambda: list(backend.imap_unordered(_pid_after, [0.5] * 4)))
        called = threads.submit(lambda: [backend.call(_pid_after, 0.5) for _ in range(3)])
        pids = set(mapped.result()) | set(called.result())
    assert len(pids) == 2 and os.getpid() not in pids
    assert backend._pool is None  # the pool went with the block


def test_one_worker_runs_every_task_in_a_child_process():
    """One worker, or one task, still runs away from this process: it holds no task's
    memory (a visit drizzle, a calibration)."""
    import os

    for workers, tasks in ((1, [0.0, 0.0, 0.0]), (2, [0.0])):
        pids = list(LocalBackend(workers=workers).imap_unordered(_pid_after, tasks))
        assert len(pids) == len(tasks) and os.getpid() not in pids, (workers, pids)
        assert len(set(pids)) == 1  # one process for them all
    assert list(LocalBackend(workers=1).imap_unordered(_pid_after, [])) == []
    # within shared_pool, one process serves every map and call of the block
    backend = LocalBackend(workers=1)
    with backend.shared_pool():
        pids = {*backend.imap_unordered(_pid_after, [0.0, 0.0]),
                *backend.imap_unordered(_pid_after, [0.0]), backend.call(_pid_after, 0.0)}
    assert len(pids) == 1 and os.getpid() not in pids
