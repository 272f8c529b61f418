"""Read noise held out of the CTE correction (hstred.cte.noise).

A 2024-like quadrant strip (2048 rows, so every trail length): Poisson sky and stars
clocked out through the arCTIc model, then read noise. The true read noise is known here,
so the corrected image can be compared with what an ideal separation would give.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std

from hstred.cte.accuracy import noise_strip, noise_strip_residuals
from hstred.cte.model import remove_cte_from_quadrant
from hstred.cte.noise import CLIP_READ_NOISE, separate_read_noise

MJD_2024 = 60400.0
READ_NOISE = 4.5


def test_pure_read_noise_is_mostly_found_and_the_parts_add_up():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, READ_NOISE, (256, 256))
    image = 20.0 + noise
    rest, found = separate_read_noise(image, READ_NOISE)
    np.testing.assert_allclose(rest + found, image, rtol=0, atol=1e-9)
    # the estimate from 8 neighbours: correlation sqrt(8/9) with the truth
    assert np.corrcoef(found.ravel(), noise.ravel())[0, 1] > 0.9
    assert np.abs(found).max() <= CLIP_READ_NOISE * READ_NOISE
    assert mad_std(rest) < 0.5 * READ_NOISE


def test_stars_and_cosmic_rays_stay_in_what_is_corrected():
    rng = np.random.default_rng(4)
    image = 30.0 + rng.normal(0.0, READ_NOISE, (128, 128))
    yy, xx = np.mgrid[0:128, 0:128]
    star = 5000.0 / (2 * np.pi) * np.exp(-((yy - 64) ** 2 + (xx - 40) ** 2) / 2.0)
    image += star
    image[20, 100] += 3000.0  # a cosmic ray
    rest, found = separate_read_noise(image, READ_NOISE)
    assert abs(found[60:69, 36:45].sum()) < 0.005 * star.sum()
    assert abs(found[20, 100]) < 2 * READ_NOISE
    # no read noise: nothing to separate
    rest0, found0 = separate_read_noise(image, 0.0)
    assert not found0.any() and np.array_equal(rest0, image)


@pytest.fixture(scope="module")
def strip():
    """A 2048 x 48 strip of a 2024 quadrant with a dark (15 e-) sky."""
    return noise_strip(MJD_2024, 15.0, read_noise_e=READ_NOISE)


def test_separation_keeps_read_noise_from_being_amplified(strip):
    """Plain correction: blank-sky residuals far wider than the noise (2024, a dark sky);
    with the read noise held out: within 5 % of it, and the star trails removed as by an
    ideal separation (the true read noise held out)."""
    s, quad = strip, strip.quadrant
    plain = remove_cte_from_quadrant(s.observed, quad, MJD_2024)
    separated = remove_cte_from_quadrant(s.observed, quad, MJD_2024, READ_NOISE)
    ideal = remove_cte_from_quadrant(s.trailed, quad, MJD_2024) + s.noise
    width_plain, _ = noise_strip_residuals(s, plain)
    width, left = noise_strip_residuals(s, separated)
    _, left_ideal = noise_strip_residuals(s, ideal)
    _, before = noise_strip_residuals(s, s.observed)
    assert width_plain > 1.3
    assert width == pytest.approx(1.0, abs=0.05)
    assert before > 0 and abs(left) <= 0.15 * before
    assert abs(left - left_ideal) <= 0.03 * before, (left, left_ideal, before)
