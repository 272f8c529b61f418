"""Every name hstred gives or reads: OUTNAME, filter, visit, and the paths of its products.

One place for each rule, so that the commands, the stages, the plan and the report agree.
"""

from __future__ import annotations

import re
from pathlib import Path

from hstred.errors import InputError

__all__ = ["check_outname", "filter_name", "visit_name", "product_paths", "single_paths",
           "run_record_path", "report_path", "report_files_dir", "SINGLES_DIR",
           "PRODUCT_KINDS", "product_kinds", "TILE_INDEX_SUFFIX", "tile_directory",
           "image_parts", "drizzle_destinations"]

_OUTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")

#: Subdirectory of the data directory holding the per-exposure drizzles (``--singles``).
SINGLES_DIR = "singles"
#: The images of every drizzled product: science (e-/s), weight, per-pixel noise (e-/s).
PRODUCT_KINDS = ("sci", "wht", "rms")
#: A product image kept in tiles (``--tiled-products``) is an index, ``..._drz_sci.json``,
#: beside the directory of its tile files, ``..._drz_sci/`` (:func:`tile_directory`).
TILE_INDEX_SUFFIX = ".json"


def check_outname(outname: str) -> str:
    """``outname`` when it is a plain file-name stem (letters, digits, ``_ . + -``, not
    starting with ``.`` or ``-``, at most 100 characters); :class:`InputError` otherwise."""
    if not isinstance(outname, str) or not _OUTNAME.fullmatch(outname):
        raise InputError(f"OUTNAME {outname!r} must be a plain file-name stem of letters, "
                         "digits, '_', '.', '+' or '-' (no spaces or '/'), e.g. ABELL1689")
    return outname


def filter_name(filter1: str, filter2: str) -> str:
    """The spectral element of an ACS/WFC exposure from FILTER1/FILTER2.

    CLEAR* (and empty/N/A) positions are ignored; two real elements are joined with ``-``.

    >>> filter_name("F606W", "CLEAR2L")
    'F606W'
    >>> filter_name("CLEAR1L", "F814W")
    'F814W'
    """
    names = []
    for value in (filter1, filter2):
        value = str(value or "").strip().upper()
        if value and not value.startswith("CLEAR") and value != "N/A":
            names.append(value)
    return "-".join(names)


def visit_name(rootname: str) -> str:
    """The visit of a rootname: its first six characters, lower case."""
    rootname = rootname.strip().lower()
    if len(rootname) < 9:
        raise ValueError(f"rootname {rootname!r} is shorter than the 9 characters of HST names")
    return rootname[:6]


def product_kinds(*, rms: bool) -> tuple[str, ...]:
    """The images a drizzle makes of each product: all, or all but the RMS image."""
    return tuple(kind for kind in PRODUCT_KINDS if rms or kind != "rms")


def _image_suffix(tiled: bool) -> str:
    return TILE_INDEX_SUFFIX if tiled else ".fits"


def product_paths(data_dir: Path, outname: str, filter_: str,
                  kinds: tuple[str, ...] = PRODUCT_KINDS, *, tiled: bool = False
                  ) -> tuple[Path, ...]:
    """Where the final science, weight and RMS images (``kinds``) of one filter go: FITS
    files, or with ``tiled`` the indexes of their tiles."""
    return tuple(Path(data_dir) / f"{outname}_{filter_}_drz_{kind}{_image_suffix(tiled)}"
                 for kind in kinds)


def single_paths(data_dir: Path, rootname: str, *, tiled: bool = False
                 ) -> tuple[Path, Path, Path]:
    """Where one exposure's science, weight and RMS images on the common grid go
    (``--singles``), as :func:`product_paths`."""
    return tuple(Path(data_dir) / SINGLES_DIR / f"{rootname}_drz_{kind}{_image_suffix(tiled)}"
                 for kind in PRODUCT_KINDS)


def tile_directory(index: Path) -> Path:
    """The directory of a tiled image's tile files: its index's name without ``.json``."""
    return Path(index).with_suffix("")


def image_parts(path: Path) -> tuple[Path, ...]:
    """What a product image is on disk: its FITS file, or its tile directory and index."""
    path = Path(path)
    return (tile_directory(path), path) if path.suffix == TILE_INDEX_SUFFIX else (path,)


def drizzle_destinations(data_dir: Path, outname: str, filters, rootnames=()
                         ) -> tuple[list[Path], list[Path]]:
    """Every path a drizzle of OUTNAME writes or replaces, in both layouts (a run in one
    removes the other's images of the same products): (files, directories), for the
    products of ``filters`` and the single images of ``rootnames``."""
    images = [p for tiled in (False, True) for f in filters
              for p in product_paths(data_dir, outname, f, tiled=tiled)]
    images += [p for tiled in (False, True) for r in rootnames
               for p in single_paths(data_dir, r, tiled=tiled)]
    directories = [tile_directory(p) for p in images if p.suffix == TILE_INDEX_SUFFIX]
    return images, directories


def run_record_path(data_dir: Path, outname: str) -> Path:
    return Path(data_dir) / f"{outname}_run.json"


def report_path(data_dir: Path, outname: str) -> Path:
    return Path(data_dir) / f"{outname}_report.html"


def report_files_dir(data_dir: Path, outname: str) -> Path:
    """The report's figures."""
    return Path(data_dir) / f"{outname}_report_files"
