"""Headers and layout of ACS/WFC full-frame raw files, and atomic FITS writing.

A raw file is a primary header followed by two imsets (SCI, ERR, DQ): imset 1
is WFC2 (CCDCHIP=2), imset 2 is WFC1.  SCI holds uint16 DN (written as BITPIX
16 with BZERO 32768), 4144 x 2068 with prescan columns and virtual-overscan
rows; ERR and DQ are empty 16-bit extensions carrying NPIX1/NPIX2 and an
integer PIXVALUE, as in real raw files.

The headers follow real archive raws (notes section 9): each SCI header holds
only the linear TAN WCS the ground system computes (CRPIX, CRVAL, CD,
LTV/LTM, ORIENTAT, RA/DEC/PA_APER, VAFACTOR; no SIP, no IDCSCALE, no WCSNAME);
the camera's distortion is named in the primary header (IDCTAB, NPOLFILE,
D2IMFILE, written by :mod:`hstred.simulate.distortion`).  Simulator choices:
PCTECORR='OMIT' and PCTETAB='N/A' (no calacs CTE table is provided; hstred
corrects CTE with arCTIc), SINKCORR='OMIT' and SNKCFILE='N/A' (no sink pixels
are simulated), and no association (ASN_ID='NONE').
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.acs import CHIPS, RAW_NX, RAW_NY
from hstred.simulate.config import filter_keywords
from hstred.simulate.detector import DEFAULT_DETECTOR, DetectorParams
from hstred.simulate.references import ReferenceSet, empty_image_hdu

__all__ = [
    "RawHeaderInfo",
    "mjd_to_datetime",
    "primary_header",
    "raw_hdul",
    "write_fits_atomic",
    "CALIBRATION_SWITCHES",
    "UNUSED_REFERENCES",
]

_MJD_EPOCH = _dt.datetime(1858, 11, 17)

#: Calibration switches of a post-SM4 WFC raw file, as the simulator sets them.
CALIBRATION_SWITCHES = {
    "STATFLAG": (False, "Calculate statistics?"),
    "WRTERR": (True, "write out error array extension"),
    "DQICORR": ("PERFORM", "data quality initialization"),
    "ATODCORR": ("OMIT", "correct for A to D conversion errors"),
    "BLEVCORR": ("PERFORM", "subtract bias level computed from overscan img"),
    "BIASCORR": ("PERFORM", "Subtract bias image"),
    "FLSHCORR": ("OMIT", "post flash correction"),
    "CRCORR": ("OMIT", "combine observations to reject cosmic rays"),
    "EXPSCORR": ("PERFORM", "process individual observations after cr-reject"),
    "SHADCORR": ("OMIT", "apply shutter shading correction"),
    "PCTECORR": ("OMIT", "pixel CTE correction (done by hstred, arCTIc)"),
    "DARKCORR": ("PERFORM", "Subtract dark image"),
    "FLATCORR": ("PERFORM", "flat field data"),
    "PHOTCORR": ("PERFORM", "populate photometric header keywords"),
    "RPTCORR": ("OMIT", "add individual repeat observations"),
    "DRIZCORR": ("PERFORM", "drizzle processing"),
    "SINKCORR": ("OMIT", "sink pixel correction (none simulated)"),
}

#: Reference keywords present in real raw files that the simulation does not use.
UNUSED_REFERENCES = (
    "ATODTAB", "FLSHFILE", "CRREJTAB", "SHADFILE", "PCTETAB", "DFLTFILE", "LFLTFILE",
    "CFLTFILE", "SPOTTAB", "PHOTTAB", "DGEOFILE", "MDRIZTAB", "SNKCFILE", "MLINTAB",
)

#: Ground-system software versions written into raw primary headers.
OPUS_VERSION = "HSTDP 2024_2"


def mjd_to_datetime(mjd: float) -> _dt.datetime:
    """UTC datetime of a Modified Julian Date (microsecond precision)."""
    return _MJD_EPOCH + _dt.timedelta(days=float(mjd))


@dataclass(frozen=True)
class RawHeaderInfo:
    """Per-exposure facts for the primary header (times in MJD, angles in degrees)."""

    rootname: str
    filter_name: str
    expstart_mjd: float
    exptime_s: float
    darktime_s: float
    target: str
    ra_targ_deg: float
    dec_targ_deg: float
    pa_v3_deg: float
    postarg_arcsec: tuple[float, float]
    proposid: int
    linenum: str
    pattern_points: int
    pattern_step: int
    shutter: str


def primary_header(info: RawHeaderInfo, refs: ReferenceSet, *,
                   params: DetectorParams = DEFAULT_DETECTOR) -> fits.Header:
    """The primary header of a simulated raw file (no time-of-writing keywords)."""
    f1, f2 = filter_keywords(info.filter_name)
    start = mjd_to_datetime(info.expstart_mjd)
    h = fits.Header()
    cards = [
        ("NEXTEND", 6, "Number of standard extensions"),
        ("FILENAME", f"{info.rootname}_raw.fits", "name of file"),
        ("FILETYPE", "SCI", "type of data found in data file"),
        ("TELESCOP", "HST", "telescope used to acquire data"),
        ("INSTRUME", "ACS", "identifier for instrument used to acquire data"),
        ("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        ("ROOTNAME", info.rootname, "rootname of the observation set"),
        ("IMAGETYP", "EXT", "type of exposure identifier"),
        ("PRIMESI", "ACS", "instrument designated as prime"),
        ("TARGNAME", info.target, "proposer's target name"),
        ("RA_TARG", info.ra_targ_deg, "right ascension of the target (deg) (J2000)"),
        ("DEC_TARG", info.dec_targ_deg, "declination of the target (deg) (J2000)"),
        ("PROPOSID", info.proposid, "PEP proposal identifier"),
        ("LINENUM", info.linenum, "proposal logsheet line number"),
        ("PR_INV_L", "SIMULATED", "last name of principal investigator"),
        ("PA_V3", info.pa_v3_deg, "position angle of V3-axis of HST (deg)"),
        ("POSTARG1", info.postarg_arcsec[0], "POSTARG in axis 1 direction"),
        ("POSTARG2", info.postarg_arcsec[1], "POSTARG in axis 2 direction"),
        ("FGSLOCK", "FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)"),
        ("DATE-OBS", start.strftime("%Y-%m-%d"), "UT date of start of observation (yyyy-mm-dd)"),
        ("TIME-OBS", start.strftime("%H:%M:%S"), "UT time of start of observation (hh:mm:ss)"),
        ("EXPSTART", round(info.expstart_mjd, 8), "exposure start time (Modified Julian Date)"),
        ("EXPEND", round(info.expstart_mjd + info.exptime_s / 86400.0, 8),
         "exposure end time (Modified Julian Date)"),
        ("EXPTIME", info.exptime_s, "exposure duration (seconds)--calculated"),
        ("TEXPTIME", info.exptime_s, "total exposure time (seconds)"),
        ("DARKTIME", info.darktime_s, "dark current integration time (seconds)"),
        ("EXPFLAG", "NORMAL", "Exposure interruption indicator"),
        ("OBSTYPE", "IMAGING", "observation type - imaging or spectroscopic"),
        ("OBSMODE", "ACCUM", "operating mode"),
        ("CTEIMAGE", "NONE", "type of Charge Transfer Image, if applicable"),
        ("SCLAMP", "NONE", "lamp status, NONE or name of lamp which is on"),
        ("NRPTEXP", 1, "number of repeat exposures in set: default 1"),
        ("SUBARRAY", False, "data from a subarray (T) or full frame (F)"),
        ("DETECTOR", "WFC", "detector in use: WFC, HRC, or SBC"),
        ("FILTER1", f1, "element selected from filter wheel 1"),
        ("FILTER2", f2, "element selected from filter wheel 2"),
        ("FW1OFFST", 0, "computed filter wheel offset"),
        ("FW2OFFST", 0, "computed filter wheel offset"),
        ("FWSOFFST", 0, "computed filter wheel offset"),
        ("FW1ERROR", False, "filter wheel position error flag"),
        ("FW2ERROR", False, "filter wheel position error flag"),
        ("FWSERROR", False, "filter wheel position error flag"),
        ("LRFWAVE", 0.0, "proposed linear ramp filter wavelength"),
        ("APERTURE", "WFC", "aperture name"),
        ("PROPAPER", "WFC", "proposed aperture name"),
        ("DIRIMAGE", "NONE", "direct image for grism or prism exposure"),
        ("CTEDIR", "NONE", "CTE measurement direction: serial or parallel"),
        ("CRSPLIT", 1, "number of cosmic ray split exposures"),
        ("CCDAMP", "ABCD", "CCD amplifier read out configuration"),
        ("CCDGAIN", int(params.ccdgain), "commanded gain of CCD"),
        ("CCDOFSTA", params.ccdofst, "commanded CCD bias offset for amplifier A"),
        ("CCDOFSTB", params.ccdofst, "commanded CCD bias offset for amplifier B"),
        ("CCDOFSTC", params.ccdofst, "commanded CCD bias offset for amplifier C"),
        ("CCDOFSTD", params.ccdofst, "commanded CCD bias offset for amplifier D"),
        ("BINAXIS1", 1, "axis1 data bin size in unbinned detector pixels"),
        ("BINAXIS2", 1, "axis2 data bin size in unbinned detector pixels"),
        ("SHUTRPOS", info.shutter, "Shutter position: A or B"),
        ("FLASHDUR", 0.0, "Exposure time in seconds: 0.1 to 409.5"),
        ("FLASHCUR", "OFF", "Post flash current (zero, low, medium, high)"),
        ("FLASHSTA", "NOT PERFORMED", "Status: SUCCESSFUL, ABORTED, NOT PERFORMED"),
        ("PATTERN1", "ACS-WFC-DITHER-LINE", "primary pattern type"),
        ("P1_SHAPE", "LINE", "primary pattern shape"),
        ("P1_PURPS", "DITHER", "primary pattern purpose"),
        ("P1_NPTS", info.pattern_points, "number of points in primary pattern"),
        ("PATTSTEP", info.pattern_step, "position number of this point in the pattern"),
        ("ASN_ID", "NONE", "unique identifier assigned to association"),
        ("ASN_TAB", "NONE", "name of the association table"),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment)
    if params.jwrotype is not None:  # pre-SM4 raw files have no JWROTYPE
        h.set("JWROTYPE", params.jwrotype, "CCD readout type (dual slope integrator)",
              after="BINAXIS2")
    for amp in "ABCD":
        h[f"ATODGN{amp}"] = (params.gain_e_per_dn[amp], f"calibrated gain for amplifier {amp}")
    for amp in "ABCD":
        h[f"READNSE{amp}"] = (params.read_noise_e[amp],
                              f"calibrated read noise for amplifier {amp}")
    for amp in "ABCD":
        h[f"BIASLEV{amp}"] = (0.0, f"bias level for amplifier {amp}")
    written = mjd_to_datetime(info.expstart_mjd + 1.0)
    for key, value, comment in (
        ("DATE", written.strftime("%Y-%m-%d"), "date this file was written (yyyy-mm-dd)"),
        ("OPUS_VER", OPUS_VERSION, "data processing software system version"),
        ("CAL_VER", "", "CALACS code version"),
        ("MDRIZSKY", 0.0, "Sky value computed by AstroDrizzle"),
        ("QUALCOM1", "", ""),
        ("QUALCOM2", "", ""),
        ("QUALCOM3", "", ""),
        ("GRAPHTAB", "N/A", "the HST graph table"),
        ("COMPTAB", "N/A", "the HST components table"),
    ):
        h[key] = (value, comment)
    for key, (value, comment) in CALIBRATION_SWITCHES.items():
        h[key] = (value, comment)
    for key, value in refs.header_values().items():
        h[key] = (value, "reference file (CRDS-style cache, jref$)")
    for key in UNUSED_REFERENCES:
        h[key] = ("N/A", "not used by this simulated data set")
    return h


def _sci_hdu(data: np.ndarray, *, rootname: str, layout, wcs: dict, filter_name: str,
             aperture_sky: tuple[float, float, float], vafactor: float) -> fits.ImageHDU:
    """A raw SCI extension; ``wcs`` holds the linear FLT-frame CRPIX/CRVAL/CD cards."""
    if data.shape != (RAW_NY, RAW_NX) or data.dtype != np.uint16:
        raise ValueError(f"raw SCI must be uint16 {RAW_NY}x{RAW_NX}, got {data.dtype} "
                         f"{data.shape}")
    hdu = fits.ImageHDU(data, name="SCI")
    h = hdu.header
    h["EXTVER"] = (layout.imset, "extension version number")
    h["ROOTNAME"] = (rootname, "rootname of the observation set")
    h["EXPNAME"] = (rootname, "exposure identifier")
    h["INHERIT"] = (True, "inherit the primary header")
    h["BUNIT"] = ("COUNTS", "brightness units")
    f1, f2 = filter_keywords(filter_name)
    h["PHOTMODE"] = (" ".join(["ACS", "WFC1", *(f for f in (f1, f2)
                                                  if not f.startswith("CLEAR"))]),
                     "observation con")
    h["CCDCHIP"] = (layout.chip, "CCD chip (1 or 2)")
    h["WCSAXES"] = (2, "number of World Coordinate System axes")
    h["CRPIX1"] = (wcs["CRPIX1"] + layout.ltv1, "x-coordinate of reference pixel")
    h["CRPIX2"] = (wcs["CRPIX2"] + layout.ltv2, "y-coordinate of reference pixel")
    h["CRVAL1"] = (wcs["CRVAL1"], "first axis value at reference pixel")
    h["CRVAL2"] = (wcs["CRVAL2"], "second axis value at reference pixel")
    h["CTYPE1"] = ("RA---TAN", "the coordinate type for the first axis")
    h["CTYPE2"] = ("DEC--TAN", "the coordinate type for the second axis")
    h["CD1_1"] = (wcs["CD1_1"], "partial of first axis coordinate w.r.t. x")
    h["CD1_2"] = (wcs["CD1_2"], "partial of first axis coordinate w.r.t. y")
    h["CD2_1"] = (wcs["CD2_1"], "partial of second axis coordinate w.r.t. x")
    h["CD2_2"] = (wcs["CD2_2"], "partial of second axis coordinate w.r.t. y")
    h["LTV1"] = (float(layout.ltv1), "offset in X to subsection start")
    h["LTV2"] = (float(layout.ltv2), "offset in Y to subsection start")
    h["LTM1_1"] = (1.0, "reciprocal of sampling rate in X")
    h["LTM2_2"] = (1.0, "reciprocal of sampling rate in Y")
    orientat = float(np.degrees(np.arctan2(wcs["CD1_2"], wcs["CD2_2"])) % 360.0)
    h["ORIENTAT"] = (orientat, "position angle of image y axis (deg. e of n)")
    ra_aper, dec_aper, pa_aper = aperture_sky
    h["RA_APER"] = (ra_aper, "RA of aperture reference position")
    h["DEC_APER"] = (dec_aper, "Declination of aperture reference position")
    h["PA_APER"] = (pa_aper, "Position Angle of reference aperture center (de")
    h["VAFACTOR"] = (vafactor, "velocity aberration plate scale factor")
    h["CENTERA1"] = (2073, "subarray axis1 center pt in unbinned dect. pix")
    h["CENTERA2"] = (1035 if layout.chip == 2 else 3083,
                     "subarray axis2 center pt in unbinned dect. pix")
    h["SIZAXIS1"] = (RAW_NX, "subarray axis1 size in unbinned detector pixels")
    h["SIZAXIS2"] = (RAW_NY, "subarray axis2 size in unbinned detector pixels")
    h["BINAXIS1"] = (1, "axis1 data bin size in unbinned detector pixels")
    h["BINAXIS2"] = (1, "axis2 data bin size in unbinned detector pixels")
    h["SDQFLAGS"] = (31743, "serious data quality flags")
    h["NGOODPIX"] = (int(data.size), "number of good pixels")
    h["GOODMIN"] = (float(data.min()), "minimum value of good pixels")
    h["GOODMAX"] = (float(data.max()), "maximum value of good pixels")
    h["GOODMEAN"] = (float(np.mean(data, dtype=np.float64)), "mean value of good pixels")
    h["SNRMIN"] = (0.0, "minimum signal to noise of good pixels")
    h["SNRMAX"] = (0.0, "maximum signal to noise of good pixels")
    h["SNRMEAN"] = (0.0, "mean value of signal to noise of good pixels")
    h["MEANDARK"] = (0.0, "average of the dark values subtracted")
    h["MEANBLEV"] = (0.0, "average of all bias levels subtracted")
    h["MEANFLSH"] = (0.0, "Mean number of counts in post flash exposure")
    return hdu


def _empty_hdu(name: str, *, rootname: str, layout, bunit: str) -> fits.ImageHDU:
    return empty_image_hdu([
        ("EXTNAME", name, "extension name"),
        ("EXTVER", layout.imset, "extension version number"),
        ("ROOTNAME", rootname, "rootname of the observation set"),
        ("EXPNAME", rootname, "exposure identifier"),
        ("INHERIT", True, "inherit the primary header"),
        ("BUNIT", bunit, "brightness units"),
        ("NPIX1", RAW_NX, "length of constant array axis 1"),
        ("NPIX2", RAW_NY, "length of constant array axis 2"),
        ("PIXVALUE", 0, "values of pixels in constant array"),
        ("CCDCHIP", layout.chip, "CCD chip (1 or 2)"),
        ("LTV1", float(layout.ltv1), "offset in X to subsection start"),
        ("LTV2", float(layout.ltv2), "offset in Y to subsection start"),
        ("LTM1_1", 1.0, "reciprocal of sampling rate in X"),
        ("LTM2_2", 1.0, "reciprocal of sampling rate in Y"),
    ])


def raw_hdul(primary: fits.Header, sci_by_chip: dict, wcs_by_chip: dict,
             aperture_sky: tuple[float, float, float], *, vafactor: float) -> fits.HDUList:
    """Assemble a raw HDUList: primary, then SCI/ERR/DQ for WFC2 and WFC1.

    ``wcs_by_chip`` holds each chip's linear FLT-frame WCS cards (CRPIX1/2,
    CRVAL1/2, CD1_1..CD2_2); CRPIX is shifted by the raw file's LTV.
    """
    rootname = primary["ROOTNAME"]
    filter_name = next(f for f in (primary["FILTER1"], primary["FILTER2"])
                       if not str(f).startswith("CLEAR"))
    hdus: list = [fits.PrimaryHDU(header=primary)]
    for lay in CHIPS:
        hdus.append(_sci_hdu(sci_by_chip[lay.chip], rootname=rootname, layout=lay,
                             wcs=wcs_by_chip[lay.chip], filter_name=filter_name,
                             aperture_sky=aperture_sky, vafactor=vafactor))
        hdus.append(_empty_hdu("ERR", rootname=rootname, layout=lay, bunit="COUNTS"))
        hdus.append(_empty_hdu("DQ", rootname=rootname, layout=lay, bunit="UNITLESS"))
    return fits.HDUList(hdus)


def write_fits_atomic(hdul: fits.HDUList, path: Path) -> Path:
    """Write ``hdul`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        hdul.writeto(tmp, overwrite=True, output_verify="exception")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
