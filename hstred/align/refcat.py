"""Absolute reference catalogs: a user's Gaia-like table, or the Gaia archive's cone.

A reference catalog is a table (ECSV, FITS or CSV) with Gaia DR3 column names:
``ra``, ``dec`` (deg, ICRS) required; ``ra_error``, ``dec_error`` (mas), ``pmra``,
``pmdec`` (mas/yr), ``parallax`` (mas), ``ref_epoch`` (Julian year) and
``phot_g_mean_mag`` optional. Proper motions need a reference epoch (a ``ref_epoch``
column, or ``ref_epoch`` in the table's metadata).

:func:`fetch_gaia_cone` asks the Gaia archive (astroquery) for the stars in a cone
and saves them as ECSV, so that reruns read the file and need no server.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from hstred.align.epoch import mjd_to_jyear, positions_at_epoch
from hstred.errors import InputError, RunEnvironmentError
from hstred.fileio import atomic_path

__all__ = [
    "GAIA_COLUMNS",
    "GAIA_TABLE",
    "ReferenceCatalog",
    "read_reference_catalog",
    "fetch_gaia_cone",
    "gaia_cone_file",
    "footprint_cone",
]

log = logging.getLogger(__name__)

#: Columns taken from the Gaia archive (DR3 names).
GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec",
                "pmra_error", "pmdec_error", "parallax", "parallax_error", "ref_epoch",
                "phot_g_mean_mag")
GAIA_TABLE = "gaiadr3.gaia_source"
_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits",
            ".csv": "ascii.csv"}


@dataclass(frozen=True)
class ReferenceCatalog:
    """A reference catalog read and checked: arrays in the units of the module docstring.

    ``pmra``/``pmdec``/``parallax`` are ``None`` when the file has no such column;
    ``ref_epoch_jyear`` is ``None`` when positions carry no epoch (used as given).
    ``position_error_mas`` is the mean of ``ra_error`` and ``dec_error`` (NaN when
    absent); ``pm_error_mas_yr`` likewise from ``pmra_error``/``pmdec_error``.
    """

    path: Path
    ra: np.ndarray
    dec: np.ndarray
    position_error_mas: np.ndarray
    pm_error_mas_yr: np.ndarray
    pmra: np.ndarray | None
    pmdec: np.ndarray | None
    parallax: np.ndarray | None
    ref_epoch_jyear: np.ndarray | None
    g_mag: np.ndarray | None

    def __len__(self) -> int:
        return int(self.ra.size)

    @property
    def has_motion(self) -> bool:
        return self.pmra is not None

    def epoch_handling(self) -> str:
        """How positions are moved to an observation's epoch (for records)."""
        if not self.has_motion:
            return "none: no proper motions in the catalog, positions used as given"
        epochs = sorted({float(e) for e in np.unique(self.ref_epoch_jyear)})
        what = "proper motion and parallax" if self.parallax is not None else "proper motion"
        return f"{what} from J{', J'.join(f'{e:.1f}' for e in epochs)} to each visit's epoch"

    def at_epoch(self, mjd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RA, Dec (deg) at ``mjd`` and each position's 1-sigma error there (mas).

        The error grows from the position error by the proper-motion error times the
        time since the reference epoch (both taken as 0 when unknown).
        """
        pos_err = np.nan_to_num(self.position_error_mas, nan=0.0)
        if not self.has_motion:
            return self.ra.copy(), self.dec.copy(), pos_err
        ra, dec = positions_at_epoch(self.ra, self.dec, ref_epoch_jyear=self.ref_epoch_jyear,
                                     mjd=mjd, pmra_mas_yr=self.pmra, pmdec_mas_yr=self.pmdec,
                                     parallax_mas=self.parallax)
        dt = np.abs(mjd_to_jyear(mjd) - self.ref_epoch_jyear)
        pm_err = np.nan_to_num(self.pm_error_mas_yr, nan=0.0)
        return ra, dec, np.hypot(pos_err, pm_err * dt)


def _column(table: Table, name: str) -> np.ndarray | None:
    if name not in table.colnames:
        return None
    return np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan).astype(float)


def _mean_error(table: Table, a: str, b: str) -> np.ndarray:
    va, vb = _column(table, a), _column(table, b)
    if va is None and vb is None:
        return np.full(len(table), np.nan)
    if va is None or vb is None:
        return va if vb is None else vb
    return 0.5 * (va + vb)


def read_reference_catalog(path: Path) -> ReferenceCatalog:
    """Read and check a Gaia-like catalog (see the module docstring).

    Raises
    ------
    InputError
        The file is missing or unreadable, lacks ``ra``/``dec``, has proper motions
        without a reference epoch, or has no usable rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--reference-catalog {path}: no such file; give an ECSV, FITS or "
                         "CSV table with Gaia columns (ra, dec, ...) or 'gaia'")
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".gz") \
        else path.suffix.lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise InputError(f"--reference-catalog {path}: unknown format {suffix!r}; use .ecsv, "
                         ".fits or .csv")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format=fmt)
    except Exception as err:  # astropy raises many kinds for unreadable tables
        raise InputError(f"--reference-catalog {path}: cannot read it as {fmt} ({err})") from err
    missing = [c for c in ("ra", "dec") if c not in table.colnames]
    if missing:
        raise InputError(f"--reference-catalog {path}: no column {' or '.join(missing)}; the "
                         "table needs Gaia column names (ra, dec in degrees)")
    ra, dec = _column(table, "ra"), _column(table, "dec")
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        raise InputError(f"--reference-catalog {path}: no row has a finite ra and dec")
    table = table[good]
    pmra, pmdec = _column(table, "pmra"), _column(table, "pmdec")
    if (pmra is None) != (pmdec is None):
        raise InputError(f"--reference-catalog {path}: has only one of pmra and pmdec; give "
                         "both or neither")
    epoch = _column(table, "ref_epoch")
    if epoch is None and "ref_epoch" in table.meta:
        epoch = np.full(len(table), float(table.meta["ref_epoch"]))
    if pmra is not None:
        if epoch is None or not np.all(np.isfinite(epoch)):
            raise InputError(f"--reference-catalog {path}: proper motions need a ref_epoch "
                             "column (Julian year, 2016.0 for Gaia DR3)")
        if np.any((epoch < 1900) | (epoch > 2100)):
            raise InputError(f"--reference-catalog {path}: ref_epoch must be a Julian year "
                             "such as 2016.0")
    else:
        epoch = None
    parallax = _column(table, "parallax") if pmra is not None else None
    g = _column(table, "phot_g_mean_mag")
    return ReferenceCatalog(
        path=path, ra=_column(table, "ra"), dec=_column(table, "dec"),
        position_error_mas=_mean_error(table, "ra_error", "dec_error"),
        pm_error_mas_yr=_mean_error(table, "pmra_error", "pmdec_error"),
        pmra=pmra, pmdec=pmdec, parallax=parallax, ref_epoch_jyear=epoch, g_mag=g)


def gaia_cone_file(directory: Path, ra_deg: float, dec_deg: float, radius_arcmin: float) -> Path:
    """Where the Gaia cone about (ra, dec) is saved: the same cone, the same file."""
    return Path(directory) / (f"gaiadr3_{ra_deg:09.5f}{dec_deg:+09.5f}"
                              f"_r{radius_arcmin:05.2f}.ecsv")


def fetch_gaia_cone(ra_deg: float, dec_deg: float, radius_arcmin: float, *,
                    directory: Path) -> Path:
    """The Gaia DR3 stars within ``radius_arcmin`` of (ra, dec), saved under ``directory``.

    A cone saved before is read back without asking a server. Otherwise the Gaia
    archive is queried through astroquery (ADQL on ``gaiadr3.gaia_source``) and the
    result written as ECSV (with the query in its metadata).

    Raises
    ------
    RunEnvironmentError
        No server answered (offline): the message names the file to supply instead.
    """
    path = gaia_cone_file(directory, ra_deg, dec_deg, radius_arcmin)
    if path.is_file():
        log.info("Gaia cone read from %s (no query)", path)
        return path
    query = (f"SELECT {', '.join(GAIA_COLUMNS)} FROM {GAIA_TABLE} WHERE 1 = CONTAINS("
             f"POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra_deg:.7f}, {dec_deg:.7f}, "
             f"{radius_arcmin / 60.0:.7f}))")
    try:
        from astroquery.gaia import Gaia

        table = Gaia.launch_job_async(query).get_results()
    except Exception as err:  # astroquery raises requests/HTTP/IO errors when offline
        raise RunEnvironmentError(
            f"--reference-catalog gaia: the Gaia archive did not answer ({type(err).__name__}); "
            f"save the Gaia DR3 stars within {radius_arcmin:.2f}' of RA {ra_deg:.5f} "
            f"Dec {dec_deg:+.5f} as {path} (or any ECSV/FITS/CSV) and pass that file") from err
    table = Table(table, masked=True)
    for name in list(table.colnames):
        if name.lower() != name:
            table.rename_column(name, name.lower())
    table.meta = {"query": query, "source": "Gaia archive via astroquery",
                  "ref_epoch": 2016.0}
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    log.info("Gaia cone: %d stars saved to %s", len(table), path)
    return path


def footprint_cone(ra_deg: np.ndarray, dec_deg: np.ndarray, *,
                   margin_arcmin: float = 0.5) -> tuple[float, float, float]:
    """Centre (deg) and radius (arcmin) of a cone holding every given sky point."""
    from hstred.align.fit import mean_direction

    ra0, dec0 = mean_direction(ra_deg, dec_deg)
    r, d = np.radians(ra_deg), np.radians(dec_deg)
    r0, d0 = math.radians(ra0), math.radians(dec0)
    cos_sep = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(r - r0)
    radius = float(np.degrees(np.arccos(np.clip(cos_sep, -1, 1))).max()) * 60.0
    # Rounded, so that the same footprint gives the same cone (and file) again.
    return round(ra0, 5), round(dec0, 5), round(radius + margin_arcmin, 2)
