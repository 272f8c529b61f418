"""Tiled final drizzles (``tile_size``) against whole-grid ones on one synthetic program.

The same calibrated exposures are reduced twice in one directory, whole and in tiles far
smaller than the grid (so that every chip spans several tiles and every star field
crosses tile borders): the tiled science must equal the whole-grid science to float32
rounding where the weight is positive, the weights and cosmic-ray flags must be the
same, the headers must record the same inputs and exposure totals, and the tile borders
must not show (the pixels on both sides of every border are compared on their own).
Tiles run on one worker and on two, with identical products.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scratch import fixture_dir
from test_drizzle_synthetic import VisitError, write_fake_program

from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.drizzle import tiled as tiled_module
from hstred.drizzle.config import DEFAULT_TILE_SIZE
from hstred.drizzle.tiled import Tile, TiledImage, cut_grid, in_tiles, merge_headers
from hstred.drizzle.tileset import TiledProduct, read_window, write_tiled_image
from hstred.errors import InputError, StageError
from hstred.execution import LocalBackend
from hstred.naming import PRODUCT_KINDS
from hstred.record import CR_BIT

ERRORS = {"jfak01": VisitError(0.42, -0.31, 0.02), "jfak02": VisitError(-0.25, 0.38, -0.03)}
TILE = 256


@pytest.fixture(scope="module")
def reductions(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "tiled") as root:
        prog = write_fake_program(root / "data", chip_shape=(160, 320), filters=("F606W",),
                                  visit_errors=ERRORS, n_stars=90, seed=11)
        base = dict(satellites="off")
        # whole and tiled in two copies of the program (single-exposure images are named
        # by their exposure alone)
        shutil.copytree(prog.directory, root / "data_tiled")
        whole = run_drizzle(prog.directory, "whole",
                            DrizzleConfig(**base, singles=True, tile_size=0),
                            work_dir=root / "work_whole")
        tiled = run_drizzle(root / "data_tiled", "tiled",
                            DrizzleConfig(**base, singles=True, tile_size=TILE),
                            work_dir=root / "work_tiled")
        # on two workers, and each tile's noise drizzled in bands of rows
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tiled_module, "NOISE_BAND_PIXELS", TILE * 100)
            two = run_drizzle(prog.directory, "two", DrizzleConfig(**base, tile_size=TILE),
                              work_dir=root / "work_two", backend=LocalBackend(workers=2))
        yield prog, whole, tiled, two, root


@pytest.fixture(scope="module")
def kept_tiles(reductions):
    """The tiled reduction again, its images kept as tile files (``tiled_products``), in a
    copy of the program holding an earlier run's FITS images of the same products."""
    prog, _whole, tiled, _two, root = reductions
    data = root / "data_tiles"
    shutil.copytree(root / "data_tiled", data, ignore=shutil.ignore_patterns("tiled_*"))
    for path in (tiled.product("F606W").sci, tiled.singles[0].wht):
        earlier = data / path.relative_to(root / "data_tiled")
        earlier.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, earlier)
    kept = run_drizzle(data, "tiled",
                       DrizzleConfig(satellites="off", singles=True, tile_size=TILE,
                                     tiled_products=True), work_dir=root / "work_tiles",
                       backend=LocalBackend(workers=2))
    return kept, data


def _read(path):
    with fits.open(path) as hdul:
        return hdul[0].data.astype(np.float64), hdul[0].header


def test_cut_grid_covers_every_pixel_once():
    tiles = cut_grid((1000, 517), 256)
    count = np.zeros((517, 1000), dtype=int)
    for t in tiles:
        assert 0 < t.nx <= 256 and 0 < t.ny <= 256
        count[t.slices] += 1
    assert (count == 1).all()
    assert len(tiles) == 4 * 3
    assert cut_grid((256, 256), 256) == [Tile(0, 0, 0, 0, 256, 256)]


def test_a_tiled_image_is_written_and_read_by_tile_and_window(tmp_path):
    """Tiles written in any order give the image they cut; windows across tile borders
    read back what was written (zero where nothing was); the FITS file holds the image."""
    rng = np.random.default_rng(4)
    image = rng.normal(size=(37, 53)).astype(np.float32)
    tiles = cut_grid((53, 37), 16)
    out = TiledImage(tmp_path / "img.fits", (37, 53))
    out.allocate()
    for tile in tiles[::-1][:-1]:  # the first tile left unwritten
        out.write(tile, image[tile.slices])
    expected = image.copy()
    expected[tiles[0].slices] = 0.0
    for y0, y1, x0, x1 in ((0, 37, 0, 53), (5, 30, 9, 44), (12, 13, 0, 53), (0, 37, 20, 21)):
        np.testing.assert_array_equal(out.read_window(y0, y1, x0, x1), expected[y0:y1, x0:x1])
    np.testing.assert_array_equal(out.read(tiles[4]), image[tiles[4].slices])
    with pytest.raises(StageError, match="tile_r000c000 is"):
        out.write(tiles[0], image[:3, :3])
    out.write(tiles[0], image[tiles[0].slices])
    with open(out.raw, "r+b") as fh:  # a file cut short is named, not read as zeros
        fh.truncate(out.nbytes - 4)
    with pytest.raises(StageError, match=r"img.fits.raw: shorter than its 53 x 37 image"):
        out.read_window(30, 37, 0, 53)
    with open(out.raw, "r+b") as fh:
        fh.truncate(out.nbytes)
    last = tiles[-1]  # and in blocks of rows
    for r0 in range(0, last.ny, 2):
        out.write(last, image[last.slices][r0:r0 + 2], row0=r0)
    with pytest.raises(StageError, match="cannot be written from its row 4"):
        out.write(last, image[last.slices], row0=4)
    header = fits.PrimaryHDU().header
    header["OBJECT"] = "x"
    path = out.finish(header)
    assert not out.raw.exists()
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(hdul[0].data, image)
        assert hdul[0].header["OBJECT"] == "x"


def test_tile_size_option_is_checked():
    for bad in (10, -1, 1.5, True):
        with pytest.raises(InputError, match="--tile-size"):
            DrizzleConfig(tile_size=bad)
    assert DrizzleConfig(tile_size=0).tile_size == 0


def test_every_grid_is_tiled_by_default():
    from hstred.cli import _drizzle_config

    assert DrizzleConfig().tile_size == DEFAULT_TILE_SIZE
    n = DEFAULT_TILE_SIZE
    assert in_tiles(n) and in_tiles(64) and not in_tiles(0)  # --tile-size 0: never
    # a grid within one tile is one tile, a larger one several
    assert len(cut_grid((1000, 800), n)) == 1 and len(cut_grid((n + 1, 100), n)) == 2
    options = ("square", 0.03, 0.8, "ERR", True, "rscale", 10, 0.02, False, False)
    assert _drizzle_config(*options).tile_size == DEFAULT_TILE_SIZE  # option not given
    assert _drizzle_config(*options, tile_size=0).tile_size == 0
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"`--tile-size PIXELS`\n(tiled final drizzles, default {n}," in readme
    assert f"(`--tile-size N`, default {n}:" in readme


def test_tiled_products_equal_the_whole_grid(reductions):
    _prog, whole, tiled, _two, _root = reductions
    a, ha = _read(whole.product("F606W").sci)
    b, hb = _read(tiled.product("F606W").sci)
    wa, _ = _read(whole.product("F606W").wht)
    wb, _ = _read(tiled.product("F606W").wht)
    assert a.shape == b.shape and a.shape[0] > 3 * TILE and a.shape[1] > 3 * TILE
    np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=0)
    good = wa > 0
    assert good.mean() > 0.5
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    scale = np.nanpercentile(np.abs(a[good]), 99)
    assert np.max(np.abs(b[good] - a[good])) <= 1e-5 * scale
    assert np.max(np.abs(b[good] - a[good]) / np.maximum(np.abs(a[good]), 1e-3 * scale)) <= 1e-5
    for key in ("EXPTIME", "EXPSTART", "EXPEND", "NDRIZIM", "BUNIT", "CRPIX1", "CRPIX2",
                "CRVAL1", "CRVAL2", "CD1_1", "CD2_2"):
        assert hb[key] == ha[key], key
    drizzled = sorted(k for k in ha if k.startswith("D0") and k.endswith("DATA"))
    def names(h):  # the inputs' file names (the working directories differ)
        return [h[k].split("/")[-1] for k in drizzled]

    assert drizzled and names(hb) == names(ha)
    assert len(drizzled) == ha["NDRIZIM"] == 8
    assert tiled.cr_fractions == whole.cr_fractions
    assert max(tiled.cr_fractions.values()) > 0


def test_tiled_cosmic_ray_flags_are_the_whole_grid_flags(reductions):
    """The cosmic-ray step in tiles (median tiles of the separate drizzles, each
    exposure's flags against the median cut to its footprint) flags the very pixels that
    AstroDrizzle's whole-grid step flags, in every working copy's DQ."""
    _prog, _whole, _tiled, _two, root = reductions
    copies = sorted((root / "work_whole" / "exposures").glob("*_fl?.fits"))
    assert len(copies) == 4
    flagged = 0
    for whole_copy in copies:
        tiled_copy = root / "work_tiled" / "exposures" / whole_copy.name
        with fits.open(whole_copy) as a, fits.open(tiled_copy) as b:
            for ext in [h for h in a if h.name == "DQ"]:
                dq_a = ext.data & CR_BIT
                dq_b = b["DQ", ext.ver].data & CR_BIT
                np.testing.assert_array_equal(dq_b, dq_a, err_msg=f"{whole_copy.name} {ext.ver}")
                flagged += int(np.count_nonzero(dq_a))
    assert flagged > 100


def test_tiled_single_exposure_images_equal_the_whole_grid(reductions):
    _prog, whole, tiled, _two, _root = reductions
    assert len(whole.singles) == len(tiled.singles) == 4
    for a_single, b_single in zip(whole.singles, tiled.singles, strict=True):
        assert a_single.rootname == b_single.rootname
        a, ha = _read(a_single.sci)
        b, hb = _read(b_single.sci)
        wa, _ = _read(a_single.wht)
        wb, _ = _read(b_single.wht)
        np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=0)
        good = wa > 0
        scale = np.nanpercentile(np.abs(a[good]), 99)
        assert np.max(np.abs(b[good] - a[good])) <= 1e-5 * scale
        assert hb["EXPTIME"] == ha["EXPTIME"] and hb["NDRIZIM"] == ha["NDRIZIM"] == 2


def test_no_seams_at_tile_borders(reductions):
    """The columns and rows on both sides of every tile border, alone: the tiled image
    equals the whole-grid one there as everywhere (a seam would be a step or a gap)."""
    _prog, whole, tiled, _two, _root = reductions
    a, _ = _read(whole.product("F606W").sci)
    b, _ = _read(tiled.product("F606W").sci)
    w, _ = _read(whole.product("F606W").wht)
    tiles = cut_grid(a.shape[::-1], TILE)
    xs = sorted({t.x0 for t in tiles} - {0})
    ys = sorted({t.y0 for t in tiles} - {0})
    assert xs and ys
    scale = np.nanpercentile(np.abs(a[w > 0]), 99)
    for x in xs:
        band = np.s_[:, x - 2:x + 2]
        ok = w[band] > 0
        assert ok.sum() > 50
        assert np.max(np.abs(b[band][ok] - a[band][ok])) <= 1e-5 * scale
    for y in ys:
        band = np.s_[y - 2:y + 2, :]
        ok = w[band] > 0
        assert ok.sum() > 50
        assert np.max(np.abs(b[band][ok] - a[band][ok])) <= 1e-5 * scale


def test_tiled_rms_images_equal_the_whole_grid(reductions):
    """The RMS pixels agree to float32 rounding, the correlation factors (measured in the
    same windows of the same grid) to 1e-4, and the checks are recorded alike."""
    _prog, whole, tiled, _two, _root = reductions
    products = [(whole.product("F606W"), tiled.product("F606W")),
                *zip(whole.singles, tiled.singles, strict=True)]
    for a_product, b_product in products:
        a, ha = _read(a_product.rms)
        b, hb = _read(b_product.rms)
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        known = np.isfinite(a)
        assert known.mean() > 0.3
        np.testing.assert_allclose(b[known], a[known], rtol=1e-5)
        for n in (2, 4, 8, 16, 32):
            assert hb[f"RMSCOR{n}"] == pytest.approx(ha[f"RMSCOR{n}"], rel=1e-4), n
        for key in ("RMSCORR", "RMSNMISS", "BUNIT"):
            assert hb[key] == ha[key], key
        for n in (1, 4, 16):
            assert hb[f"RMSMEA{n}"] == pytest.approx(ha[f"RMSMEA{n}"], abs=2e-3), n
        # |re-drizzled science - product| / RMS, from the tiles' histograms: the tiled
        # product differs from the whole-grid one by float32 rounding (a few 1e-4 of the
        # RMS where science/RMS ~ 1000), so the check is as tight, not the same number
        assert hb["RMSCHK"] < 0.01 and hb["RMSCHK99"] < 0.2
        assert b_product.noise["correlation"] == pytest.approx(a_product.noise["correlation"],
                                                               rel=1e-4)


def test_noise_bands_cut_a_tile_into_rows_of_bounded_area(monkeypatch):
    monkeypatch.setattr(tiled_module, "NOISE_BAND_PIXELS", TILE * 100)
    tile = Tile(row=0, col=0, x0=0, y0=0, nx=TILE, ny=TILE)
    bands = tiled_module.noise_bands(tile)
    assert bands == [(0, 86), (86, 172), (172, 256)]
    assert tiled_module.noise_bands(Tile(row=0, col=0, x0=0, y0=0, nx=TILE, ny=100)) == [(0, 100)]
    assert tiled_module.noise_bands(Tile(row=0, col=0, x0=0, y0=0, nx=30000, ny=3)) == [
        (0, 1), (1, 2), (2, 3)]


def test_two_workers_give_identical_tiled_products(reductions):
    """Two workers, and each tile's RMS pixels drizzled in bands of rows: the products of
    one worker and whole tiles to the bit."""
    _prog, _whole, tiled, two, _root = reductions
    for kind in ("sci", "wht", "rms"):
        x = fits.getdata(getattr(tiled.product("F606W"), kind))
        y = fits.getdata(getattr(two.product("F606W"), kind))
        np.testing.assert_array_equal(x, y)


def test_merge_headers_refuses_a_missing_chip():
    hdr = fits.Header()
    hdr["D001DATA"] = "a_flc.fits[sci,1]"
    hdr["D001OUDA"] = "x_tile_r000c000_drz_sci.fits"
    grid = {"crpix": [1.0, 1.0]}
    with pytest.raises(StageError, match="2 expected|expected 2"):
        merge_headers([hdr.tostring(), ""], inputs=["a_flc.fits"], expected_chips=2, grid=grid,
                      exptime=1.0, expstart=0.0, expend=1.0, output="x")
    merged = merge_headers([hdr.tostring()], inputs=["a_flc.fits"], expected_chips=1,
                           grid=grid, exptime=1.0, expstart=0.0, expend=1.0, output="x")
    assert merged["D001OUDA"] == "x_drz_sci.fits"


def test_dask_cluster_gives_the_local_tiled_products_of_a_mosaic(tmp_path):
    """A 2 x 2 mosaic of pointings (40 % overlap) in two filters, drizzled in tiles on one
    local worker process, on two (the filters at once, sharing them) and on a Dask
    LocalCluster of two: the same products, to the bit."""
    distributed = pytest.importorskip("distributed")
    from hstred.execution import DaskBackend

    step = 0.6 * 240 * 0.05  # arcsec
    offsets = {"jfak01": (0.0, 0.0), "jfak02": (step, 0.0), "jfak03": (0.0, step),
               "jfak04": (step, step)}
    errors = {f"jfak0{k}": VisitError(*e) for k, e in enumerate(
        ((0.3, -0.2, 0.01), (-0.3, 0.4, -0.02), (0.4, 0.1, 0.01), (-0.1, -0.4, 0.02)), 1)}
    prog = write_fake_program(tmp_path / "data", chip_shape=(120, 240),
                              filters=("F606W", "F814W"),
                              visits=4, exposures=2, n_stars=400, seed=9, visit_errors=errors,
                              visit_pointing_offsets_arcsec=offsets,
                              star_box_arcsec=(-8.0, step + 8.0, -9.0, step + 9.0))
    config = DrizzleConfig(satellites="off", tile_size=200)
    local = run_drizzle(prog.directory, "local", config, backend=LocalBackend(workers=2))
    assert all(s.status in ("REFERENCE", "ALIGNED") for s in local.solutions)
    one = run_drizzle(prog.directory, "one", config, backend=LocalBackend(workers=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = run_drizzle(prog.directory, "dask", config, backend=DaskBackend(client=client))
    for filt in ("F606W", "F814W"):
        a, b, c = local.product(filt), remote.product(filt), one.product(filt)
        shape = fits.getdata(a.sci).shape
        assert len(cut_grid(shape[::-1], 200)) >= 9
        for kind in ("sci", "wht", "rms"):
            np.testing.assert_array_equal(fits.getdata(getattr(a, kind)),
                                          fits.getdata(getattr(b, kind)))
            np.testing.assert_array_equal(fits.getdata(getattr(a, kind)),
                                          fits.getdata(getattr(c, kind)))
    assert local.cr_fractions == remote.cr_fractions == one.cr_fractions


def test_tiled_product_files_hold_the_tiled_products_to_the_bit(reductions, kept_tiles):
    """With ``tiled_products`` every image is tile files plus an index: read back through
    the index, the very pixels of the FITS image; each tile file's pixels and WCS those of
    its part of the product; the index's header the FITS image's; the earlier FITS images
    of the same products gone with the publication; the report's preview the same."""
    from hstred.report.build import _downsampled

    _prog, _whole, tiled, _two, root = reductions
    kept, data = kept_tiles
    pairs = [(tiled.product("F606W"), kept.product("F606W")),
             *zip(tiled.singles, kept.singles, strict=True)]
    assert len(pairs) == 5
    for a_product, b_product in pairs:
        files = set(b_product.files)
        for kind in PRODUCT_KINDS:
            index = getattr(b_product, kind)
            assert index.suffix == ".json" and index.parent in (data, data / "singles")
            product = TiledProduct(index)
            a, ha = _read(getattr(a_product, kind))
            assert product.shape == a.shape
            np.testing.assert_array_equal(product.read(0, a.shape[0], 0, a.shape[1]), a)
            np.testing.assert_array_equal(product.section[40:300, 250:600], a[40:300, 250:600])
            hb = product.header
            for key in ("NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1",
                        "CD1_2", "CD2_1", "CD2_2", "EXPTIME", "BUNIT", "NDRIZIM", "HSTRVER",
                        "DRZKERN", "HSTRPROD", "ALNREF"):
                assert hb.get(key) == ha.get(key), key
            assert len(product.tiles) == len(cut_grid(a.shape[::-1], TILE))  # all reached
            for t in product.tiles:
                path = product.directory / t.file
                assert path in files
                with fits.open(path) as hdul:
                    np.testing.assert_array_equal(hdul[0].data, a[t.y0:t.y0 + t.ny,
                                                                    t.x0:t.x0 + t.nx])
                    h = hdul[0].header
                assert (h["LTV1"], h["LTV2"], h["TILENAME"]) == (-t.x0, -t.y0, t.name)
                assert h["HSTRVER"] == ha["HSTRVER"]
                here = WCS(h).pixel_to_world_values(np.array([3.0, t.nx - 2.0]),
                                                    np.array([5.0, t.ny - 1.0]))
                there = WCS(ha).pixel_to_world_values(np.array([3.0 + t.x0, t.nx - 2.0 + t.x0]),
                                                      np.array([5.0 + t.y0, t.ny - 1.0 + t.y0]))
                np.testing.assert_allclose(here, there, rtol=0, atol=1e-10)
        small = _downsampled([a_product.sci, b_product.sci])
        np.testing.assert_array_equal(small[b_product.sci], small[a_product.sci])
    assert not (data / "tiled_F606W_drz_sci.fits").exists()
    assert not (data / "singles" / tiled.singles[0].wht.name).exists()
    assert not list(data.glob(".hstred*"))  # no staging left behind


def test_a_tiled_image_reads_tiles_not_written_as_empty_and_names_what_is_wrong(
        tmp_path, monkeypatch):
    import hstred.drizzle.tileset as tileset

    monkeypatch.setattr(tileset, "COPY_ROWS", 5)  # tiles written in blocks of rows
    rng = np.random.default_rng(2)
    image = rng.normal(size=(50, 70)).astype(np.float32)
    tiles = cut_grid((70, 50), 32)
    header = fits.PrimaryHDU().header
    header["CRPIX1"], header["CRPIX2"], header["EXPTIME"] = 35.0, 25.0, 10.0
    kept = [t for t in tiles if t.name != "tile_r001c000"]
    for kind in ("sci", "wht"):
        index = write_tiled_image(tmp_path / f"x_drz_{kind}.json", header, image.shape, kept,
                                  lambda t, r0, r1: image[t.slices][r0:r1], kind=kind,
                                  size=32)
        product = TiledProduct(index)
        expected = image.copy()
        expected[tiles[3].slices] = np.nan if kind == "sci" else 0.0
        assert tiles[3].name == "tile_r001c000"
        np.testing.assert_array_equal(product.read(0, 50, 0, 70), expected)
        np.testing.assert_array_equal(product.read(20, 45, 10, 40), expected[20:45, 10:40])
        assert product.header["EXPTIME"] == 10.0 and product.header["NAXIS1"] == 70
        assert len(product.files()) == 1 + len(kept)
        assert not (product.directory / f"x_drz_{kind}_tile_r001c000.fits").exists()
    wrong = product.directory / f"x_drz_wht_{tiles[1].name}.fits"
    fits.PrimaryHDU(np.zeros((3, 4), dtype=np.float32)).writeto(wrong, overwrite=True)
    with pytest.raises(StageError, match=rf"x_drz_wht_tile_r000c001.fits: \(4, 3\) pixels, "
                                         rf"the index says \({tiles[1].nx}, {tiles[1].ny}\)"):
        product.read(0, 10, 30, 40)
    (product.directory / f"x_drz_wht_{tiles[0].name}.fits").unlink()
    with pytest.raises(StageError, match=r"x_drz_wht_tile_r000c000.fits: a tile of "
                                         r"x_drz_wht.json is missing"):
        product.read(0, 10, 0, 10)
    index.write_text("{}")
    with pytest.raises(StageError, match="x_drz_wht.json: not a readable tile index"):
        TiledProduct(index)


def test_read_window_reads_what_astropy_reads(tmp_path, monkeypatch):
    import hstred.drizzle.tileset as tileset

    monkeypatch.setattr(tileset, "READ_BLOCK_BYTES", 1000)  # several blocks of rows
    rng = np.random.default_rng(5)
    data = rng.normal(size=(61, 47)).astype(np.float32)
    path = tmp_path / "x.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"),
                  fits.ImageHDU((data * 100).astype(np.int16), name="DQ"),
                  fits.ImageHDU(data.astype(np.float64), name="D64"),
                  fits.ImageHDU((np.abs(data) * 1000).astype(np.uint16), name="U16"),
                  ]).writeto(path)
    windows = [(0, 61, 0, 47), (3, 60, 5, 40), (10, 11, 46, 47), (58, 61, 0, 1), (-4, 61, 2, 99)]
    with fits.open(path, memmap=False) as hdul:
        for name in ("SCI", "DQ", "D64", "U16"):  # U16: scaled (BZERO), read by astropy
            for y0, y1, x0, x1 in windows:
                got = read_window(hdul[name], y0, y1, x0, x1)
                want = hdul[name].section[y0:y1, x0:x1]
                assert got.dtype.kind == want.dtype.kind and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
        cut = hdul["D64"].fileinfo()["datLoc"] + 1000
    with open(path, "r+b") as fh:  # cut off in the middle of D64's pixels
        fh.truncate(cut)
    with fits.open(path, memmap=False) as hdul, pytest.raises(StageError, match=(
            r"x.fits: shorter than its 47 x 61 image")):
        read_window(hdul["D64"], 0, 61, 0, 47)


def test_tiled_products_need_tiles():
    with pytest.raises(InputError, match="--tiled-products needs tiles"):
        DrizzleConfig(tiled_products=True, tile_size=0)
    with pytest.raises(InputError, match="--tiled-products is on or off"):
        DrizzleConfig(tiled_products="yes")


def test_a_grid_within_one_tile_is_one_tile_file(reductions):
    """A grid within one tile is drizzled as one tile; with ``tiled_products`` each of its
    images is one tile file at the grid's origin, the whole-grid reduction's pixels within
    the tiled drizzle's tolerances (science 1e-5, weights 1e-6, the RMS where finite)."""
    prog, whole, _tiled, _two, root = reductions
    data = root / "data_one_tile"
    shutil.copytree(prog.directory, data, ignore=shutil.ignore_patterns("whole_*", "two_*",
                                                                        "singles"))
    size = DEFAULT_TILE_SIZE
    kept = run_drizzle(data, "one", DrizzleConfig(satellites="off", tiled_products=True,
                                                  tile_size=size),
                       work_dir=root / "work_one_tile")
    wa, _ = _read(whole.product("F606W").wht)
    good = wa > 0
    assert good.mean() > 0.5
    for kind in PRODUCT_KINDS:
        product = TiledProduct(getattr(kept.product("F606W"), kind))
        a, ha = _read(getattr(whole.product("F606W"), kind))
        assert max(a.shape) < size and [t.name for t in product.tiles] == ["tile_r000c000"]
        b = product.read(0, a.shape[0], 0, a.shape[1])
        assert b.shape == a.shape and product.header["NAXIS1"] == ha["NAXIS1"]
        assert fits.getval(product.directory / product.tiles[0].file, "LTV1") == 0.0
        if kind == "wht":
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)
            continue
        np.testing.assert_array_equal(np.isfinite(b[good]), np.isfinite(a[good]))
        on = good & np.isfinite(a)
        scale = np.nanpercentile(np.abs(a[on]), 99)
        assert np.max(np.abs(b[on] - a[on]) / np.maximum(np.abs(a[on]), 1e-3 * scale)) <= 1e-5


def test_a_tile_plane_of_the_wrong_size_is_refused(tmp_path, monkeypatch):
    """A tile whose AstroDrizzle plane is not the tile's size stops the stage with one line
    naming the plane and both sizes, and leaves no run directory behind."""
    import hstred.drizzle.tiled as tiled
    from hstred.drizzle.grid import grid_numbers
    from hstred.drizzle.runner import DrizzleImages

    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval, grid.wcs.crpix = [150.0, 2.0], [40.0, 30.0]
    grid.wcs.cd = np.diag([-0.03, 0.03]) / 3600
    grid.pixel_shape = (80, 60)
    tile = cut_grid((80, 60), 40)[1]
    run_dir = tmp_path / "run"

    def fake_astrodrizzle(inputs, output, *, run_dir, **kwargs):
        paths = []
        for kind in ("sci", "wht"):
            paths.append(run_dir / f"{output}_{kind}.fits")
            fits.PrimaryHDU(np.ones((tile.ny, tile.nx + 1), dtype=np.float32)).writeto(paths[-1])
        return DrizzleImages(sci=paths[0], wht=paths[1])

    monkeypatch.setattr(tiled, "run_astrodrizzle", fake_astrodrizzle)
    images = [TiledImage(tmp_path / f"p_{k}.fits", (60, 80)) for k in ("sci", "wht")]
    for image in images:
        image.allocate()
    task = tiled.TileTask(tile=tile, inputs=(tmp_path / "a_flc.fits",), expected_chips=2,
                          output="p_tile", run_dir=run_dir, parameters={},
                          grid=tiled.tile_grid_numbers(grid_numbers(grid), tile),
                          static_masks={}, sci=images[0], wht=images[1])
    with pytest.raises(StageError, match=rf"^p_tile_sci.fits: \({tile.nx + 1}, {tile.ny}\) "
                                         rf"pixels, expected the tile's \({tile.nx}, {tile.ny}\)$"):
        tiled.drizzle_tile(task)
    assert not run_dir.exists()
