"""Local worker pools: one-off or kept for a whole run, warmed before use."""

from __future__ import annotations

import os
import sys

from hstred.execution import LocalBackend, _import_modules, make_backend


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_persistent_pool_serves_every_call_until_closed():
    with make_backend(workers=2) as backend:
        assert isinstance(backend, LocalBackend) and backend.persistent
        first = list(backend.imap_unordered(_pid_and_square, range(6)))
        second = list(backend.imap_unordered(_pid_and_square, range(6, 12)))
        assert sorted(v for _, v in first + second) == [x * x for x in range(12)]
        pids = {p for p, _ in first + second}
        assert os.getpid() not in pids and len(pids) <= 2  # the same two workers
    assert backend._pool is None  # closed on leaving the block


def test_one_off_pool_and_serial_backend():
    once = LocalBackend(workers=2)
    results = list(once.imap_unordered(_pid_and_square, [3, 4]))
    assert sorted(v for _, v in results) == [9, 16] and once._pool is None
    serial = LocalBackend(workers=1)
    assert list(serial.imap_unordered(_pid_and_square, [5])) == [(os.getpid(), 25)]


def test_warm_up_imports_quietly(capfd):
    """Warm-up imports run in the workers with their printing swallowed (drizzlepac binds
    a stdout log handler when imported)."""
    sys.modules.pop("this", None)
    _import_modules(("this",))  # 'this' prints the Zen of Python when first imported
    assert "this" in sys.modules
    out, err = capfd.readouterr()
    assert "Beautiful is better than ugly" not in out + err


def test_warm_pool_runs_tasks():
    with LocalBackend(workers=2, persistent=True) as backend:
        backend.warm(("colorsys",))
        assert sorted(v for _, v in backend.imap_unordered(_pid_and_square, [1, 2, 3])) == [
            1, 4, 9]
