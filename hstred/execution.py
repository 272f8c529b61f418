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

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

__all__ = ["Backend", "LocalBackend", "DaskBackend", "make_backend"]


class Backend:
    """Maps work over tasks; ``slots`` is how many tasks run at once."""

    slots: int = 1

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class LocalBackend(Backend):
    """``workers`` processes on this machine (1 = in this process)."""

    workers: int = 1

    @property
    def slots(self) -> int:  # type: ignore[override]
        return self.workers

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                yield func(task)
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                   mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = [pool.submit(func, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

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


def make_backend(*, workers: int | None = None, scheduler: str | None = None) -> Backend:
    """A Dask backend for ``scheduler``, else a local pool of ``workers`` (default: cores)."""
    if scheduler:
        return DaskBackend(address=scheduler)
    import os

    return LocalBackend(workers=workers or os.cpu_count() or 1)


