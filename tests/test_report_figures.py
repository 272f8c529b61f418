"""Report figures: preview downsampling of memory-mapped products."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from hstred.report.figures import downsample, plot_image


def _reference_block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    ny, nx = (s // factor * factor for s in image.shape)
    blocks = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    with pytest.warns(RuntimeWarning, match="empty slice"):
        return np.nanmean(blocks, axis=(1, 3))


def test_downsample_matches_block_nanmean_whatever_the_chunking():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(103, 77)).astype(np.float32)
    image[12:16, 20:24] = np.nan  # one 4x4 block entirely NaN
    image[50, 5] = np.nan
    expected = _reference_block_mean(image.astype(np.float64), 4)
    for rows in (1, 4, 9, 64, 1000):
        got = downsample(image, max_size=26, chunk_pixels=rows * 76)
        assert got.shape == (25, 19)
        np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[3, 5]) and np.isfinite(got[12, 1])


def test_downsample_small_image_is_unchanged():
    image = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(downsample(image, max_size=10), image)


def test_downsample_reads_a_fits_section_as_the_array(tmp_path):
    # the report reads products through sections of files opened without memory maps
    data = np.random.default_rng(2).normal(size=(300, 250)).astype(np.float32)
    data[:8, :8] = np.nan
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(data).writeto(path)
    with fits.open(path, memmap=False) as hdul:
        for size in (40, 1000):  # block means, and the image as it is
            np.testing.assert_array_equal(downsample(hdul[0].section, max_size=size),
                                          downsample(data, max_size=size))
        assert hdul[0].__dict__.get("data") is None  # never loaded whole


def test_plot_image_from_memory_map_leaves_file_untouched(tmp_path):
    data = np.random.default_rng(1).normal(size=(600, 500)).astype(np.float32)
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(data).writeto(path)
    before = path.read_bytes()
    with fits.open(path, memmap=True) as hdul:
        png = plot_image(hdul[0].data, tmp_path / "img.png", title="t", label="e/s")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert path.read_bytes() == before


def test_absolute_tie_section_shows_the_fit_and_the_residual_map(tmp_path):
    from hstred.report.build import _absolute_section

    rng = np.random.default_rng(4)
    n = 12
    tie = {"status": "TIED", "catalog": "/data/hstred_work/catalogs/gaiadr3_x.ecsv",
           "source": "gaia", "n_catalog": 14, "n_matches": 6, "n_pairs": n,
           "rms_arcsec": 0.0041, "min_matches": 5, "max_rms_arcsec": 0.02,
           "epoch_handling": "proper motion and parallax from J2016.0 to each visit's epoch",
           "epochs_jyear": {"jd7101_F606W": 2024.42, "jd7102_F606W": 2024.51},
           "shift_x_arcsec": -0.4321, "shift_y_arcsec": 0.1234, "rotation_deg": 0.0125,
           "scale": 1.0000002, "wcsname": "HSTRED-GAIA",
           "residuals": {"group": ["jd7101_F606W"] * n,
                         "ra_deg": list(150.0 + rng.uniform(-0.02, 0.02, n)),
                         "dec_deg": list(2.0 + rng.uniform(-0.02, 0.02, n)),
                         "dx_mas": list(rng.normal(0, 4, n)), "dy_mas": list(rng.normal(0, 4, n))}}
    html = _absolute_section(tie, tmp_path, "files")
    png = tmp_path / "catalog_residuals.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gaiadr3_x.ecsv" in html and "6 stars (12 pairs)" in html and "4.1 mas" in html
    assert "-432.1 mas" in html and "+45.00" in html and "J2024.420" in html
    relative = _absolute_section({**tie, "status": "RELATIVE", "message": "3 stars < 5",
                                  "wcsname": "HSTRED-ALIGN"}, tmp_path, "files")
    assert "NOT tied (3 stars &lt; 5)" in relative


def test_noise_section_draws_the_blank_sky_check(tmp_path):
    from hstred.report.build import _noise_section

    products = [{"filter": "F606W", "rms": "X_F606W_drz_rms.fits", "noise": {
        "casertano_r": 1.7778, "correlation": {"2": 1.42, "4": 1.6, "8": 1.7, "16": 1.75},
        "blank_sky": {"1": 1.004, "4": 1.012, "16": 1.031}}}]
    html = _noise_section(products, tmp_path, "files")
    assert (tmp_path / "noise.png").read_bytes()[:4] == b"\x89PNG"
    assert "<h2>Noise</h2>" in html and "F606W 1.778" in html
    assert "<td>16</td><td>1.750</td><td>1.031</td>" in html
    empty = _noise_section([{"filter": "F606W", "rms": "x", "noise": {}}], tmp_path, "files")
    assert "No blank-sky measurement" in empty
    off = _noise_section([{"filter": "F606W", "rms": None, "noise": {}}], tmp_path, "files")
    assert "No RMS images were made (--no-rms)" in off


def test_blank_sky_check_finds_correlated_noise_and_masks_sources():
    """Noise correlated by a 2 x 2 box (each pixel the mean of four): with the box's
    factors the check gives 1 at every scale, without them the block noise is twice the
    prediction; a bright source does not change that."""
    from scipy import ndimage

    from hstred.drizzle.noise import blank_sky_check

    rng = np.random.default_rng(5)
    white = rng.normal(size=(1200, 1200))
    sci = ndimage.uniform_filter(white, 2)[:1024, :1024]  # per-pixel sigma 1/2
    y, x = np.mgrid[0:1024, 0:1024]
    sci += 50.0 * np.exp(-((x - 300) ** 2 + (y - 700) ** 2) / (2 * 6.0**2))
    rms = np.full(sci.shape, 0.5)
    factors = {4: 2.0 - 1 / 4, 16: 2.0 - 1 / 16}
    check = blank_sky_check(sci, rms, factors, side=1024)
    for n in (1, 4, 16):
        assert check[n]["ratio"] == pytest.approx(1.0, abs=0.05), (n, check)
    assert check[16]["blocks"] > 2500  # of 4096: the source and its surroundings masked
    naive = blank_sky_check(sci, rms, {4: 1.0, 16: 1.0}, side=1024)
    assert naive[16]["ratio"] == pytest.approx(2.0 - 1 / 16, rel=0.05)
