"""Satellite trails crossing simulated exposures.

A satellite reflecting sunlight crosses the whole field in well under a second, so its
trail is a straight line on the sky (a great circle) of uniform surface brightness along
its length, with a cross profile set by the satellite's distance and size. In pixels the
line follows the camera's distortion, as real trails do.

Which exposures are crossed: ``round(fraction * N)`` of the program's ``N`` exposures,
chosen with the program's seed. Each trail passes within 120" of the field centre at a
random position angle, so it crosses one chip or both. Its width (the cross profile's
FWHM) is 3-15 px and its peak from about the sky noise to well beyond saturation (drawn
log-uniform), as measured trails are (Kruk et al. 2023). The electrons are added to the
exposure's charge before shot noise, blooming and CTE, like every other source.

The truth: the trail's line and profile in ``truth.json``, and per chip the mask of
pixels where the trail adds more than the sky's 1-sigma noise, in
``truth/ROOTNAME_trails.fits`` (extensions ``TRAIL``, EXTVER as the FLT's SCI: 1 for chip
2, 2 for chip 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.simulate.wcs import from_tangent_plane

__all__ = ["Trail", "draw_trail", "trailed_exposures", "trail_image", "trail_mask_hdul",
           "MIN_FWHM_PX", "MAX_FWHM_PX"]

MIN_FWHM_PX = 3.0
MAX_FWHM_PX = 15.0
#: How far from the field centre (arcsec) a trail's closest point may be.
_MAX_OFFSET_ARCSEC = 120.0
#: Half length (arcsec) of the sampled trail: beyond the field's corners at any angle.
_HALF_LENGTH_ARCSEC = 240.0
_SAMPLE_STEP_ARCSEC = 1.0
#: Brightest peak, in units of a pixel's full well: far beyond saturation, as for the
#: brightest satellites.
_MAX_PEAK_WELLS = 3.0


@dataclass(frozen=True)
class Trail:
    """One satellite trail: the great circle through (ra, dec) at position angle
    ``pa_deg`` (east of north), its cross profile (Gaussian, ``fwhm_px``) and peak
    electrons per pixel in the exposure."""

    ra_deg: float
    dec_deg: float
    pa_deg: float
    fwhm_px: float
    peak_e: float

    def to_dict(self) -> dict:
        return {"ra_deg": self.ra_deg, "dec_deg": self.dec_deg, "pa_deg": self.pa_deg,
                "fwhm_px": self.fwhm_px, "peak_e": self.peak_e}


def trailed_exposures(rng: np.random.Generator, rootnames: list[str],
                      fraction: float) -> set[str]:
    """The exposures a trail crosses: ``round(fraction * N)`` of them."""
    n = int(round(fraction * len(rootnames)))
    if n == 0:
        return set()
    chosen = rng.choice(len(rootnames), size=n, replace=False)
    return {rootnames[i] for i in chosen}


def draw_trail(rng: np.random.Generator, *, center_ra_deg: float, center_dec_deg: float,
               sky_sigma_e: float, full_well_e: float) -> Trail:
    """A random trail near the field centre (see the module docstring)."""
    offset = rng.uniform(-_MAX_OFFSET_ARCSEC, _MAX_OFFSET_ARCSEC) / 3600.0
    pa = rng.uniform(0.0, 180.0)
    # The closest point to the centre lies perpendicular to the trail's direction.
    normal = math.radians(pa + 90.0)
    ra, dec = from_tangent_plane(offset * math.sin(normal), offset * math.cos(normal),
                                 ra0_deg=center_ra_deg, dec0_deg=center_dec_deg)
    fwhm = rng.uniform(MIN_FWHM_PX, MAX_FWHM_PX)
    low, high = math.log(sky_sigma_e), math.log(_MAX_PEAK_WELLS * full_well_e)
    peak = math.exp(rng.uniform(low, high))
    return Trail(ra_deg=float(ra), dec_deg=float(dec), pa_deg=float(pa), fwhm_px=float(fwhm),
                 peak_e=float(peak))


def _centre_line(trail: Trail, wcs, shape) -> np.ndarray | None:
    """0-indexed (x, y) points of the trail's centre line on one chip (None when it
    misses the chip): the great circle is a straight line in the gnomonic projection about
    any of its points, sampled every few arcsec and mapped through the chip's distortion."""
    s = np.arange(-_HALF_LENGTH_ARCSEC, _HALF_LENGTH_ARCSEC + 1e-9, _SAMPLE_STEP_ARCSEC) / 3600.0
    pa = math.radians(trail.pa_deg)
    ra, dec = from_tangent_plane(s * math.sin(pa), s * math.cos(pa), ra0_deg=trail.ra_deg,
                                 dec0_deg=trail.dec_deg)
    x, y = wcs.world2pix(ra, dec)
    x, y = x - 1.0, y - 1.0
    ny, nx = shape
    margin = 4.0 * MAX_FWHM_PX
    inside = (x > -margin) & (x < nx - 1 + margin) & (y > -margin) & (y < ny - 1 + margin)
    if np.count_nonzero(inside) < 2:
        return None
    # keep one sample beyond each end so the line spans the chip
    idx = np.flatnonzero(inside)
    lo, hi = max(idx[0] - 1, 0), min(idx[-1] + 1, len(x) - 1)
    return np.column_stack([x[lo:hi + 1], y[lo:hi + 1]])


def trail_image(trail: Trail, wcs, *, shape: tuple[int, int] = (CHIP_NY, CHIP_NX)
                ) -> tuple[np.ndarray | None, dict | None]:
    """Electrons the trail adds to each pixel of one chip ``[y, x]`` (None when it misses
    the chip) and the chip's part of the truth (end points in 0-indexed FLT pixels)."""
    line = _centre_line(trail, wcs, shape)
    if line is None:
        return None, None
    x, y = line[:, 0], line[:, 1]
    ny, nx = shape
    # Along the coordinate in which the line runs, the centre line's other coordinate is
    # interpolated between samples 20 px apart (the distortion bends it by a few pixels
    # over a chip, negligibly between two samples).
    along_x = abs(x[-1] - x[0]) >= abs(y[-1] - y[0])
    u, v = (x, y) if along_x else (y, x)
    order = np.argsort(u)
    u, v = u[order], v[order]
    grid_u = np.arange(nx if along_x else ny, dtype=np.float64)
    centre = np.interp(grid_u, u, v)
    dvdu = np.interp(grid_u, 0.5 * (u[1:] + u[:-1]), np.diff(v) / np.diff(u))
    cos = 1.0 / np.sqrt(1.0 + dvdu ** 2)
    grid_v = np.arange(ny if along_x else nx, dtype=np.float64)
    # perpendicular distance of every pixel from the line: |v - f(u)| cos(angle)
    if along_x:
        distance = (grid_v[:, None] - centre[None, :]) * cos[None, :]
    else:
        distance = (grid_v[None, :] - centre[:, None]) * cos[:, None]
    sigma = trail.fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    image = trail.peak_e * np.exp(-0.5 * (distance / sigma) ** 2)
    ends = _chip_ends(grid_u, centre, along_x, nx, ny)
    return image, ends


def _chip_ends(u: np.ndarray, v: np.ndarray, along_x: bool, nx: int, ny: int) -> dict:
    """Where the centre line ``v(u)`` enters and leaves the chip (0-indexed pixels)."""
    limit = (ny if along_x else nx) - 1.0
    outside = np.abs(v - np.clip(v, 0.0, limit))
    keep = outside == 0.0
    if not keep.any():  # passes just outside: the nearest points
        keep = outside == outside.min()
    u, v = u[keep], v[keep]
    points = [(u[0], v[0]), (u[-1], v[-1])]
    if not along_x:
        points = [(b, a) for a, b in points]
    (x0, y0), (x1, y1) = points
    return {"x0": round(float(x0), 2), "y0": round(float(y0), 2),
            "x1": round(float(x1), 2), "y1": round(float(y1), 2)}


def trail_mask_hdul(rootname: str, masks: dict[int, np.ndarray], *, sky_sigma_e: float,
                    trail: Trail) -> fits.HDUList:
    """``truth/ROOTNAME_trails.fits``: per chip the pixels where the trail adds more than
    the sky's 1-sigma noise (uint8), EXTVER as the FLT's SCI extensions."""
    primary = fits.PrimaryHDU()
    primary.header["ROOTNAME"] = (rootname, "exposure the trail crosses")
    primary.header["SKYSIGMA"] = (sky_sigma_e, "[e-] sky noise: the mask's threshold")
    primary.header["TRAILRA"] = (trail.ra_deg, "[deg] a point of the trail")
    primary.header["TRAILDEC"] = (trail.dec_deg, "[deg] a point of the trail")
    primary.header["TRAILPA"] = (trail.pa_deg, "[deg] trail position angle, east of north")
    primary.header["TRAILFW"] = (trail.fwhm_px, "[pix] cross-profile FWHM")
    primary.header["TRAILPK"] = (trail.peak_e, "[e-] peak electrons per pixel")
    hdus = [primary]
    for chip, extver in ((2, 1), (1, 2)):
        mask = masks.get(chip)
        data = mask.astype(np.uint8) if mask is not None else np.zeros((CHIP_NY, CHIP_NX),
                                                                        np.uint8)
        hdu = fits.CompImageHDU(data, name="TRAIL", compression_type="RICE_1")
        hdu.header["EXTVER"] = extver
        hdu.header["CCDCHIP"] = chip
        hdus.append(hdu)
    return fits.HDUList(hdus)
