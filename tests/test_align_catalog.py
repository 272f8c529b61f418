"""Unit tests of the visit-image source catalog (hstred.align.catalog)."""

from __future__ import annotations

import numpy as np
import pytest
from test_drizzle_synthetic import _render_stars

from hstred.align.catalog import detect_point_sources, sky_noise


def _image(seed=2):
    rng = np.random.default_rng(seed)
    shape = (160, 200)
    xs = np.array([30.3, 80.7, 140.2, 170.9, 50.5, 110.1])
    ys = np.array([40.6, 100.2, 60.8, 130.4, 130.0, 20.3])
    flux = np.array([5000.0, 3000.0, 8000.0, 2000.0, 4000.0, 6000.0])
    img = _render_stars(shape, xs, ys, flux, sigma_px=1.2)
    img = img + rng.normal(0.0, 2.0, shape)
    return img, xs, ys, flux


def test_sky_noise_of_pure_noise():
    rng = np.random.default_rng(0)
    img = rng.normal(10.0, 3.0, (200, 200))
    median, std = sky_noise(img)
    assert median == pytest.approx(10.0, abs=0.05)
    assert std == pytest.approx(3.0, rel=0.03)


def test_detects_stars_with_accurate_centroids_brightest_first():
    img, xs, ys, flux = _image()
    before = img.copy()
    cat = detect_point_sources(img, nsigma=5.0)
    assert np.array_equal(img, before)  # input untouched
    assert len(cat) == len(xs)
    assert list(cat["flux"]) == sorted(cat["flux"], reverse=True)
    for x, y in zip(xs, ys, strict=True):
        d = np.hypot(cat["x"] - x, cat["y"] - y)
        assert d.min() < 0.03


def test_rejects_single_hot_pixel_and_sources_touching_missing_data():
    img, xs, ys, _ = _image()
    img[10, 100] += 3000.0  # a lone hot pixel / cosmic-ray hit
    weight = np.ones_like(img)
    weight[:, :35] = 0.0  # no data left of x = 35: the star at x = 30.3 is cut
    img[:, :35] = np.nan
    cat = detect_point_sources(img, weight=weight)
    assert np.hypot(cat["x"] - 100, cat["y"] - 10).min() > 3
    assert np.hypot(cat["x"] - 30.3, cat["y"] - 40.6).min() > 3
    assert len(cat) == len(xs) - 1


def test_empty_image_gives_empty_catalog():
    cat = detect_point_sources(np.full((50, 50), np.nan))
    assert len(cat) == 0 and cat.colnames == ["x", "y", "flux", "snr", "fwhm"]


def test_separable_smoothing_equals_the_2d_kernel():
    """The detection image is smoothed with two 1-D passes of the Gaussian's marginal;
    that is the 2-D kernel of photutils to float rounding."""
    from photutils.segmentation import make_2dgaussian_kernel
    from scipy import ndimage

    kernel = make_2dgaussian_kernel(2.0, size=9)
    full = kernel.array / kernel.array.sum()
    marginal = full.sum(axis=0)
    assert np.abs(np.outer(marginal, marginal) - full).max() < 1e-15
    image = np.random.default_rng(4).normal(size=(120, 90))
    image[60, 45] += 500.0
    two_d = ndimage.convolve(image, full, mode="constant", cval=0.0)
    passes = ndimage.convolve1d(image, marginal, axis=0, mode="constant", cval=0.0)
    passes = ndimage.convolve1d(passes, marginal, axis=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(passes, two_d, rtol=0, atol=1e-12)
