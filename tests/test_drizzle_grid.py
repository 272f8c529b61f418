"""Unit tests of the output grid, options and drizzle weights."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from astropy import wcs as fitswcs

from hstred.drizzle.config import DrizzleConfig
from hstred.drizzle.grid import compute_output_grid, orientation_deg, same_grid, tan_cd_matrix
from hstred.drizzle.weights import background_variance
from hstred.errors import InputError


def test_cd_matrix_north_up_east_left():
    cd = tan_cd_matrix(scale_arcsec=0.03, orientation_deg=0.0)
    assert cd == pytest.approx(np.array([[-0.03 / 3600, 0.0], [0.0, 0.03 / 3600]]))


def test_orientation_round_trip():
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cd = tan_cd_matrix(scale_arcsec=0.05, orientation_deg=37.5)
    w.wcs.set()
    assert orientation_deg(w) == pytest.approx(37.5)
    # +y at position angle 90 deg points east: RA increases along +y.
    w.wcs.cd = tan_cd_matrix(scale_arcsec=0.05, orientation_deg=90.0)
    w.wcs.crval = [10.0, 0.0]
    w.wcs.set()
    (ra0, _), (ra1, _) = w.wcs_pix2world([[0, 0], [0, 100]], 0)
    assert ra1 > ra0


def test_grid_covers_all_outlines_with_margin_and_is_deterministic():
    ra = np.array([150.00, 150.02, 150.02, 150.00])
    dec = np.array([2.00, 2.00, 2.01, 2.01])
    outlines = [(ra, dec), (ra + 0.005, dec + 0.004)]
    g = compute_output_grid(outlines, scale_arcsec=0.05, orientation=0.0, margin_px=4)
    g2 = compute_output_grid(outlines, scale_arcsec=0.05, orientation=0.0, margin_px=4)
    assert same_grid(g, g2) and tuple(g.pixel_shape) == tuple(g2.pixel_shape)
    nx, ny = g.pixel_shape
    for r, d in outlines:
        x, y = g.wcs_world2pix(r, d, 0)
        assert x.min() >= 4 - 1 and y.min() >= 4 - 1
        assert x.max() <= nx - 4 and y.max() <= ny - 4
    # 0.025 deg of RA at dec 2 and 0.014 deg of Dec at 0.05"/pixel, plus margins.
    assert nx == pytest.approx(0.025 * np.cos(np.radians(2.005)) * 3600 / 0.05 + 9, abs=3)
    assert ny == pytest.approx(0.014 * 3600 / 0.05 + 9, abs=3)
    assert orientation_deg(g) == pytest.approx(0.0)


def test_same_grid_detects_differences():
    ra = np.array([150.00, 150.01, 150.01, 150.00])
    dec = np.array([2.00, 2.00, 2.01, 2.01])
    g = compute_output_grid([(ra, dec)], scale_arcsec=0.05)
    h = g.deepcopy()
    h.wcs.crpix = h.wcs.crpix + [0.01, 0.0]
    h.wcs.set()
    assert not same_grid(g, h)
    k = g.deepcopy()
    k.pixel_shape = (g.pixel_shape[0] + 1, g.pixel_shape[1])
    assert not same_grid(g, k)


def test_config_defaults_and_validation():
    c = DrizzleConfig()
    assert (c.kernel, c.pixel_scale_arcsec, c.pixfrac, c.weight_type, c.fit_geometry) == (
        "square", 0.03, 0.8, "ERR", "rscale")
    assert c.to_dict()["min_matches"] == c.min_matches
    with pytest.raises(FrozenInstanceError):
        c.kernel = "point"  # type: ignore[misc]
    for bad in ({"kernel": "bicubic"}, {"pixfrac": 0.0}, {"pixfrac": 1.5},
                {"weight_type": "IVM"}, {"fit_geometry": "affine"}, {"pixel_scale_arcsec": 30},
                {"min_matches": 0}, {"min_matches": 2}, {"good_bits": 4096 + 16},
                {"max_rms_arcsec": -1},
                {"tolerance_px": 1.0, "refine_tolerance_px": 2.0},
                {"sky_method": "mode"}):
        with pytest.raises(InputError):
            DrizzleConfig(**bad)
    DrizzleConfig(kernel="lanczos3", pixfrac=1.0, fit_geometry="shift", weight_type="EXP")


def test_background_variance_ignores_sources_and_flagged_pixels():
    err = np.full((128, 192), 3.0, dtype=np.float32)
    err[40:46, 50:56] = 30.0  # a bright star: its own shot noise
    dq = np.zeros(err.shape, dtype=np.int16)
    err[100:128, 0:64] = 50.0  # a flagged region
    dq[100:128, 0:64] = 4
    before = err.copy()
    var = background_variance(err, dq=dq, block_px=32)
    assert np.array_equal(err, before)
    assert var.shape == err.shape and var.dtype == np.float32
    assert np.allclose(var, 9.0)


def test_background_variance_follows_large_scale_gradients():
    y = np.linspace(50.0, 150.0, 256)[:, None]
    err = np.sqrt(np.repeat(y, 256, axis=1)).astype(np.float32)
    var = background_variance(err, block_px=32)
    inner = slice(16, 240)
    assert np.allclose(var[inner, inner], err[inner, inner] ** 2, rtol=2e-3)
