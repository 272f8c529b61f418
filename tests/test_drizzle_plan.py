"""Unit tests of input discovery, header checks and grouping (hstred.drizzle.plan)."""

from __future__ import annotations

import shutil
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
from astropy.io import fits
from scratch import fixture_dir
from test_drizzle_synthetic import write_fake_program

from hstred.drizzle.plan import CalibratedExposure, build_plan, read_exposure
from hstred.drizzle.stage import plan_drizzle
from hstred.errors import InputError
from hstred.inputs import find_calibrated_files
from hstred.naming import filter_name, visit_name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "tiny") as d:
        yield write_fake_program(d, chip_shape=(32, 64), visits=2, exposures=1, n_stars=5,
                                 cr_per_chip=1)


def _exposure(root, filt, mjd):
    return CalibratedExposure(path=Path(f"{root}_flc.fits"), rootname=root, filter=filt,
                              visit=root[:6], exptime_s=100.0, expstart_mjd=mjd,
                              extvers=(1, 2), suffix="flc")


@pytest.mark.parametrize("f1, f2, expected", [
    ("F606W", "CLEAR2L", "F606W"),
    ("CLEAR1L", "F814W", "F814W"),
    ("clear1s", "f435w", "F435W"),
    ("F606W", "POL0V", "F606W-POL0V"),
    ("CLEAR1L", "CLEAR2L", ""),
    ("N/A", "", ""),
])
def test_filter_name(f1, f2, expected):
    assert filter_name(f1, f2) == expected


def test_visit_name():
    assert visit_name("JD7101A0Q") == "jd7101"
    with pytest.raises(ValueError):
        visit_name("jd71")


def test_build_plan_groups_by_filter_then_visit_in_time_order():
    exps = [
        _exposure("jab702b1q", "F814W", 3.0),
        _exposure("jab701a1q", "F606W", 1.0),
        _exposure("jab702a1q", "F606W", 2.5),
        _exposure("jab701b1q", "F814W", 1.5),
        _exposure("jab701a2q", "F606W", 1.1),
    ]
    plan = build_plan(exps)
    assert plan.filters == ("F606W", "F814W")
    assert [g.name for g in plan.groups] == ["jab701_F606W", "jab702_F606W",
                                             "jab701_F814W", "jab702_F814W"]
    assert [e.rootname for e in plan.group("jab701_F606W").exposures] == ["jab701a1q",
                                                                          "jab701a2q"]
    assert len(plan.exposures) == 5
    with pytest.raises(FrozenInstanceError):
        plan.groups = ()  # type: ignore[misc]


def test_build_plan_rejects_empty_and_duplicates():
    with pytest.raises(InputError):
        build_plan([])
    e = _exposure("jab701a1q", "F606W", 1.0)
    with pytest.raises(InputError, match="jab701a1q"):
        build_plan([e, replace(e, path=Path("other/jab701a1q_flt.fits"))])


def test_read_exposure_of_fake_flc(tiny):
    e = read_exposure(tiny.paths[0])
    assert e.rootname == "jfak01a1q" and e.visit == "jfak01" and e.filter == "F606W"
    assert e.extvers == (1, 2) and e.suffix == "flc" and e.exptime_s == tiny.exptime_s


@pytest.mark.parametrize("edit, message", [
    (lambda h: h[0].header.__delitem__("EXPTIME"), "EXPTIME"),
    (lambda h: h[0].header.__setitem__("EXPTIME", 0.0), "EXPTIME is 0.0"),
    (lambda h: h[0].header.__setitem__("INSTRUME", "WFC3"), "only ACS/WFC"),
    (lambda h: h[1].header.__setitem__("BUNIT", "COUNTS"), "ELECTRONS"),
    (lambda h: h[1].header.__delitem__("MEANDARK"), "MEANDARK"),
    (lambda h: h[4].header.__setitem__("CTYPE1", "RA---SIN"), "TAN"),
    (lambda h: h[0].header.__setitem__("FILTER1", "CLEAR1L"), "clear"),
])
def test_read_exposure_rejects_what_astrodrizzle_would_mishandle(tiny, tmp_path, edit, message):
    bad = tmp_path / tiny.paths[0].name
    shutil.copyfile(tiny.paths[0], bad)
    with fits.open(bad, mode="update") as hdul:
        edit(hdul)
    with pytest.raises(InputError, match=message):
        read_exposure(bad)


def test_read_exposure_rejects_other_files(tmp_path):
    p = tmp_path / "x_raw.fits"
    fits.PrimaryHDU().writeto(p)
    with pytest.raises(InputError, match="_flc.fits or _flt.fits"):
        read_exposure(p)
    q = tmp_path / "x_flt.fits"
    q.write_text("not fits")
    with pytest.raises(InputError):
        read_exposure(q)


def test_find_calibrated_files_prefers_flc(tiny, tmp_path):
    for p in tiny.paths:
        shutil.copyfile(p, tmp_path / p.name)
    shutil.copyfile(tiny.paths[0], tmp_path / tiny.paths[0].name.replace("_flc", "_flt"))
    (tmp_path / "jfak09a1q_flt.fits").write_bytes(b"")
    names = [p.name for p in find_calibrated_files(tmp_path)]
    assert names == ["jfak01a1q_flc.fits", "jfak01b1q_flc.fits", "jfak02a1q_flc.fits",
                     "jfak02b1q_flc.fits", "jfak09a1q_flt.fits"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*_flc.fits"):
        plan_drizzle(tmp_path / "empty")
    with pytest.raises(InputError, match="no such directory"):
        plan_drizzle(tmp_path / "missing")
