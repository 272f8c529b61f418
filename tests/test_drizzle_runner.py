"""Tests of the AstroDrizzle guards (hstred.drizzle.runner).

AstroDrizzle fails silently in ways the runner must catch: an input without EXPTIME is
dropped and an empty product written; products can be missing or empty.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from scratch import fixture_dir
from test_drizzle_synthetic import write_fake_program

from hstred.drizzle.grid import compute_output_grid
from hstred.drizzle.runner import (
    DrizzleImages,
    check_drizzle_product,
    final_parameters,
    run_astrodrizzle,
    run_astrodrizzle_median,
    single_parameters,
    visit_parameters,
)
from hstred.errors import StageError


def _write_product(tmp_path, *, sci=None, wht=None, bunit="ELECTRONS/S", exptime=100.0,
                   data=("a_flc.fits[sci,1]", "a_flc.fits[sci,2]")):
    sci = np.ones((10, 10), np.float32) if sci is None else sci
    wht = np.ones((10, 10), np.float32) if wht is None else wht
    h = fits.Header()
    h["BUNIT"] = bunit
    h["EXPTIME"] = exptime
    for i, d in enumerate(data, start=1):
        h[f"D{i:03d}DATA"] = d
    fits.PrimaryHDU(sci, header=h).writeto(tmp_path / "p_drz_sci.fits", overwrite=True)
    fits.PrimaryHDU(wht).writeto(tmp_path / "p_drz_wht.fits", overwrite=True)
    return DrizzleImages(sci=tmp_path / "p_drz_sci.fits", wht=tmp_path / "p_drz_wht.fits")


def test_check_accepts_a_complete_product(tmp_path):
    images = _write_product(tmp_path)
    check_drizzle_product(images, expected_inputs=["a_flc.fits"], expected_chips=2)


@pytest.mark.parametrize("kwargs, expected_chips, message", [
    ({"wht": np.zeros((10, 10), np.float32)}, 2, "zero everywhere"),
    ({"sci": np.full((10, 10), np.nan, np.float32)}, 2, "non-finite"),
    ({"bunit": "ELECTRONS"}, 2, "BUNIT"),
    ({"exptime": 0.0}, 2, "EXPTIME"),
    ({}, 4, "2 chips drizzled, expected 4"),
    ({"data": ("/w/b_flc.fits[sci,1]", "/w/b_flc.fits[sci,2]")}, 2, "were not drizzled"),
])
def test_check_rejects_incomplete_products(tmp_path, kwargs, expected_chips, message):
    images = _write_product(tmp_path, **kwargs)
    with pytest.raises(StageError, match=message):
        check_drizzle_product(images, expected_inputs=["a_flc.fits"],
                              expected_chips=expected_chips)


def test_check_rejects_missing_files(tmp_path):
    images = DrizzleImages(sci=tmp_path / "x_drz_sci.fits", wht=tmp_path / "x_drz_wht.fits")
    with pytest.raises(StageError, match="wrote no"):
        check_drizzle_product(images, expected_inputs=[], expected_chips=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "runner") as d:
        yield write_fake_program(d, chip_shape=(64, 128), visits=1, exposures=2,
                                 filters=("F606W",), n_stars=20)


def _copies(pair, where):
    """Working copies of the pair's exposures in ``where``."""
    copies = []
    for p in pair.paths:
        shutil.copyfile(p, where / p.name)
        copies.append(where / p.name)
    return copies


def test_run_astrodrizzle_visit_image(pair, tmp_path):
    copies = _copies(pair, tmp_path)
    pars = {**visit_parameters(2, num_cores=1, good_bits=0, sky_method="localmin"),
            "blot": True, "driz_cr": True, "driz_combine": True, "clean": True}
    out = run_astrodrizzle(copies, "v", run_dir=tmp_path / "run", parameters=pars,
                           expected_chips=4)
    assert out.sci.parent == tmp_path / "run" and out.sci.exists() and out.wht.exists()
    assert (tmp_path / "run" / "v.log").exists()
    assert fits.getval(out.sci, "BUNIT") == "ELECTRONS/S"
    # The cosmic-ray step wrote its flags into the working copies only.
    assert any((fits.getdata(c, ("DQ", 1)) & 4096).any() for c in copies)
    assert not any((fits.getdata(p, ("DQ", 1)) & 4096).any() for p in pair.paths)


def test_inputs_in_a_directory_named_final(pair, tmp_path):
    """drizzlepac names a chip's separate-drizzle mask by replacing "final" anywhere in
    its path; inputs under ``~/final_images/`` must still drizzle (separate drizzles,
    median, blot, cosmic rays, final) with the intermediate files kept (clean off, as
    for the RMS image, which writes those masks)."""
    where = tmp_path / "final_images"
    where.mkdir()
    copies = _copies(pair, where)
    pars = {**visit_parameters(2, num_cores=1, good_bits=0, sky_method="localmin"),
            "blot": True, "driz_cr": True, "driz_combine": True, "clean": False}
    out = run_astrodrizzle(copies, "v", run_dir=where / "run", parameters=pars,
                           expected_chips=4)
    assert out.sci.exists() and out.wht.exists()
    assert len(list(where.glob("*_single_mask.fits"))) == 4
    assert any((fits.getdata(c, ("DQ", 1)) & 4096).any() for c in copies)


def test_visit_median_image_and_usable_mask(pair, tmp_path):
    """Two exposures: the median image, 1 where both contribute, intermediates removed."""
    copies = _copies(pair, tmp_path)
    originals = [p.read_bytes() for p in pair.paths]
    pars = visit_parameters(2, num_cores=1, good_bits=0, sky_method="localmin")
    assert not pars["driz_cr"] and not pars["driz_combine"]
    run_dir = tmp_path / "run"
    out = run_astrodrizzle_median(copies, "v", run_dir=run_dir, parameters=pars)
    assert out.sci == run_dir / "v_med.fits" and out.wht == run_dir / "v_use.fits"
    sci, use = fits.getdata(out.sci), fits.getdata(out.wht)
    assert sci.shape == use.shape and use.dtype == np.uint8 and set(np.unique(use)) == {0, 1}
    assert 0.5 < use.mean() < 1.0  # dithered chips: gaps and edges seen by one exposure
    assert np.isfinite(sci[use == 1]).all()
    # sky-subtracted: the median of the usable pixels is near zero next to the stars
    assert abs(np.median(sci[use == 1])) < 0.1 * np.percentile(sci[use == 1], 99.99)
    assert fits.getheader(out.wht)["CTYPE1"] == fits.getheader(out.sci)["CTYPE1"]
    for where in (run_dir, tmp_path):
        assert not list(where.glob("*_single_*.fits")) and not list(where.glob("*ask*"))
    assert [p.read_bytes() for p in pair.paths] == originals


def test_run_astrodrizzle_catches_a_silently_dropped_input(pair, tmp_path):
    """Without EXPTIME AstroDrizzle drops the image and writes an empty product."""
    copies = _copies(pair, tmp_path)
    with fits.open(copies[1], mode="update") as hdul:
        del hdul[0].header["EXPTIME"]
    ra, dec = pair.stars["ra"], pair.stars["dec"]
    grid = compute_output_grid([(ra, dec)], scale_arcsec=0.05)
    pars = final_parameters(1, grid, kernel="square", pixfrac=1.0, weight_type="EXP",
                            num_cores=1, good_bits=0, sky_method="localmin")
    with pytest.raises(StageError, match="an input was dropped"):
        run_astrodrizzle(copies, "f", run_dir=tmp_path / "run", parameters=pars,
                         expected_chips=4)


def test_later_drizzles_reuse_a_per_exposure_sky_only():
    """localmin skies belong to one exposure and are reused; methods that compare the
    exposures of a run are measured again over the filter's exposures."""
    grid = compute_output_grid([(np.array([10.0, 10.01]), np.array([-5.0, -4.99]))],
                               scale_arcsec=0.05)
    common = dict(kernel="square", pixfrac=1.0, weight_type="EXP", good_bits=0)
    reused = final_parameters(4, grid, num_cores=1, sky_method="localmin", sky_measured=True,
                              **common)
    assert reused["skysub"] is False and reused["skyuser"] == "MDRIZSKY"
    single = single_parameters(grid, sky_method="localmin", sky_measured=True, **common)
    assert single["skysub"] is False and single["skyuser"] == "MDRIZSKY"
    for method in ("globalmin", "match", "globalmin+match"):
        pars = final_parameters(4, grid, num_cores=1, sky_method=method, sky_measured=True,
                                **common)
        assert pars["skysub"] is True and "skyuser" not in pars
    fresh = final_parameters(4, grid, num_cores=1, sky_method="localmin", **common)
    assert fresh["skysub"] is True and "skyuser" not in fresh


@pytest.mark.parametrize("sky_method", ["localmin", "globalmin+match"])
def test_steps_one_image_at_a_time_change_nothing(tmp_path_factory, sky_method):
    """The memory guards of every AstroDrizzle call (static masks, cosmic rays and
    drizzles through OneAtATime, a per-exposure sky image by image) leave its products,
    and what it writes into its inputs (sky, cosmic-ray flags), exactly as AstroDrizzle
    alone leaves them; a sky method that compares exposures still gets them all."""
    import contextlib

    from drizzlepac import astrodrizzle, sky, staticMask

    from hstred.drizzle.runner import OneAtATime

    with fixture_dir(tmp_path_factory, "one_at_a_time") as d:
        prog = write_fake_program(d / "prog", chip_shape=(64, 128), visits=1, exposures=3,
                                  filters=("F606W",), n_stars=20, cr_per_chip=30)
        pars = {**visit_parameters(3, num_cores=1, good_bits=0, sky_method=sky_method),
                "blot": True, "driz_cr": True, "driz_combine": True, "clean": True}
        runs = {}
        for name in ("guarded", "plain"):
            where = d / name
            where.mkdir()
            copies = _copies(prog, where)
            run_dir = where / "run"
            if name == "guarded":
                seen = {"sky": [], "masks": []}
                real_sky, real_masks = sky.subtractSky, staticMask.createStaticMask

                def spy_sky(images, *args, _seen=seen, _real=real_sky, **kwargs):
                    _seen["sky"].append(len(images))
                    return _real(images, *args, **kwargs)

                def spy_masks(images, *args, _seen=seen, _real=real_masks, **kwargs):
                    _seen["masks"].append(isinstance(images, OneAtATime))
                    return _real(images, *args, **kwargs)

                sky.subtractSky, staticMask.createStaticMask = spy_sky, spy_masks
                try:
                    out = run_astrodrizzle(copies, "v", run_dir=run_dir, parameters=pars,
                                           expected_chips=6)
                finally:
                    sky.subtractSky, staticMask.createStaticMask = real_sky, real_masks
                assert seen["sky"] == ([1, 1, 1] if sky_method == "localmin" else [3])
                assert seen["masks"] == [True]
                products = (out.sci, out.wht)
            else:
                run_dir.mkdir()
                with contextlib.chdir(run_dir):
                    astrodrizzle.AstroDrizzle(input=[str(c) for c in copies], output="v",
                                              runfile=str(run_dir / "v.log"), **pars)
                products = tuple(sorted(run_dir.glob("v_dr?_*.fits")))
            runs[name] = (products, copies)
        (sci_a, wht_a), copies_a = runs["guarded"]
        (sci_b, wht_b), copies_b = runs["plain"]
        for a, b in ((sci_a, sci_b), (wht_a, wht_b)):
            assert np.array_equal(fits.getdata(a), fits.getdata(b), equal_nan=True)
        flagged = 0
        for a, b in zip(copies_a, copies_b, strict=True):
            with fits.open(a) as ha, fits.open(b) as hb:
                for x, y in zip(ha, hb, strict=True):
                    assert x.name == y.name
                    if x.data is not None:
                        assert np.array_equal(x.data, y.data, equal_nan=True)
                    if x.name == "SCI":
                        assert x.header.get("MDRIZSKY") == y.header.get("MDRIZSKY")
                        assert sky_method != "localmin" or x.header["MDRIZSKY"] > 0
                    if x.name == "DQ":
                        flagged += int((x.data & 4096).sum() > 0)
        assert flagged  # the cosmic-ray step ran and flagged
