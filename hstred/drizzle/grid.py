"""The common output grid: one TAN WCS and shape covering every exposure of every filter.

Pixel conventions: WCS CRPIX is 1-indexed (FITS); outlines and sizes are in pixels.
Orientation is given as the position angle of the output +y axis (degrees, north
through east); 0 is north up, east left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS

from hstred.align.fit import mean_direction

__all__ = ["tan_cd_matrix", "orientation_deg", "compute_output_grid", "same_grid"]


def tan_cd_matrix(*, scale_arcsec: float, orientation_deg: float) -> np.ndarray:
    """CD matrix (deg/pixel) of an undistorted image, east to the left of north when
    ``orientation_deg`` is 0 (``+y`` at position angle ``orientation_deg``)."""
    s = scale_arcsec / 3600.0
    t = np.radians(orientation_deg)
    return np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])


def orientation_deg(wcs: WCS) -> float:
    """Position angle (deg, north through east) of a WCS's +y axis at its reference pixel."""
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    return float(np.degrees(np.arctan2(cd[0, 1], cd[1, 1])))


def compute_output_grid(
    outlines: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    scale_arcsec: float,
    orientation: float = 0.0,
    margin_px: int = 4,
) -> WCS:
    """A TAN WCS (with ``pixel_shape``) whose image covers all given sky outlines.

    Parameters
    ----------
    outlines : sequence of (ra, dec) arrays
        Sky positions (deg) along the edges of every chip to cover.
    scale_arcsec : float
        Output pixel scale, arcsec per pixel.
    orientation : float
        Position angle of the output +y axis, degrees (0 = north up).
    margin_px : int
        Empty pixels kept around the covered area on each side.

    Notes
    -----
    The tangent point is the mean direction of all outline points; CRPIX is chosen so
    that the covered area starts ``margin_px`` pixels from the image edge. The result
    depends only on the inputs (deterministic).
    """
    ra = np.concatenate([np.asarray(o[0], dtype=float).ravel() for o in outlines])
    dec = np.concatenate([np.asarray(o[1], dtype=float).ravel() for o in outlines])
    if ra.size == 0:
        raise ValueError("no outlines to cover")
    ra0, dec0 = mean_direction(ra, dec)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cd = tan_cd_matrix(scale_arcsec=scale_arcsec, orientation_deg=orientation)
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    x, y = w.wcs_world2pix(ra, dec, 0)
    x0 = int(np.floor(x.min())) - margin_px
    y0 = int(np.floor(y.min())) - margin_px
    x1 = int(np.ceil(x.max())) + margin_px
    y1 = int(np.ceil(y.max())) + margin_px
    w.wcs.crpix = [1.0 - x0, 1.0 - y0]
    w.wcs.set()
    w.pixel_shape = (x1 - x0 + 1, y1 - y0 + 1)
    return w


def same_grid(a: WCS, b: WCS, *, tolerance_px: float = 1e-6) -> bool:
    """True when two celestial WCSs have the same shape and map every corner and the
    centre to the same sky position within ``tolerance_px`` pixels."""
    if tuple(a.pixel_shape or ()) != tuple(b.pixel_shape or ()):
        return False
    nx, ny = a.pixel_shape
    x = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2.0])
    y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2.0])
    ra, dec = a.wcs_pix2world(x, y, 0)
    xb, yb = b.wcs_world2pix(ra, dec, 0)
    return bool(np.max(np.hypot(xb - x, yb - y)) <= tolerance_px)

def grid_numbers(grid: WCS) -> dict:
    """The exact numbers of a grid's WCS (for passing it to other processes)."""
    return {"ctype": list(grid.wcs.ctype), "crval": [float(v) for v in grid.wcs.crval],
            "crpix": [float(v) for v in grid.wcs.crpix], "cd": grid.wcs.cd.tolist(),
            "radesys": grid.wcs.radesys, "pixel_shape": tuple(grid.pixel_shape)}


def grid_from_numbers(numbers: dict) -> WCS:
    """The grid of :func:`grid_numbers`'s numbers."""
    grid = WCS(naxis=2)
    grid.wcs.ctype = numbers["ctype"]
    grid.wcs.crval = numbers["crval"]
    grid.wcs.crpix = numbers["crpix"]
    grid.wcs.cd = numbers["cd"]
    grid.wcs.radesys = numbers["radesys"]
    grid.pixel_shape = numbers["pixel_shape"]
    grid.wcs.set()
    return grid
