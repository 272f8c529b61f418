"""Finding and checking the input files of a reduction.

Checks, before any work: every file is a readable FITS file; non-HST files are
ignored with a warning; instrument and detector are ACS/WFC; exposure times are
positive; rootnames are unique; all exposures share one target (unless mixed
targets are allowed explicitly).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from hstred.errors import InputError

__all__ = ["InputExposure", "find_raw_files", "find_calibrated_files", "check_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputExposure:
    """The primary-header facts of one input exposure that planning needs."""

    path: Path
    rootname: str
    target: str
    exptime_s: float
    expstart_mjd: float
    filters: tuple[str, str]
    instrument: str
    detector: str

    @property
    def visit(self) -> str:
        """The first 6 characters of the rootname identify the visit."""
        return self.rootname[:6]

    @property
    def filter(self) -> str:
        """The science filter: FILTER1/FILTER2 with CLEAR* dropped."""
        names = [f for f in self.filters if f and not f.upper().startswith("CLEAR")]
        return "+".join(names) if names else "CLEAR"


def find_raw_files(data_dir: Path) -> list[Path]:
    """The ``*_raw.fits`` files in ``data_dir``, sorted by name.

    Raises :class:`InputError` when the directory does not exist or holds none.
    """
    data_dir = _existing_dir(data_dir)
    raws = sorted(data_dir.glob("*_raw.fits"))
    if not raws:
        raise InputError(f"{data_dir}: no *_raw.fits files found; put the archive's raw "
                         "files there or pass --data DIR")
    return raws


def find_calibrated_files(data_dir: Path) -> list[Path]:
    """Archive-calibrated ``*_flc.fits`` (preferred) or ``*_flt.fits`` files, one per rootname."""
    data_dir = _existing_dir(data_dir)
    chosen: dict[str, Path] = {}
    for path in sorted(data_dir.glob("*_flt.fits")) + sorted(data_dir.glob("*_flc.fits")):
        chosen[path.name.rsplit("_", 1)[0]] = path  # _flc overrides _flt
    return [chosen[k] for k in sorted(chosen)]


def _existing_dir(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such directory; pass --data DIR with the input files")
    return data_dir


def _read_exposure(path: Path) -> InputExposure | None:
    try:
        with fits.open(path) as hdul:
            hdul.verify("silentfix")
            header = hdul[0].header
            n_ext = len(hdul)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable or truncated FITS file ({err}); replace it with "
                         "a complete copy from the archive") from err
    if str(header.get("TELESCOP", "")).strip().upper() != "HST":
        log.warning("%s: not an HST file (TELESCOP=%r); ignored", path, header.get("TELESCOP"))
        return None
    if n_ext < 7:
        raise InputError(f"{path}: {n_ext - 1} extensions; a full-frame ACS/WFC file has 6 "
                         "(SCI/ERR/DQ for two chips): replace it with a complete copy")
    return InputExposure(
        path=path,
        rootname=str(header.get("ROOTNAME", path.name.split("_")[0])).strip().lower(),
        target=str(header.get("TARGNAME", "")).strip().upper(),
        exptime_s=float(header.get("EXPTIME", 0.0)),
        expstart_mjd=float(header.get("EXPSTART", 0.0)),
        filters=(str(header.get("FILTER1", "")).strip().upper(),
                 str(header.get("FILTER2", "")).strip().upper()),
        instrument=str(header.get("INSTRUME", "")).strip().upper(),
        detector=str(header.get("DETECTOR", "")).strip().upper(),
    )


def check_inputs(paths: Sequence[Path], *, allow_mixed_targets: bool = False
                 ) -> list[InputExposure]:
    """Read and check the input exposures; raise :class:`InputError` listing offenders."""
    exposures = [e for e in (_read_exposure(Path(p)) for p in paths) if e is not None]
    if not exposures:
        raise InputError("no HST exposures among the inputs; pass --data DIR with ACS/WFC files")
    unsupported = [f"{e.path.name} ({e.instrument}/{e.detector})" for e in exposures
                   if (e.instrument, e.detector) != ("ACS", "WFC")]
    if unsupported:
        raise InputError(f"only ACS/WFC is supported: remove {', '.join(unsupported)}")
    no_time = [f"{e.path.name} (EXPTIME={e.exptime_s:g})" for e in exposures if e.exptime_s <= 0]
    if no_time:
        raise InputError(f"exposure time must be > 0: remove {', '.join(no_time)}")
    duplicates = [r for r, n in Counter(e.rootname for e in exposures).items() if n > 1]
    if duplicates:
        raise InputError(f"duplicate rootnames {', '.join(sorted(duplicates))}: keep one file "
                         "per exposure")
    targets = sorted({e.target for e in exposures})
    if len(targets) > 1 and not allow_mixed_targets:
        counts = Counter(e.target for e in exposures)
        listing = ", ".join(f"{t or '<none>'} ({counts[t]})" for t in targets)
        raise InputError(f"inputs cover {len(targets)} targets: {listing}; reduce one target "
                         "per directory or pass --allow-mixed-targets")
    return exposures
