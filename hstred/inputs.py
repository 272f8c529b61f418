"""Finding and checking the raw input files of a reduction."""

from __future__ import annotations

from pathlib import Path

from hstred.errors import InputError

__all__ = ["find_raw_files"]


def find_raw_files(data_dir: Path) -> list[Path]:
    """The ``*_raw.fits`` files in ``data_dir``, sorted by name.

    Raises :class:`InputError` when the directory does not exist or holds none.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such directory; pass --data DIR with the raw files")
    raws = sorted(data_dir.glob("*_raw.fits"))
    if not raws:
        raise InputError(f"{data_dir}: no *_raw.fits files found; put the archive's raw "
                         "files there or pass --data DIR")
    return raws
