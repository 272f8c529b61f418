"""The truth catalog: stars and Sersic galaxies with per-filter count rates.

Fluxes ``flux_<FILTER>`` are total count rates in e-/s that reach the detector
(before the flat field / quantum-efficiency pattern), derived from an AB
magnitude in F606W, a per-source spectral slope and each filter's AB zero point.
Galaxy shapes are defined on the sky: ``r_eff_arcsec`` (half-light radius along
the major axis of the untruncated profile), ``sersic_n``, ``ellip`` (1 - b/a)
and ``pa_deg`` (major-axis position angle, north through east); profiles are
tapered to zero between 4 and 5 effective radii and ``flux`` is the total of
the tapered profile.  Shape columns are NaN for stars.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hstred.simulate.config import FILTERS
from hstred.simulate.wcs import from_tangent_plane

__all__ = ["STAR_FRACTION", "draw_truth_catalog", "flux_column"]

STAR_FRACTION = 0.3
_REF_FILTER = "F606W"
# Star count rates in the reference filter follow N(>f) ~ f^-0.6 from 8 e-/s up.
_STAR_FMIN, _STAR_FMAX, _STAR_SLOPE = 8.0, 1.0e5, 0.6
_GAL_FMIN, _GAL_FMAX, _GAL_SLOPE = 10.0, 5.0e3, 0.8


def flux_column(filter_name: str) -> str:
    return f"flux_{filter_name}"


def _power_law(rng: np.random.Generator, n: int, fmin: float, fmax: float,
               slope: float) -> np.ndarray:
    u = rng.uniform(size=n)
    lo, hi = fmin ** -slope, fmax ** -slope
    return (lo - u * (lo - hi)) ** (-1.0 / slope)


def draw_truth_catalog(rng: np.random.Generator, *, n_sources: int, center_ra_deg: float,
                       center_dec_deg: float, radius_arcsec: float,
                       filters: tuple[str, ...]) -> Table:
    """Draw ``n_sources`` sources uniformly in a disk around the centre.

    Returns an astropy Table with columns ``id, ra, dec, kind, flux_<F>...,
    r_eff_arcsec, sersic_n, ellip, pa_deg``; rows are sorted by id.
    """
    kinds = np.where(rng.uniform(size=n_sources) < STAR_FRACTION, "star", "galaxy")
    is_star = kinds == "star"
    n_star = int(is_star.sum())
    n_gal = n_sources - n_star

    radius = radius_arcsec * np.sqrt(rng.uniform(size=n_sources))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n_sources)
    ra, dec = from_tangent_plane(radius * np.sin(angle) / 3600.0,
                                 radius * np.cos(angle) / 3600.0,
                                 ra0_deg=center_ra_deg, dec0_deg=center_dec_deg)

    ref_rate = np.empty(n_sources)
    ref_rate[is_star] = _power_law(rng, n_star, _STAR_FMIN, _STAR_FMAX, _STAR_SLOPE)
    ref_rate[~is_star] = _power_law(rng, n_gal, _GAL_FMIN, _GAL_FMAX, _GAL_SLOPE)
    ref_mag = FILTERS[_REF_FILTER].ab_zeropoint - 2.5 * np.log10(ref_rate)
    # AB colour slope in magnitudes per 1000 A (positive = blue source fainter in red).
    slope = np.where(is_star, rng.normal(-0.35, 0.25, n_sources),
                     rng.normal(-0.25, 0.3, n_sources))

    r_eff = np.full(n_sources, np.nan)
    sersic_n = np.full(n_sources, np.nan)
    ellip = np.full(n_sources, np.nan)
    pa = np.full(n_sources, np.nan)
    gal_rate = ref_rate[~is_star]
    disk = rng.uniform(size=n_gal) < 0.6
    sersic_n[~is_star] = np.where(disk, rng.uniform(0.7, 1.5, n_gal), rng.uniform(2.0, 4.0, n_gal))
    r_eff[~is_star] = np.clip(0.22 * (gal_rate / 100.0) ** 0.15
                              * 10 ** rng.normal(0.0, 0.18, n_gal), 0.06, 1.5)
    ellip[~is_star] = np.where(disk, rng.uniform(0.05, 0.7, n_gal), rng.uniform(0.0, 0.4, n_gal))
    pa[~is_star] = rng.uniform(0.0, 180.0, n_gal)

    table = Table()
    table["id"] = np.arange(1, n_sources + 1, dtype=np.int64)
    table["ra"] = ra
    table["ra"].unit = "deg"
    table["dec"] = dec
    table["dec"].unit = "deg"
    table["kind"] = kinds.astype("U6")
    for name in filters:
        info = FILTERS[name]
        mag = ref_mag + slope * (info.pivot_angstrom - FILTERS[_REF_FILTER].pivot_angstrom) / 1000.0
        table[flux_column(name)] = 10 ** (-0.4 * (mag - info.ab_zeropoint))
        table[flux_column(name)].unit = "electron / s"
        table[flux_column(name)].description = (
            f"total count rate at the detector in {name}, before the flat field")
    table["r_eff_arcsec"] = r_eff
    table["r_eff_arcsec"].unit = "arcsec"
    table["sersic_n"] = sersic_n
    table["ellip"] = ellip
    table["pa_deg"] = pa
    table["pa_deg"].unit = "deg"
    table.meta["description"] = "hstred simulator truth catalog"
    table.meta["flux_convention"] = "e-/s reaching the detector, before the flat field (QE)"
    table.meta["shape_convention"] = (
        "Sersic on the sky; r_eff along the major axis; ellip = 1 - b/a; "
        "pa north through east; tapered to zero between 4 and 5 r_eff")
    return table
