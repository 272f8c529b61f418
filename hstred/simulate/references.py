"""Calibration reference files matching the simulated detector, in the real formats.

Files are written into a CRDS-style cache directory
(``<out>/crds/references/hst/acs/``) under CRDS-like names: nine lower-case
characters ending in ``j`` (ACS) plus the type suffix, derived from the seed,
e.g. ``7f2k0qa1j_bia.fits``.  Headers name them ``jref$<file>``.

Formats (see the ACS/WFC notes, section 8)
------------------------------------------
* Images have a primary header (NEXTEND=6) and per chip a SCI/ERR/DQ imset in
  raw-file order (WFC2 first); the chip is named by CCDCHIP.  ERR (and DQ,
  except in darks) are empty extensions with NPIX1/NPIX2/PIXVALUE.
* BIASFILE ``_bia``: raw-sized (4144 x 2068) DN, raw LTV1/LTV2.
* SATUFILE ``_sat``: raw-sized full-well saturation level in e-.
* DARKFILE ``_drk`` / DRKCFILE ``_dkc``: trimmed (4096 x 2048) e-/s with DQ 16 on
  hot pixels; one pair per visit (USEAFTER = visit date).  Both hold the
  noise-free dark current the simulator injected (the simulated dark current
  is CTE-free, so the CTE-corrected dark equals the plain one).
* PFLTFILE ``_pfl``: trimmed, per filter = QE x pixel area / (0.05")^2.
* BPIXTAB ``_bpx``, CCDTAB ``_ccd`` (27 columns), OSCNTAB ``_osc`` (18 columns)
  and IMPHTTAB ``_imp`` binary tables.
* The distortion references IDCTAB ``_idc``, NPOLFILE ``_npl`` (per filter) and
  D2IMFILE ``_d2i``: see :mod:`hstred.simulate.distortion`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.acs import (
    AMP_BOUNDARY_FLT,
    AMP_NX,
    CHIP_NX,
    CHIP_NY,
    CHIPS,
    PRESCAN,
    RAW_NX,
    RAW_NY,
    VIRTUAL_OVERSCAN,
    chip_layout,
)
from hstred.simulate.config import FILTERS, filter_keywords
from hstred.simulate.detector import ERA_DETECTORS, Defect, DetectorParams
from hstred.simulate.rng import label_digest

__all__ = [
    "REFERENCE_SUFFIXES",
    "CRDS_SUBDIR",
    "reference_name",
    "ReferenceSet",
    "bias_hdul",
    "saturation_hdul",
    "dark_hdul",
    "flat_hdul",
    "bpixtab_hdul",
    "ccdtab_hdul",
    "oscntab_hdul",
    "imphttab_hdul",
    "useafter",
    "reference_primary",
    "empty_image_hdu",
]

#: Header keyword -> CRDS file-type suffix.
REFERENCE_SUFFIXES = {
    "BIASFILE": "bia",
    "SATUFILE": "sat",
    "DARKFILE": "drk",
    "DRKCFILE": "dkc",
    "PFLTFILE": "pfl",
    "BPIXTAB": "bpx",
    "CCDTAB": "ccd",
    "OSCNTAB": "osc",
    "IMPHTTAB": "imp",
    "IDCTAB": "idc",
    "NPOLFILE": "npl",
    "D2IMFILE": "d2i",
}
CRDS_SUBDIR = Path("crds") / "references" / "hst" / "acs"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_PEDIGREE = "MODEL"
_COMMENT = "Simulated reference file written by hstred.simulate"


def reference_name(seed: int, keyword: str, *labels: object) -> str:
    """CRDS-like file name for a reference (deterministic in seed and labels)."""
    number = int.from_bytes(label_digest("reference", seed, keyword, *labels)[:8], "big")
    chars = []
    for _ in range(8):
        number, r = divmod(number, 36)
        chars.append(_BASE36[r])
    return "".join(chars) + "j_" + REFERENCE_SUFFIXES[keyword] + ".fits"


@dataclass(frozen=True)
class ReferenceSet:
    """The reference file names an exposure's header points to (bare file names)."""

    biasfile: str
    satufile: str
    darkfile: str
    drkcfile: str
    pfltfile: str
    bpixtab: str
    ccdtab: str
    oscntab: str
    imphttab: str
    idctab: str
    npolfile: str
    d2imfile: str

    def header_values(self) -> dict[str, str]:
        return {key.upper(): f"jref${name}" for key, name in self.__dict__.items()}


def useafter(date: _dt.date) -> str:
    """CRDS USEAFTER text, e.g. 'Jun 01 2024 00:00:00'."""
    return date.strftime("%b %d %Y 00:00:00")


def _primary(*, filename: str, filetype: str, descrip: str, date: _dt.date,
             nextend: int, extra: dict | None = None) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    h = hdu.header
    h["NEXTEND"] = (nextend, "number of extensions in file")
    h["FILENAME"] = (filename, "name of file")
    h["FILETYPE"] = (filetype, "type of data found in data file")
    h["TELESCOP"] = ("HST", "telescope used to acquire data")
    h["INSTRUME"] = ("ACS", "identifier for instrument used to acquire data")
    h["DETECTOR"] = ("WFC", "detector in use: WFC, HRC, or SBC")
    for key, value in (extra or {}).items():
        h[key] = value
    h["USEAFTER"] = (useafter(date), "use after this date")
    h["PEDIGREE"] = (_PEDIGREE, "pedigree of the reference data")
    h["DESCRIP"] = descrip[:67]
    h["COMMENT"] = _COMMENT
    return hdu


def reference_primary(*, filename: str, filetype: str, descrip: str, date: _dt.date,
                      extra: dict | None = None) -> fits.PrimaryHDU:
    """The primary header every simulated reference file starts with (NEXTEND set later)."""
    return _primary(filename=filename, filetype=filetype, descrip=descrip, date=date,
                    nextend=0, extra=extra)


def empty_image_hdu(cards: list[tuple]) -> fits.ImageHDU:
    """A data-less 16-bit image extension (NAXIS 0) standing for a constant array, as the
    archive writes ERR and DQ of raw files and of reference images.

    astropy writes BITPIX 8 for an HDU built in memory without data, so the HDU is read
    back from its header bytes, which keeps BITPIX 16.
    """
    h = fits.Header([("XTENSION", "IMAGE", "extension type"),
                     ("BITPIX", 16, "bits per data value"),
                     ("NAXIS", 0, "number of data array dimensions"),
                     ("PCOUNT", 0, "number of group parameters"),
                     ("GCOUNT", 1, "number of groups"), *cards])
    return fits.ImageHDU.fromstring(h.tostring().encode("ascii"))


def _empty_ext(name: str, extver: int, chip: int, *, npix: tuple[int, int], ltv: tuple,
               pixvalue: int = 0) -> fits.ImageHDU:
    """An empty imset extension of a reference image: BITPIX 16, integer PIXVALUE."""
    return empty_image_hdu([
        ("EXTNAME", name, "extension name"),
        ("EXTVER", extver, "extension version number"),
        ("CCDCHIP", chip, "CCD chip (1 or 2)"),
        ("NPIX1", npix[0], "length of constant array axis 1"),
        ("NPIX2", npix[1], "length of constant array axis 2"),
        ("PIXVALUE", int(pixvalue), "values of pixels in constant array"),
        ("LTV1", float(ltv[0]), "offset in X to subsection start"),
        ("LTV2", float(ltv[1]), "offset in Y to subsection start"),
        ("LTM1_1", 1.0, "reciprocal of sampling rate in X"),
        ("LTM2_2", 1.0, "reciprocal of sampling rate in Y"),
    ])


def _image_imsets(sci_by_chip: dict, *, bunit: str, raw_sized: bool,
                  dq_by_chip: dict | None = None) -> list:
    hdus = []
    for lay in CHIPS:
        data = sci_by_chip[lay.chip]
        ltv = (lay.ltv1, lay.ltv2) if raw_sized else (0.0, 0.0)
        npix = (RAW_NX, RAW_NY) if raw_sized else (CHIP_NX, CHIP_NY)
        expected = (npix[1], npix[0])
        if data.shape != expected:
            raise ValueError(f"chip {lay.chip} reference array has shape {data.shape}, "
                             f"expected {expected}")
        sci = fits.ImageHDU(np.asarray(data, dtype=np.float32), name="SCI")
        h = sci.header
        h["EXTVER"] = lay.imset
        h["CCDCHIP"] = (lay.chip, "CCD chip (1 or 2)")
        h["BUNIT"] = bunit
        h["LTV1"], h["LTV2"] = ltv
        h["LTM1_1"], h["LTM2_2"] = 1.0, 1.0
        hdus.append(sci)
        hdus.append(_empty_ext("ERR", lay.imset, lay.chip, npix=npix, ltv=ltv))
        if dq_by_chip is None:
            hdus.append(_empty_ext("DQ", lay.imset, lay.chip, npix=npix, ltv=ltv))
        else:
            dq = fits.ImageHDU(np.asarray(dq_by_chip[lay.chip], dtype=np.int16), name="DQ")
            dq.header["EXTVER"] = lay.imset
            dq.header["CCDCHIP"] = lay.chip
            dq.header["LTV1"], dq.header["LTV2"] = ltv
            dq.header["LTM1_1"], dq.header["LTM2_2"] = 1.0, 1.0
            hdus.append(dq)
    return hdus


_IMAGE_EXTRA = {"CCDAMP": "ABCD", "CCDGAIN": 2.0}


def bias_hdul(filename: str, bias_by_chip: dict, *, date: _dt.date) -> fits.HDUList:
    """BIASFILE: raw-sized superbias in DN (includes prescan and virtual overscan)."""
    extra = dict(_IMAGE_EXTRA, APERTURE="WFC", XCORNER=0, YCORNER=0)
    prim = _primary(filename=filename, filetype="BIAS", descrip="Simulated WFC superbias (DN)",
                    date=date, nextend=6, extra=extra)
    return fits.HDUList([prim, *_image_imsets(bias_by_chip, bunit="COUNTS", raw_sized=True)])


def saturation_hdul(filename: str, sat_by_chip: dict, *, date: _dt.date) -> fits.HDUList:
    """SATUFILE: raw-sized full-well saturation level in electrons."""
    prim = _primary(filename=filename, filetype="FULL-WELL SATURATION LEVEL MAP",
                    descrip="Simulated WFC full-well saturation map (e-)", date=date,
                    nextend=6, extra={"CCDAMP": "ABCD"})
    return fits.HDUList([prim, *_image_imsets(sat_by_chip, bunit="ELECTRONS", raw_sized=True)])


def dark_hdul(filename: str, rate_by_chip: dict, *, date: _dt.date, cte_corrected: bool,
              hot_threshold_e_per_s: float) -> fits.HDUList:
    """DARKFILE / DRKCFILE: trimmed dark current in e-/s, DQ 16 on hot pixels."""
    from hstred.simulate.detector import HOT_PIXEL_DQ

    dq = {chip: np.where(rate >= hot_threshold_e_per_s, HOT_PIXEL_DQ, 0).astype(np.int16)
          for chip, rate in rate_by_chip.items()}
    kind = "CTEDARK" if cte_corrected else "DARK"
    descrip = ("Simulated WFC CTE-corrected dark (e-/s)" if cte_corrected
               else "Simulated WFC dark (e-/s)")
    prim = _primary(filename=filename, filetype=kind, descrip=descrip, date=date, nextend=6,
                    extra=dict(_IMAGE_EXTRA, HOTTHRSH=(hot_threshold_e_per_s,
                                                       "hot pixel threshold (e-/s)")))
    return fits.HDUList([prim, *_image_imsets(rate_by_chip, bunit="ELECTRONS/S",
                                              raw_sized=False, dq_by_chip=dq)])


def flat_hdul(filename: str, flat_by_chip: dict, *, filter_name: str,
              date: _dt.date) -> fits.HDUList:
    """PFLTFILE: trimmed flat = QE x relative pixel area, for one filter."""
    f1, f2 = filter_keywords(filter_name)
    extra = dict(_IMAGE_EXTRA, FILTER1=f1, FILTER2=f2, OBSTYPE="IMAGING", FW1OFFST=0,
                 FW2OFFST=0, FWSOFFST=0)
    prim = _primary(filename=filename, filetype="PIXEL-TO-PIXEL FLAT",
                    descrip=f"Simulated WFC {filter_name} flat (QE x pixel area)", date=date,
                    nextend=6, extra=extra)
    return fits.HDUList([prim, *_image_imsets(flat_by_chip, bunit="UNITLESS", raw_sized=False)])


#: BPIXTAB CCDAMP of a full-frame (four-amplifier) readout.
FULL_FRAME_AMPS = "ABCD"


def _defect_amplifier(defect: Defect) -> str:
    """The amplifier a defect is read through (its first pixel's quadrant)."""
    left, right = chip_layout(defect.chip).amps
    return left if defect.x < AMP_BOUNDARY_FLT else right


def bpixtab_hdul(filename: str, defects: tuple[Defect, ...], *,
                 date: _dt.date) -> fits.HDUList:
    """BPIXTAB in the archive layout: extension 'BPX' of int16 columns.

    Each defect (1-indexed trimmed coordinates) has a row for full-frame readouts
    (CCDAMP 'ABCD') and one for readouts through its own amplifier alone (one-letter
    CCDAMP, as subarrays use): calacs applies a row only when CCDAMP equals the
    exposure's CCDAMP or is 'N/A' (hstcal ``dodqi.c``). Defects are physical, so
    CCDGAIN is -999 (every gain). No injected defect is common to both chips, so
    every row names its CCDCHIP; -999 there would mean every chip.
    """
    defects = sorted(defects, key=lambda d: (d.chip, d.axis, d.x, d.y))
    for d in defects:
        if d.axis == 1 and (_defect_amplifier(d) != _defect_amplifier(
                Defect(d.chip, d.x + d.length - 1, d.y, 1, 1, d.response))):
            raise ValueError(f"defect {d} crosses the amplifier boundary")
    rows = [(d, FULL_FRAME_AMPS) for d in defects] + [(d, _defect_amplifier(d)) for d in defects]

    def int16(values) -> np.ndarray:
        return np.array(values, dtype=np.int16)

    cols = [
        fits.Column("PIX1", "I", array=int16([d.x + 1 for d, _ in rows])),
        fits.Column("PIX2", "I", array=int16([d.y + 1 for d, _ in rows])),
        fits.Column("LENGTH", "I", array=int16([d.length for d, _ in rows])),
        fits.Column("AXIS", "I", array=int16([d.axis for d, _ in rows])),
        fits.Column("VALUE", "I", array=int16([d.dq for d, _ in rows])),
        fits.Column("CCDCHIP", "I", array=int16([d.chip for d, _ in rows])),
        fits.Column("CCDAMP", "4A", array=[amp for _, amp in rows]),
        fits.Column("CCDGAIN", "I", array=int16([-999] * len(rows))),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="BPX")
    table.header["SIZAXIS1"] = CHIP_NX
    table.header["SIZAXIS2"] = CHIP_NY
    prim = _primary(filename=filename, filetype="BAD PIXELS",
                    descrip="Simulated WFC bad pixel table", date=date, nextend=1)
    return fits.HDUList([prim, table])


def ccdtab_hdul(filename: str, *, date: _dt.date,
                detectors: tuple[DetectorParams, ...] = ERA_DETECTORS) -> fits.HDUList:
    """CCDTAB: the 27 columns calacs reads; per detector set-up (era), one full-frame
    row per chip, matched on its CCDGAIN and CCDOFSTA-D."""
    amps = "ABCD"
    rows = [(params, lay.chip) for params in detectors for lay in CHIPS]
    n = len(rows)

    def per_row(values) -> list:
        return [values(params) for params, _ in rows]

    cols = [
        fits.Column("CCDAMP", "4A", array=["ABCD"] * n),
        fits.Column("CCDCHIP", "J", array=[chip for _, chip in rows]),
        fits.Column("CCDGAIN", "E", array=per_row(lambda p: p.ccdgain)),
        fits.Column("BINAXIS1", "J", array=[1] * n),
        fits.Column("BINAXIS2", "J", array=[1] * n),
    ]
    cols += [fits.Column(f"CCDOFST{a}", "J", array=per_row(lambda p: p.ccdofst)) for a in amps]
    cols += [fits.Column(f"CCDBIAS{a}", "E", array=per_row(lambda p, a=a: p.bias_dn[a]))
             for a in amps]
    cols += [fits.Column(f"ATODGN{a}", "E", array=per_row(lambda p, a=a: p.gain_e_per_dn[a]))
             for a in amps]
    cols += [fits.Column(f"READNSE{a}", "E", array=per_row(lambda p, a=a: p.read_noise_e[a]))
             for a in amps]
    cols += [
        fits.Column("AMPX", "J", array=[CHIP_NX // 2] * n),
        fits.Column("AMPY", "J", array=[0] * n),
        fits.Column("ATODSAT", "J", array=per_row(lambda p: p.atodsat_dn)),
        fits.Column("SATURATE", "E", array=per_row(lambda p: p.saturate_e)),
        fits.Column("OVRHFLS", "E", array=per_row(lambda p: p.ovrhfls_s)),
        fits.Column("OVRHUFLS", "E", array=per_row(lambda p: p.ovrhufls_s)),
        fits.Column("PEDIGREE", "20A", array=[_PEDIGREE] * n),
        fits.Column("DESCRIP", "60A", array=per_row(
            lambda p: f"simulated {p.era} full frame, gain {p.ccdgain:g}")),
    ]
    prim = _primary(filename=filename, filetype="CCD PARAMETERS",
                    descrip="Simulated WFC CCD parameters", date=date, nextend=1)
    return fits.HDUList([prim, fits.BinTableHDU.from_columns(cols)])


def oscntab_hdul(filename: str, *, date: _dt.date) -> fits.HDUList:
    """OSCNTAB: full-frame trim, bias-section and virtual-overscan geometry (1-indexed).

    The virtual-overscan columns VX cover the left amplifier only: calacs fits one
    slope in column number to them per chip (the pre-SM4 drift correction, hstcal
    ``blevdrift.c``), and across both amplifiers the step between their bias levels
    would be taken for that slope. Post-SM4 calibration does not use VX/VY.
    """
    rows = []
    for lay in CHIPS:
        if lay.trimy1:  # virtual overscan before the science rows
            vy = (1, VIRTUAL_OVERSCAN)
        else:
            vy = (RAW_NY - VIRTUAL_OVERSCAN + 1, RAW_NY)
        rows.append(dict(CCDAMP="ABCD", CCDCHIP=lay.chip, BINX=1, BINY=1, NX=RAW_NX, NY=RAW_NY,
                         TRIMX1=PRESCAN, TRIMX2=PRESCAN, TRIMY1=lay.trimy1, TRIMY2=lay.trimy2,
                         BIASSECTA1=1, BIASSECTA2=PRESCAN, BIASSECTB1=RAW_NX - PRESCAN + 1,
                         BIASSECTB2=RAW_NX, VX1=PRESCAN + 1, VX2=PRESCAN + AMP_NX, VY1=vy[0],
                         VY2=vy[1]))
    names = ["CCDAMP", "CCDCHIP", "BINX", "BINY", "NX", "NY", "TRIMX1", "TRIMX2", "TRIMY1",
             "TRIMY2", "BIASSECTA1", "BIASSECTA2", "BIASSECTB1", "BIASSECTB2", "VX1", "VX2",
             "VY1", "VY2"]
    cols = [fits.Column(name, "4A" if name == "CCDAMP" else "J",
                        array=[r[name] for r in rows]) for name in names]
    prim = _primary(filename=filename, filetype="OVERSCAN",
                    descrip="Simulated WFC overscan table", date=date, nextend=1)
    return fits.HDUList([prim, fits.BinTableHDU.from_columns(cols)])


#: MJD grid of the IMPHTTAB parametrised values (launch of ACS to 2045).
IMPHTTAB_MJD = np.arange(52334.0, 61400.0 + 1.0, 365.25 * 2)


def _photflam(info, mjd: np.ndarray) -> np.ndarray:
    years = (mjd - info.photflam_mjd) / 365.25
    return info.photflam * (1.0 + info.sens_loss_per_year * years)


def imphttab_hdul(filename: str, *, date: _dt.date) -> fits.HDUList:
    """IMPHTTAB in the archive layout: PHOTFLAM/PHOTPLAM/PHOTBW per filter and chip.

    Lower-case column names; each filter and chip has a fixed row ('acs,wfc1,f606w')
    and a row parameterised in MJD ('acs,wfc1,f606w,mjd#', PAR1NAMES 'MJD#') whose
    values and MJD grid are variable-length arrays (format 'PD()'), interpolated
    linearly in MJD by calacs and -9999 outside the grid.
    """
    mjd = IMPHTTAB_MJD
    n = mjd.size
    names = sorted(FILTERS)
    extensions = []
    for ext in ("PHOTFLAM", "PHOTPLAM", "PHOTBW"):
        obsmode, datacol, value, arrays, nelem, parnames, parvalues = [], [], [], [], [], [], []
        for name in names:
            info = FILTERS[name]
            if ext == "PHOTFLAM":
                series = _photflam(info, mjd)
            elif ext == "PHOTPLAM":
                series = np.full(n, info.pivot_angstrom)
            else:
                series = np.full(n, info.bandwidth_angstrom)
            for det in ("wfc1", "wfc2"):
                obsmode += [f"acs,{det},{name.lower()}", f"acs,{det},{name.lower()},mjd#"]
                datacol += [ext, f"{ext}1"]
                value += [float(np.interp(info.photflam_mjd, mjd, series)), 0.0]
                arrays += [np.zeros(0), series]
                nelem += [0, n]
                parnames += ["", "MJD#"]
                parvalues += [np.zeros(0), mjd]
        nrow = len(obsmode)
        lower = ext.lower()
        cols = [
            fits.Column("obsmode", "40A", array=obsmode),
            fits.Column("datacol", "12A", array=datacol),
            fits.Column(lower, "D", array=value),
            fits.Column(f"{lower}1", "PD()", array=np.array(arrays, dtype=object)),
            fits.Column("nelem1", "J", array=nelem),
            fits.Column("par1names", "12A", array=parnames),
            fits.Column("par1values", "PD()", array=np.array(parvalues, dtype=object)),
            fits.Column("pedigree", "20A", array=[_PEDIGREE] * nrow),
            fits.Column("descrip", "60A", array=["simulated photometry"] * nrow),
        ]
        table = fits.BinTableHDU.from_columns(cols, name=ext)
        extensions.append(table)
    extra = {"PHOTZPT": (-21.1, "ST magnitude zero point"), "PARNUM": (1, "parameters"),
             "PAR1NAME": "MJD#", "DBTABLE": "IMPHTTAB", "SYNSWVER": "simulated",
             "GRAPHTAB": "N/A", "COMPTAB": "N/A", "ORIGIN": "hstred"}
    prim = _primary(filename=filename, filetype="IMAGE PHOTOMETRY TABLE",
                    descrip="Simulated WFC photometry keywords", date=date, nextend=3,
                    extra=extra)
    return fits.HDUList([prim, *extensions])
