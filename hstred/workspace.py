"""The data directory as a workspace shared by successive runs.

* one run at a time: a lock (``DIR/hstred_work/lock``, an advisory ``flock`` that the
  kernel releases when the holder ends, however it ends); a second run is refused with
  the holder's process id, command and start time;
* work areas per stage and OUTNAME (``DIR/hstred_work/calibrated``,
  ``DIR/hstred_work/drizzle/OUTNAME``), so a run never deletes another's work;
* leftovers of killed runs (staging directories, temporary files) removed at the next
  start, under the lock;
* free space checked before work, from the size of what the run will write.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from hstred.errors import DataDirBusyError, InputError, RunEnvironmentError
from hstred.fileio import TMP_SUFFIX, environment_error

__all__ = [
    "WORK_DIR_NAME",
    "STAGING_PREFIX",
    "work_dir",
    "calibrated_dir",
    "drizzle_work_dir",
    "existing_data_dir",
    "data_dir_lock",
    "remove_leftovers",
    "check_free_space",
    "format_bytes",
]

log = logging.getLogger(__name__)

WORK_DIR_NAME = "hstred_work"
#: Prefix of the hidden staging directories runs create beside the products.
STAGING_PREFIX = ".hstred-"

_HELD: dict[Path, list] = {}  # lock path -> [file descriptor, depth] held by this process


def work_dir(data_dir: Path) -> Path:
    return Path(data_dir) / WORK_DIR_NAME


def calibrated_dir(data_dir: Path) -> Path:
    """Where calibrated exposures go: ``DIR/hstred_work/calibrated``."""
    return work_dir(data_dir) / "calibrated"


def drizzle_work_dir(data_dir: Path, outname: str) -> Path:
    """The drizzle stage's working area of one OUTNAME: ``DIR/hstred_work/drizzle/OUTNAME``."""
    return work_dir(data_dir) / "drizzle" / outname


def existing_data_dir(data_dir: Path) -> Path:
    """``data_dir`` when it is an existing directory; :class:`InputError` otherwise
    (nothing is created)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "not a directory" if data_dir.exists() else "no such directory"
        raise InputError(f"{data_dir}: {what}; pass --data DIR with the input files")
    return data_dir


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"process {info.get('pid')} on {info.get('host')}, "
            f"'{info.get('command')}', since {info.get('started')}")


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``DIR/hstred_work/lock`` for the block (re-entrant within one process).

    Raises :class:`DataDirBusyError` naming the holder when another process holds it.
    """
    data_dir = existing_data_dir(data_dir)
    path = (work_dir(data_dir) / "lock").resolve()
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield path
        finally:
            _HELD[path][1] -= 1
        return
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise (environment_error(err) or err) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DataDirBusyError(f"{data_dir}: another hstred run is working in this directory "
                               f"({holder}); wait for it to end, or reduce a copy of the "
                               "inputs in another directory") from None
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": command or " ".join(["hstred", *sys.argv[1:]]), "started": started}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    _HELD[path] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD[path]
        os.close(fd)  # releases the lock


def remove_leftovers(data_dir: Path) -> list[Path]:
    """Remove what killed runs left behind: staging directories beside the products and
    temporary files of unfinished writes. Call only while holding the lock."""
    data_dir = Path(data_dir)
    found = [p for p in data_dir.glob(f"{STAGING_PREFIX}*") if p.is_dir()]
    # staging directories of earlier versions: .OUTNAME-staging-*, .OUTNAME-report-*
    found += [p for p in data_dir.glob(".*-staging-*") if p.is_dir()]
    found += [p for p in data_dir.glob(".*-report-*") if p.is_dir()]
    for directory in (data_dir, data_dir / "singles", work_dir(data_dir),
                      calibrated_dir(data_dir)):
        found += directory.glob(f".*{TMP_SUFFIX}")
    for directory in (work_dir(data_dir), calibrated_dir(data_dir)):
        found += directory.glob(".*.tmp")  # temporary files of earlier versions
    found += [p for p in calibrated_dir(data_dir).glob("calacs-*") if p.is_dir()]
    found = list(dict.fromkeys(found))
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted run", path)
    return found


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.1f} {unit}"
        n /= 1000.0
    raise AssertionError  # pragma: no cover


def check_free_space(directory: Path, need_bytes: float, *, what: str) -> None:
    """Raise :class:`RunEnvironmentError` unless the filesystem of ``directory`` has
    ``need_bytes`` free."""
    existing = Path(directory)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    log.info("%s: %s free, about %s needed for %s", existing, format_bytes(free),
             format_bytes(need_bytes), what)
    if free < need_bytes:
        raise RunEnvironmentError(f"{existing}: {format_bytes(free)} free but about "
                                  f"{format_bytes(need_bytes)} needed for {what}; free space "
                                  "there or pass --data a directory on a larger disk")
