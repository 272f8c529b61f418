"""Data-quality gates on calibrated exposures: each unusable exposure named with its cause."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from hstred.errors import QualityGateError
from hstred.quality import check_exposure_quality, exposure_problems

GOOD_BITS = 336


def _write(path, *, sci2=None, dq2=None, ngoodpix2=None):
    rng = np.random.default_rng(1)
    hdus = [fits.PrimaryHDU()]
    for extver in (1, 2):
        sci = rng.normal(100.0, 5.0, (16, 16)).astype(np.float32)
        dq = np.zeros((16, 16), np.int16)
        if extver == 2:
            sci = sci if sci2 is None else sci2
            dq = dq if dq2 is None else dq2
        header = fits.Header({"NGOODPIX": int(dq.size if ngoodpix2 is None or extver == 1
                                              else ngoodpix2)})
        hdus += [fits.ImageHDU(sci, header=header, name="SCI", ver=extver),
                 fits.ImageHDU(np.ones_like(sci), name="ERR", ver=extver),
                 fits.ImageHDU(dq, name="DQ", ver=extver)]
    fits.HDUList(hdus).writeto(path)
    return path


def test_a_usable_exposure_passes(tmp_path):
    assert exposure_problems(_write(tmp_path / "a_flt.fits"), good_bits=GOOD_BITS) == []


def test_saturated_exposure_is_named_with_the_cause(tmp_path):
    good = _write(tmp_path / "a_flt.fits")
    saturated = _write(tmp_path / "b_flt.fits", dq2=np.full((16, 16), 2048 | 256, np.int16),
                       ngoodpix2=0)
    with pytest.raises(QualityGateError,
                       match=r"b_raw.fits: SCI,2 has no usable pixel \(NGOODPIX = 0; 100% of "
                             r"its pixels saturated") as info:
        check_exposure_quality([good, saturated], good_bits=GOOD_BITS,
                               sources={"b_flt.fits": tmp_path / "b_raw.fits"})
    assert "a_flt" not in str(info.value) and "\n" not in str(info.value)


def test_unflagged_nans_and_empty_readouts_are_named(tmp_path):
    sci = np.full((16, 16), 3.0, np.float32)
    assert "is constant" in exposure_problems(_write(tmp_path / "c_flt.fits", sci2=sci),
                                              good_bits=GOOD_BITS)[0]
    sci = np.random.default_rng(2).normal(0, 1, (16, 16)).astype(np.float32)
    sci[3, :] = np.nan
    (problem,) = exposure_problems(_write(tmp_path / "d_flt.fits", sci2=sci), good_bits=GOOD_BITS)
    assert problem.startswith("SCI,2 has 16 NaN or infinite pixels not flagged in DQ")
    flagged = np.zeros((16, 16), np.int16)
    flagged[3, :] = 4  # flagged NaNs are fine
    assert exposure_problems(_write(tmp_path / "e_flt.fits", sci2=sci, dq2=flagged),
                             good_bits=GOOD_BITS) == []
