"""Finding and checking the input files of a reduction.

Checks, before any work, from headers and file structure only:

* every file is a complete, readable FITS file; non-HST files are ignored with a warning;
* instrument and detector are ACS/WFC; EXPTIME is present and positive; rootnames are
  unique; all exposures share one target (unless mixed targets are allowed explicitly);
* raw files (:func:`check_raw_layout`) are full-frame, four-amplifier readouts with two
  imsets (SCI, ERR, DQ with EXTVER 1 and 2) whose SCI arrays are 4144 x 2068 16-bit
  integers;
* a directory holds either raw files or calibrated files of the same exposures, not a mix;
* OUTNAME (:func:`check_outname`) is a plain file-name stem.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from hstred.acs import RAW_NX, RAW_NY
from hstred.errors import InputError
from hstred.naming import filter_name, visit_name
from hstred.workspace import existing_data_dir

__all__ = ["InputExposure", "find_raw_files", "find_calibrated_files", "find_inputs",
           "check_inputs", "check_raw_layout", "fits_damage"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class InputExposure:
    """The primary-header facts of one input exposure that planning needs."""

    path: Path
    rootname: str
    target: str
    exptime_s: float | None  # None: no EXPTIME keyword
    expstart_mjd: float
    filters: tuple[str, str]
    instrument: str
    detector: str

    @property
    def visit(self) -> str:
        """The first 6 characters of the rootname identify the visit."""
        return visit_name(self.rootname)

    @property
    def filter(self) -> str:
        """The science filter: FILTER1/FILTER2 with CLEAR* dropped (see :func:`filter_name`)."""
        return filter_name(*self.filters) or "CLEAR"


def find_raw_files(data_dir: Path) -> list[Path]:
    """The ``*_raw.fits`` files in ``data_dir``, sorted by name.

    Raises :class:`InputError` when the directory does not exist or holds none.
    """
    data_dir = existing_data_dir(data_dir)
    raws = sorted(data_dir.glob("*_raw.fits"))
    if not raws:
        raise InputError(f"{data_dir}: no *_raw.fits files found; put the archive's raw "
                         "files there or pass --data DIR")
    return raws


def find_calibrated_files(data_dir: Path) -> list[Path]:
    """Archive-calibrated ``*_flc.fits`` (preferred) or ``*_flt.fits`` files, one per rootname."""
    data_dir = existing_data_dir(data_dir)
    chosen: dict[str, Path] = {}
    for path in sorted(data_dir.glob("*_flt.fits")) + sorted(data_dir.glob("*_flc.fits")):
        chosen[path.name.rsplit("_", 1)[0]] = path  # _flc overrides _flt
    return [chosen[k] for k in sorted(chosen)]


def find_inputs(data_dir: Path) -> tuple[str, list[Path]]:
    """``('raw', raw files)`` or, without raws, ``('calibrated', _flc/_flt files)``.

    Calibrated files beside the raws of the same exposures are ignored (with a log line);
    calibrated files of other exposures raise :class:`InputError`, since they would
    otherwise be left out silently.
    """
    data_dir = existing_data_dir(data_dir)
    raws = sorted(data_dir.glob("*_raw.fits"))
    calibrated = find_calibrated_files(data_dir)
    if not raws:
        if not calibrated:
            raise InputError(f"{data_dir}: no *_raw.fits, *_flc.fits or *_flt.fits files; "
                             "put the exposures there or pass --data DIR")
        return "calibrated", calibrated
    roots = {p.name.rsplit("_", 1)[0] for p in raws}
    others = [p.name for p in calibrated if p.name.rsplit("_", 1)[0] not in roots]
    if others:
        raise InputError(f"{data_dir}: holds raw files and calibrated files of other exposures "
                         f"({', '.join(others)}); hstred reduces either raws or _flc/_flt "
                         "files: put the missing raws there, or the two kinds in separate "
                         "directories")
    if calibrated:
        log.info("%s: calibrated files of the raw exposures ignored (%s)", data_dir,
                 ", ".join(p.name for p in calibrated))
    return "raw", raws


def fits_damage(hdul: fits.HDUList, path: Path) -> str | None:
    """What is wrong with an open FITS file's structure (an extension's data running past
    the end of the file), or None when it is complete."""
    size = Path(path).stat().st_size
    for i, hdu in enumerate(hdul):
        info = hdul.fileinfo(i)
        if info is None:
            continue
        header = hdu.header
        naxes = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(header.get("NAXIS", 0)) + 1)]
        n = 1
        for axis in naxes:
            n *= axis
        nbytes = abs(int(header.get("BITPIX", 8))) // 8 * int(header.get("GCOUNT", 1)) * (
            int(header.get("PCOUNT", 0)) + (n if naxes else 0))
        end = int(info["datLoc"]) + nbytes
        if end > size:
            name = header.get("EXTNAME", "PRIMARY" if i == 0 else str(i))
            return (f"truncated: extension {i} ({name}) needs bytes up to {end} but the file "
                    f"has {size}")
    return None


def _read_exposure(path: Path) -> InputExposure | None:
    try:
        with warnings.catch_warnings(), fits.open(path) as hdul:
            warnings.simplefilter("ignore", AstropyUserWarning)  # damage is reported below
            hdul.verify("silentfix")
            header = hdul[0].header
            n_ext = len(hdul)
            damage = fits_damage(hdul, path)
    except (OSError, ValueError, IndexError, KeyError) as err:
        if isinstance(err, OSError) and getattr(err, "errno", None) is not None:
            raise  # permissions and the like: the machine, not the file's content
        raise InputError(f"{path}: unreadable or truncated FITS file ({err}); replace it with "
                         "a complete copy from the archive") from err
    if damage:
        raise InputError(f"{path}: {damage}; replace it with a complete copy from the archive")
    if str(header.get("TELESCOP", "")).strip().upper() != "HST":
        log.warning("%s: not an HST file (TELESCOP=%r); ignored", path, header.get("TELESCOP"))
        return None
    if n_ext < 7:
        raise InputError(f"{path}: {n_ext - 1} extensions; a full-frame ACS/WFC file has 6 "
                         "(SCI/ERR/DQ for two chips): replace it with a complete copy")
    exptime = header.get("EXPTIME")
    return InputExposure(
        path=path,
        rootname=str(header.get("ROOTNAME", path.name.split("_")[0])).strip().lower(),
        target=str(header.get("TARGNAME", "")).strip().upper(),
        exptime_s=None if exptime is None else float(exptime),
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
    no_time = [f"{e.path.name} (no EXPTIME keyword)" if e.exptime_s is None
               else f"{e.path.name} (EXPTIME={e.exptime_s:g})"
               for e in exposures if e.exptime_s is None or e.exptime_s <= 0]
    if no_time:
        raise InputError(f"exposure time must be > 0: remove {', '.join(no_time)} or replace "
                         "it with an intact copy from the archive")
    unnamed = [f"{e.path.name} (ROOTNAME {e.rootname!r})" for e in exposures
               if len(e.rootname) != 9]
    if unnamed:
        raise InputError(f"ROOTNAME must be the archive's 9-character exposure name: fix "
                         f"{', '.join(unnamed)} or replace it with the archive's file")
    by_root: dict[str, list[Path]] = defaultdict(list)
    for e in exposures:
        by_root[e.rootname].append(e.path)
    duplicates = [f"{root} in {' and '.join(str(p) for p in files)}"
                  for root, files in sorted(by_root.items()) if len(files) > 1]
    if duplicates:
        raise InputError(f"duplicate rootname {'; '.join(duplicates)}: keep one file per "
                         "exposure")
    targets = sorted({e.target for e in exposures})
    if len(targets) > 1 and not allow_mixed_targets:
        counts = {t: sum(e.target == t for e in exposures) for t in targets}
        listing = ", ".join(f"{t or '<none>'} ({counts[t]})" for t in targets)
        raise InputError(f"inputs cover {len(targets)} targets: {listing}; reduce one target "
                         "per directory or pass --allow-mixed-targets")
    return exposures


def _raw_layout_problem(hdul: fits.HDUList) -> str | None:
    primary = hdul[0].header
    subarray = primary.get("SUBARRAY", False)
    if subarray not in (False, "F", "False", "NO"):
        return (f"SUBARRAY={subarray!r}: a subarray readout; hstred reduces full-frame "
                "exposures only")
    amps = str(primary.get("CCDAMP", "")).strip().upper()
    if amps != "ABCD":
        return (f"CCDAMP={amps!r}: hstred reduces the four-amplifier (ABCD) full-frame "
                "readout only")
    found = {(str(h.header.get("EXTNAME", "")).strip().upper(), int(h.header.get("EXTVER", 1)))
             for h in hdul[1:]}
    missing = [f"{n},{v}" for v in (1, 2) for n in ("SCI", "ERR", "DQ") if (n, v) not in found]
    if missing:
        listed = ", ".join(f"{n},{v}" for n, v in sorted(found)) or "none"
        return (f"no {' '.join(missing)} extension (found {listed}); a raw ACS/WFC file holds "
                "SCI, ERR and DQ for EXTVER 1 and 2")
    for extver in (1, 2):
        h = hdul["SCI", extver].header
        shape = (h.get("NAXIS1"), h.get("NAXIS2"))
        if h.get("BITPIX") != 16 or shape != (RAW_NX, RAW_NY):
            return (f"SCI,{extver} is {shape[0]} x {shape[1]} with BITPIX {h.get('BITPIX')}; "
                    f"a raw ACS/WFC SCI array is {RAW_NX} x {RAW_NY} 16-bit integers "
                    "(BITPIX 16), as the archive delivers it")
    return None


def check_raw_layout(exposures: Sequence[InputExposure]) -> None:
    """Check the structure of raw files from their headers (no pixel is read): full frame,
    four amplifiers, two imsets, 4144 x 2068 16-bit SCI arrays. Raises :class:`InputError`
    naming the first offending file and what the archive's files look like."""
    for e in exposures:
        with fits.open(e.path) as hdul:
            problem = _raw_layout_problem(hdul)
        if problem:
            raise InputError(f"{e.path}: {problem}; replace it with the archive's raw file or "
                             "remove it from the directory")
