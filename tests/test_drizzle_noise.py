"""The noise of drizzled images: per-pixel variance and the correlated-noise factors.

Cases with a known answer: a grid shifted by half a pixel averages four input pixels into
each output pixel, so the per-pixel variance and the noise of block means follow in
closed form; a whole-pixel shift moves pixels without mixing them.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from hstred.drizzle.noise import (
    CROP_PAD_PX,
    Layer,
    casertano_r,
    chip_pixmap,
    correlation_factors,
    crop_layer,
    drizzle_layers,
)


def test_casertano_r_both_branches():
    # ACS/WFC 0.05" drizzled to 0.03" with pixfrac 0.8: drops of 1.33 output pixels
    assert casertano_r(0.6, 0.8) == pytest.approx((4 / 3) / (1 - 1 / 4))
    assert casertano_r(1.0, 1.0) == pytest.approx(1.5)
    assert casertano_r(1.0, 0.5) == pytest.approx(1 / (1 - 0.5 / 3))
    assert casertano_r(1.0, 1e-6) == pytest.approx(1.0, abs=1e-6)  # point kernel: no mixing


def _layer(shape, shift, *, var=None, weight=None):
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    pixmap = np.stack([x + shift[0], y + shift[1]], axis=-1)
    return Layer(sci=np.zeros(shape, np.float32),
                 var=np.ones(shape, np.float32) if var is None else var,
                 weight=np.ones(shape, np.float32) if weight is None else weight,
                 pixmap=pixmap, exptime=1.0, ratio=1.0)


def test_half_pixel_shift_variance_and_block_factors():
    rng = np.random.default_rng(3)
    shape = (96, 96)
    var = rng.uniform(1.0, 4.0, shape).astype(np.float32)
    layer = _layer(shape, (0.5, 0.5), var=var)
    d = drizzle_layers([layer], (95, 95), pixfrac=1.0, kernel="square")
    # output pixel j (j >= 1) is the mean of a 2 x 2 group of input pixels j-1, j
    expected = (var[:-1, :-1] + var[1:, :-1] + var[:-1, 1:] + var[1:, 1:]) / 16.0
    np.testing.assert_allclose(d.out_img2[0][1:, 1:], expected[:-1, :-1], rtol=1e-5)
    # 1-D: the sum of n neighbours holds n - 1 inputs whole and two halves, so the variance
    # of their mean is (n - 1/2) / n^2 against (1/2) / n predicted: a ratio 2 - 1/n per
    # axis, which in two dimensions is the ratio of the noise itself.
    ones = _layer(shape, (0.5, 0.5))
    out = drizzle_layers([ones], (95, 95), pixfrac=1.0, kernel="square")
    factors = correlation_factors([([ones], out.out_wht, out.out_img2[0])], pixfrac=1.0,
                                  kernel="square", blocks=(1, 2, 4, 16), realisations=60)
    for n, f in factors.items():
        assert f == pytest.approx(2.0 - 1.0 / n, rel=0.02), (n, factors)


def test_whole_pixel_shift_leaves_the_noise_uncorrelated():
    layer = _layer((80, 80), (3.0, -2.0))
    d = drizzle_layers([layer], (80, 80), pixfrac=1.0, kernel="square")
    covered = d.out_wht > 0
    assert covered.sum() == 77 * 78
    np.testing.assert_allclose(d.out_img2[0][covered], 1.0, rtol=1e-6)
    factors = correlation_factors([([layer], d.out_wht, d.out_img2[0])], pixfrac=1.0,
                                  kernel="square", blocks=(1, 4, 16), realisations=60)
    assert all(f == pytest.approx(1.0, rel=0.03) for f in factors.values()), factors


def test_weights_enter_squared():
    """Two exposures of one grid, weights 1 and 3: the mean has variance
    (1 V1 + 9 V2) / 16, not the (1 V1 + 3 V2) / 4 of a plainly drizzled variance."""
    shape = (40, 40)
    a = _layer(shape, (0.0, 0.0), var=np.full(shape, 2.0, np.float32))
    b = _layer(shape, (0.0, 0.0), var=np.full(shape, 5.0, np.float32),
               weight=np.full(shape, 3.0, np.float32))
    d = drizzle_layers([a, b], shape, pixfrac=1.0, kernel="square")
    np.testing.assert_allclose(d.out_img2[0], (2.0 + 9 * 5.0) / 16.0, rtol=1e-6)


def test_pixmap_sampled_every_ten_pixels_follows_the_distortion():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [200.0, 100.0]
    w.wcs.cd = np.array([[-1.0, 0.2], [0.2, 1.0]]) * 0.05 / 3600.0
    from astropy.wcs import Sip

    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[0, 2], b[1, 1], a[3, 0] = 8e-6, -5e-6, 6e-6, 1e-9
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval = [150.0, 2.0]
    grid.wcs.crpix = [500.0, 300.0]
    grid.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) * 0.03 / 3600.0
    shape = (203, 417)
    pm = chip_pixmap(w, grid, shape)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    ra, dec = w.all_pix2world(x, y, 0)
    ex, ey = grid.all_world2pix(ra, dec, 0)
    assert np.abs(pm[..., 0] - ex).max() < 2e-3 and np.abs(pm[..., 1] - ey).max() < 2e-3
    assert np.abs(pm[::10, ::10, 0] - ex[::10, ::10]).max() < 1e-6  # exact at the samples


def test_missing_error_array_or_mismatched_weights_stop_with_one_message(tmp_path):
    from astropy.io import fits
    from test_drizzle_synthetic import write_fake_program

    from hstred.drizzle.noise import ChipInput, load_layer
    from hstred.errors import StageError

    prog = write_fake_program(tmp_path / "p", chip_shape=(32, 64), visits=1, exposures=1,
                              filters=("F606W",), n_stars=3)
    flc = prog.paths[0]
    grid = WCS(fits.getheader(flc, ("SCI", 1)))
    grid.pixel_shape = (64, 32)
    weight = tmp_path / "w.fits"
    fits.PrimaryHDU(np.ones((32, 64), np.float32)).writeto(weight)
    no_err = tmp_path / "no_err.fits"
    with fits.open(flc) as hdul:
        fits.HDUList([h for h in hdul if h.name != "ERR"]).writeto(no_err)
    with pytest.raises(StageError, match=r"no_err.fits\[ERR,1\]: no error array"):
        load_layer(ChipInput(copy=flc, source=no_err, extver=1, weight=weight), grid)
    small = tmp_path / "small_w.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(small)
    with pytest.raises(StageError, match=r"small_w.fits: weight map shape"):
        load_layer(ChipInput(copy=flc, source=flc, extver=1, weight=small), grid)
    assert load_layer(ChipInput(copy=flc, source=flc, extver=1, weight=weight), grid).ratio > 0


def test_a_chip_cut_to_a_tile_keeps_its_distorted_edge():
    # A chip turned by 3 degrees whose right edge the distortion bows outwards by 6 pixels,
    # cut to a tile that it reaches beyond (at the top). The drizzle library finds the
    # pixels that land from straight lines between the input's corners: without a frame
    # of empty pixels around the cut, the bowed edge goes missing; with it, the tile's
    # weights are the whole grid's.
    ny, nx = 200, 300
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    bowed = xx + 6.0 * (1.0 - ((yy - 99.5) / 99.5) ** 2) * xx / nx
    t = np.radians(3.0)
    px, py = np.cos(t) * bowed - np.sin(t) * yy, np.sin(t) * bowed + np.cos(t) * yy
    px, py = px - px.min() + 10.0, py - py.min() + 10.0
    ones = np.ones((ny, nx), dtype=np.float32)
    layer = Layer(sci=np.random.default_rng(5).normal(size=(ny, nx)).astype(np.float32),
                  var=ones, weight=ones, pixmap=np.stack([px, py], axis=-1), exptime=1.0,
                  ratio=1.0)
    out_shape = (int(py.max()) + 12, int(px.max()) + 12)
    whole = drizzle_layers([layer], out_shape, pixfrac=1.0, kernel="square").out_wht
    window = (0, 150, 0, out_shape[1])
    inner = np.s_[:-3, :]  # the tile's own top edge takes partial drops either way
    expected = whole[:150][inner]
    missing = {}
    for pad in (0, CROP_PAD_PX):
        cut = crop_layer(layer, window, pad=pad)
        tile = drizzle_layers([cut], (150, out_shape[1]), pixfrac=1.0,
                              kernel="square").out_wht[inner]
        missing[pad] = int(np.count_nonzero((expected > 0) & ~(tile > 0)))
    assert missing[0] > 20 and missing[CROP_PAD_PX] == 0
    np.testing.assert_allclose(tile, expected, rtol=1e-6)


def test_a_chip_part_read_for_a_window_is_the_whole_chip_cut_to_it(tmp_path, monkeypatch):
    """A tile reads and maps only the part of a chip that reaches it: the same arrays,
    to the bit, as the whole chip loaded and cut (windows across, within, beside and
    far from the chip; a grid turned against the chip, so the part is a slanted band),
    its pixel map interpolated in blocks of rows."""
    from astropy.io import fits
    from test_drizzle_synthetic import write_fake_program

    from hstred.drizzle import noise
    from hstred.drizzle.noise import ChipInput, chip_parts, load_layer

    monkeypatch.setattr(noise, "CROP_ROWS", 16)  # maps made and tested in blocks of rows

    prog = write_fake_program(tmp_path / "p", chip_shape=(200, 300), visits=1, exposures=1,
                              filters=("F606W",), n_stars=3)
    flc = prog.paths[0]
    weight = tmp_path / "w.fits"
    fits.PrimaryHDU(np.random.default_rng(2).uniform(0.5, 2.0, (200, 300))
                    .astype(np.float32)).writeto(weight)
    chip = ChipInput(copy=flc, source=flc, extver=1, weight=weight)
    grid = WCS(fits.getheader(flc, ("SCI", 1)))
    t = np.radians(17.0)
    grid.wcs.cd = grid.pixel_scale_matrix @ np.array([[np.cos(t), -np.sin(t)],
                                                      [np.sin(t), np.cos(t)]]) * 0.6
    grid.wcs.crpix = [260.0, 120.0]
    grid.pixel_shape = (560, 420)
    whole = load_layer(chip, grid)
    outline = whole.pixmap.reshape(-1, 2)
    assert outline[:, 0].min() < 100 and outline[:, 1].max() > 300  # the chip's extent
    windows = [(0, 420, 0, 560), (0, 200, 0, 280), (200, 420, 280, 560), (150, 260, 230, 330),
               (0, 60, 0, 60), (380, 420, 500, 560)]
    parts = 0
    for window in windows:
        for pad in (0, CROP_PAD_PX):
            expected = crop_layer(whole, window, pad=pad)
            part = load_layer(chip, grid, window=window, pad=pad)
            if expected is None:
                assert part is None, window
                continue
            parts += 1
            for name in ("sci", "var", "weight", "pixmap"):
                np.testing.assert_array_equal(getattr(part, name), getattr(expected, name),
                                              err_msg=f"{name} {window} {pad}")
            assert (part.exptime, part.ratio) == (expected.exptime, expected.ratio)
    assert parts >= 6
    # all windows at once (the correlation windows of a tiled product)
    ratio, all_parts = chip_parts(chip, grid, windows)
    assert ratio == whole.ratio
    for window, part in zip(windows, all_parts, strict=True):
        expected = crop_layer(whole, window)
        assert (part is None) == (expected is None)
        if part is not None:
            np.testing.assert_array_equal(part.pixmap, expected.pixmap)
            np.testing.assert_array_equal(part.var, expected.var)
    # and a small window maps a small part of the chip, a block of rows at a time
    mapped = []
    interpolated = noise._interpolated
    monkeypatch.setattr(noise, "_interpolated",
                        lambda samples, box: mapped.append(box) or interpolated(samples, box))
    load_layer(chip, grid, window=(150, 260, 230, 330))
    rows = {r for r0, r1, _c0, _c1 in mapped for r in range(r0, r1)}
    cols = {c for _r0, _r1, c0, c1 in mapped for c in range(c0, c1)}
    assert len(rows) * len(cols) < 0.4 * 200 * 300
    assert len(mapped) > 2 and max(r1 - r0 for r0, r1, _c0, _c1 in mapped) <= 16


def test_a_framed_pixel_map_is_numpys_odd_reflection_to_the_bit():
    from hstred.drizzle.noise import framed

    rng = np.random.default_rng(8)
    for shape, pad in (((40, 57), 8), ((9, 30), 8), ((30, 8), 8), ((5, 4), 8), ((12, 12), 0),
                       ((3, 3), 1)):
        a = rng.uniform(-3000.0, 9000.0, shape)
        out = np.full((shape[0] + 2 * pad, shape[1] + 2 * pad), np.nan)
        framed(a, 1234.5, pad, out)
        np.testing.assert_array_equal(
            out, np.pad(a - 1234.5, pad, mode="reflect", reflect_type="odd"), err_msg=str(shape))
