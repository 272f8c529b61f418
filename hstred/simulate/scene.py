"""The photon-rate image of a chip: sky plus truth sources through the true WCS.

The returned image is in e-/s per pixel *collected* by each pixel, before the
quantum-efficiency (flat-field) pattern: the sky contributes in proportion to
the pixel's solid angle (pixel-area map relative to (0.05")^2) and each source
delivers its full count rate, spread by the ePSF.  Positions come from the true
distortion WCS as stwcs reads it (1-indexed FLT pixels); array element ``[j, i]`` has its centre at
FITS pixel ``(i + 1, j + 1)``.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.simulate.catalog import flux_column
from hstred.simulate.distortion import DistortedWcs
from hstred.simulate.psf import add_stamp, psf_model, render_galaxy, render_point_source

__all__ = ["sources_on_chip", "render_sources", "photon_rate_image"]

_MARGIN_PX = 130.0


def sources_on_chip(catalog: Table, wcs: DistortedWcs, *, margin_px: float = _MARGIN_PX,
                    shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> tuple[np.ndarray, ...]:
    """Indices and 0-indexed array positions (x, y) of sources landing near the chip."""
    x1, y1 = wcs.world2pix(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]))
    x0, y0 = x1 - 1.0, y1 - 1.0
    ny, nx = shape
    keep = ((x0 > -margin_px) & (x0 < nx - 1 + margin_px)
            & (y0 > -margin_px) & (y0 < ny - 1 + margin_px))
    idx = np.flatnonzero(keep)
    return idx, x0[idx], y0[idx]


def render_sources(catalog: Table, wcs: DistortedWcs, filter_name: str, *,
                   shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> tuple[np.ndarray, int]:
    """Image (e-/s) of all catalog sources on a chip and the number rendered."""
    image = np.zeros(shape)
    idx, xs, ys = sources_on_chip(catalog, wcs, shape=shape)
    if idx.size == 0:
        return image, 0
    psf = psf_model(filter_name)
    flux = np.asarray(catalog[flux_column(filter_name)], dtype=float)[idx]
    kind = np.asarray(catalog["kind"])[idx]
    r_eff = np.asarray(catalog["r_eff_arcsec"], dtype=float)[idx]
    sersic_n = np.asarray(catalog["sersic_n"], dtype=float)[idx]
    ellip = np.asarray(catalog["ellip"], dtype=float)[idx]
    pa = np.asarray(catalog["pa_deg"], dtype=float)[idx]
    jac = wcs.jacobian(xs + 1.0, ys + 1.0) * 3600.0  # arcsec (east, north) per pixel
    for k in range(idx.size):
        if kind[k] == "star":
            stamp, sx, sy = render_point_source(psf, x0=xs[k], y0=ys[k], flux=flux[k])
        else:
            stamp, sx, sy = render_galaxy(psf, x0=xs[k], y0=ys[k], flux=flux[k],
                                          jacobian_arcsec=jac[k], r_eff_arcsec=r_eff[k],
                                          n=sersic_n[k], ellip=ellip[k], pa_deg=pa[k])
        add_stamp(image, stamp, sx, sy)
    return image, int(idx.size)


def photon_rate_image(catalog: Table, wcs: DistortedWcs, filter_name: str, *, sky_e_per_s: float,
                      pixel_area: np.ndarray) -> tuple[np.ndarray, int]:
    """Sky x pixel area + sources, in e-/s per pixel; and the number of sources rendered."""
    sources, n = render_sources(catalog, wcs, filter_name, shape=pixel_area.shape)
    sources += sky_e_per_s * pixel_area
    return sources, n
