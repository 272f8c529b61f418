"""Where per-exposure work runs: a local process pool or a Dask cluster.

Both backends map a picklable function over picklable tasks and yield results
as they finish, in completion order, so callers can record each unit of work as
soon as it is done (a killed run then loses at most the units in flight).

Local workers are fresh processes (``spawn``): libraries with OpenMP or thread
pools are never forked mid-flight. On Dask, every worker process runs the same
hstred version; `hstred run --scheduler tcp://host:8786` connects to a cluster
started by ``dask scheduler`` / ``dask worker`` or dask-jobqueue.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field

__all__ = ["Backend", "LocalBackend", "DaskBackend", "make_backend"]


class Backend:
    """Maps work over tasks; ``slots`` is how many tasks run at once."""

    slots: int = 1

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        raise NotImplementedError

    def warm(self, modules: Sequence[str]) -> None:
        """Let idle workers import ``modules`` ahead of the tasks that need them."""

    def close(self) -> None:
        """Release the workers (a backend that keeps none has nothing to do)."""

    def describe(self) -> str:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Where warm-up imports print (drizzlepac binds a stdout log handler when imported);
#: kept open for the life of the worker, never shown.
_WARM_OUTPUT = io.StringIO()


def _import_modules(modules: Sequence[str]) -> None:
    with contextlib.redirect_stdout(_WARM_OUTPUT), contextlib.redirect_stderr(_WARM_OUTPUT):
        for name in modules:
            importlib.import_module(name)


@dataclass
class LocalBackend(Backend):
    """``workers`` processes on this machine (1 = in this process).

    With ``persistent`` the worker processes are started once and serve every call
    until :meth:`close` (a whole ``hstred run``: no second start-up and import for the
    drizzle stage); otherwise each call starts and stops its own pool.
    """

    workers: int = 1
    persistent: bool = False
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False,
                                              compare=False)

    @property
    def slots(self) -> int:  # type: ignore[override]
        return self.workers

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                yield func(task)
            return
        if self.persistent:
            if self._pool is None:
                self._pool = self._new_pool(self.workers)
            pool = self._pool
        else:
            pool = self._new_pool(min(self.workers, len(tasks)))
        futures = [pool.submit(func, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            if pool is self._pool:
                for future in futures:
                    future.cancel()
                wait(futures)  # tasks already running finish before the pool is reused
            else:
                pool.shutdown(wait=True, cancel_futures=True)

    def warm(self, modules: Sequence[str]) -> None:
        if self.persistent and self.workers > 1:
            if self._pool is None:
                self._pool = self._new_pool(self.workers)
            for _ in range(self.workers):
                self._pool.submit(_import_modules, tuple(modules))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        return f"local ({self.workers} worker process{'es' if self.workers > 1 else ''})"


@dataclass
class DaskBackend(Backend):
    """A Dask distributed cluster at ``address`` (or an existing ``client``)."""

    address: str | None = None
    client: object | None = None

    def _client(self):
        if self.client is None:
            from distributed import Client

            self.client = Client(self.address)
        return self.client

    @property
    def slots(self) -> int:  # type: ignore[override]
        info = self._client().scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        from distributed import as_completed as dask_completed

        client = self._client()
        # pure=False: a task's result depends on files, not only on its arguments.
        futures = client.map(func, list(tasks), pure=False)
        try:
            for future in dask_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)

    def describe(self) -> str:
        return f"dask ({self.address or 'client'})"


def make_backend(*, workers: int | None = None, scheduler: str | None = None,
                 persistent: bool = True) -> Backend:
    """A Dask backend for ``scheduler``, else a local pool of ``workers`` (default: cores)
    kept for every call until ``close()`` (``persistent``)."""
    if scheduler:
        return DaskBackend(address=scheduler)
    import os

    return LocalBackend(workers=workers or os.cpu_count() or 1, persistent=persistent)


