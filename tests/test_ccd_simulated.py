"""End to end: calibrate a simulated ACS/WFC exposure and compare it with the truth.

The simulator writes the raw file, its references under ``crds/references/hst/acs``
and the noiseless image an ideally calibrated FLT shows (``truth/ROOT_truth.fits``).
Cosmic rays are in the raw data but not in the truth and are not flagged by CCD
calibration, so residual statistics mask pixels more than 4 ERR from the truth
(grown by two pixels) before measuring.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from scratch import fixture_dir

from hstred.acs import AMP_NX, quadrants
from hstred.ccd import calibrate_exposure
from hstred.refs import resolve_references

pytestmark = pytest.mark.slow

def _calibrate_against_truth(sim_dir, result, out_dir, *, cte=None, cte_info=None):
    raw = result.raw_files[0]
    (refset,) = resolve_references([raw], sim_dir)
    refs = dict(refset.paths)
    flt = calibrate_exposure(raw, refs, out_dir, cte=cte, cte_info=cte_info)
    root = fits.getval(raw, "ROOTNAME").strip()
    chips = {}
    with fits.open(flt) as out, fits.open(sim_dir / "truth" / f"{root}_truth.fits") as truth, \
            fits.open(sim_dir / "truth" / "detector.fits") as det:
        for v in (1, 2):
            chip = out["SCI", v].header["CCDCHIP"]

            def by_chip(name, chip=chip):
                return next(h.data for h in det[1:] + truth[1:]
                            if h.name == name and h.header["CCDCHIP"] == chip)

            sci = out["SCI", v].data.astype(np.float64)
            err = out["ERR", v].data.astype(np.float64)
            true = by_chip("TRUTH").astype(np.float64)
            chips[chip] = {"sci": sci, "err": err, "dq": out["DQ", v].data.astype(np.int32),
                           "truth": true, "badpix": by_chip("BADPIX").astype(bool),
                           "cosmic": by_chip("COSMIC").astype(np.float64),
                           "hotpix": by_chip("HOTPIX").astype(bool),
                           "header": out["SCI", v].header.copy()}
        primary = out[0].header.copy()
    ccd = fits.getdata(refs["CCDTAB"], 1)
    row = next(r for r in ccd if r["CCDGAIN"] == primary["CCDGAIN"]
               and r["CCDOFSTA"] == primary["CCDOFSTA"])
    readnoise = {a: float(row[f"READNSE{a}"]) for a in "ABCD"}
    truth_json = json.loads(result.truth_json.read_text())
    return {"chips": chips, "primary": primary, "readnoise": readnoise, "truth": truth_json,
            "raw_primary": fits.getheader(raw, 0)}


@pytest.fixture(scope="module")
def simulated(sim_program_small, tmp_path_factory):
    sim_dir, _config, result = sim_program_small
    with fixture_dir(tmp_path_factory, "ccdsim") as d:
        yield _calibrate_against_truth(sim_dir, result, d / "out")


@pytest.fixture(scope="module")
def simulated_pre_sm4(sim_program_pre_sm4, tmp_path_factory):
    sim_dir, _config, result = sim_program_pre_sm4
    with fixture_dir(tmp_path_factory, "ccdsim_pre") as d:
        yield _calibrate_against_truth(sim_dir, result, d / "out")


def _blank_residual(c):
    """(SCI - truth) and ERR on blank sky with cosmic rays masked; NaN elsewhere."""
    res = c["sci"] - c["truth"]
    outliers = ndimage.binary_dilation(np.abs(res) > 4 * c["err"], iterations=2)
    sky = np.median(c["truth"])
    blank = (c["truth"] < sky + 0.05) & (c["dq"] == 0) & ~outliers
    return np.where(blank, res, np.nan), np.where(blank, c["err"], np.nan)


def _excess_row_rms(res, err):
    """rms of the row means beyond what the pixel noise (ERR) explains."""
    n = np.sum(np.isfinite(res), axis=1)
    ok = n > 20
    rows = np.nanmean(res[ok], axis=1)
    white2 = np.nanmean(err[ok] ** 2, axis=1) / n[ok]
    return float(np.sqrt(max(np.mean((rows - rows.mean()) ** 2 - white2), 0.0)))


def test_all_steps_complete(simulated):
    h = simulated["primary"]
    for switch in ("DQICORR", "BIASCORR", "BLEVCORR", "DARKCORR", "FLATCORR", "PHOTCORR"):
        assert h[switch] == "COMPLETE", switch


def test_wcs_reference_pixel_matches_truth(simulated):
    exposure = simulated["truth"]["visits"][0]["exposures"][0]
    for chip, c in simulated["chips"].items():
        header_wcs = exposure["chips"][str(chip)]["header_wcs"]
        assert [c["header"]["CRPIX1"], c["header"]["CRPIX2"]] == header_wcs["crpix_flt"]
        assert c["header"]["CRVAL1"] == pytest.approx(header_wcs["crval"][0], abs=1e-10)


def test_per_amplifier_sky_level_and_no_amplifier_steps(simulated):
    for c in simulated["chips"].values():
        res, _ = _blank_residual(c)
        chip = c["header"]["CCDCHIP"]
        for quad in quadrants(chip):
            assert abs(np.nanmean(res[quad.flt])) < 0.5, quad.amp
        left = np.nanmean(res[:, AMP_NX - 100:AMP_NX])
        right = np.nanmean(res[:, AMP_NX:AMP_NX + 100])
        assert abs(left - right) < 0.5


def test_no_row_stripes_left(simulated):
    # The bias wanders in readout time; de-striping interpolates each row's level
    # between consecutive prescans. What is left is the prescan's own read noise
    # averaged over 4 x 24 columns (~0.45 e-), which must stay under 0.5 e-.
    for c in simulated["chips"].values():
        res, err = _blank_residual(c)
        for quad in quadrants(c["header"]["CCDCHIP"]):
            stripes = _excess_row_rms(res[quad.flt], err[quad.flt])
            assert stripes < 0.5, (quad.amp, stripes)


def test_normalised_residuals_have_unit_scatter(simulated):
    for c in simulated["chips"].values():
        res, err = _blank_residual(c)
        z = (res / err)[np.isfinite(res)]
        assert np.std(z) == pytest.approx(1.0, abs=0.05)


def test_cosmic_truth_is_the_charge_cosmic_rays_left(simulated):
    """The truth's COSMIC image is what the cosmic rays add to the calibrated exposure:
    where they hit hard, SCI - TRUTH - COSMIC is noise again (the noise-check of the
    drizzled RMS images relies on it)."""
    for c in simulated["chips"].values():
        hit = (c["cosmic"] > 20 * c["err"]) & (c["dq"] == 0)
        assert 1000 < hit.sum() < 0.05 * hit.size
        assert (c["cosmic"] >= 0).all()
        z = ((c["sci"] - c["truth"] - c["cosmic"]) / c["err"])[hit]
        assert abs(np.median(z)) < 0.1
        # ERR counts the deposit's charge as shot noise; the simulated deposit has none
        assert 1.4826 * np.median(np.abs(z - np.median(z))) < 1.1
        assert np.median(((c["sci"] - c["truth"]) / c["err"])[hit]) > 20


def test_bad_and_hot_pixels_flagged_exactly(simulated):
    for c in simulated["chips"].values():
        dq = c["dq"]
        np.testing.assert_array_equal((dq & 4) > 0, c["badpix"])
        np.testing.assert_array_equal((dq & 16) > 0, c["hotpix"])


def test_saturation_flags_only_on_bright_sources(simulated):
    overflow_seen = False
    for c in simulated["chips"].values():
        dq = c["dq"]
        # A-to-D saturation (65535 DN ~ 130000 e- at gain 2) lies above the full well.
        assert not (dq & 2048).any()
        saturated = (dq & 256) > 0
        # Full-well flags sit on bright stars or on the charge they bleed along columns.
        bright = (c["truth"] > 30000.0).astype(np.uint8)
        bleed_zone = ndimage.maximum_filter1d(bright, size=201, axis=0) > 0
        assert not np.any(saturated & ~bleed_zone)
        # Every pixel whose charge certainly overflowed its well carries the flag.
        overflowed = c["truth"] > 100000.0
        assert saturated[overflowed].all()
        overflow_seen = overflow_seen or bool(overflowed.any())
    assert overflow_seen, "the program has no star bright enough to saturate"



# ---------------------------------------------------------------- before SM4 (2002-2007)


def test_pre_sm4_raw_carries_the_era_electronics(simulated_pre_sm4):
    h = simulated_pre_sm4["raw_primary"]
    assert h["EXPSTART"] < 54962.0
    assert h["CCDGAIN"] == 1.0 and all(h[f"CCDOFST{a}"] == 3 for a in "ABCD")
    assert "JWROTYPE" not in h
    assert simulated_pre_sm4["truth"]["detector"]["era"] == "pre-SM4"


def test_pre_sm4_steps_and_bias_level_from_the_overscan(simulated_pre_sm4):
    h = simulated_pre_sm4["primary"]
    for switch in ("DQICORR", "BIASCORR", "BLEVCORR", "DARKCORR", "FLATCORR", "PHOTCORR",
                   "EXPSCORR"):
        assert h[switch] == "COMPLETE", switch
    history = [str(line) for line in h["HISTORY"]]
    assert any("pre-SM4 overscan fit" in line for line in history)
    assert sum("drift from virtual overscan" in line for line in history) == 2
    assert not any("bias-shift" in line or "DESTRIPE" in line for line in history)
    # The superbias holds no amplifier level: BLEVCORR removes the whole level (e-),
    # the amplifier's bias in DN times its gain, plus this exposure's offset.
    for a in "ABCD":
        expected = h[f"CCDBIAS{a}"] * h[f"ATODGN{a}"]
        assert h[f"BIASLEV{a}"] == pytest.approx(expected, abs=8.0), a
    assert h["DARKTIME"] == simulated_pre_sm4["raw_primary"]["DARKTIME"]  # no overhead
    for a in "ABCD":
        assert h[f"ATODGN{a}"] == pytest.approx(1.0, abs=0.05)


def test_pre_sm4_sky_level_and_drift_removed(simulated_pre_sm4):
    # The bias drifts linearly along rows and columns; the overscan fit must leave no
    # level, no trend along either axis and no amplifier step.
    for c in simulated_pre_sm4["chips"].values():
        res, err = _blank_residual(c)
        for quad in quadrants(c["header"]["CCDCHIP"]):
            r = res[quad.flt]
            assert abs(np.nanmean(r)) < 0.5, quad.amp
            counts = [np.isfinite(r).sum(axis=k) for k in (1, 0)]
            rows, cols = (np.where(n > 0, np.nansum(r, axis=k) / np.maximum(n, 1), np.nan)
                          for k, n in zip((1, 0), counts, strict=True))
            assert abs(np.nanmean(rows[-300:]) - np.nanmean(rows[:300])) < 0.4, quad.amp
            assert abs(np.nanmean(cols[-300:]) - np.nanmean(cols[:300])) < 0.4, quad.amp
        left = np.nanmean(res[:, AMP_NX - 100:AMP_NX])
        right = np.nanmean(res[:, AMP_NX:AMP_NX + 100])
        assert abs(left - right) < 0.5


def test_pre_sm4_normalised_residuals_and_gain(simulated_pre_sm4):
    # Unit scatter of (SCI - truth) / ERR checks gain and read noise of the era together.
    for c in simulated_pre_sm4["chips"].values():
        res, err = _blank_residual(c)
        z = (res / err)[np.isfinite(res)]
        assert np.std(z) == pytest.approx(1.0, abs=0.05)
        for quad in quadrants(c["header"]["CCDCHIP"]):
            zq = (res / err)[quad.flt]
            assert np.nanstd(zq) == pytest.approx(1.0, abs=0.05), quad.amp
    h = simulated_pre_sm4["primary"]
    rn = simulated_pre_sm4["readnoise"]
    for a in "ABCD":  # the gain-1 CCDTAB row of the era was used
        assert h[f"READNSE{a}"] == pytest.approx(rn[a])
        assert h[f"ATODGN{a}"] == pytest.approx(1.0, abs=0.05)


def test_pre_sm4_bad_and_hot_pixels_flagged_exactly(simulated_pre_sm4):
    for c in simulated_pre_sm4["chips"].values():
        np.testing.assert_array_equal((c["dq"] & 4) > 0, c["badpix"])
        np.testing.assert_array_equal((c["dq"] & 16) > 0, c["hotpix"])


def test_pre_sm4_gain_1_saturates_in_the_a_to_d_converter(simulated_pre_sm4):
    # At gain 1, 65535 DN (~63000 e- above the bias) comes before the full well
    # (SATUFILE ~77000 e-): bright stars carry DQ 2048, never the full-well 256.
    seen = False
    for c in simulated_pre_sm4["chips"].values():
        dq = c["dq"]
        assert not (dq & 256).any()
        atod = (dq & 2048) > 0
        bright = (c["truth"] > 30000.0).astype(np.uint8)
        near = ndimage.maximum_filter1d(bright, size=201, axis=0) > 0
        assert not np.any(atod & ~near)
        over = c["truth"] > 70000.0
        assert atod[over].all()
        seen = seen or bool(over.any())
    assert seen, "the program has no star bright enough to saturate the A-to-D converter"


def test_pre_sm4_cte_uses_the_release_times_before_july_2006(sim_program_pre_sm4_cte,
                                                              tmp_path_factory):
    from hstred.cte.model import arcticpy_version, cte_model_for_date, remove_cte_from_quadrant

    sim_dir, _config, result = sim_program_pre_sm4_cte
    exposure = json.loads(result.truth_json.read_text())["visits"][0]["exposures"][0]
    assert exposure["expstart_mjd"] < 53917.0  # 2006-07-04, the cooling to -81 C
    # Massey et al. 2014: release times 0.48, 4.86, 20.6 before, 0.74, 7.70, 37.0 after.
    early = (0.48, 4.86, 20.6)
    assert exposure["cte_model"]["release_timescales"] == pytest.approx(early)
    model = cte_model_for_date(exposure["expstart_mjd"])
    info = dict(model.to_dict(), model=model.name, n_iterations=3, express=5,
                arcticpy_version=arcticpy_version())
    with fixture_dir(tmp_path_factory, "ccdsim_pre_cte") as d:
        out = _calibrate_against_truth(
            sim_dir, result, d / "out", cte_info=info,
            cte=lambda q, quad, mjd, rn: remove_cte_from_quadrant(q, quad, mjd, rn, express=5,
                                                                  n_iterations=3))
    h = out["primary"]
    assert h["PCTECORR"] == "COMPLETE" and h["CTEDATE"] == pytest.approx(h["EXPSTART"])
    assert any("release_timescales = 0.48, 4.86, 20.6" in str(line) for line in h["HISTORY"])
    for c in out["chips"].values():
        res, _ = _blank_residual(c)
        for quad in quadrants(c["header"]["CCDCHIP"]):
            assert abs(np.nanmean(res[quad.flt])) < 0.5, quad.amp
