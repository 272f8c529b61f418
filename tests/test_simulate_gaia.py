"""The simulator's moving stars and its Gaia DR3-like catalog."""

from __future__ import annotations

import numpy as np
import pytest

from hstred.simulate.catalog import (
    REF_EPOCH_JYEAR,
    draw_gaia_catalog,
    draw_space_motion,
    draw_truth_catalog,
    positions_at,
)
from hstred.simulate.rng import rng_for


def _catalog(seed=5, n=3000):
    base = draw_truth_catalog(rng_for(seed, "catalog"), n_sources=n, center_ra_deg=150.0,
                              center_dec_deg=2.0, radius_arcsec=150.0,
                              filters=("F606W", "F814W"))
    return base, draw_space_motion(rng_for(seed, "space-motion"), base)


def test_space_motion_leaves_the_catalog_draw_unchanged_and_moves_only_stars():
    base, cat = _catalog()
    again = draw_truth_catalog(rng_for(5, "catalog"), n_sources=3000, center_ra_deg=150.0,
                               center_dec_deg=2.0, radius_arcsec=150.0,
                               filters=("F606W", "F814W"))
    for name in base.colnames:
        np.testing.assert_array_equal(np.asarray(base[name]), np.asarray(again[name]))
        np.testing.assert_array_equal(np.asarray(base[name]), np.asarray(cat[name]))
    assert "pmra" not in base.colnames  # the input table is not modified
    star = np.asarray(cat["kind"]) == "star"
    assert np.all(cat["pmra"][~star] == 0) and np.all(cat["parallax"][~star] == 0)
    pm = np.hypot(cat["pmra"][star], cat["pmdec"][star])
    # A faint high-latitude field: a few mas/yr, a tail to ~15-20.
    assert 2.0 < np.median(pm) < 10.0 and np.percentile(pm, 99) < 25.0
    assert np.all((cat["parallax"][star] > 0.04) & (cat["parallax"][star] <= 1.0))
    assert np.all(cat["ref_epoch"] == REF_EPOCH_JYEAR)


def test_positions_at_an_epoch_move_stars_by_their_motion_and_galaxies_not_at_all():
    _, cat = _catalog()
    mjd = 57388.5 + 8.5 * 365.25  # J2024.5
    ra, dec = positions_at(cat, mjd)
    star = np.asarray(cat["kind"]) == "star"
    assert np.array_equal(ra[~star], np.asarray(cat["ra"])[~star])
    assert np.array_equal(dec[~star], np.asarray(cat["dec"])[~star])
    north = (dec[star] - np.asarray(cat["dec"])[star]) * 3.6e6
    # Proper motion x 8.5 years, plus at most the parallax (< 1 mas).
    assert np.all(np.abs(north - 8.5 * np.asarray(cat["pmdec"])[star]) < 1.05)


def test_gaia_catalog_is_the_bright_stars_with_dr3_like_errors():
    _, cat = _catalog()
    gaia = draw_gaia_catalog(rng_for(5, "gaia"), cat)
    assert {"source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "parallax",
            "ref_epoch", "phot_g_mean_mag"} <= set(gaia.colnames)
    assert gaia["ra_error"].unit == "mas" and gaia["pmra"].unit == "mas / yr"
    truth = cat[np.searchsorted(cat["id"], gaia["source_id"])]
    assert np.all(truth["kind"] == "star") and np.all(truth["gaia_g_mag"] < 21.0)
    n_bright = int(np.sum((cat["kind"] == "star") & (cat["gaia_g_mag"] < 21.0)))
    assert len(gaia) == n_bright > 50
    assert np.all(gaia["ref_epoch"] == 2016.0)
    # Errors grow with magnitude: DR3-like at G = 20 (~0.4 mas, ~0.6 mas/yr).
    order = np.argsort(truth["gaia_g_mag"])
    assert np.all(np.diff(np.asarray(gaia["ra_error"])[order]) >= -1e-9)
    g20 = np.abs(gaia["phot_g_mean_mag"] - 20.0) < 0.3
    assert 0.25 < np.median(gaia["ra_error"][g20]) < 0.6
    assert 0.35 < np.median(gaia["pmra_error"][g20]) < 0.9
    # Values scatter about the truth by their errors.
    dra = ((gaia["ra"] - truth["ra"]) * np.cos(np.radians(truth["dec"])) * 3.6e6
           / gaia["ra_error"])
    dpm = (gaia["pmdec"] - truth["pmdec"]) / gaia["pmdec_error"]
    assert np.std(dra) == pytest.approx(1.0, abs=0.25)
    assert np.std(dpm) == pytest.approx(1.0, abs=0.25)
    # Brighter G for the brighter F606W stars; G is close to F606W (AB) for these colours.
    m606 = 26.5 - 2.5 * np.log10(truth["flux_F606W"])
    assert np.all(np.abs(gaia["phot_g_mean_mag"] - m606) < 0.5)
