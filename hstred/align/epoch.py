"""Star positions at the epoch of an observation: proper motion and parallax.

Catalog positions (Gaia DR3: ICRS at the reference epoch J2016.0) are moved with
astropy's ``SkyCoord.apply_space_motion`` (rigorous space motion; parallax, when
given, sets the distance). The annual parallax is then applied for an observer at
the Earth's barycentric position at that time (HST's orbit adds < 0.01 of it):
the direction to the star becomes that of ``r_star - r_earth``.

Units: degrees for positions, mas/yr for proper motions (``pmra`` = mu_alpha* =
mu_alpha cos(dec)), mas for parallaxes, Julian years for catalog epochs and MJD
(UTC) for observation times. Missing (NaN) proper motions count as zero, missing
or non-positive parallaxes as no parallax.
"""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
from astropy.coordinates import Distance, SkyCoord, get_body_barycentric
from astropy.time import Time
from erfa import ErfaWarning

__all__ = ["positions_at_epoch", "mjd_to_jyear"]


def mjd_to_jyear(mjd: float) -> float:
    """Julian epoch (e.g. 2024.42) of an MJD."""
    return float(Time(mjd, format="mjd", scale="utc").jyear)


def positions_at_epoch(
    ra_deg,
    dec_deg,
    *,
    ref_epoch_jyear,
    mjd: float,
    pmra_mas_yr=None,
    pmdec_mas_yr=None,
    parallax_mas=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Right ascensions and declinations (deg) at ``mjd`` of stars given at ``ref_epoch``.

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS positions at the reference epoch, degrees.
    ref_epoch_jyear : float or array-like
        Reference epoch of each position, Julian years (Gaia DR3: 2016.0).
    mjd : float
        The observation time (MJD, UTC).
    pmra_mas_yr, pmdec_mas_yr : array-like, optional
        Proper motions (mu_alpha cos(dec), mu_delta), mas/yr; NaN or absent = 0.
    parallax_mas : array-like, optional
        Parallaxes, mas; NaN, <= 0 or absent = no parallax.

    Returns
    -------
    (ra, dec) : ndarrays, degrees
        Positions as seen from the Earth at ``mjd``; inputs are not modified.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=float))
    n = ra.size
    pmra = _filled(pmra_mas_yr, n)
    pmdec = _filled(pmdec_mas_yr, n)
    plx = _filled(parallax_mas, n)
    has_plx = plx > 0
    if n == 0:
        return ra.copy(), dec.copy()
    ref = np.broadcast_to(np.asarray(ref_epoch_jyear, dtype=float), (n,))
    new = Time(mjd, format="mjd", scale="utc")
    out_ra, out_dec = np.empty(n), np.empty(n)
    # One SkyCoord per distinct reference epoch (a catalog normally has one).
    for epoch in np.unique(ref):
        sel = ref == epoch
        # Stars without parallax get a distance far enough for their motion to be
        # purely tangential (ERFA's own default); their parallax step is skipped.
        distance = Distance(parallax=np.where(has_plx[sel], plx[sel], 1e-6) * u.mas)
        coord = SkyCoord(ra=ra[sel] * u.deg, dec=dec[sel] * u.deg,
                         pm_ra_cosdec=pmra[sel] * u.mas / u.yr, pm_dec=pmdec[sel] * u.mas / u.yr,
                         distance=distance, radial_velocity=np.zeros(int(sel.sum())) * u.km / u.s,
                         frame="icrs", obstime=Time(epoch, format="jyear", scale="tcb"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErfaWarning)
            moved = coord.apply_space_motion(new_obstime=new)
        r_ra, r_dec = moved.ra.deg, moved.dec.deg
        plx_sel = has_plx[sel]
        if plx_sel.any():
            r_ra, r_dec = r_ra.copy(), r_dec.copy()
            a, b = _apply_parallax(r_ra[plx_sel], r_dec[plx_sel], plx[sel][plx_sel], new)
            r_ra[plx_sel], r_dec[plx_sel] = a, b
        out_ra[sel], out_dec[sel] = r_ra, r_dec
    return out_ra % 360.0, out_dec


def _filled(values, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n)
    arr = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    arr = np.broadcast_to(arr, (n,)).astype(float)
    return np.where(np.isfinite(arr), arr, 0.0)


def _apply_parallax(ra, dec, parallax_mas, time: Time):
    """Directions from the Earth to stars at barycentric (ra, dec) and distance 1/parallax."""
    r, d = np.radians(ra), np.radians(dec)
    dist_au = 1.0 / (np.asarray(parallax_mas) * 1e-3 * np.pi / (180.0 * 3600.0))
    star = np.stack([np.cos(d) * np.cos(r), np.sin(r) * np.cos(d), np.sin(d)]) * dist_au
    earth = get_body_barycentric("earth", time).xyz.to_value(u.au)
    v = star - earth[:, None]
    v /= np.linalg.norm(v, axis=0)
    return np.degrees(np.arctan2(v[1], v[0])) % 360.0, np.degrees(np.arcsin(v[2]))
