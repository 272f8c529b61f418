"""Readers for the ACS/WFC calibration reference files used by CCD calibration.

Tables are selected the way calacs selects them (hstcal ``getccdtab.c``,
``findover.c``, ``dodqi.c``, ``lib/getphttab.c``); image references are matched to a
science chip by the ``CCDCHIP`` keyword of their SCI extensions, never by position.
All readers open files read-only and return copies, so nothing here can modify a
reference file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.errors import ReferenceFileError

__all__ = [
    "AMP_LETTERS",
    "BadPixelRow",
    "CCDParameters",
    "OverscanParameters",
    "PhotometryValues",
    "ReferenceImage",
    "photmode_to_obsmode",
    "read_bad_pixel_rows",
    "read_ccd_parameters",
    "read_overscan_parameters",
    "read_photometry",
    "read_reference_image",
]

AMP_LETTERS = "ABCD"

# Table wildcards (hstcal acswild.h): a row holding one of these matches anything.
_INT_WILDCARDS = (-1, -999)
_FLOAT_WILDCARDS = (-1.0, -999.0)
_STRING_WILDCARDS = ("ANY",)


@dataclass(frozen=True)
class CCDParameters:
    """The CCDTAB row of one chip.

    ``gain_e_per_dn``, ``readnoise_e`` and ``bias_dn`` map amplifier letters to
    values; amplifiers not listed in CCDAMP get 0 (as calacs does).
    ``ampx``/``ampy`` are in trimmed (FLT) pixel coordinates.
    """

    chip: int
    gain_e_per_dn: dict[str, float]
    readnoise_e: dict[str, float]
    bias_dn: dict[str, float]
    ampx: int
    ampy: int
    atodsat_dn: int
    saturate_e: float
    overhead_flashed_s: float
    overhead_unflashed_s: float


@dataclass(frozen=True)
class OverscanParameters:
    """The OSCNTAB row of one chip.

    ``trimx``/``trimy`` are the numbers of columns/rows trimmed from the start and
    end of each axis. ``vx``, ``vy``, ``biassecta`` and ``biassectb`` are
    0-indexed inclusive pixel ranges in the raw array (the table holds them
    1-indexed); a range ``(-1, -1)`` means "not given".
    """

    trimx: tuple[int, int]
    trimy: tuple[int, int]
    vx: tuple[int, int]
    vy: tuple[int, int]
    biassecta: tuple[int, int]
    biassectb: tuple[int, int]


@dataclass(frozen=True)
class BadPixelRow:
    """One BPIXTAB row: ``length`` pixels from (``pix1``, ``pix2``) along ``axis``.

    ``pix1``/``pix2`` are 1-indexed trimmed-frame coordinates, as in the table.
    """

    pix1: int
    pix2: int
    length: int
    axis: int
    value: int


@dataclass(frozen=True, eq=False)
class ReferenceImage:
    """The SCI/ERR/DQ imset of an image reference that matches one chip."""

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    header: fits.Header
    path: Path

    @property
    def ltv(self) -> tuple[float, float]:
        return float(self.header.get("LTV1", 0.0)), float(self.header.get("LTV2", 0.0))


@dataclass(frozen=True)
class PhotometryValues:
    """IMPHTTAB results for one PHOTMODE (PHOTFLAM in erg/cm2/s/A per e-/s)."""

    photflam: float
    photzpt: float
    photplam: float
    photbw: float

    @property
    def extrapolated(self) -> bool:
        """True when calacs would refuse the values (-9999 marks extrapolation)."""
        return self.photflam == -9999.0


def _open(path: Path, what: str) -> fits.HDUList:
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(f"{what} {path} does not exist; resolve the reference files again")
    try:
        # Memory-mapped, so converting an image to native float32 makes the only copy.
        return fits.open(path, mode="readonly", memmap=True)
    except OSError as err:
        raise ReferenceFileError(f"{what} {path} is not a readable FITS file ({err}); "
                                 "download it again") from err


def _table(path: Path, what: str, ext: int | str = 1) -> fits.FITS_rec:
    with _open(path, what) as hdul:
        try:
            data = hdul[ext].data
        except (KeyError, IndexError) as err:
            raise ReferenceFileError(f"{what} {path} has no table extension {ext!r}; "
                                     "use a valid reference table") from err
        if data is None:
            raise ReferenceFileError(f"{what} {path} extension {ext!r} is empty; "
                                     "use a valid reference table")
        return data.copy()


def _require_columns(data: fits.FITS_rec, columns: Sequence[str], path: Path, what: str) -> None:
    names = {name.upper() for name in data.columns.names}
    missing = [c for c in columns if c.upper() not in names]
    if missing:
        raise ReferenceFileError(f"{what} {path} lacks columns {', '.join(missing)}; "
                                 "use a table in the calacs format")


def _value(x) -> float:
    """A table number as a Python float; single-precision columns keep their decimal
    spelling (3.8, not 3.799999952316284), since that is what the table means."""
    if isinstance(x, np.float32):
        return float(str(x))
    return float(x)


def _same_int(row_value, value: int) -> bool:
    row_value = int(row_value)
    return row_value in _INT_WILDCARDS or row_value == int(value)


def _same_float(row_value, value: float) -> bool:
    row_value = float(row_value)
    return row_value in _FLOAT_WILDCARDS or np.float32(row_value) == np.float32(value)


def _same_string(row_value, value: str) -> bool:
    row_value = str(row_value).strip().upper()
    return row_value in _STRING_WILDCARDS or row_value == str(value).strip().upper()


_CCDTAB_COLUMNS = (
    "CCDAMP", "CCDCHIP", "CCDGAIN", "BINAXIS1", "BINAXIS2",
    *(f"CCDOFST{a}" for a in AMP_LETTERS), *(f"CCDBIAS{a}" for a in AMP_LETTERS),
    *(f"ATODGN{a}" for a in AMP_LETTERS), *(f"READNSE{a}" for a in AMP_LETTERS),
    "AMPX", "AMPY", "ATODSAT", "SATURATE", "OVRHFLS", "OVRHUFLS",
)


def read_ccd_parameters(path: Path, *, ccdamp: str, chip: int, ccdgain: float,
                        ccdofst: Sequence[int], binaxis: Sequence[int] = (1, 1),
                        raw_nx: int | None = None) -> CCDParameters:
    """Select the CCDTAB row for one chip.

    Rows match on CCDAMP, CCDCHIP, CCDGAIN, CCDOFSTA-D and BINAXIS1/2 (with the
    calacs wildcards -1/-999 and 'ANY'). ``raw_nx`` caps AMPX at the image width,
    as calacs does for subarrays.
    """
    data = _table(path, "CCDTAB", 1)
    _require_columns(data, _CCDTAB_COLUMNS, path, "CCDTAB")
    gain_is_int = np.issubdtype(data["CCDGAIN"].dtype, np.integer)
    for row in data:
        same_gain = (_same_int(row["CCDGAIN"], int(ccdgain)) if gain_is_int
                     else _same_float(row["CCDGAIN"], ccdgain))
        if not (_same_string(row["CCDAMP"], ccdamp) and same_gain
                and _same_int(row["CCDCHIP"], chip)
                and all(_same_int(row[f"CCDOFST{a}"], o)
                        for a, o in zip(AMP_LETTERS, ccdofst, strict=True))
                and _same_int(row["BINAXIS1"], binaxis[0])
                and _same_int(row["BINAXIS2"], binaxis[1])):
            continue
        used = ccdamp.strip().upper()

        def per_amp(prefix: str, row=row, used=used) -> dict[str, float]:
            return {a: (_value(row[f"{prefix}{a}"]) if a in used else 0.0) for a in AMP_LETTERS}

        ampx = int(row["AMPX"])
        if raw_nx is not None and ampx > raw_nx:
            ampx = raw_nx
        return CCDParameters(
            chip=int(chip),
            gain_e_per_dn=per_amp("ATODGN"),
            readnoise_e=per_amp("READNSE"),
            bias_dn=per_amp("CCDBIAS"),
            ampx=ampx,
            ampy=int(row["AMPY"]),
            atodsat_dn=int(row["ATODSAT"]),
            saturate_e=_value(row["SATURATE"]),
            overhead_flashed_s=_value(row["OVRHFLS"]),
            overhead_unflashed_s=_value(row["OVRHUFLS"]),
        )
    raise ReferenceFileError(
        f"CCDTAB {path} has no row for CCDAMP={ccdamp} CCDCHIP={chip} CCDGAIN={ccdgain} "
        f"CCDOFST={tuple(ccdofst)} BINAXIS={tuple(binaxis)}; use the CCDTAB the header names")


_OSCNTAB_COLUMNS = (
    "CCDAMP", "CCDCHIP", "BINX", "BINY", "NX", "NY", "TRIMX1", "TRIMX2", "TRIMY1", "TRIMY2",
    "VX1", "VX2", "VY1", "VY2", "BIASSECTA1", "BIASSECTA2", "BIASSECTB1", "BIASSECTB2",
)


def read_overscan_parameters(path: Path, *, ccdamp: str, chip: int, nx: int, ny: int,
                             binning: Sequence[int] = (1, 1)) -> OverscanParameters:
    """Select the OSCNTAB row for one chip of an ``nx`` x ``ny`` raw array."""
    data = _table(path, "OSCNTAB", 1)
    _require_columns(data, _OSCNTAB_COLUMNS, path, "OSCNTAB")
    for row in data:
        if not (_same_string(row["CCDAMP"], ccdamp) and _same_int(row["CCDCHIP"], chip)
                and _same_int(row["BINX"], binning[0]) and _same_int(row["BINY"], binning[1])
                and _same_int(row["NX"], nx) and _same_int(row["NY"], ny)):
            continue

        def pair(a: str, b: str, row=row) -> tuple[int, int]:
            return int(row[a]) - 1, int(row[b]) - 1

        return OverscanParameters(
            trimx=(int(row["TRIMX1"]), int(row["TRIMX2"])),
            trimy=(int(row["TRIMY1"]), int(row["TRIMY2"])),
            vx=pair("VX1", "VX2"),
            vy=pair("VY1", "VY2"),
            biassecta=pair("BIASSECTA1", "BIASSECTA2"),
            biassectb=pair("BIASSECTB1", "BIASSECTB2"),
        )
    raise ReferenceFileError(
        f"OSCNTAB {path} has no row for CCDAMP={ccdamp} CCDCHIP={chip} NX={nx} NY={ny} "
        f"BIN={tuple(binning)}; use the OSCNTAB the header names")


def read_bad_pixel_rows(path: Path, *, ccdamp: str, chip: int,
                        ccdgain: float) -> list[BadPixelRow]:
    """BPIXTAB rows that apply to one chip.

    CCDAMP and CCDGAIN columns are optional; a missing column, CCDAMP 'N/A' (or the
    table wildcard 'ANY'), or a -999 in CCDGAIN/CCDCHIP matches any exposure. Otherwise
    CCDAMP must equal the exposure's CCDAMP, as calacs compares them (hstcal
    ``dodqi.c``): the one-letter rows of archive tables serve single-amplifier
    readouts, not full frames. Column names are matched without regard to case, and
    CCDGAIN may be an integer or a float column.
    """
    data = _table(path, "BPIXTAB", 1)
    _require_columns(data, ("PIX1", "PIX2", "LENGTH", "AXIS", "VALUE", "CCDCHIP"), path, "BPIXTAB")
    names = {n.upper() for n in data.columns.names}
    has_amp = "CCDAMP" in names
    has_gain = "CCDGAIN" in names
    gain_is_int = has_gain and np.issubdtype(data["CCDGAIN"].dtype, np.integer)
    rows = []
    for row in data:
        if has_amp:
            amp = str(row["CCDAMP"]).strip().upper()
            if amp not in ("N/A", *_STRING_WILDCARDS) and amp != ccdamp.strip().upper():
                continue
        if has_gain:
            if gain_is_int:
                if int(row["CCDGAIN"]) != -999 and int(row["CCDGAIN"]) != int(ccdgain):
                    continue
            elif (float(row["CCDGAIN"]) != -999.0
                  and np.float32(row["CCDGAIN"]) != np.float32(ccdgain)):
                continue
        if int(row["CCDCHIP"]) != -999 and int(row["CCDCHIP"]) != int(chip):
            continue
        axis, length = int(row["AXIS"]), int(row["LENGTH"])
        if axis not in (1, 2):
            raise ReferenceFileError(f"BPIXTAB {path} has AXIS={axis} (must be 1 or 2); "
                                     "fix the table")
        if length <= 0:
            raise ReferenceFileError(f"BPIXTAB {path} has LENGTH={length} (must be positive); "
                                     "fix the table")
        rows.append(BadPixelRow(pix1=int(row["PIX1"]), pix2=int(row["PIX2"]), length=length,
                                axis=axis, value=int(row["VALUE"])))
    return rows


def _extension_array(hdu: fits.ImageHDU, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Data of an imset extension; an empty one becomes a read-only constant array of
    its PIXVALUE (a broadcast view, costing no memory)."""
    if hdu.data is None:
        return np.broadcast_to(np.array(hdu.header.get("PIXVALUE", 0), dtype=dtype), shape)
    data = np.array(hdu.data, dtype=dtype)
    if data.shape != shape:
        raise ReferenceFileError(f"{hdu.name},{hdu.ver} has shape {data.shape}, SCI {shape}")
    return data


def read_reference_image(path: Path, chip: int, *, what: str) -> ReferenceImage:
    """The SCI/ERR/DQ of image reference ``path`` whose SCI has ``CCDCHIP == chip``.

    Empty ERR/DQ extensions (NAXIS = 0) become read-only constant arrays of their
    PIXVALUE (0 when absent). SCI and ERR are float32, DQ int16.
    """
    with _open(path, what) as hdul:
        sci_hdus = [h for h in hdul[1:] if h.name == "SCI"]
        if not sci_hdus and hdul[0].data is not None:
            sci_hdus = [hdul[0]]
        match = [h for h in sci_hdus if int(h.header.get("CCDCHIP", 1)) == int(chip)]
        if not match:
            raise ReferenceFileError(f"{what} {path} has no SCI extension with CCDCHIP={chip}; "
                                     "use a reference for ACS/WFC full frame")
        sci_hdu = match[0]
        if sci_hdu.data is None:
            raise ReferenceFileError(f"{what} {path} SCI (CCDCHIP={chip}) is empty; "
                                     "use a valid reference file")
        sci = np.array(sci_hdu.data, dtype=np.float32)
        extver = sci_hdu.header.get("EXTVER", 1)
        try:
            err_hdu = hdul["ERR", extver]
            dq_hdu = hdul["DQ", extver]
        except KeyError:
            err = np.broadcast_to(np.float32(0), sci.shape)
            dq = np.broadcast_to(np.int16(0), sci.shape)
        else:
            try:
                err = _extension_array(err_hdu, sci.shape, np.float32)
                dq = _extension_array(dq_hdu, sci.shape, np.int16)
            except ReferenceFileError as exc:
                raise ReferenceFileError(f"{what} {path}: {exc}; use a consistent reference "
                                         "file") from exc
        return ReferenceImage(sci=sci, err=err, dq=dq, header=sci_hdu.header.copy(),
                              path=Path(path))


def photmode_to_obsmode(photmode: str) -> tuple[str, dict[str, float]]:
    """``'ACS WFC1 F606W MJD#56000.0000'`` -> (``'acs,wfc1,f606w,mjd#'``, {'mjd#': 56000.0})."""
    tokens = photmode.lower().split()
    names, params = [], {}
    for tok in tokens:
        if "#" in tok:
            name, value = tok.split("#", 1)
            names.append(name + "#")
            params[name + "#"] = float(value)
        else:
            names.append(tok)
    return ",".join(names), params


def _same_obsmode(table_obsmode: str, obsmode: str) -> bool:
    return sorted(str(table_obsmode).strip().lower().split(",")) == sorted(obsmode.split(","))


def _interpolate(row, result_name: str, datacol: str, params: dict[str, float],
                 extrapolate: bool, path: Path) -> float:
    suffix = datacol[len(result_name):]
    if not suffix:
        return float(row[result_name])
    npar = int(suffix)
    if npar != 1:
        raise ReferenceFileError(f"IMPHTTAB {path} row for {row['OBSMODE']} has {npar} "
                                 "parameters; only one (MJD#) is supported")
    parname = str(row["PAR1NAMES"]).strip().lower()
    if parname not in params:
        raise ReferenceFileError(f"IMPHTTAB {path} row needs parameter {parname} missing "
                                 "from PHOTMODE; check FILTER1/FILTER2 and EXPSTART")
    nelem = int(row["NELEM1"])
    grid = np.asarray(row["PAR1VALUES"], dtype=float)[:nelem]
    values = np.asarray(row[datacol], dtype=float)[:nelem]
    x = params[parname]
    if x < grid[0] or x > grid[-1]:
        if not (extrapolate and parname == "mjd#"):
            return -9999.0
        if nelem < 2:
            return float(values[0])
        i0, i1 = (0, 1) if x < grid[0] else (nelem - 2, nelem - 1)
        slope = (values[i1] - values[i0]) / (grid[i1] - grid[i0])
        return float(values[i0] + slope * (x - grid[i0]))
    return float(np.interp(x, grid, values))


def read_photometry(path: Path, photmode: str) -> PhotometryValues:
    """PHOTFLAM, PHOTZPT, PHOTPLAM, PHOTBW for ``photmode`` from IMPHTTAB ``path``.

    Rows match on OBSMODE (comma-separated, lower case, order ignored, parameter
    values stripped after ``#``). Parameterised rows are interpolated linearly in
    MJD; outside the table range the result is -9999 (calacs then skips
    PHOTCORR) unless the primary header sets EXTRAP = T.
    """
    obsmode, params = photmode_to_obsmode(photmode)
    with _open(path, "IMPHTTAB") as hdul:
        primary = hdul[0].header
        if "PHOTZPT" not in primary:
            raise ReferenceFileError(f"IMPHTTAB {path} lacks PHOTZPT in its primary header; "
                                     "use a valid IMPHTTAB")
        photzpt = float(primary["PHOTZPT"])
        extrapolate = bool(primary.get("EXTRAP", False))
        results = {}
        for name in ("PHOTFLAM", "PHOTPLAM", "PHOTBW"):
            try:
                data = hdul[name].data
            except KeyError as err:
                raise ReferenceFileError(f"IMPHTTAB {path} lacks extension {name}; "
                                         "use a valid IMPHTTAB") from err
            rows = [r for r in data if _same_obsmode(r["OBSMODE"], obsmode)]
            if not rows:
                raise ReferenceFileError(f"IMPHTTAB {path} has no {name} row for OBSMODE "
                                         f"{obsmode}; use the IMPHTTAB for this instrument")
            row = rows[0]
            datacol = str(row["DATACOL"]).strip().upper()
            results[name] = _interpolate(row, name, datacol, params, extrapolate, Path(path))
    return PhotometryValues(photflam=results["PHOTFLAM"], photzpt=photzpt,
                            photplam=results["PHOTPLAM"], photbw=results["PHOTBW"])
