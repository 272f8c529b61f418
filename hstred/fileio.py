"""Writing files so that no reader ever sees a partial one, and naming the machine's
failures (full disk, read-only or forbidden directories) for the user.

One rule for every file hstred writes: it is written under a temporary name in its
destination directory (``.NAME.XXXX.hstred-tmp``), made an ordinary readable file
(mode 0644), and renamed over the destination only when complete; on any failure the
temporary file is removed. Temporary files left by a killed run carry the
``.hstred-tmp`` suffix, so the next run in that directory can remove them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from hstred.errors import InputError, RunEnvironmentError

__all__ = [
    "TMP_SUFFIX",
    "FILE_MODE",
    "atomic_path",
    "atomic_write_text",
    "check_destinations",
    "publish_all",
    "environment_error",
]

TMP_SUFFIX = ".hstred-tmp"
FILE_MODE = 0o644

_SPACE = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS,)
_FORBIDDEN = (errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block
    ends without error, and is removed otherwise.

    ``fsync`` flushes the content to disk before the rename (for small records that must
    survive a crash of the machine, such as the manifest).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; products are ordinary files
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno is None and _disk_full(err):
            # numpy's and astropy's "Not enough (free) space" errors carry no errno (and
            # would lose their cause on the way back from a worker process): name the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _disk_full(err: BaseException) -> bool:
    """True when ``err`` or an exception in its chain says the disk is full."""
    cause = _cause_with_errno(err)
    if cause is not None:
        return cause.errno in _SPACE
    return "space" in str(err).lower()


def _cause_with_errno(err: BaseException) -> OSError | None:
    """The first exception in ``err``'s chain that is an OSError with an errno."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (mode 0644, flushed to disk)."""
    with atomic_path(path, fsync=True) as tmp:
        tmp.write_text(text)


def check_destinations(paths: Sequence[Path], *, directories: Sequence[Path] = ()) -> None:
    """Before any work: every product destination must be a regular file or absent, in a
    writable directory; ``directories`` must be directories or absent.

    Raises :class:`InputError` naming the first path in the way, and
    :class:`RunEnvironmentError` when a destination cannot be written.
    """
    for path in paths:
        path = Path(path)
        if path.exists() and not path.is_file():
            raise InputError(f"{path}: exists and is not a regular file, so the product cannot "
                             "be written there; remove or rename it, or choose another OUTNAME")
    for path in directories:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a directory; remove or rename it, or "
                             "choose another OUTNAME")
    for parent in sorted({Path(p).parent for p in [*paths, *directories]}):
        existing = parent
        while not existing.exists():
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunEnvironmentError(f"{existing}: not writable, so the products cannot be "
                                      "written there; make it writable or copy the inputs to "
                                      "a writable directory and pass --data DIR")


def publish_all(moves: Sequence[tuple[Path | None, Path]]) -> None:
    """Move finished files or directories (staged on the destinations' filesystem) into
    place, all or nothing: a destination that existed is set aside first, and if any move
    fails, the ones already moved are removed and the previous ones restored. A move from
    None removes its destination (a product this run no longer makes), restored likewise.
    """
    done: list[tuple[Path, Path | None]] = []  # (destination, its previous file set aside)
    try:
        for src, dst in moves:
            dst = Path(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            previous = None
            if dst.exists() or dst.is_symlink():
                beside = Path(src) if src is not None else dst
                previous = beside.with_name(f".{beside.name}.previous")
                os.replace(dst, previous)
            done.append((dst, previous))
            if src is not None:
                os.replace(src, dst)
    except BaseException:
        for dst, previous in reversed(done):
            with contextlib.suppress(OSError):
                if previous is not None and previous.exists():
                    _remove(dst)
                    os.replace(previous, dst)
                else:
                    _remove(dst)
        raise
    for _dst, previous in done:
        if previous is not None:
            _remove(previous)


def _remove(path: Path) -> None:
    """Remove a file, a link or a directory tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def environment_error(err: OSError, *, directory: Path | None = None
                      ) -> RunEnvironmentError | None:
    """The one-line :class:`RunEnvironmentError` for an ``OSError`` caused by the machine
    (full disk, read-only file system, permission denied), else None. ``directory`` is
    named when the error does not say which file it was writing."""
    err = _cause_with_errno(err) or err
    where = err.filename2 if err.errno in _SPACE and err.filename2 else err.filename
    where = where or directory
    where = f"{where}: " if where else ""
    if err.errno in _SPACE:
        return RunEnvironmentError(f"{where}no space left on the device; hstred removed its "
                                   "partial files: free some space there or pass --data a "
                                   "directory on a larger disk, then run again")
    if err.errno in _READ_ONLY:
        return RunEnvironmentError(f"{where}read-only file system; hstred writes its work "
                                   "files and products beside the inputs: copy the inputs to "
                                   "a writable directory and pass --data DIR")
    if err.errno in _FORBIDDEN:
        return RunEnvironmentError(f"{where}permission denied; make it readable (inputs) or "
                                   "writable (work files, products) for this user")
    return None
