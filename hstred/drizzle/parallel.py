"""AstroDrizzle's parallel steps without idle cores; the same results.

Two things leave a core idle in AstroDrizzle runs with ``num_cores`` > 1:

* drizzlepac starts its worker processes (separate drizzles, cosmic-ray
  identification) through ``stsci.tools.mputil.launch_and_wait``, which checks on
  them once a second: a process that ends is noticed, and the next one started,
  up to a second late. :func:`launch_and_wait` keeps the contract (at most
  ``pool_size`` running, every exit code checked) but wakes when a process ends.
* the blot step (``drizzlepac.ablot.run_blot``) blots one image after another in
  one process. Each image's blot reads only the median image and writes only that
  image's files, so :func:`parallel_steps` blots the images in separate processes,
  ``num_cores`` at a time, exactly as drizzlepac runs its separate drizzles.

:func:`parallel_steps` puts both in place for the duration of one AstroDrizzle
call and restores drizzlepac's own afterwards. Every pixel of every product is the
same as with the serial steps (tests/test_drizzle_parallel.py).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
from collections.abc import Iterator, Sequence
from multiprocessing.connection import wait

__all__ = ["launch_and_wait", "parallel_steps"]

_LOCK = threading.RLock()


def _flush_streams() -> None:
    # A forked child flushes what it inherited unwritten in these buffers when it
    # ends: flushing first keeps log lines from being written twice.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def launch_and_wait(processes: Sequence, pool_size: int) -> None:
    """Run unstarted ``multiprocessing.Process`` objects, at most ``pool_size`` at a
    time, starting the next as soon as one ends; block until all have ended.

    Raises RuntimeError (as ``stsci.tools.mputil.launch_and_wait`` does) when any
    exited with a non-zero code. Processes still running when the caller is
    interrupted are terminated.
    """
    pending = list(processes)
    running: list = []
    pool_size = max(1, int(pool_size))
    try:
        while pending or running:
            while pending and len(running) < pool_size:
                process = pending.pop(0)
                _flush_streams()
                process.start()
                running.append(process)
            ended = set(wait([p.sentinel for p in running]))
            for process in [p for p in running if p.sentinel in ended]:
                process.join()
                running.remove(process)
    except BaseException:
        for process in running:
            process.terminate()
            process.join()
        raise
    for process in processes:
        if process.exitcode != 0:
            raise RuntimeError(f"Problem during: {process.name}, exitcode: "
                               f"{process.exitcode}. Check log.")


def _parallel_blot(serial_run_blot, pool_size: int):
    """``drizzlepac.ablot.run_blot`` with one process per image, ``pool_size`` at a time."""

    def run_blot(imageObjectList, output_wcs, paramDict, **kwargs):  # noqa: N803 (drizzlepac's names)
        images = imageObjectList if isinstance(imageObjectList, list) else [imageObjectList]
        size = min(pool_size, len(images))
        # In-memory runs keep the blotted images in the parent's image objects.
        if size < 2 or any(img.inmemory for img in images):
            return serial_run_blot(imageObjectList, output_wcs, paramDict, **kwargs)
        context = multiprocessing.get_context("fork")
        processes = [context.Process(target=serial_run_blot, args=([img], output_wcs, paramDict),
                                     kwargs=kwargs, name=f"ablot.run_blot({img._filename})")
                     for img in images]
        launch_and_wait(processes, size)

    return run_blot


@contextlib.contextmanager
def parallel_steps(num_cores: int) -> Iterator[None]:
    """Within the block, AstroDrizzle wakes on ended worker processes and blots its
    images ``num_cores`` at a time (one at a time with ``num_cores`` 1)."""
    from drizzlepac import ablot
    from stsci.tools import mputil

    with _LOCK:
        saved = (mputil.launch_and_wait, ablot.run_blot)
        mputil.launch_and_wait = launch_and_wait
        if num_cores > 1:
            ablot.run_blot = _parallel_blot(saved[1], num_cores)
        try:
            yield
        finally:
            mputil.launch_and_wait, ablot.run_blot = saved
