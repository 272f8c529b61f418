"""arCTIc ACS model: dates, trail direction per amplifier, correction accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from hstred.acs import quadrants
from hstred.cte.model import (
    MJD_TO_JD,
    add_cte_to_chip,
    add_cte_to_quadrant,
    cte_model_for_date,
    remove_cte_from_quadrant,
)
from hstred.cte.openmp import arcticpy_has_openmp

LATE_MJD = 60800.0  # 2025
SM4_JD = 2454968.0


def test_model_follows_massey_2014_numbers():
    early = cte_model_for_date(2453000.0 - MJD_TO_JD)  # 2003, before the 2006 cooling
    late = cte_model_for_date(LATE_MJD)
    assert early.release_timescales == pytest.approx((0.48, 4.86, 20.6))
    assert late.release_timescales == pytest.approx((0.74, 7.70, 37.0))
    fractions = np.array(late.trap_densities) / late.total_trap_density
    assert fractions == pytest.approx([0.17, 0.45, 0.38])
    assert cte_model_for_date(SM4_JD - MJD_TO_JD).total_trap_density == pytest.approx(1.24,
                                                                                      abs=0.01)
    assert 4.3 < late.total_trap_density < 4.7
    assert late.full_well_depth == 84700 and late.well_fill_power == pytest.approx(0.478)


def test_arcticpy_built_with_openmp():
    assert arcticpy_has_openmp()


def _star_field(shape, positions, flux, sky=30.0):
    img = np.full(shape, sky)
    yy, xx = np.mgrid[-3:4, -3:4]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 0.9**2))
    psf /= psf.sum()
    for y, x in positions:
        img[y - 3:y + 4, x - 3:x + 4] += flux * psf
    return img


@pytest.mark.parametrize("chip", [1, 2])
def test_trails_run_away_from_each_readout_amplifier(chip):
    for quad in quadrants(chip):
        img = _star_field((400, 60), [(200, 30)], 5000.0)
        out = add_cte_to_quadrant(img, quad, LATE_MJD)
        diff = out - img
        away = +1 if chip == 2 else -1  # WFC2 reads out at row 0, WFC1 at the top
        behind = diff[200 + away * 4:200 + away * 30:away, 27:34].sum()
        ahead = diff[200 - away * 4:200 - away * 30:-away, 27:34].sum()
        assert behind > 50, (quad.amp, behind)
        assert abs(ahead) < 0.05 * behind, (quad.amp, ahead, behind)
        # parallel CTE only: no charge moves along rows
        assert np.abs(diff[195:206, :20]).max() < 1e-6


@pytest.mark.parametrize("chip", [1, 2])
def test_columns_are_trailed_independently(chip):
    """The QA report trails only a star's columns; that must equal trailing the quadrant."""
    rng = np.random.default_rng(5)
    img = _star_field((300, 40), [(150, 20), (60, 22), (240, 8)], 8000.0)
    img += rng.normal(0.0, 4.0, img.shape)
    for quad in quadrants(chip):
        whole = add_cte_to_quadrant(img, quad, LATE_MJD)
        strip = add_cte_to_quadrant(np.ascontiguousarray(img[:, 18:23]), quad, LATE_MJD)
        assert np.array_equal(strip, whole[:, 18:23]), quad.amp


def test_add_to_chip_does_not_modify_input():
    img = np.zeros((2048, 4096))
    img[1000, 100] = 1000.0
    before = img.copy()
    out = add_cte_to_chip(img, 2, LATE_MJD)
    assert np.array_equal(img, before)
    assert out[1000, 100] < 1000.0


def test_correction_removes_trails_and_restores_flux():
    quad = quadrants(2)[0]
    rng = np.random.default_rng(3)
    positions = [(int(y), int(x)) for y, x in zip(rng.integers(200, 2000, 30),
                                                  np.arange(8, 248, 8), strict=True)]
    truth = _star_field((2048, 256), positions, 2000.0)
    trailed = add_cte_to_quadrant(truth, quad, LATE_MJD)
    corrected = remove_cte_from_quadrant(trailed, quad, LATE_MJD, n_iterations=3)

    def trail(img):
        return sum((img - truth)[y + 4:y + 30, x - 2:x + 3].sum() for y, x in positions)

    def fluxes(img):
        return np.array([(img - 30.0)[y - 3:y + 4, x - 3:x + 4].sum() for y, x in positions])

    assert trail(trailed) > 1000
    assert abs(trail(corrected)) < 0.1 * trail(trailed)
    assert np.median(fluxes(trailed) / fluxes(truth)) < 0.95  # charge really was lost
    assert np.median(fluxes(corrected) / fluxes(truth)) == pytest.approx(1.0, abs=0.01)


def test_correction_leaves_trail_free_sky_unchanged():
    quad = quadrants(1)[1]
    sky = np.full((2048, 64), 40.0)
    corrected = remove_cte_from_quadrant(sky, quad, LATE_MJD)
    change = np.abs(corrected - sky)
    # all but the row next to the serial register (read first, no traps filled yet)
    oriented = change[::-1, ::-1] if quad.flip_y else change
    assert oriented[1:].max() < 0.1
    assert np.array_equal(remove_cte_from_quadrant(np.zeros((64, 64)), quad, LATE_MJD),
                          np.zeros((64, 64)))
