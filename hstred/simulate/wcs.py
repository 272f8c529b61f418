"""Pointing and sky geometry of simulated ACS/WFC exposures.

The geometry comes from the HST SIAF (pysiaf): the apertures JWFC1FIX and
JWFC2FIX give each chip's place in the telescope (V2, V3) frame and its
science-to-ideal distortion polynomial.  Their science frame is 1-indexed and
includes the 24 prescan columns (``XSciRef = 2072``) but not the virtual
overscan rows, so science pixel ``(xs, ys)`` is FLT pixel ``(xs - 24, ys)``.

The camera's distortion itself reaches the pixels only through the reference
files that :mod:`hstred.simulate.distortion` fits to these apertures and stwcs
reads; this module provides the attitude (where the telescope points), the
header-WCS error of a visit (:func:`perturb_sky`) and the velocity aberration
factor written into the headers.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from hstred.acs import CHIP_NX, CHIP_NY, PRESCAN

__all__ = [
    "WcsError",
    "hst_attitude",
    "aperture_reference_sky",
    "chip_sky_grid",
    "perturb_sky",
    "tangent_plane",
    "from_tangent_plane",
    "tel_to_sky",
    "fov_center_tel",
    "dither_tel_point",
    "velocity_aberration_factor",
    "siaf_aperture",
    "CHIP_APERTURES",
]

#: SIAF aperture of each chip (by CCDCHIP).
CHIP_APERTURES = {1: "JWFC1FIX", 2: "JWFC2FIX"}
#: Aperture 'WFC' (APERTURE keyword): its reference point is on WFC1 near the gap.
POINTING_APERTURE = "JWFCFIX"


@functools.lru_cache(maxsize=1)
def _siaf():
    # pysiaf checks its JWST data version online at import and logs a warning when
    # offline; that is irrelevant to HST apertures.
    logger = logging.getLogger("pysiaf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import pysiaf
    finally:
        logger.setLevel(level)
    return pysiaf.Siaf("HST")


def _rotations():
    _siaf()
    from pysiaf.utils import rotations

    return rotations


def siaf_aperture(name: str):
    return _siaf()[name]


@dataclass(frozen=True)
class WcsError:
    """A visit's header-WCS error: header sky = perturbed true sky.

    In the tangent plane at (``center_ra_deg``, ``center_dec_deg``) with
    standard coordinates (xi east, eta north) in arcsec, a true position
    (xi, eta) appears in the header WCS at
    ``R(rotation) (xi, eta) + (dx_arcsec, dy_arcsec)`` where ``R`` rotates
    position angles by ``+rotation_deg`` (north through east).
    """

    dx_arcsec: float
    dy_arcsec: float
    rotation_deg: float
    center_ra_deg: float
    center_dec_deg: float

    def to_dict(self) -> dict:
        return {
            "dx_arcsec": self.dx_arcsec,
            "dy_arcsec": self.dy_arcsec,
            "rotation_deg": self.rotation_deg,
            "center_ra_deg": self.center_ra_deg,
            "center_dec_deg": self.center_dec_deg,
        }


def tangent_plane(ra_deg, dec_deg, *, ra0_deg: float, dec0_deg: float):
    """Gnomonic standard coordinates (xi east, eta north) in degrees about (ra0, dec0)."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    dra = ra - ra0
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(dra)
    xi = np.cos(dec) * np.sin(dra) / cos_c
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(dra)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def from_tangent_plane(xi_deg, eta_deg, *, ra0_deg: float, dec0_deg: float):
    """Inverse of :func:`tangent_plane`: RA, Dec in degrees."""
    xi = np.radians(np.asarray(xi_deg, dtype=float))
    eta = np.radians(np.asarray(eta_deg, dtype=float))
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def perturb_sky(ra_deg, dec_deg, error: WcsError):
    """Move true sky positions to where a header WCS with ``error`` places them."""
    xi, eta = tangent_plane(ra_deg, dec_deg, ra0_deg=error.center_ra_deg,
                            dec0_deg=error.center_dec_deg)
    theta = np.radians(error.rotation_deg)
    xi2 = xi * np.cos(theta) + eta * np.sin(theta) + error.dx_arcsec / 3600.0
    eta2 = -xi * np.sin(theta) + eta * np.cos(theta) + error.dy_arcsec / 3600.0
    return from_tangent_plane(xi2, eta2, ra0_deg=error.center_ra_deg,
                              dec0_deg=error.center_dec_deg)


def hst_attitude(*, ra_deg: float, dec_deg: float, pa_v3_deg: float,
                 v2_arcsec: float | None = None, v3_arcsec: float | None = None) -> np.ndarray:
    """Attitude matrix putting telescope point (v2, v3) at (ra, dec).

    ``pa_v3_deg`` is the position angle (north through east) of the V3 axis at
    the V1 axis, as in the PA_V3 header keyword.  (v2, v3) default to the
    reference point of aperture 'WFC'.
    """
    rotations = _rotations()

    if v2_arcsec is None or v3_arcsec is None:
        ref = siaf_aperture(POINTING_APERTURE)
        v2_arcsec, v3_arcsec = ref.V2Ref, ref.V3Ref
    pa_here = pa_v3_deg
    for _ in range(3):  # the V3 position angle differs slightly between V1 and (v2, v3)
        att = rotations.attitude(v2_arcsec, v3_arcsec, ra_deg, dec_deg, pa_here)
        pa_here += pa_v3_deg - rotations.posangle(att, 0.0, 0.0)
    return np.asarray(rotations.attitude(v2_arcsec, v3_arcsec, ra_deg, dec_deg, pa_here))


def aperture_reference_sky(attitude: np.ndarray, *, xidl_arcsec: float = 0.0,
                           yidl_arcsec: float = 0.0) -> tuple[float, float]:
    """Sky position of a point given in the ideal frame of aperture 'WFC'."""
    rotations = _rotations()

    v2, v3 = siaf_aperture(POINTING_APERTURE).idl_to_tel(xidl_arcsec, yidl_arcsec)
    ra, dec = rotations.pointing(attitude, v2, v3)
    return float(ra), float(dec)


def dither_tel_point(xidl_arcsec: float, yidl_arcsec: float) -> tuple[float, float]:
    """(V2, V3) of a POS TARG offset in the ideal frame of aperture 'WFC'."""
    v2, v3 = siaf_aperture(POINTING_APERTURE).idl_to_tel(xidl_arcsec, yidl_arcsec)
    return float(v2), float(v3)


def tel_to_sky(attitude: np.ndarray, v2_arcsec, v3_arcsec):
    """RA, Dec (deg) of telescope (V2, V3) positions (arcsec) under an attitude."""
    rotations = _rotations()
    ra, dec = rotations.pointing(attitude, np.asarray(v2_arcsec, dtype=float),
                                 np.asarray(v3_arcsec, dtype=float))
    return ra, dec


def fov_center_tel() -> tuple[float, float]:
    """(V2, V3) in arcsec midway between the two chips' reference points."""
    a1, a2 = siaf_aperture(CHIP_APERTURES[1]), siaf_aperture(CHIP_APERTURES[2])
    return 0.5 * (a1.V2Ref + a2.V2Ref), 0.5 * (a1.V3Ref + a2.V3Ref)


def chip_sky_grid(attitude: np.ndarray, chip: int, *, nx: int = 33, ny: int = 17):
    """True sky positions of a grid of FLT pixels of ``chip`` (SIAF model).

    Returns ``x, y`` (1-indexed FLT pixel coordinates, flattened) and ``ra, dec``
    in degrees.
    """
    rotations = _rotations()

    ap = siaf_aperture(CHIP_APERTURES[chip])
    xg, yg = np.meshgrid(np.linspace(1.0, CHIP_NX, nx), np.linspace(1.0, CHIP_NY, ny))
    x, y = xg.ravel(), yg.ravel()
    v2, v3 = ap.sci_to_tel(x + PRESCAN, y)
    ra, dec = rotations.pointing(attitude, np.asarray(v2), np.asarray(v3))
    return x, y, np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)


#: HST's orbital speed (km/s) and period (minutes), for the velocity aberration factor.
_HST_SPEED_KM_S = 7.59
_HST_PERIOD_MIN = 95.4
_C_KM_S = 299792.458


def velocity_aberration_factor(ra_deg: float, dec_deg: float, mjd: float) -> float:
    """VAFACTOR: the plate-scale change from the telescope's velocity toward the target.

    First order in v/c: ``1 + (v . n) / c`` with v the Earth's barycentric velocity
    (astropy's built-in ephemeris, no download) plus HST's orbital velocity, taken
    in a plane containing the target direction with the phase of the orbit at
    ``mjd``.  Values stay within about 1 +- 1.2e-4, as in real headers.
    """
    from astropy.coordinates import get_body_barycentric_posvel
    from astropy.time import Time

    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    n = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    _pos, vel = get_body_barycentric_posvel("earth", Time(mjd, format="mjd", scale="tt"))
    v_earth = vel.xyz.to_value("km/s")
    phase = 2.0 * np.pi * ((mjd * 1440.0) % _HST_PERIOD_MIN) / _HST_PERIOD_MIN
    v_hst = _HST_SPEED_KM_S * 0.7 * np.cos(phase)
    return float(1.0 + (float(np.dot(v_earth, n)) + v_hst) / _C_KM_S)
