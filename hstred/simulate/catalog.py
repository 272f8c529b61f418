"""The truth catalog: stars and Sersic galaxies with per-filter count rates.

Fluxes ``flux_<FILTER>`` are total count rates in e-/s that reach the detector
(before the flat field / quantum-efficiency pattern), derived from an AB
magnitude in F606W, a per-source spectral slope and each filter's AB zero point.
Galaxy shapes are defined on the sky: ``r_eff_arcsec`` (half-light radius along
the major axis of the untruncated profile), ``sersic_n``, ``ellip`` (1 - b/a)
and ``pa_deg`` (major-axis position angle, north through east); profiles are
tapered to zero between 4 and 5 effective radii and ``flux`` is the total of
the tapered profile.  Shape columns are NaN for stars.

Positions ``ra``, ``dec`` are ICRS at the reference epoch J2016.0 (``ref_epoch``, as
in Gaia DR3). Stars move: ``pmra`` (mu_alpha cos(dec)), ``pmdec`` (mas/yr) and
``parallax`` (mas), drawn by :func:`draw_space_motion`; galaxies have zero motion.
Every image shows each star where :func:`positions_at` puts it at the exposure's
mid-time. ``gaia_g_mag`` is the star's Gaia G magnitude (Vega), from its F606W and
F814W AB magnitudes (NaN for galaxies).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hstred.align.epoch import positions_at_epoch
from hstred.simulate.config import FILTERS
from hstred.simulate.wcs import from_tangent_plane

__all__ = ["STAR_FRACTION", "REF_EPOCH_JYEAR", "GAIA_G_LIMIT", "draw_truth_catalog",
           "draw_space_motion", "draw_gaia_catalog", "positions_at", "flux_column"]

#: Reference epoch of the truth positions and of the simulated Gaia catalog (DR3).
REF_EPOCH_JYEAR = 2016.0
#: Faintest simulated Gaia stars (G, Vega).
GAIA_G_LIMIT = 21.0

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
    table["gaia_g_mag"] = np.where(is_star, _gaia_g(ref_mag, slope), np.nan)
    table["gaia_g_mag"].description = "Gaia G (Vega) from the F606W and F814W AB magnitudes"
    table.meta["description"] = "hstred simulator truth catalog"
    table.meta["flux_convention"] = "e-/s reaching the detector, before the flat field (QE)"
    table.meta["shape_convention"] = (
        "Sersic on the sky; r_eff along the major axis; ellip = 1 - b/a; "
        "pa north through east; tapered to zero between 4 and 5 r_eff")
    return table


def _gaia_g(ref_mag: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Gaia G (Vega) from the F606W AB magnitude and the AB colour slope (mag / 1000 A).

    G's effective wavelength (~6220 A for stars like these) lies 14 % of the way from
    F606W's pivot to F814W's, and G_AB - G_Vega ~ 0.10 mag: an approximation good to a
    few hundredths for the simulated colours, which is all a magnitude cut needs.
    """
    p606, p814 = FILTERS["F606W"].pivot_angstrom, FILTERS["F814W"].pivot_angstrom
    m814 = ref_mag + slope * (p814 - p606) / 1000.0
    return ref_mag + 0.14 * (m814 - ref_mag) - 0.10


def draw_space_motion(rng: np.random.Generator, catalog: Table) -> Table:
    """Add proper motions and parallaxes (stars only) and the reference epoch.

    A faint high-latitude field: a common (solar-reflex) motion of a few mas/yr, drawn
    per field, plus each star's own: 70 % disk stars (dispersion 5 mas/yr, parallax
    0.2-1 mas), 30 % halo stars (2 mas/yr, 0.05-0.2 mas). A new table is returned; the
    random stream is separate from the catalog's, so positions and fluxes are unchanged.
    """
    n = len(catalog)
    is_star = np.asarray(catalog["kind"]) == "star"
    reflex = rng.normal(0.0, 4.0, size=2)
    disk = rng.uniform(size=n) < 0.7
    sigma = np.where(disk, 5.0, 2.0)
    pmra = reflex[0] + sigma * rng.normal(size=n)
    pmdec = reflex[1] + sigma * rng.normal(size=n)
    parallax = np.where(disk, rng.uniform(0.2, 1.0, n), rng.uniform(0.05, 0.2, n))
    out = catalog.copy()
    out["pmra"] = np.where(is_star, pmra, 0.0)
    out["pmra"].unit = "mas / yr"
    out["pmra"].description = "proper motion in RA (mu_alpha cos dec)"
    out["pmdec"] = np.where(is_star, pmdec, 0.0)
    out["pmdec"].unit = "mas / yr"
    out["parallax"] = np.where(is_star, parallax, 0.0)
    out["parallax"].unit = "mas"
    out["ref_epoch"] = np.full(n, REF_EPOCH_JYEAR)
    out["ref_epoch"].unit = "yr"
    out.meta["epoch_convention"] = (
        "ra, dec: ICRS at ref_epoch (Julian year); each exposure shows the stars at its "
        "mid-time (EXPSTART + EXPTIME/2), moved by pmra, pmdec and parallax "
        "(hstred.simulate.catalog.positions_at); galaxies do not move")
    return out


def positions_at(catalog: Table, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) of every source at ``mjd``: stars moved, galaxies as given."""
    ra = np.array(catalog["ra"], dtype=float)
    dec = np.array(catalog["dec"], dtype=float)
    if "pmra" not in catalog.colnames:
        return ra, dec
    star = np.asarray(catalog["kind"]) == "star"
    moved = catalog[star]
    ra[star], dec[star] = positions_at_epoch(
        moved["ra"], moved["dec"], ref_epoch_jyear=moved["ref_epoch"], mjd=mjd,
        pmra_mas_yr=moved["pmra"], pmdec_mas_yr=moved["pmdec"], parallax_mas=moved["parallax"])
    return ra, dec


def _gaia_errors(g_mag: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaia DR3-like uncertainties: position (mas, at J2016.0), proper motion (mas/yr)
    and parallax (mas) against G, following the published DR3 performance (about
    0.02 / 0.02 / 0.02 at G < 15, 0.06 / 0.06 / 0.06 at G = 17, 0.4 / 0.6 / 0.6 at
    G = 20, 1.0 / 1.5 / 1.4 at G = 21)."""
    z = 10 ** (0.4 * (np.maximum(np.asarray(g_mag, dtype=float), 15.0) - 15.0))
    position = np.sqrt(0.015**2 + 4e-4 * z + 1.5e-5 * z**2)
    pm = np.sqrt(0.02**2 + 2e-4 * z + 3.5e-5 * z**2)
    parallax = np.sqrt(0.02**2 + 3e-4 * z + 3e-5 * z**2)
    return position, pm, parallax


def draw_gaia_catalog(rng: np.random.Generator, catalog: Table, *,
                      g_limit: float = GAIA_G_LIMIT) -> Table:
    """A Gaia DR3-like catalog of the truth's stars brighter than ``g_limit``.

    Columns as the Gaia archive names them: ``source_id``, ``ra``, ``dec``,
    ``ra_error``, ``dec_error`` (mas), ``pmra``, ``pmdec``, ``pmra_error``,
    ``pmdec_error`` (mas/yr), ``parallax``, ``parallax_error`` (mas), ``ref_epoch``
    (2016.0) and ``phot_g_mean_mag``. Measured values scatter about the truth by their
    errors (which grow with magnitude). ``source_id`` is the truth ``id``.
    """
    stars = catalog[(np.asarray(catalog["kind"]) == "star")
                    & (np.asarray(catalog["gaia_g_mag"]) < g_limit)]
    n = len(stars)
    g = np.asarray(stars["gaia_g_mag"], dtype=float)
    s_pos, s_pm, s_plx = _gaia_errors(g)
    dec = np.asarray(stars["dec"], dtype=float)
    mas = 1.0 / 3.6e6
    out = Table()
    out["source_id"] = np.asarray(stars["id"], dtype=np.int64)
    out["ra"] = (np.asarray(stars["ra"], dtype=float)
                 + rng.normal(size=n) * s_pos * mas / np.cos(np.radians(dec)))
    out["dec"] = dec + rng.normal(size=n) * s_pos * mas
    out["ra_error"] = s_pos
    out["dec_error"] = s_pos
    out["pmra"] = np.asarray(stars["pmra"], dtype=float) + rng.normal(size=n) * s_pm
    out["pmdec"] = np.asarray(stars["pmdec"], dtype=float) + rng.normal(size=n) * s_pm
    out["pmra_error"] = s_pm
    out["pmdec_error"] = s_pm
    out["parallax"] = np.asarray(stars["parallax"], dtype=float) + rng.normal(size=n) * s_plx
    out["parallax_error"] = s_plx
    out["ref_epoch"] = np.full(n, REF_EPOCH_JYEAR)
    out["phot_g_mean_mag"] = np.round(g + rng.normal(size=n) * 0.003, 4)
    for name, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"),
                       ("pmra", "mas / yr"), ("pmdec", "mas / yr"), ("pmra_error", "mas / yr"),
                       ("pmdec_error", "mas / yr"), ("parallax", "mas"),
                       ("parallax_error", "mas"), ("ref_epoch", "yr"),
                       ("phot_g_mean_mag", "mag")):
        out[name].unit = unit
    out.meta["description"] = "hstred simulator: Gaia DR3-like catalog of the field"
    out.meta["g_limit"] = float(g_limit)
    return out
