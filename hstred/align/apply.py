"""Writing aligned WCSs into (working copies of) calibrated exposures.

The original primary WCS of each SCI extension is first archived as an alternate WCS
(``stwcs.wcsutil.altwcs``, next free key, its WCSNAME kept), then the primary CRVAL
and CD are replaced and WCSNAME set. Distortion (SIP, lookup tables) and CRPIX are
untouched: the alignment is a linear correction in the tangent plane. The file is read
back and its WCS compared with the intended one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from stwcs.wcsutil import altwcs

from hstred.errors import StageError

__all__ = ["linear_wcs_keywords", "write_aligned_wcs", "max_wcs_difference_px"]


def linear_wcs_keywords(wcs: WCS) -> dict[str, float]:
    """CRPIX (1-indexed), CRVAL (deg) and CD (deg/pixel) of a WCS as header keywords."""
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    return {
        "CRPIX1": float(wcs.wcs.crpix[0]),
        "CRPIX2": float(wcs.wcs.crpix[1]),
        "CRVAL1": float(wcs.wcs.crval[0]),
        "CRVAL2": float(wcs.wcs.crval[1]),
        "CD1_1": float(cd[0, 0]),
        "CD1_2": float(cd[0, 1]),
        "CD2_1": float(cd[1, 0]),
        "CD2_2": float(cd[1, 1]),
    }


def max_wcs_difference_px(a: WCS, b: WCS, *, n: int = 7) -> float:
    """Largest separation, in pixels of ``a``, between the sky positions two WCSs give
    to an ``n`` x ``n`` grid of pixels spanning the image."""
    nx, ny = a.pixel_shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    ra, dec = b.all_pix2world(gx.ravel(), gy.ravel(), 0)
    x, y = a.all_world2pix(ra, dec, 0, tolerance=1e-8, maxiter=100, quiet=True)
    return float(np.max(np.hypot(x - gx.ravel(), y - gy.ravel())))


def write_aligned_wcs(path: Path, corrected: Mapping[int, WCS], *, wcsname: str,
                      tolerance_px: float = 1e-4) -> dict[int, str]:
    """Replace the primary WCS of ``path``'s SCI extensions by aligned ones, in place.

    Parameters
    ----------
    path : Path
        A working copy (never an original: the file is modified).
    corrected : mapping of EXTVER to WCS
        The aligned WCS of each SCI extension; only its linear part is written.
    wcsname : str
        WCSNAME of the aligned WCS.
    tolerance_px : float
        Largest allowed difference between the written and intended WCS.

    Returns
    -------
    dict of EXTVER to the key of the alternate WCS holding the original.
    """
    archived: dict[int, str] = {}
    with fits.open(path, mode="update") as hdul:
        for extver, wcs in corrected.items():
            hdr = hdul["SCI", extver].header
            original = hdr.get("WCSNAME", "").strip() or "ORIGINAL"
            hdr["WCSNAME"] = original
            key, _ = altwcs.archive_wcs(hdul, [("SCI", extver)], wcsname=original,
                                        mode=altwcs.ArchiveMode.AUTO_RENAME)
            if not key or not key.strip():
                raise StageError(f"{path}[SCI,{extver}]: could not archive the original WCS; "
                                 "free an alternate WCS key (A-Z) in the header")
            archived[extver] = key
            for k, v in linear_wcs_keywords(wcs).items():
                hdr[k] = v
            hdr["WCSNAME"] = wcsname
        hdul.flush()
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        for extver, wcs in corrected.items():
            written = WCS(hdul["SCI", extver].header, hdul)
            diff = max_wcs_difference_px(written, wcs)
            if not diff <= tolerance_px:
                raise StageError(f"{path}[SCI,{extver}]: the written WCS differs from the "
                                 f"aligned one by {diff:.2e} px; the header WCS is not "
                                 "a plain CD/CRVAL TAN-SIP WCS")
            if hdul["SCI", extver].header.get("WCSNAME") != wcsname:
                raise StageError(f"{path}[SCI,{extver}]: WCSNAME was not updated")
    return archived
