"""Pointing, true distorted WCS and header WCS of simulated ACS/WFC exposures.

The geometry comes from the HST SIAF (pysiaf): the apertures JWFC1FIX and
JWFC2FIX give each chip's place in the telescope (V2, V3) frame and its
science-to-ideal distortion polynomial.  Their science frame is 1-indexed and
includes the 24 prescan columns (``XSciRef = 2072``) but not the virtual
overscan rows, so science pixel ``(xs, ys)`` is FLT pixel ``(xs - 24, ys)``.

Pixel conventions
-----------------
* :class:`TanSip` works in 1-indexed FITS pixel coordinates of the trimmed
  (FLT) chip: pixel centre of array element ``[j, i]`` is ``(i + 1, j + 1)``.
  ``CRPIX = (2048, 1024)`` like real ACS FLT headers.
* Raw headers carry the same SIP polynomials with ``CRPIX`` shifted by the raw
  file's ``LTV1/LTV2`` (raw pixel = FLT pixel + LTV), i.e. ``(2072, 1024)`` on
  WFC2 and ``(2072, 1044)`` on WFC1; calibration subtracts LTV again.

The *true* WCS of a chip is a TAN-SIP (order 4) fit to the SIAF model at the
exposure's attitude; the fit residual is checked to stay below 0.01 pixel.  A
visit's *header* WCS is the same fit made to sky positions moved by that
visit's pointing error (:func:`perturb_sky`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from hstred.acs import CHIP_NX, CHIP_NY, PRESCAN

__all__ = [
    "IDCSCALE_ARCSEC",
    "SIP_ORDER",
    "TanSip",
    "WcsError",
    "hst_attitude",
    "aperture_reference_sky",
    "chip_sky_grid",
    "fit_tan_sip",
    "perturb_sky",
    "tangent_plane",
    "from_tangent_plane",
    "pixel_area_map",
    "offset_sky",
    "tel_to_sky",
    "fov_center_tel",
    "dither_tel_point",
    "chip_reference_sky",
    "CRPIX_FLT",
]

#: Reference pixel scale of ACS/WFC (header IDCSCALE), arcsec per pixel.
IDCSCALE_ARCSEC = 0.05
SIP_ORDER = 4
#: FLT reference pixel (1-indexed), as in real ACS/WFC FLT headers.
CRPIX_FLT = (2048.0, 1024.0)
_CHIP_APERTURES = {1: "JWFC1FIX", 2: "JWFC2FIX"}
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


def _aperture(name: str):
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


def offset_sky(ra_deg: float, dec_deg: float, *, east_arcsec: float, north_arcsec: float):
    """The sky position offset by (east, north) arcsec in the tangent plane of a point."""
    ra, dec = from_tangent_plane(east_arcsec / 3600.0, north_arcsec / 3600.0,
                                 ra0_deg=ra_deg, dec0_deg=dec_deg)
    return float(ra), float(dec)


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
        ref = _aperture(POINTING_APERTURE)
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

    v2, v3 = _aperture(POINTING_APERTURE).idl_to_tel(xidl_arcsec, yidl_arcsec)
    ra, dec = rotations.pointing(attitude, v2, v3)
    return float(ra), float(dec)


def dither_tel_point(xidl_arcsec: float, yidl_arcsec: float) -> tuple[float, float]:
    """(V2, V3) of a POS TARG offset in the ideal frame of aperture 'WFC'."""
    v2, v3 = _aperture(POINTING_APERTURE).idl_to_tel(xidl_arcsec, yidl_arcsec)
    return float(v2), float(v3)


def tel_to_sky(attitude: np.ndarray, v2_arcsec, v3_arcsec):
    """RA, Dec (deg) of telescope (V2, V3) positions (arcsec) under an attitude."""
    rotations = _rotations()
    ra, dec = rotations.pointing(attitude, np.asarray(v2_arcsec, dtype=float),
                                 np.asarray(v3_arcsec, dtype=float))
    return ra, dec


def fov_center_tel() -> tuple[float, float]:
    """(V2, V3) in arcsec midway between the two chips' reference points."""
    a1, a2 = _aperture(_CHIP_APERTURES[1]), _aperture(_CHIP_APERTURES[2])
    return 0.5 * (a1.V2Ref + a2.V2Ref), 0.5 * (a1.V3Ref + a2.V3Ref)


def chip_sky_grid(attitude: np.ndarray, chip: int, *, nx: int = 33, ny: int = 17):
    """True sky positions of a grid of FLT pixels of ``chip`` (SIAF model).

    Returns ``x, y`` (1-indexed FLT pixel coordinates, flattened) and ``ra, dec``
    in degrees.
    """
    rotations = _rotations()

    ap = _aperture(_CHIP_APERTURES[chip])
    xg, yg = np.meshgrid(np.linspace(1.0, CHIP_NX, nx), np.linspace(1.0, CHIP_NY, ny))
    x, y = xg.ravel(), yg.ravel()
    v2, v3 = ap.sci_to_tel(x + PRESCAN, y)
    ra, dec = rotations.pointing(attitude, np.asarray(v2), np.asarray(v3))
    return x, y, np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)


def chip_reference_sky(attitude: np.ndarray, chip: int) -> tuple[float, float]:
    """Sky position of the FLT reference pixel CRPIX of ``chip``."""
    rotations = _rotations()

    ap = _aperture(_CHIP_APERTURES[chip])
    v2, v3 = ap.sci_to_tel(CRPIX_FLT[0] + PRESCAN, CRPIX_FLT[1])
    ra, dec = rotations.pointing(attitude, v2, v3)
    return float(ra), float(dec)


def _exponents(order: int, *, min_degree: int) -> list[tuple[int, int]]:
    return [(p, d - p) for d in range(min_degree, order + 1) for p in range(d, -1, -1)]


def _fit_poly(u, v, values, order: int, *, min_degree: int, scale: float) -> np.ndarray:
    """Least-squares polynomial sum c[p, q] u^p v^q; returns a (order+1)^2 array."""
    terms = _exponents(order, min_degree=min_degree)
    us, vs = u / scale, v / scale
    design = np.stack([us**p * vs**q for p, q in terms], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    out = np.zeros((order + 1, order + 1))
    for (p, q), c in zip(terms, coef, strict=True):
        out[p, q] = c / scale ** (p + q)
    return out


def _poly(c: np.ndarray, u, v):
    """Evaluate sum c[p, q] u^p v^q (Horner in v for each power of u)."""
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    total = np.zeros(np.broadcast(u, v).shape)
    upow = np.ones_like(total)
    for p in range(c.shape[0]):
        if np.any(c[p]):
            inner = np.zeros_like(total)
            for q in range(c.shape[1] - 1, -1, -1):
                inner = inner * v + c[p, q]
            total = total + upow * inner
        upow = upow * u
    return total


def _poly_du(c: np.ndarray) -> np.ndarray:
    out = np.zeros_like(c)
    out[:-1, :] = c[1:, :] * np.arange(1, c.shape[0])[:, None]
    return out


def _poly_dv(c: np.ndarray) -> np.ndarray:
    out = np.zeros_like(c)
    out[:, :-1] = c[:, 1:] * np.arange(1, c.shape[1])[None, :]
    return out


@dataclass(frozen=True)
class TanSip:
    """A TAN-SIP WCS in 1-indexed FLT pixel coordinates (see module docstring).

    ``a[p, q]``/``b[p, q]`` are the forward SIP coefficients of u^p v^q
    (u = x - CRPIX1, v = y - CRPIX2); ``ap``/``bp`` the fitted inverse ones.
    ``cd`` is in degrees per pixel.
    """

    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: np.ndarray
    a: np.ndarray
    b: np.ndarray
    ap: np.ndarray
    bp: np.ndarray

    def pix2world(self, x, y):
        """RA, Dec (deg) of 1-indexed FLT pixel coordinates."""
        u = np.asarray(x, dtype=float) - self.crpix[0]
        v = np.asarray(y, dtype=float) - self.crpix[1]
        uu = u + _poly(self.a, u, v)
        vv = v + _poly(self.b, u, v)
        xi = self.cd[0, 0] * uu + self.cd[0, 1] * vv
        eta = self.cd[1, 0] * uu + self.cd[1, 1] * vv
        return from_tangent_plane(xi, eta, ra0_deg=self.crval[0], dec0_deg=self.crval[1])

    def world2pix(self, ra_deg, dec_deg):
        """1-indexed FLT pixel coordinates of sky positions (iterated to 1e-6 px)."""
        xi, eta = tangent_plane(ra_deg, dec_deg, ra0_deg=self.crval[0], dec0_deg=self.crval[1])
        cdinv = np.linalg.inv(self.cd)
        uu = cdinv[0, 0] * xi + cdinv[0, 1] * eta
        vv = cdinv[1, 0] * xi + cdinv[1, 1] * eta
        u = uu + _poly(self.ap, uu, vv)
        v = vv + _poly(self.bp, uu, vv)
        for _ in range(20):  # Newton steps on the forward polynomial
            fu = u + _poly(self.a, u, v) - uu
            fv = v + _poly(self.b, u, v) - vv
            j11 = 1.0 + _poly(_poly_du(self.a), u, v)
            j12 = _poly(_poly_dv(self.a), u, v)
            j21 = _poly(_poly_du(self.b), u, v)
            j22 = 1.0 + _poly(_poly_dv(self.b), u, v)
            det = j11 * j22 - j12 * j21
            du = (j22 * fu - j12 * fv) / det
            dv = (-j21 * fu + j11 * fv) / det
            u = u - du
            v = v - dv
            if np.all(np.abs(du) < 1e-7) and np.all(np.abs(dv) < 1e-7):
                break
        return u + self.crpix[0], v + self.crpix[1]

    def jacobian(self, x, y) -> np.ndarray:
        """d(xi, eta)/d(x, y) in degrees per pixel at pixel positions, shape (..., 2, 2)."""
        u = np.asarray(x, dtype=float) - self.crpix[0]
        v = np.asarray(y, dtype=float) - self.crpix[1]
        d = np.empty(np.broadcast(u, v).shape + (2, 2))
        m11 = 1.0 + _poly(_poly_du(self.a), u, v)
        m12 = _poly(_poly_dv(self.a), u, v)
        m21 = _poly(_poly_du(self.b), u, v)
        m22 = 1.0 + _poly(_poly_dv(self.b), u, v)
        cd = self.cd
        d[..., 0, 0] = cd[0, 0] * m11 + cd[0, 1] * m21
        d[..., 0, 1] = cd[0, 0] * m12 + cd[0, 1] * m22
        d[..., 1, 0] = cd[1, 0] * m11 + cd[1, 1] * m21
        d[..., 1, 1] = cd[1, 0] * m12 + cd[1, 1] * m22
        return d

    @property
    def orientat_deg(self) -> float:
        """Position angle (north through east) of the image +y axis at CRPIX."""
        return float(np.degrees(np.arctan2(self.cd[0, 1], self.cd[1, 1])) % 360.0)

    def header_cards(self, *, ltv1: float = 0.0, ltv2: float = 0.0) -> list[tuple]:
        """FITS WCS cards; CRPIX shifted by (ltv1, ltv2) for raw files."""
        cards: list[tuple] = [
            ("WCSAXES", 2, "number of World Coordinate System axes"),
            ("CTYPE1", "RA---TAN-SIP", "the coordinate type for the first axis"),
            ("CTYPE2", "DEC--TAN-SIP", "the coordinate type for the second axis"),
            ("CRPIX1", self.crpix[0] + ltv1, "x-coordinate of reference pixel"),
            ("CRPIX2", self.crpix[1] + ltv2, "y-coordinate of reference pixel"),
            ("CRVAL1", self.crval[0], "first axis value at reference pixel"),
            ("CRVAL2", self.crval[1], "second axis value at reference pixel"),
            ("CUNIT1", "deg", ""),
            ("CUNIT2", "deg", ""),
            ("CD1_1", self.cd[0, 0], "partial of first axis coordinate w.r.t. x"),
            ("CD1_2", self.cd[0, 1], "partial of first axis coordinate w.r.t. y"),
            ("CD2_1", self.cd[1, 0], "partial of second axis coordinate w.r.t. x"),
            ("CD2_2", self.cd[1, 1], "partial of second axis coordinate w.r.t. y"),
            ("RADESYS", "ICRS", ""),
            ("ORIENTAT", self.orientat_deg, "position angle of image y axis (deg. e of n)"),
        ]
        for name, coef in (("A", self.a), ("B", self.b), ("AP", self.ap), ("BP", self.bp)):
            order = coef.shape[0] - 1
            cards.append((f"{name}_ORDER", order, f"SIP polynomial order, axis {name}"))
            min_degree = 2 if name in ("A", "B") else 1
            for p, q in _exponents(order, min_degree=min_degree):
                cards.append((f"{name}_{p}_{q}", float(coef[p, q]), ""))
        return cards

    def to_astropy(self, *, ltv1: float = 0.0, ltv2: float = 0.0) -> WCS:
        from astropy.io import fits

        hdr = fits.Header()
        for key, value, comment in self.header_cards(ltv1=ltv1, ltv2=ltv2):
            hdr[key] = (value, comment)
        return WCS(hdr)

    def to_dict(self) -> dict:
        """CRPIX (FLT, 1-indexed), CRVAL, CD and the forward SIP arrays a[p][q], b[p][q]."""
        return {
            "crpix_flt": list(self.crpix),
            "crval": list(self.crval),
            "cd": self.cd.tolist(),
            "sip_a": self.a.tolist(),
            "sip_b": self.b.tolist(),
        }


def fit_tan_sip(x, y, ra_deg, dec_deg, *, crpix: tuple[float, float],
                crval: tuple[float, float], order: int = SIP_ORDER) -> tuple[TanSip, float]:
    """Fit a TAN-SIP WCS to pixel/sky pairs.

    ``crval`` must be the sky position of ``crpix``.  Returns the WCS and the
    largest fit residual in pixels over the given points.
    """
    xi, eta = tangent_plane(ra_deg, dec_deg, ra0_deg=crval[0], dec0_deg=crval[1])
    u = np.asarray(x, dtype=float) - crpix[0]
    v = np.asarray(y, dtype=float) - crpix[1]
    scale = float(max(np.abs(u).max(), np.abs(v).max(), 1.0))
    cx = _fit_poly(u, v, xi, order, min_degree=1, scale=scale)
    cy = _fit_poly(u, v, eta, order, min_degree=1, scale=scale)
    cd = np.array([[cx[1, 0], cx[0, 1]], [cy[1, 0], cy[0, 1]]])
    cdinv = np.linalg.inv(cd)
    hx, hy = cx.copy(), cy.copy()
    hx[1, 0] = hx[0, 1] = hy[1, 0] = hy[0, 1] = 0.0
    a = cdinv[0, 0] * hx + cdinv[0, 1] * hy
    b = cdinv[1, 0] * hx + cdinv[1, 1] * hy
    uu = u + _poly(a, u, v)
    vv = v + _poly(b, u, v)
    ap = _fit_poly(uu, vv, u - uu, order, min_degree=1, scale=scale)
    bp = _fit_poly(uu, vv, v - vv, order, min_degree=1, scale=scale)
    wcs = TanSip(crpix=(float(crpix[0]), float(crpix[1])),
                 crval=(float(crval[0]), float(crval[1])), cd=cd, a=a, b=b, ap=ap, bp=bp)
    xf, yf = wcs.world2pix(ra_deg, dec_deg)
    residual = float(np.max(np.hypot(xf - x, yf - y)))
    return wcs, residual


def pixel_area_map(wcs: TanSip, *, shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> np.ndarray:
    """Pixel solid angle relative to (IDCSCALE)^2 for every FLT pixel ``[y, x]``.

    Computed from the SIP Jacobian on the tangent plane, separably in u and v.
    """
    ny, nx = shape
    u = np.arange(1, nx + 1, dtype=float) - wcs.crpix[0]
    v = np.arange(1, ny + 1, dtype=float) - wcs.crpix[1]

    upow = np.vander(u, SIP_ORDER + 1, increasing=True)  # (nx, order+1): u^p
    vpow = np.vander(v, SIP_ORDER + 1, increasing=True)  # (ny, order+1): v^q

    def grid(c: np.ndarray) -> np.ndarray:
        # sum_pq c[p, q] u^p v^q for all pixels as one matrix product: exact and fast.
        k = c.shape[0]
        return vpow[:, :k] @ c.T @ upow[:, :k].T

    m11 = 1.0 + grid(_poly_du(wcs.a))
    m12 = grid(_poly_dv(wcs.a))
    m21 = grid(_poly_du(wcs.b))
    m22 = 1.0 + grid(_poly_dv(wcs.b))
    det_sip = m11 * m22 - m12 * m21
    det_cd = abs(np.linalg.det(wcs.cd)) * 3600.0**2
    return (np.abs(det_sip) * det_cd / IDCSCALE_ARCSEC**2).astype(np.float64)
