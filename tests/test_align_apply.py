"""Unit tests of writing aligned WCSs into working copies (hstred.align.apply)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scratch import fixture_dir
from stwcs.wcsutil import altwcs
from test_drizzle_synthetic import VisitError, _with_error, write_fake_program

from hstred.align.apply import linear_wcs_keywords, max_wcs_difference_px, write_aligned_wcs


@pytest.fixture(scope="module")
def flc(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "apply") as d:
        yield write_fake_program(d, chip_shape=(40, 80), visits=1, exposures=1,
                                 filters=("F606W",), n_stars=3, cr_per_chip=1,
                                 lookup_distortion=True).paths[0]


def _read(path, extver, key=" "):
    with fits.open(path) as hdul:
        w = WCS(hdul["SCI", extver].header, hdul, key=key)
        w.pixel_shape = (hdul["SCI", extver].header["NAXIS1"],
                         hdul["SCI", extver].header["NAXIS2"])
    return w


def test_write_aligned_wcs_archives_original_and_updates_primary(flc, tmp_path):
    work = tmp_path / flc.name
    shutil.copyfile(flc, work)
    originals = {e: _read(work, e) for e in (1, 2)}
    centre = tuple(originals[1].wcs.crval)
    corrected = {e: _with_error(w, centre, VisitError(0.2, -0.1, 0.01))
                 for e, w in originals.items()}
    keys = write_aligned_wcs(work, corrected, wcsname="HSTRED-ALIGN")
    for e in (1, 2):
        hdr = fits.getheader(work, ("SCI", e))
        assert hdr["WCSNAME"] == "HSTRED-ALIGN"
        assert altwcs.wcsnames(hdr)[keys[e]] == "OPUS"  # original kept under its name
        written = _read(work, e)
        assert max_wcs_difference_px(written, corrected[e]) < 1e-6
        # The archived alternate is the original linear WCS.
        alt = _read(work, e, key=keys[e])
        assert alt.wcs.crval == pytest.approx(originals[e].wcs.crval, abs=1e-10)
        assert np.allclose(alt.wcs.cd, originals[e].wcs.cd, rtol=1e-10, atol=0)
        # Distortion is unchanged (SIP coefficients, lookup tables).
        assert np.array_equal(written.sip.a, originals[e].sip.a)
        assert written.cpdis1 is not None and written.det2im1 is not None
        assert max_wcs_difference_px(written, originals[e]) > 1.0  # really moved


def test_linear_wcs_keywords():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [10.5, 20.5]
    w.wcs.crval = [1.0, 2.0]
    w.wcs.cd = [[-1e-5, 2e-6], [3e-6, 1e-5]]
    w.wcs.set()
    kw = linear_wcs_keywords(w)
    assert kw == {"CRPIX1": 10.5, "CRPIX2": 20.5, "CRVAL1": 1.0, "CRVAL2": 2.0,
                  "CD1_1": -1e-5, "CD1_2": 2e-6, "CD2_1": 3e-6, "CD2_2": 1e-5}
