"""Where per-exposure work runs: a local process pool or a Dask cluster.

Both backends map a picklable function over picklable tasks and yield results
as they finish, in completion order, so callers can record each unit of work as
soon as it is done (a killed run then loses at most the units in flight).

Local workers are fresh processes (``spawn``): libraries with OpenMP or thread
pools are never forked mid-flight. On Dask, every worker process runs the same
hstred version; `hstred run --scheduler tcp://host:8786` connects to a cluster
started by ``dask scheduler`` / ``dask worker`` or dask-jobqueue.

When a unit fails, the units already running finish and are yielded (so the caller
records them) before the failure is raised; locally, units not yet started are
cancelled (a Dask client cannot tell queued tasks from running ones: all finish).
Local worker processes, and every process forked below this one (AstroDrizzle's
parallel steps), die with the process that started them (Linux ``PR_SET_PDEATHSIG``):
a killed run leaves no orphan writing files. Local workers log to the run's log file.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from hstred.errors import InputError, RunEnvironmentError

__all__ = ["ExecutionConfig", "Backend", "LocalBackend", "DaskBackend", "make_backend",
           "bind_children_to_process", "run_in_child", "forwarded_queue"]

_PR_SET_PDEATHSIG = 1
_bound = False


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent ends (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: children may outlive us
        pass


def bind_children_to_process() -> None:
    """Every process forked from now on by this process (and by its children) is killed
    when its parent ends."""
    global _bound
    if not _bound:
        os.register_at_fork(after_in_child=_die_with_parent)
        _bound = True


def _log_files() -> list[str]:
    return [h.baseFilename for h in logging.getLogger().handlers
            if isinstance(h, logging.FileHandler)]


def _init_worker(parent_pid: int, log_files: Sequence[str]) -> None:
    """Start of a local worker process: die with the run, log into the run's log."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the run ended before this worker started
        os._exit(1)
    bind_children_to_process()
    root = logging.getLogger()
    for path in log_files:
        if not Path(path).parent.is_dir():
            continue  # the log of a command that is over (its directory removed)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s"))
        root.addHandler(handler)
    if log_files:
        root.setLevel(logging.INFO)


def run_in_child(func: Callable, *args):
    """``func(*args)`` in a fresh local process (``spawn``), its result or exception
    returned here; the process dies with the run and logs into its log.

    For long calls into C code that holds the GIL (AstroDrizzle's final drizzle): this
    process stays responsive (its progress display keeps moving) and does not hold the
    call's memory. The child is not a daemon, so the call may start processes itself.
    """
    bind_children_to_process()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker,
                             initargs=(os.getpid(), _log_files())) as pool:
        return pool.submit(func, *args).result()


@contextlib.contextmanager
def forwarded_queue(callback: Callable | None) -> Iterator:
    """A queue local worker processes may put tuples on; a thread here calls
    ``callback(*item)`` for each, in order. Yields None (nothing to report to) without a
    callback. The queue's server process dies with the run."""
    if callback is None:
        yield None
        return
    import threading
    from multiprocessing.managers import SyncManager

    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    manager.start(initializer=_die_with_parent)
    try:
        queue = manager.Queue()

        def forward() -> None:
            for item in iter(queue.get, None):
                callback(*item)

        reader = threading.Thread(target=forward, name="worker-reports", daemon=True)
        reader.start()
        try:
            yield queue
        finally:
            queue.put(None)
            reader.join(timeout=10)
    finally:
        manager.shutdown()


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run executes, never what it produces (so in no cache key and not replayed
    by ``--config``): ``workers`` local processes (None: one per core) or the Dask
    ``scheduler`` at an address. The one place the worker settings live."""

    workers: int | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool)
                                         or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise InputError(f"--workers must be a positive integer, not {self.workers!r}")


class Backend:
    """Maps work over tasks; ``slots`` is how many tasks run at once."""

    slots: int = 1

    @property
    def local_cores(self) -> int:
        """Processes AstroDrizzle's parallel steps may use; they run on this machine."""
        return os.cpu_count() or 1

    def check(self) -> None:
        """Raise :class:`RunEnvironmentError` when the backend cannot run work."""

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        raise NotImplementedError

    def call(self, func: Callable, *args):
        """``func(*args)`` once, away from this process (:func:`run_in_child`; within
        :meth:`shared_pool`, in one of the shared processes)."""
        return run_in_child(func, *args)

    @contextlib.contextmanager
    def shared_pool(self) -> Iterator[None]:
        """Within the block, callers in several threads share the backend's slots (a
        local backend keeps one pool of processes for all of them)."""
        yield

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class LocalBackend(Backend):
    """``workers`` processes on this machine, started by this one, which runs no task."""

    workers: int = 1
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False,
                                              compare=False)

    @property
    def slots(self) -> int:  # type: ignore[override]
        return self.workers

    @property
    def local_cores(self) -> int:
        return self.workers

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        bind_children_to_process()
        return ProcessPoolExecutor(max_workers=workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(os.getpid(), _log_files()))

    @contextlib.contextmanager
    def shared_pool(self) -> Iterator[None]:
        if self._pool is not None:
            yield
            return
        self._pool = self._new_pool(self.workers)
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def call(self, func: Callable, *args):
        if self._pool is not None:
            return self._pool.submit(func, *args).result()
        return run_in_child(func, *args)

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        # One worker, or one task, still runs in a child: this process holds no task's
        # memory (a visit drizzle, a calibration), whatever the worker count.
        if not tasks:
            return
        shared = self._pool
        pool = shared or self._new_pool(min(self.workers, len(tasks)))
        futures: list = []
        try:
            futures = [pool.submit(func, task) for task in tasks]
            failure: BaseException | None = None
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    yield future.result()
                elif failure is None:
                    failure = error
                    for other in futures:  # what has not started will not
                        other.cancel()
            if failure is not None:
                raise failure
        finally:
            if shared is None:
                pool.shutdown(wait=True, cancel_futures=True)
            else:  # the pool serves others: only this call's tasks go
                for future in futures:
                    future.cancel()

    def describe(self) -> str:
        return f"local ({self.workers} worker process{'es' if self.workers > 1 else ''})"


_CONNECT_TIMEOUT_S = 10


@dataclass
class DaskBackend(Backend):
    """A Dask distributed cluster at ``address`` (or an existing ``client``)."""

    address: str | None = None
    client: object | None = None

    def _client(self):
        if self.client is None:
            self.check()
            from distributed import Client

            try:
                self.client = Client(self.address, timeout=_CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as err:
                raise self._unreachable(str(err)) from err
        return self.client

    def _unreachable(self, why: str) -> RunEnvironmentError:
        return RunEnvironmentError(f"--scheduler {self.address}: no Dask scheduler answered "
                                   f"({why}); start one ('dask scheduler') and its workers, "
                                   "fix the address, or leave out --scheduler to run locally")

    def check(self) -> None:
        """Raise :class:`RunEnvironmentError` at once when nothing listens at the address."""
        if self.client is not None or self.address is None:
            return
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(self.address if "://" in self.address else f"tcp://{self.address}")
        try:
            host, port = parts.hostname, parts.port or 8786
        except ValueError as err:
            raise self._unreachable(str(err)) from err
        if parts.scheme not in ("tcp", "tls") or not host:
            raise self._unreachable("not a tcp://HOST:PORT or tls://HOST:PORT address")
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise self._unreachable(err.strerror or str(err)) from err

    @property
    def slots(self) -> int:  # type: ignore[override]
        info = self._client().scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def imap_unordered(self, func: Callable, tasks: Sequence) -> Iterator:
        from distributed import as_completed as dask_completed

        client = self._client()
        # pure=False: a task's result depends on files, not only on its arguments.
        futures = client.map(func, list(tasks), pure=False)
        failure: BaseException | None = None
        try:
            for future in dask_completed(futures):
                if future.status == "cancelled":
                    continue
                if future.status == "error":
                    # the client cannot tell queued tasks from running ones: all finish
                    failure = failure or future.exception()
                    continue
                yield future.result()
        finally:
            client.cancel(futures)
        if failure is not None:
            raise failure

    def describe(self) -> str:
        return f"dask ({self.address or 'client'})"


def make_backend(config: ExecutionConfig | None = None) -> Backend:
    """A Dask backend for ``config.scheduler``, else a local pool of ``config.workers``
    processes (default: one per core)."""
    config = config or ExecutionConfig()
    if config.scheduler:
        return DaskBackend(address=config.scheduler)
    return LocalBackend(workers=config.workers or os.cpu_count() or 1)


