"""Input checks: one target, EXPTIME > 0, ACS/WFC only, duplicates, unreadable files."""

from __future__ import annotations

import logging

import pytest
from astropy.io import fits

from hstred.errors import InputError
from hstred.inputs import check_inputs, find_calibrated_files, find_raw_files


def _write(path, **keys):
    primary = fits.Header({"TELESCOP": "HST", "INSTRUME": "ACS", "DETECTOR": "WFC",
                           "TARGNAME": "ABELL1689", "EXPTIME": 500.0, "EXPSTART": 60000.0,
                           "FILTER1": "F606W", "FILTER2": "CLEAR2L",
                           "ROOTNAME": path.name.split("_")[0]})
    for key, value in keys.items():
        primary[key] = value
    hdus = [fits.PrimaryHDU(header=primary)] + [fits.ImageHDU(name=n, ver=v)
                                                for v in (1, 2) for n in ("SCI", "ERR", "DQ")]
    fits.HDUList(hdus).writeto(path)
    return path


def test_good_inputs_give_visits_and_filters(tmp_path):
    paths = [_write(tmp_path / "jd7101aaq_raw.fits"),
             _write(tmp_path / "jd7102abq_raw.fits", FILTER1="CLEAR1L", FILTER2="F435W")]
    exps = check_inputs(paths)
    assert [e.visit for e in exps] == ["jd7101", "jd7102"]
    assert [e.filter for e in exps] == ["F606W", "F435W"]


def test_mixed_targets_listed_unless_allowed(tmp_path):
    paths = [_write(tmp_path / "jd7101aaq_raw.fits"),
             _write(tmp_path / "jd7101abq_raw.fits", TARGNAME="MACS0416")]
    with pytest.raises(InputError, match=r"ABELL1689 \(1\), MACS0416 \(1\).*--allow-mixed"):
        check_inputs(paths)
    assert len(check_inputs(paths, allow_mixed_targets=True)) == 2


def test_zero_exposure_time_names_the_file(tmp_path):
    paths = [_write(tmp_path / "jd7101aaq_raw.fits", EXPTIME=0.0)]
    with pytest.raises(InputError, match=r"jd7101aaq_raw.fits \(EXPTIME=0\)"):
        check_inputs(paths)


def test_missing_exposure_time_is_not_reported_as_zero(tmp_path):
    path = _write(tmp_path / "jd7101aaq_raw.fits")
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["EXPTIME"]
    with pytest.raises(InputError, match=r"jd7101aaq_raw.fits \(no EXPTIME keyword\)"):
        check_inputs([path])


def test_unsupported_detector(tmp_path):
    paths = [_write(tmp_path / "jd7101aaq_raw.fits", DETECTOR="SBC")]
    with pytest.raises(InputError, match="ACS/SBC"):
        check_inputs(paths)


def test_duplicate_rootnames(tmp_path):
    (tmp_path / "a").mkdir()
    paths = [_write(tmp_path / "jd7101aaq_raw.fits"),
             _write(tmp_path / "a" / "jd7101aaq_raw.fits")]
    with pytest.raises(InputError, match=r"duplicate rootname jd7101aaq in \S+/jd7101aaq_raw"
                                         r".fits and \S+/a/jd7101aaq_raw.fits"):
        check_inputs(paths)


def test_a_rootname_that_names_no_visit_is_named(tmp_path):
    """The visit is the rootname's first six characters: a short ROOTNAME cannot be grouped."""
    paths = [_write(tmp_path / "jd7101aaq_raw.fits"),
             _write(tmp_path / "jd7101abq_raw.fits", ROOTNAME="JD71")]
    with pytest.raises(InputError, match=r"9-character.*jd7101abq_raw.fits \(ROOTNAME 'jd71'\)"):
        check_inputs(paths)


def test_truncated_file_is_named(tmp_path):
    good = _write(tmp_path / "jd7101aaq_raw.fits")
    bad = tmp_path / "jd7101abq_raw.fits"
    bad.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(InputError, match="jd7101abq_raw.fits"):
        check_inputs([good, bad])


def test_non_hst_files_are_ignored_with_a_warning(tmp_path, caplog):
    paths = [_write(tmp_path / "jd7101aaq_raw.fits"),
             _write(tmp_path / "other_raw.fits", TELESCOP="JWST")]
    with caplog.at_level(logging.WARNING):
        exps = check_inputs(paths)
    assert [e.rootname for e in exps] == ["jd7101aaq"]
    assert "not an HST file" in caplog.text


def test_finders(tmp_path):
    with pytest.raises(InputError, match="no \\*_raw.fits"):
        find_raw_files(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        find_raw_files(tmp_path / "missing")
    _write(tmp_path / "jd7101aaq_flt.fits")
    _write(tmp_path / "jd7101aaq_flc.fits")
    _write(tmp_path / "jd7101abq_flt.fits")
    assert [p.name for p in find_calibrated_files(tmp_path)] == ["jd7101aaq_flc.fits",
                                                                 "jd7101abq_flt.fits"]
