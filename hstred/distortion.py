"""The camera's geometric distortion, applied with stwcs from the exposure's references.

A raw ACS/WFC exposure, and so a calibrated one that calacs or hstred wrote, holds
only the telescope's linear TAN WCS. The distortion lives in three reference files
named in the primary header: IDCTAB (polynomials with time-dependent terms),
NPOLFILE (residual lookup tables) and D2IMFILE (column-width corrections).
``stwcs.updatewcs`` turns them into TAN-SIP keywords, ``WCSDVARR`` and ``D2IMARR``
extensions and the WCSNAME ``IDC_<idctab rootname>``; archive FLT/FLC files already
carry all of that. A linear-only WCS must never be drizzled: its non-linear error
reaches about 70 pixels at the corners of WFC1.

stwcs runs offline here (``use_db=False``: the other setting asks a web service for
catalog-aligned solutions) and finds the files through the ``jref`` environment
variable, pointed for the call at a private directory of links to the resolved files.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from hstred.errors import ReferenceFileError, StageError

__all__ = [
    "DISTORTION_KEYWORDS",
    "DistortionInfo",
    "distortion_reference_names",
    "has_distortion_solution",
    "describe_distortion",
    "apply_distortion",
    "update_wcs",
    "jref_directory",
    "quiet_stwcs",
]

#: Primary-header keywords naming the distortion references, in stwcs's order of use.
DISTORTION_KEYWORDS = ("IDCTAB", "NPOLFILE", "D2IMFILE")


def distortion_reference_names(header: fits.Header) -> dict[str, str | None]:
    """IDCTAB/NPOLFILE/D2IMFILE -> bare file name (None when absent or N/A)."""
    from hstred.refs.resolve import reference_file_name

    return {k: (reference_file_name(header[k]) if k in header else None)
            for k in DISTORTION_KEYWORDS}


def _sci_headers(hdul: fits.HDUList) -> list[fits.Header]:
    return [h.header for h in hdul if h.header.get("EXTNAME", "").strip().upper() == "SCI"]


def has_distortion_solution(hdul: fits.HDUList) -> bool:
    """True when every SCI header carries the full distortion its references describe.

    That is TAN-SIP keywords, plus the NPOL lookup tables (``CPDIS1``) when an
    NPOLFILE is named and the column-width table (``D2IMDIS1``) when a D2IMFILE is.
    """
    names = distortion_reference_names(hdul[0].header)
    scis = _sci_headers(hdul)
    if not scis:
        return False
    for h in scis:
        if not str(h.get("CTYPE1", "")).endswith("-SIP") or "A_ORDER" not in h:
            return False
        if names["NPOLFILE"] is not None and "CPDIS1" not in h:
            return False
        if names["D2IMFILE"] is not None and "D2IMDIS1" not in h:
            return False
    return True


@dataclass(frozen=True)
class DistortionInfo:
    """How an exposure's distortion was obtained (for headers and the run record)."""

    rootname: str
    wcsname: str
    applied: bool  # True: hstred ran stwcs; False: the file's own solution was used
    files: Mapping[str, str | None]

    def to_dict(self) -> dict:
        return {"rootname": self.rootname, "wcsname": self.wcsname, "applied": self.applied,
                "files": dict(self.files)}


def describe_distortion(path: Path, *, applied: bool) -> DistortionInfo:
    """The distortion solution a file carries now (WCSNAME of its first SCI header)."""
    with fits.open(path) as hdul:
        scis = _sci_headers(hdul)
        wcsname = str(scis[0].get("WCSNAME", "")).strip() if scis else ""
        return DistortionInfo(rootname=str(hdul[0].header.get("ROOTNAME", Path(path).stem)),
                              wcsname=wcsname, applied=applied,
                              files=distortion_reference_names(hdul[0].header))


@contextlib.contextmanager
def quiet_stwcs() -> Iterator[None]:
    """Silence stwcs's prints, INFO logging and astropy's header-fix warnings for a call."""
    names = ("stwcs", "stwcs.updatewcs", "stwcs.updatewcs.corrections",
             "stwcs.updatewcs.npol", "stwcs.updatewcs.det2im", "stwcs.wcsutil",
             "stsci.tools")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def jref_directory(directory: Path) -> Iterator[None]:
    """Point the ``jref`` environment variable at ``directory`` for one call."""
    saved = os.environ.get("jref")
    os.environ["jref"] = str(directory).rstrip("/") + "/"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("jref", None)
        else:
            os.environ["jref"] = saved


@contextlib.contextmanager
def _linked_references(references: Mapping[str, Path | None]) -> Iterator[Path]:
    """A private directory holding links named as the files, to the resolved files."""
    with tempfile.TemporaryDirectory(prefix="hstred-jref-") as tmp:
        for path in references.values():
            if path is not None:
                link = Path(tmp) / Path(path).name
                if not link.exists():
                    link.symlink_to(Path(path).resolve())
        yield Path(tmp)


def update_wcs(hdul: fits.HDUList, references: Mapping[str, Path | None]) -> None:
    """Run ``stwcs.updatewcs`` (offline) on an open HDUList with the given references.

    The primary header's IDCTAB/NPOLFILE/D2IMFILE are rewritten as ``jref$<name>`` of
    the resolved files (absent ones as N/A), so stwcs reads exactly those.
    """
    from stwcs import updatewcs

    primary = hdul[0].header
    for key in DISTORTION_KEYWORDS:
        path = references.get(key)
        primary[key] = f"jref${Path(path).name}" if path is not None else "N/A"
    with _linked_references(references) as directory, jref_directory(directory), \
            quiet_stwcs():
        updatewcs.updatewcs(hdul, use_db=False, checkfiles=False, verbose=False)


def apply_distortion(path: Path, references: Mapping[str, Path | None]) -> DistortionInfo:
    """Apply the distortion references to a working copy in place and check the result.

    Raises :class:`ReferenceFileError` when no IDCTAB is available and
    :class:`StageError` when stwcs leaves a SCI header without the expected solution.
    """
    path = Path(path)
    if references.get("IDCTAB") is None:
        raise ReferenceFileError(f"{path.name}: no IDCTAB to apply the camera's distortion; "
                                 "fill the reference keywords with 'crds bestrefs --files "
                                 f"{path.name} --update-bestrefs'")
    try:
        with fits.open(path, mode="update") as hdul:
            update_wcs(hdul, references)
    except (OSError, KeyError, ValueError, LookupError) as err:
        raise StageError(f"{path.name}: stwcs could not apply the distortion references "
                         f"({err}); check the IDCTAB/NPOLFILE/D2IMFILE files") from err
    with fits.open(path) as hdul:
        if not has_distortion_solution(hdul):
            raise StageError(f"{path.name}: stwcs did not write a complete distortion "
                             "solution (TAN-SIP and lookup tables); check the distortion "
                             "reference files")
    return describe_distortion(path, applied=True)
