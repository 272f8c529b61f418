"""The camera's geometric distortion: reference files in the archive's formats, read by stwcs.

A real ACS/WFC raw file carries only the linear TAN WCS the ground system
computes; the distortion lives in three reference files named in the primary
header, which ``stwcs.updatewcs`` turns into TAN-SIP keywords plus lookup-table
extensions.  The simulator writes those files and renders every pixel through
exactly the WCS that stwcs derives from them, so stwcs's reading of the files
*is* the truth:

* IDCTAB ``_idc``: one FORWARD row per chip and filter pair, order-4 polynomials
  ``X = sum cx[i, j] dx^j dy^(i-j)`` (arcsec; ``dx = x - XREF``, ``dy = y - YREF``
  in 1-indexed FLT pixels; ``CX11`` is the coefficient of ``dx``) in stwcs's
  ACS/WFC ideal frame (``X = V2 - V2REF``, ``Y = -(V3 - V3REF)``, parity
  ``diag(1, -1)``).  The coefficients are a fit to the HST SIAF apertures
  JWFC1FIX/JWFC2FIX (exact: the SIAF model is itself of order 4), so the
  distortion has its real size (non-linear part about 60-70 px at the corners).
  The primary header holds the 2015-style time-dependent terms (``TDD_DATE``,
  ``TDD_CTB1/2`` skew, ``TDD_CXB1/2`` x scale, per year), which stwcs applies to
  the linear coefficients for the exposure's DATE-OBS.
* NPOLFILE ``_npl``, one per filter: ``DX``/``DY`` image extensions per chip
  (``CCDCHIP``), 65 x 33 nodes 64 px apart, the residual distortion in ideal
  pixels (about 0.1 px RMS, smooth, with a filter-dependent part).
* D2IMFILE ``_d2i``: a ``DX`` extension per chip of 4096 x 1, the column-width
  correction in pixels (a lithographic pattern repeating every 68 columns plus
  slow drifts, a few hundredths of a pixel).

:func:`stwcs_chip_wcs` runs ``stwcs.updatewcs`` (offline, ``use_db=False``) on
an in-memory FLT-like file built from a raw header and returns, per chip, the
full distortion WCS (:class:`DistortedWcs`) that the renderer uses.
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hstred.acs import CHIP_NX, CHIP_NY, CHIPS, PRESCAN
from hstred.simulate.config import FILTERS, filter_keywords
from hstred.simulate.rng import rng_for

__all__ = [
    "IDC_ORDER",
    "IDC_SCALE_ARCSEC",
    "IDC_XREF",
    "IDC_YREF",
    "REFERENCE_CHIP",
    "TDD_DATE_YEAR",
    "DistortedWcs",
    "idc_model",
    "idctab_hdul",
    "npolfile_hdul",
    "d2imfile_hdul",
    "stwcs_chip_wcs",
    "reference_point_headers",
]

IDC_ORDER = 4
IDC_SCALE_ARCSEC = 0.05
#: Reference pixel of each chip's polynomial, 1-indexed FLT pixels (as in real IDCTABs).
IDC_XREF, IDC_YREF = 2048.0, 1024.0
#: stwcs's reference chip for ACS/WFC (CCDCHIP 2, i.e. WFC2, the first imset).
REFERENCE_CHIP = 2
#: Reference date of the time-dependent terms (decimal year), as in real IDCTABs.
TDD_DATE_YEAR = 2004.5
#: Time-dependent linear terms per chip, arcsec per pixel per year: skew of CY11
#: (TDD_CTB) and x scale of CX11 (TDD_CXB).  They move the corners by about
#: 0.1 px per decade, the size ACS ISR 2007-08 and 2015-06 report.
_TDD = {1: {"TDD_CTB": -1.6e-7, "TDD_CXB": 2.4e-8},
        2: {"TDD_CTB": -1.3e-7, "TDD_CXB": 2.0e-8}}
_NPOL_NODES = (33, 65)  # (y, x)
_NPOL_STEP = 64.0
_NPOL_RMS_PX = 0.08
_D2IM_PERIOD = 68
_D2IM_RMS_PX = 0.02


def _exponents(order: int) -> list[tuple[int, int]]:
    """(i, j) pairs of the IDC polynomial: term cx[i, j] dx^j dy^(i-j), degree 1..order."""
    return [(i, j) for i in range(1, order + 1) for j in range(i + 1)]


@dataclass(frozen=True)
class IdcChip:
    """One chip's IDCTAB row: coefficients (arcsec) and telescope reference point."""

    chip: int
    cx: np.ndarray
    cy: np.ndarray
    v2ref_arcsec: float
    v3ref_arcsec: float
    max_fit_residual_px: float


@functools.lru_cache(maxsize=1)
def idc_model() -> dict[int, IdcChip]:
    """Per-chip IDC polynomials fitted to the SIAF apertures (cached)."""
    from hstred.simulate.wcs import CHIP_APERTURES, siaf_aperture

    out = {}
    for chip, name in CHIP_APERTURES.items():
        ap = siaf_aperture(name)
        xg, yg = np.meshgrid(np.linspace(1.0, CHIP_NX, 41), np.linspace(1.0, CHIP_NY, 21))
        x, y = xg.ravel(), yg.ravel()
        v2, v3 = (np.asarray(a, dtype=float) for a in ap.sci_to_tel(x + PRESCAN, y))
        v2ref, v3ref = (float(a) for a in ap.sci_to_tel(IDC_XREF + PRESCAN, IDC_YREF))
        big_x, big_y = v2 - v2ref, -(v3 - v3ref)
        dx, dy = x - IDC_XREF, y - IDC_YREF
        terms = _exponents(IDC_ORDER)
        s = 2048.0
        design = np.stack([(dx / s) ** j * (dy / s) ** (i - j) for i, j in terms], axis=1)
        cx = np.zeros((IDC_ORDER + 1, IDC_ORDER + 1))
        cy = np.zeros_like(cx)
        worst = 0.0
        for target, coef in ((big_x, cx), (big_y, cy)):
            sol, *_ = np.linalg.lstsq(design, target, rcond=None)
            worst = max(worst, float(np.max(np.abs(design @ sol - target))) / IDC_SCALE_ARCSEC)
            for (i, j), c in zip(terms, sol, strict=True):
                coef[i, j] = c / s**i
        out[chip] = IdcChip(chip=chip, cx=cx, cy=cy, v2ref_arcsec=v2ref, v3ref_arcsec=v3ref,
                            max_fit_residual_px=worst)
    return out


def _primary(*, filename: str, filetype: str, descrip: str, date: _dt.date,
             extra: dict) -> fits.PrimaryHDU:
    from hstred.simulate.references import reference_primary

    return reference_primary(filename=filename, filetype=filetype, descrip=descrip,
                             date=date, extra=extra)


def idctab_hdul(name: str, *, date: _dt.date) -> fits.HDUList:
    """The IDCTAB: a FORWARD row per chip and filter pair (see the module docstring)."""
    model = idc_model()
    extra = {"NORDER": (IDC_ORDER, "order of the distortion polynomials"),
             "PARITY": (-1, "parity of the detector frame"),
             "TDD_DATE": (TDD_DATE_YEAR, "reference date of the time-dependent terms")}
    for chip in (1, 2):
        for key, value in _TDD[chip].items():
            extra[f"{key}{chip}"] = (value, "time-dependent term, arcsec/pixel/year")
    primary = _primary(filename=name, filetype="DISTORTION COEFFICIENTS",
                       descrip="ACS/WFC distortion polynomials (simulated, from the SIAF)",
                       date=date, extra=extra)
    rows = []
    for filter_name in sorted(FILTERS):
        f1, f2 = filter_keywords(filter_name)
        for chip in (1, 2):
            m = model[chip]
            row = {"DETCHIP": chip, "DIRECTION": "FORWARD", "FILTER1": f1, "FILTER2": f2,
                   "XSIZE": CHIP_NX, "YSIZE": CHIP_NY, "XREF": IDC_XREF, "YREF": IDC_YREF,
                   "V2REF": m.v2ref_arcsec, "V3REF": m.v3ref_arcsec,
                   "SCALE": IDC_SCALE_ARCSEC}
            for i, j in _exponents(IDC_ORDER):
                row[f"CX{i}{j}"] = m.cx[i, j]
                row[f"CY{i}{j}"] = m.cy[i, j]
            rows.append(row)
    cols = [fits.Column(name="DETCHIP", format="I", array=[r["DETCHIP"] for r in rows]),
            fits.Column(name="DIRECTION", format="8A", array=[r["DIRECTION"] for r in rows]),
            fits.Column(name="FILTER1", format="8A", array=[r["FILTER1"] for r in rows]),
            fits.Column(name="FILTER2", format="8A", array=[r["FILTER2"] for r in rows])]
    for key in ("XSIZE", "YSIZE"):
        cols.append(fits.Column(name=key, format="I", array=[r[key] for r in rows]))
    for key in ("XREF", "YREF", "V2REF", "V3REF", "SCALE"):
        cols.append(fits.Column(name=key, format="D", array=[r[key] for r in rows]))
    for i, j in _exponents(IDC_ORDER):
        for axis in ("CX", "CY"):
            key = f"{axis}{i}{j}"
            cols.append(fits.Column(name=key, format="D", array=[r[key] for r in rows]))
    table = fits.BinTableHDU.from_columns(cols)
    primary.header["NEXTEND"] = 1
    return fits.HDUList([primary, table])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], *, rms: float,
                  modes: int = 6) -> np.ndarray:
    """A smooth random field: a sum of low-order 2-D cosine modes scaled to ``rms``."""
    ny, nx = shape
    u = np.linspace(0.0, 1.0, nx)[None, :]
    v = np.linspace(0.0, 1.0, ny)[:, None]
    field = np.zeros(shape)
    for _ in range(modes * 3):
        kx, ky = rng.integers(0, modes, size=2)
        phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
        amp = rng.normal() / (1.0 + kx + ky)
        field += amp * np.cos(np.pi * kx * u + phase[0]) * np.cos(np.pi * ky * v + phase[1])
    field -= field.mean()
    return field * (rms / max(float(field.std()), 1e-12))


def _lookup_ext(name: str, extver: int, chip: int, data: np.ndarray, *, step: float,
                crval: float) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data.astype(np.float32), name=name)
    h = hdu.header
    h["EXTVER"] = (extver, "extension version number")
    h["CCDCHIP"] = (chip, "CCD chip (1 or 2)")
    for axis in (1, 2):
        h[f"CRPIX{axis}"] = (1.0, "array element of the first node")
        h[f"CRVAL{axis}"] = (crval, "image pixel of the first node")
        h[f"CDELT{axis}"] = (step, "image pixels between nodes")
    return hdu


def npolfile_hdul(name: str, *, seed: int, filter_name: str, date: _dt.date) -> fits.HDUList:
    """An NPOLFILE for one filter: DX and DY per chip (see the module docstring)."""
    f1, f2 = filter_keywords(filter_name)
    primary = _primary(filename=name, filetype="DXY GRID",
                       descrip=f"ACS/WFC residual distortion, {filter_name} (simulated)",
                       date=date, extra={"FILTER1": f1, "FILTER2": f2,
                                         "NPOLEXT": (4, "number of lookup-table extensions")})
    hdus = [primary]
    extver = 0
    for lay in CHIPS:
        for axis in ("DX", "DY"):
            extver += 1
            common = _smooth_field(rng_for(seed, "npol", lay.chip, axis), _NPOL_NODES,
                                   rms=_NPOL_RMS_PX)
            own = _smooth_field(rng_for(seed, "npol", lay.chip, axis, filter_name), _NPOL_NODES,
                                rms=0.25 * _NPOL_RMS_PX)
            hdus.append(_lookup_ext(axis, extver, lay.chip, common + own, step=_NPOL_STEP,
                                    crval=1.0))
    primary.header["NEXTEND"] = len(hdus) - 1
    return fits.HDUList(hdus)


def d2imfile_hdul(name: str, *, seed: int, date: _dt.date) -> fits.HDUList:
    """The D2IMFILE: a column-width correction (DX, 4096 x 1) per chip."""
    primary = _primary(filename=name, filetype="D2I",
                       descrip="ACS/WFC column-width correction (simulated)", date=date,
                       extra={"AXISCORR": (1, "axis corrected by the lookup table")})
    hdus = [primary]
    for extver, lay in enumerate(CHIPS, start=1):
        rng = rng_for(seed, "d2im", lay.chip)
        cols = np.arange(CHIP_NX, dtype=float)
        # The mask was written in blocks of 68 columns: inside a block the columns
        # are a little wider than nominal, and the last one absorbs the difference.
        sawtooth = (cols % _D2IM_PERIOD) / _D2IM_PERIOD - 0.5
        block_scale = rng.normal(1.0, 0.2, CHIP_NX // _D2IM_PERIOD + 1)[
            (cols // _D2IM_PERIOD).astype(int)]
        slow = 0.3 * np.cos(2.0 * np.pi * cols / CHIP_NX * rng.uniform(1.0, 3.0)
                            + rng.uniform(0.0, 2.0 * np.pi))
        shift = sawtooth * block_scale + slow
        shift -= shift.mean()
        shift *= _D2IM_RMS_PX / shift.std()
        hdus.append(_lookup_ext("DX", extver, lay.chip, shift[None, :], step=1.0, crval=1.0))
    primary.header["NEXTEND"] = len(hdus) - 1
    return fits.HDUList(hdus)


class DistortedWcs:
    """A chip's full distortion WCS (TAN-SIP + NPOL + D2IM) in 1-indexed FLT pixels."""

    def __init__(self, wcs: WCS) -> None:
        self.wcs = wcs

    def pix2world(self, x, y):
        """RA, Dec (deg) of 1-indexed FLT pixel coordinates."""
        ra, dec = self.wcs.all_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float),
                                         1)
        return ra, dec

    def world2pix(self, ra_deg, dec_deg):
        """1-indexed FLT pixel coordinates of sky positions (to 1e-8 px)."""
        x, y = self.wcs.all_world2pix(np.asarray(ra_deg, dtype=float),
                                      np.asarray(dec_deg, dtype=float), 1,
                                      tolerance=1e-8, maxiter=50, adaptive=False, quiet=True)
        return x, y

    def jacobian(self, x, y, *, step: float = 0.5) -> np.ndarray:
        """d(xi, eta)/d(x, y) in degrees per pixel (central differences), shape (..., 2, 2).

        ``xi`` (east) and ``eta`` (north) are standard coordinates on the tangent
        plane at each position.
        """
        from hstred.simulate.wcs import tangent_plane

        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        ra0, dec0 = self.pix2world(x, y)
        out = np.empty(x.shape + (2, 2))
        for col, (ddx, ddy) in enumerate(((step, 0.0), (0.0, step))):
            rp, dp = self.pix2world(x + ddx, y + ddy)
            rm, dm = self.pix2world(x - ddx, y - ddy)
            xp, ep = tangent_plane(rp, dp, ra0_deg=ra0, dec0_deg=dec0)
            xm, em = tangent_plane(rm, dm, ra0_deg=ra0, dec0_deg=dec0)
            out[..., 0, col] = (xp - xm) / (2.0 * step)
            out[..., 1, col] = (ep - em) / (2.0 * step)
        return out

    def pixel_area_map(self, *, shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> np.ndarray:
        """Pixel solid angle relative to (0.05")^2 for every FLT pixel ``[y, x]``.

        Each pixel's four corners are mapped to the focal plane (SIP + lookup
        tables, :meth:`astropy.wcs.WCS.pix2foc`) and the quadrilateral's area
        taken there, then scaled by the linear CD's area; the TAN projection's
        own area change over the chip (below 1e-6) is left out.
        """
        ny, nx = shape
        xc, yc = np.meshgrid(np.arange(nx + 1, dtype=float) + 0.5,
                             np.arange(ny + 1, dtype=float) + 0.5)
        fx, fy = self.wcs.pix2foc(xc.ravel(), yc.ravel(), 1)
        fx = fx.reshape(ny + 1, nx + 1)
        fy = fy.reshape(ny + 1, nx + 1)
        # Shoelace over corners (j, i), (j, i+1), (j+1, i+1), (j+1, i).
        x1, y1 = fx[:-1, :-1], fy[:-1, :-1]
        x2, y2 = fx[:-1, 1:], fy[:-1, 1:]
        x3, y3 = fx[1:, 1:], fy[1:, 1:]
        x4, y4 = fx[1:, :-1], fy[1:, :-1]
        area = 0.5 * np.abs((x1 * y2 - x2 * y1) + (x2 * y3 - x3 * y2)
                            + (x3 * y4 - x4 * y3) + (x4 * y1 - x1 * y4))
        det_cd = abs(np.linalg.det(self.wcs.wcs.cd)) * 3600.0**2
        return (area * det_cd / IDC_SCALE_ARCSEC**2).astype(np.float64)

    def linear_header_cards(self) -> dict:
        """CRPIX, CRVAL and CD of the WCS (its linear part at the reference pixel)."""
        w = self.wcs.wcs
        return {"CRPIX1": float(w.crpix[0]), "CRPIX2": float(w.crpix[1]),
                "CRVAL1": float(w.crval[0]), "CRVAL2": float(w.crval[1]),
                "CD1_1": float(w.cd[0, 0]), "CD1_2": float(w.cd[0, 1]),
                "CD2_1": float(w.cd[1, 0]), "CD2_2": float(w.cd[1, 1])}

    def to_dict(self) -> dict:
        """The linear part and the forward SIP arrays a[p][q], b[p][q] (FLT pixels)."""
        w = self.wcs
        lin = self.linear_header_cards()
        out = {"crpix_flt": [lin["CRPIX1"], lin["CRPIX2"]],
               "crval": [lin["CRVAL1"], lin["CRVAL2"]],
               "cd": [[lin["CD1_1"], lin["CD1_2"]], [lin["CD2_1"], lin["CD2_2"]]]}
        if w.sip is not None:
            out["sip_a"] = w.sip.a.tolist()
            out["sip_b"] = w.sip.b.tolist()
        out["lookup_tables"] = {"npol": w.cpdis1 is not None, "d2im": w.det2im1 is not None}
        return out


def _flt_like_hdul(primary: fits.Header, sci_headers: dict[int, fits.Header]) -> fits.HDUList:
    """Primary plus a data-less SCI header per chip in raw order, LTV removed (FLT frame)."""
    hdus: list = [fits.PrimaryHDU(header=primary.copy())]
    for lay in CHIPS:
        h = sci_headers[lay.chip].copy()
        for axis, key in ((1, "LTV1"), (2, "LTV2")):
            shift = float(h.get(key, 0.0))
            h[f"CRPIX{axis}"] = float(h[f"CRPIX{axis}"]) - shift
            h[key] = 0.0
        hdu = fits.ImageHDU(name="SCI")
        for card in h.cards:
            if card.keyword not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                    "GCOUNT", "BZERO", "BSCALE"):
                hdu.header.append(card)
        hdu.header["EXTNAME"] = "SCI"
        hdu.header["EXTVER"] = lay.imset
        # stwcs sizes the WCS from the image axes: a data-less HDU reports them here.
        hdu.header["NAXIS"] = 2
        hdu.header["NAXIS1"] = CHIP_NX
        hdu.header["NAXIS2"] = CHIP_NY
        hdus.append(hdu)
    return fits.HDUList(hdus)


def reference_point_headers(crval_by_chip: dict, vafactor: float) -> dict:
    """FLT-frame SCI headers holding only a reference point, as stwcs's input.

    stwcs rebuilds every chip's CD from PA_V3 and the IDCTAB, and every chip's
    CRVAL from the reference chip's; only that chip's CRVAL (at CRPIX = XREF,
    YREF), PA_V3, DATE-OBS and VAFACTOR shape the result.
    """
    scale = IDC_SCALE_ARCSEC / 3600.0
    out = {}
    for lay in CHIPS:
        h = fits.Header()
        h["CCDCHIP"] = lay.chip
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
        h["CRPIX1"], h["CRPIX2"] = IDC_XREF, IDC_YREF
        h["CRVAL1"], h["CRVAL2"] = (float(v) for v in crval_by_chip[lay.chip])
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale, 0.0, 0.0, scale
        h["LTV1"], h["LTV2"], h["LTM1_1"], h["LTM2_2"] = 0.0, 0.0, 1.0, 1.0
        h["VAFACTOR"] = vafactor
        out[lay.chip] = h
    return out


def stwcs_chip_wcs(primary: fits.Header, sci_headers: dict[int, fits.Header],
                   reference_dir: Path) -> dict[int, DistortedWcs]:
    """What stwcs derives for each chip of an exposure from its headers and references.

    ``primary`` names IDCTAB/NPOLFILE/D2IMFILE as ``jref$<name>``, found in
    ``reference_dir``; ``sci_headers`` (by CCDCHIP) hold the linear WCS, raw or FLT.
    """
    from stwcs.wcsutil import HSTWCS

    from hstred.distortion import distortion_reference_names, quiet_stwcs, update_wcs

    hdul = _flt_like_hdul(primary, sci_headers)
    references = {k: (Path(reference_dir) / n if n is not None else None)
                  for k, n in distortion_reference_names(primary).items()}
    update_wcs(hdul, references)
    with quiet_stwcs():
        return {lay.chip: DistortedWcs(HSTWCS(hdul, ext=("SCI", lay.imset))) for lay in CHIPS}
