"""Full-frame calibration of a synthetic ACS/WFC exposure with known answers.

The raw file and references are built here (seeded, noise from read noise only):
raw DN = level + bias image + (sky x flat + dark x DARKTIME) / gain + read noise, with a
few injected defects. Calibration must give back the sky, the DQ flags and the
header keywords.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scratch import fixture_dir

from hstred.acs import CHIP_NX, CHIP_NY, RAW_NX, RAW_NY, chip_layout, quadrants
from hstred.ccd import (
    apply_cte,
    calibrate_exposure,
    ccd_stage,
    record_cte_correction,
    two_d_stage,
    write_calibrated,
)
from hstred.errors import InputError, ReferenceFileError, StageError

GAIN = {"A": 2.0, "B": 2.1, "C": 2.2, "D": 2.3}
READNOISE = {"A": 4.0, "B": 4.2, "C": 4.4, "D": 4.6}
LEVEL_DN = {"A": 2200.0, "B": 2250.0, "C": 2300.0, "D": 2350.0}
SKY_E = 100.0
DARKTIME_S = 500.0
OVRHUFLS_S = 11.0
DARK_E_PER_S = 0.004
SATURATION_E = 84000.0
POST_SM4_MJD = 57000.25

# Injected defects, in trimmed (FLT) 0-indexed [row, col] of a chip.
ATOD_PIXEL = (1, (100, 200))        # raw DN 65535 -> DQ 2048 (and 256)
FULLWELL_PIXEL = (2, (500, 3000))   # ~90000 e- -> DQ 256 only
HOT_PIXEL = (1, (1500, 2500))       # 1 e-/s in the dark, flagged 16 in the dark's DQ
BAD_COLUMN = (2, 1000)              # BPIXTAB column, value 4
SINK = (2, (300, 700))              # sink pixel, -1 below it, tail 999, 50 above it


def _flat(chip: int) -> np.ndarray:
    y, x = np.mgrid[0:CHIP_NY, 0:CHIP_NX].astype(np.float32)
    return (1.0 + 0.05 * np.sin(x / 500.0 + chip) * np.cos(y / 700.0)).astype(np.float32)


def _dark(chip: int) -> np.ndarray:
    dark = np.full((CHIP_NY, CHIP_NX), DARK_E_PER_S, np.float32)
    if HOT_PIXEL[0] == chip:
        dark[HOT_PIXEL[1]] = 1.0
    return dark


def _bias_dn(chip: int) -> np.ndarray:
    cols = np.arange(RAW_NX)
    return np.broadcast_to((0.5 * np.sin(cols / 37.0 + chip)).astype(np.float32),
                           (RAW_NY, RAW_NX)).copy()


def _imset(sci, header, extver, *, err_pix=0.0, dq=None):
    shape = sci.shape
    empty = [("NPIX1", shape[1]), ("NPIX2", shape[0])]
    err = fits.ImageHDU(header=fits.Header([*empty, ("PIXVALUE", err_pix)]), name="ERR",
                        ver=extver)
    if dq is None:
        dq_hdu = fits.ImageHDU(header=fits.Header([*empty, ("PIXVALUE", 0)]), name="DQ",
                               ver=extver)
    else:
        dq_hdu = fits.ImageHDU(dq, name="DQ", ver=extver)
    return [fits.ImageHDU(sci, header=header, name="SCI", ver=extver), err, dq_hdu]


def _ref_header(chip, *, trimmed):
    lay = chip_layout(chip)
    ltv = (0.0, 0.0) if trimmed else (lay.ltv1, lay.ltv2)
    return fits.Header([("CCDCHIP", chip), ("LTV1", ltv[0]), ("LTV2", ltv[1])])


def _write_image_reference(path, make, *, trimmed, err_pix=0.0, dq=None):
    hdus = [fits.PrimaryHDU(header=fits.Header([("NEXTEND", 6), ("INSTRUME", "ACS"),
                                                ("DETECTOR", "WFC")]))]
    for lay in sorted((chip_layout(1), chip_layout(2)), key=lambda c: c.imset):
        hdus += _imset(make(lay.chip), _ref_header(lay.chip, trimmed=trimmed), lay.imset,
                       err_pix=err_pix, dq=None if dq is None else dq(lay.chip))
    fits.HDUList(hdus).writeto(path)
    return path


def _write_tables(d: Path) -> dict[str, Path]:
    rows = []
    for chip in (1, 2):
        row = {"CCDAMP": "ABCD", "CCDCHIP": chip, "CCDGAIN": np.float32(2.0), "BINAXIS1": 1,
               "BINAXIS2": 1}
        for a in "ABCD":
            row |= {f"CCDOFST{a}": 3, f"CCDBIAS{a}": LEVEL_DN[a], f"ATODGN{a}": GAIN[a],
                    f"READNSE{a}": READNOISE[a]}
        row |= {"AMPX": 2048, "AMPY": 0, "ATODSAT": 65534, "SATURATE": SATURATION_E,
                "OVRHFLS": 22.0, "OVRHUFLS": OVRHUFLS_S}
        rows.append(row)
    paths = {}
    paths["CCDTAB"] = d / "t_ccd.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table(rows=rows))]).writeto(
        paths["CCDTAB"])
    osc = []
    for chip in (1, 2):
        lay = chip_layout(chip)
        # No virtual-overscan drift section: one VX range would span both amplifiers,
        # whose levels differ, so a drift fit across it is meaningless.
        vy = (0, 0)
        osc.append({"CCDAMP": "ABCD", "CCDCHIP": chip, "BINX": 1, "BINY": 1, "NX": RAW_NX,
                    "NY": RAW_NY, "TRIMX1": 24, "TRIMX2": 24, "TRIMY1": lay.trimy1,
                    "TRIMY2": lay.trimy2, "VX1": 0, "VX2": 0, "VY1": vy[0], "VY2": vy[1],
                    "BIASSECTA1": 1, "BIASSECTA2": 24, "BIASSECTB1": 4121, "BIASSECTB2": 4144})
    paths["OSCNTAB"] = d / "t_osc.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table(rows=osc))]).writeto(
        paths["OSCNTAB"])
    bpx = Table({"PIX1": [BAD_COLUMN[1] + 1, 1], "PIX2": [1, 2000], "LENGTH": [2048, 4096],
                 "AXIS": [2, 1], "VALUE": np.array([4, 8], np.int16),
                 "CCDCHIP": [BAD_COLUMN[0], 1], "CCDGAIN": np.array([-999.0, 2.0], np.float32)})
    paths["BPIXTAB"] = d / "t_bpx.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(bpx)]).writeto(paths["BPIXTAB"])
    hdus = [fits.PrimaryHDU(header=fits.Header([("NEXTEND", 3), ("PHOTZPT", -21.1),
                                                ("PARNUM", 1)]))]
    for name, base in (("PHOTFLAM", 1.0e-19), ("PHOTPLAM", 5900.0), ("PHOTBW", 670.0)):
        hdus.append(fits.BinTableHDU(Table({
            "OBSMODE": ["acs,wfc1,f606w,mjd#"], "DATACOL": [f"{name}1"], name: [0.0],
            f"{name}1": [np.array([base, base * 1.2])], "PAR1NAMES": ["MJD#"],
            "PAR1VALUES": [np.array([52000.0, 62000.0])], "NELEM1": [2]}), name=name))
    paths["IMPHTTAB"] = d / "t_imp.fits"
    fits.HDUList(hdus).writeto(paths["IMPHTTAB"])
    return paths


def _raw_primary(expstart, *, jwrotype="CLAMP"):
    h = fits.Header()
    h.update({"TELESCOP": "HST", "INSTRUME": "ACS", "DETECTOR": "WFC", "ROOTNAME": "jtest01aq",
          "NEXTEND": 6, "EXPTIME": 480.0, "EXPSTART": expstart, "EXPEND": expstart + 0.0056,
          "DARKTIME": DARKTIME_S, "SUBARRAY": False, "CCDAMP": "ABCD", "CCDGAIN": 2.0,
          "CCDOFSTA": 3, "CCDOFSTB": 3, "CCDOFSTC": 3, "CCDOFSTD": 3, "BINAXIS1": 1,
          "BINAXIS2": 1, "FLASHDUR": 0.0, "FLASHSTA": "NOT PERFORMED", "JWROTYPE": jwrotype,
          "FILTER1": "F606W", "FILTER2": "CLEAR2L", "TARGNAME": "FIELD", "OBSTYPE": "IMAGING"})
    for switch in ("DQICORR", "BIASCORR", "BLEVCORR", "SINKCORR", "DARKCORR", "FLSHCORR",
                   "FLATCORR", "PHOTCORR", "PCTECORR", "EXPSCORR"):
        h[switch] = "PERFORM"
    h["ATODCORR"] = "OMIT"
    return h


def _raw_sci_header(chip):
    lay = chip_layout(chip)
    return fits.Header([
        ("CCDCHIP", chip), ("LTV1", lay.ltv1), ("LTV2", lay.ltv2), ("BUNIT", "COUNTS"),
        ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRPIX1", 2048.0 + lay.ltv1),
        ("CRPIX2", 1024.0 + lay.ltv2), ("CRVAL1", 150.1), ("CRVAL2", 2.2 + 0.03 * chip),
        ("CD1_1", -1.4e-5), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 1.4e-5),
        ("EXPNAME", "jtest01aq")])


def build_exposure(d: Path, *, expstart=POST_SM4_MJD, jwrotype="CLAMP", seed=7):
    """Write a raw file and its references into ``d``; return (raw path, references)."""
    d.mkdir(parents=True, exist_ok=True)
    refs = _write_tables(d)
    refs["BIASFILE"] = _write_image_reference(d / "t_bia.fits", _bias_dn, trimmed=False,
                                              err_pix=0.3)
    refs["DARKFILE"] = _write_image_reference(
        d / "t_drk.fits", _dark, trimmed=True, err_pix=1e-4,
        dq=lambda chip: _hot_dq(chip))
    refs["DRKCFILE"] = _write_image_reference(
        d / "t_dkc.fits", lambda chip: (_dark(chip) * 0.5).astype(np.float32), trimmed=True,
        err_pix=1e-4)
    refs["PFLTFILE"] = _write_image_reference(d / "t_pfl.fits", _flat, trimmed=True)
    refs["SATUFILE"] = _write_image_reference(
        d / "t_sat.fits", lambda chip: np.full((RAW_NY, RAW_NX), SATURATION_E, np.float32),
        trimmed=False)
    refs["SNKCFILE"] = _write_image_reference(d / "t_snk.fits", _sink_map, trimmed=False)
    refs |= {"DFLTFILE": None, "LFLTFILE": None, "FLSHFILE": None}

    rng = np.random.default_rng(seed)
    hdus = [fits.PrimaryHDU(header=_raw_primary(expstart, jwrotype=jwrotype))]
    darktime = DARKTIME_S + OVRHUFLS_S if expstart >= 54962 else DARKTIME_S
    for lay in sorted((chip_layout(1), chip_layout(2)), key=lambda c: c.imset):
        chip = lay.chip
        electrons = np.zeros((RAW_NY, RAW_NX), np.float32)
        electrons[lay.science_rows, lay.science_cols] = SKY_E * _flat(chip) + _dark(chip) * darktime
        if FULLWELL_PIXEL[0] == chip:
            r, c = FULLWELL_PIXEL[1]
            electrons[r + lay.trimy1, c + 24] = 90000.0
        gain = np.empty(RAW_NX, np.float32)
        rn = np.empty(RAW_NX, np.float32)
        level = np.empty(RAW_NX, np.float32)
        for quad, cols in zip(quadrants(chip), (slice(0, 2072), slice(2072, None)), strict=True):
            gain[cols], rn[cols], level[cols] = (GAIN[quad.amp], READNOISE[quad.amp],
                                                 LEVEL_DN[quad.amp])
        dn = level + _bias_dn(chip) + electrons / gain
        dn += rng.normal(0.0, 1.0, dn.shape).astype(np.float32) * (rn / gain)
        raw = np.clip(np.rint(dn), 0, 65535).astype(np.uint16)
        if ATOD_PIXEL[0] == chip:
            r, c = ATOD_PIXEL[1]
            raw[r + lay.trimy1, c + 24] = 65535
        sci = fits.ImageHDU(raw, header=_raw_sci_header(chip), name="SCI", ver=lay.imset)
        hdus += [sci, *_imset(raw, fits.Header(), lay.imset)[1:]]
    raw_path = d / "jtest01aq_raw.fits"
    fits.HDUList(hdus).writeto(raw_path)
    return raw_path, refs


def _hot_dq(chip):
    dq = np.zeros((CHIP_NY, CHIP_NX), np.int16)
    if HOT_PIXEL[0] == chip:
        dq[HOT_PIXEL[1]] = 16
    return dq


def _sink_map(chip):
    sink = np.zeros((RAW_NY, RAW_NX), np.float32)
    if SINK[0] == chip:
        lay = chip_layout(chip)
        r, c = SINK[1][0] + lay.trimy1, SINK[1][1] + 24
        sink[r - 1, c], sink[r, c], sink[r + 1, c], sink[r + 2, c] = -1, -5, 999, 50
    return sink


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "ccd") as d:
        raw, refs = build_exposure(d / "in")
        digests = {p: _digest(p) for p in [raw, *refs.values()] if p is not None}
        flt = calibrate_exposure(raw, refs, d / "out")
        bump = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}
        cte_calls = []

        def fake_cte(quad_sci, quad, mjd, read_noise_e):
            cte_calls.append((quad.chip, quad.amp, quad_sci.shape, mjd, read_noise_e))
            return quad_sci + bump[quad.amp]

        flc = calibrate_exposure(raw, refs, d / "out", cte=fake_cte,
                                 cte_info={"model": "test model", "mjd": 57000.25,
                                           "n_iterations": 3, "express": 5,
                                           "trap_densities": (0.1, 0.2), "arcticpy_version": "2.6"})
        yield {"raw": raw, "refs": refs, "digests": digests, "flt": flt, "flc": flc,
               "cte_calls": cte_calls, "bump": bump, "dir": d}


def test_inputs_are_not_modified(calibrated):
    for path, digest in calibrated["digests"].items():
        assert _digest(path) == digest, path


def test_output_layout_and_names(calibrated):
    assert calibrated["flt"].name == "jtest01aq_flt.fits"
    assert calibrated["flc"].name == "jtest01aq_flc.fits"
    with fits.open(calibrated["flt"]) as hdul:
        assert [(h.name, h.ver) for h in hdul[1:]] == [
            ("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2)]
        assert hdul[0].header["NEXTEND"] == 6
        assert hdul[0].header["FILENAME"] == "jtest01aq_flt.fits"
        assert [hdul["SCI", v].header["CCDCHIP"] for v in (1, 2)] == [2, 1]
        for v in (1, 2):
            assert hdul["SCI", v].data.dtype == np.dtype(">f4")
            assert hdul["ERR", v].data.dtype == np.dtype(">f4")
            assert hdul["DQ", v].data.dtype == np.dtype(">i2")
            assert hdul["SCI", v].data.shape == (CHIP_NY, CHIP_NX)
    assert not list(calibrated["flt"].parent.glob("*.tmp"))


def test_primary_keywords(calibrated):
    h = fits.getheader(calibrated["flt"], 0)
    for switch in ("DQICORR", "BIASCORR", "BLEVCORR", "SINKCORR", "DARKCORR", "FLATCORR",
                   "PHOTCORR"):
        assert h[switch] == "COMPLETE", switch
    assert h["FLSHCORR"] == "SKIPPED"  # FLASHDUR = 0
    assert h["PCTECORR"] == "SKIPPED"
    assert h["ATODCORR"] == "OMIT"
    for a in "ABCD":
        assert h[f"ATODGN{a}"] == pytest.approx(GAIN[a])
        assert h[f"READNSE{a}"] == pytest.approx(READNOISE[a])
        assert h[f"CCDBIAS{a}"] == pytest.approx(LEVEL_DN[a])
    assert h["DARKTIME"] == pytest.approx(DARKTIME_S + OVRHUFLS_S)
    assert any("DESTRIPE" in str(line) for line in h["HISTORY"])
    # As calacs: the individual exposure is done, and each amplifier's measured bias
    # level (what BLEVCORR removed, in electrons) is in BIASLEVA-D.
    assert h["EXPSCORR"] == "COMPLETE"
    for a in "ABCD":
        assert h[f"BIASLEV{a}"] == pytest.approx(LEVEL_DN[a] * GAIN[a], abs=0.1), a
    assert "HSTREDV" in h


def test_sci_keywords_and_wcs_shift(calibrated):
    with fits.open(calibrated["flt"]) as hdul:
        for v, chip in ((1, 2), (2, 1)):
            h = hdul["SCI", v].header
            assert h["BUNIT"] == "ELECTRONS" and hdul["ERR", v].header["BUNIT"] == "ELECTRONS"
            assert h["LTV1"] == 0 and h["LTV2"] == 0
            assert h["CRPIX1"] == pytest.approx(2048.0)
            assert h["CRPIX2"] == pytest.approx(1024.0)
            assert h["EXPNAME"] == "jtest01aq"
            assert h["PHOTMODE"] == "ACS WFC1 F606W MJD#57000.2500"
            assert h["PHOTFLAM"] == pytest.approx(1e-19 * (1 + 0.2 * 5000.25 / 10000))
            assert h["PHOTZPT"] == pytest.approx(-21.1)
            assert h["MEANDARK"] == pytest.approx(DARK_E_PER_S * (DARKTIME_S + OVRHUFLS_S),
                                                  rel=1e-4)
            amps = [q.amp for q in quadrants(chip)]
            assert h["MEANBLEV"] == pytest.approx(np.mean([LEVEL_DN[a] * GAIN[a] for a in amps]),
                                                  abs=0.5)
            assert h["NGOODPIX"] > 0.99 * CHIP_NX * CHIP_NY
            assert h["GOODMEAN"] == pytest.approx(SKY_E, abs=0.2)
            assert h["SNRMEAN"] > 5
            for ext in ("ERR", "DQ"):
                assert hdul[ext, v].header["CRPIX1"] == pytest.approx(2048.0)
                assert hdul[ext, v].header["LTV1"] == 0 and hdul[ext, v].header["LTV2"] == 0
                assert "PIXVALUE" not in hdul[ext, v].header
            assert hdul["ERR", v].header["NGOODPIX"] == h["NGOODPIX"]
            assert hdul["DQ", v].header["BUNIT"] == "UNITLESS"


def test_sky_recovered_per_amplifier_without_steps(calibrated):
    with fits.open(calibrated["flt"]) as hdul:
        for v, chip in ((1, 2), (2, 1)):
            sci = hdul["SCI", v].data.astype(np.float64)
            dq = hdul["DQ", v].data
            for quad in quadrants(chip):
                q = np.where(dq[quad.flt] == 0, sci[quad.flt], np.nan)
                assert np.nanmean(q) == pytest.approx(SKY_E, abs=0.1), quad.amp
            # amplifier boundary: no step across the middle columns
            left = np.nanmedian(np.where(dq[:, 2000:2048] == 0, sci[:, 2000:2048], np.nan))
            right = np.nanmedian(np.where(dq[:, 2048:2096] == 0, sci[:, 2048:2096], np.nan))
            assert abs(left - right) < 0.3
            # row stripes: the per-row means scatter only by the prescan noise (~0.5 e-)
            good = dq == 0
            rows = (np.where(good, sci, 0).sum(axis=1) / np.maximum(good.sum(axis=1), 1))[
                good.any(axis=1)]
            assert np.std(rows) < 0.7


def test_error_array_matches_noise_model(calibrated):
    with fits.open(calibrated["flt"]) as hdul:
        err = hdul["ERR", 2].data  # chip 1
        flat = _flat(1)
        raw_e = SKY_E * flat + DARK_E_PER_S * (DARKTIME_S + OVRHUFLS_S)
        # amp A region: sqrt(signal + rn^2 + (bias err x gain)^2 + dark err^2) / flat
        expected = np.sqrt(raw_e + READNOISE["A"] ** 2 + (0.3 * GAIN["A"]) ** 2
                           + (1e-4 * 511) ** 2) / flat
        region = (slice(200, 1800), slice(100, 1900))
        ratio = err[region] / expected[region]
        # ERR uses the noisy signal, so single pixels scatter by ~2%; the bulk must agree.
        assert np.median(ratio) == pytest.approx(1.0, abs=0.003)
        assert np.all(np.abs(ratio - 1) < 0.15)


def test_dq_flags_of_injected_defects(calibrated):
    with fits.open(calibrated["flt"]) as hdul:
        by_chip = {hdul["SCI", v].header["CCDCHIP"]: hdul["DQ", v].data for v in (1, 2)}
    dq = {c: d.astype(np.int32) & 0xFFFF for c, d in by_chip.items()}
    chip, pix = ATOD_PIXEL
    assert dq[chip][pix] & 2048 and dq[chip][pix] & 256
    chip, pix = FULLWELL_PIXEL
    assert dq[chip][pix] & 256 and not dq[chip][pix] & 2048
    chip, pix = HOT_PIXEL
    assert dq[chip][pix] & 16
    chip, col = BAD_COLUMN
    assert np.all(dq[chip][:, col] & 4)
    assert np.all(dq[1][1999, :] & 8)
    chip, (r, c) = SINK
    assert [bool(dq[chip][row, c] & 1024) for row in range(r - 2, r + 4)] == [
        False, True, True, True, False, False]
    # nothing else is flagged on a clean patch
    assert not dq[2][1200:1300, 3500:3600].any()


def test_cte_hook_runs_on_each_quadrant_and_uses_cte_dark(calibrated):
    calls = calibrated["cte_calls"]
    assert sorted((c, a) for c, a, *_ in calls) == [(1, "A"), (1, "B"), (2, "C"), (2, "D")]
    assert all(shape == (CHIP_NY, CHIP_NX // 2) and mjd == 57000.25
               for _, _, shape, mjd, _ in calls)
    h = fits.getheader(calibrated["flc"], 0)
    # each quadrant gets its own amplifier's read noise, from the header the CCD steps wrote
    assert all(rn == h[f"READNSE{amp}"] for _, amp, _, _, rn in calls)
    assert h["PCTECORR"] == "COMPLETE"
    assert h["CTEMODEL"] == "test model" and h["CTE_NIT"] == 3 and h["CTEEXPR"] == 5
    assert h["CTETRAPD"] == pytest.approx(0.3) and h["ARCTICV"] == "2.6"
    assert any("PCTECORR" in str(line) for line in h["HISTORY"])
    darktime = DARKTIME_S + OVRHUFLS_S
    with fits.open(calibrated["flt"]) as flt, fits.open(calibrated["flc"]) as flc:
        for v in (1, 2):
            chip = flt["SCI", v].header["CCDCHIP"]
            diff = (flc["SCI", v].data.astype(np.float64) - flt["SCI", v].data) * _flat(chip)
            for quad in quadrants(chip):
                # + CTE bump, and the CTE-corrected dark is half the normal one
                expected = calibrated["bump"][quad.amp] + 0.5 * DARK_E_PER_S * darktime
                assert np.median(diff[quad.flt]) == pytest.approx(expected, abs=1e-3)


def test_split_stages_match_one_call(calibrated):
    chips = ccd_stage(calibrated["raw"], calibrated["refs"])
    assert [c.chip for c in chips] == [2, 1]
    assert all(c.units == "ELECTRONS" and c.shape == (CHIP_NY, CHIP_NX) for c in chips)
    before = [c.sci.copy() for c in chips]
    chips2 = two_d_stage(chips, calibrated["refs"])
    for c, b in zip(chips, before, strict=True):
        np.testing.assert_array_equal(c.sci, b)  # the 2-D stage returns new arrays
    out = write_calibrated(chips2, calibrated["dir"] / "split")
    with fits.open(out) as a, fits.open(calibrated["flt"]) as b:
        for v in (1, 2):
            np.testing.assert_array_equal(a["SCI", v].data, b["SCI", v].data)
            np.testing.assert_array_equal(a["DQ", v].data, b["DQ", v].data)


def test_record_cte_correction_without_running_cte(calibrated):
    chips = ccd_stage(calibrated["raw"], calibrated["refs"])
    marked = record_cte_correction(chips, {"model": "external"})
    assert marked[0].primary["PCTECORR"] == "COMPLETE"
    assert chips[0].primary["PCTECORR"] == "PERFORM"  # the input record is untouched
    identity = apply_cte(chips, functools.partial(lambda q, quad, mjd, rn: q))
    np.testing.assert_array_equal(identity[0].sci, chips[0].sci)
    # the read noise each quadrant needs comes from the header the CCD steps wrote
    header = chips[0].primary.copy()
    del header["READNSEC"]
    with pytest.raises(StageError, match="READNSEC"):
        apply_cte([c.replace(primary=header) for c in chips], lambda q, quad, mjd, rn: q)


def test_missing_required_reference_raises(calibrated):
    refs = dict(calibrated["refs"], OSCNTAB=None)
    with pytest.raises(ReferenceFileError, match="OSCNTAB"):
        ccd_stage(calibrated["raw"], refs)


def test_not_applicable_reference_skips_its_step(calibrated):
    refs = dict(calibrated["refs"], SNKCFILE=None, PFLTFILE=None)
    out = calibrate_exposure(calibrated["raw"], refs, calibrated["dir"] / "na" / "x_flt.fits")
    assert out.name == "x_flt.fits"
    h = fits.getheader(out, 0)
    assert h["SINKCORR"] == "SKIPPED" and h["FLATCORR"] == "SKIPPED"


def test_rejects_non_raw_input(tmp_path):
    path = tmp_path / "x_raw.fits"
    fits.PrimaryHDU(header=fits.Header([("ROOTNAME", "x")])).writeto(path)
    with pytest.raises(InputError):
        ccd_stage(path, {"CCDTAB": path, "OSCNTAB": path})


@pytest.mark.slow
def test_pre_sm4_and_bias_shift_paths(tmp_path):
    try:
        _check_pre_sm4_and_bias_shift(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # ~0.5 GB of full-frame files


def _check_pre_sm4_and_bias_shift(tmp_path):
    raw, refs = build_exposure(tmp_path / "pre", expstart=53500.0, seed=11)
    out = calibrate_exposure(raw, refs, tmp_path / "pre")
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert h["DARKTIME"] == pytest.approx(DARKTIME_S)  # no overhead before SM4
        assert any("pre-SM4" in str(line) for line in h["HISTORY"])
        assert h["EXPSCORR"] == "COMPLETE"
        for a in "ABCD":
            assert h[f"BIASLEV{a}"] == pytest.approx(LEVEL_DN[a] * GAIN[a], abs=0.2), a
        for v, chip in ((1, 2), (2, 1)):
            sci = hdul["SCI", v].data
            dq = hdul["DQ", v].data
            for quad in quadrants(chip):
                q = np.where(dq[quad.flt] == 0, sci[quad.flt], np.nan)
                assert np.nanmean(q) == pytest.approx(SKY_E, abs=0.2), quad.amp
    shutil.rmtree(tmp_path / "pre")
    raw, refs = build_exposure(tmp_path / "ds", jwrotype="DS_INT", seed=12)
    out = calibrate_exposure(raw, refs, tmp_path / "ds")
    with fits.open(out) as hdul:
        assert any("bias-shift" in str(line) for line in hdul[0].header["HISTORY"])
        for v in (1, 2):
            # The synthetic data carry no bias shift, so the correction only moves the sky
            # by a fraction of an electron (DSI sensitivity x DC ratio x signal).
            sci = hdul["SCI", v].data
            assert abs(np.median(sci) - SKY_E) < 1.0


def _raw_copy(calibrated, name: str, *, delete=(), **values) -> Path:
    """A copy of the synthetic raw file with primary keywords deleted or set."""
    path = calibrated["dir"] / name / "jtest01aq_raw.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    with fits.open(calibrated["raw"]) as hdul:
        for key in delete:
            del hdul[0].header[key]
        hdul[0].header.update(values)
        hdul.writeto(path)
    return path


def test_missing_darktime_falls_back_to_exptime_plus_flashdur(calibrated):
    # Older raws lack DARKTIME: calacs before it read the keyword scaled the dark by
    # EXPTIME + FLASHDUR (plus, after SM4, the CCDTAB overhead).
    raw = _raw_copy(calibrated, "nodarktime", delete=("DARKTIME",))
    out = calibrate_exposure(raw, calibrated["refs"], raw.parent)
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert h["DARKCORR"] == "COMPLETE"
        exptime = fits.getval(raw, "EXPTIME")
        assert h["DARKTIME"] == pytest.approx(exptime + 0.0 + OVRHUFLS_S)
        assert any("DARKTIME missing" in str(line) for line in h["HISTORY"])
        assert hdul["SCI", 1].header["MEANDARK"] == pytest.approx(
            DARK_E_PER_S * (exptime + OVRHUFLS_S), rel=1e-3)


def test_missing_satufile_keyword_uses_ccdtab_saturate(calibrated):
    # Older raws lack SATUFILE: full well comes from CCDTAB SATURATE, one level per chip.
    raw = calibrated["raw"]
    assert "SATUFILE" not in fits.getheader(raw, 0)
    refs = dict(calibrated["refs"], SATUFILE=None)
    out = calibrate_exposure(raw, refs, calibrated["dir"] / "nosatufile" / "x_flt.fits")
    with fits.open(out) as hdul:
        dq = {hdul["SCI", v].header["CCDCHIP"]: hdul["DQ", v].data for v in (1, 2)}
        history = [str(line) for line in hdul[0].header["HISTORY"]]
    chip, pix = FULLWELL_PIXEL
    assert dq[chip][pix] & 256
    assert not (dq[2][1200:1300, 3500:3600] & 256).any()
    assert any("CCDTAB SATURATE used" in line for line in history)
    # A SATUFILE set to N/A is a choice, not an omission: no full-well flags.
    raw_na = _raw_copy(calibrated, "satna", SATUFILE="N/A")
    na = calibrate_exposure(raw_na, refs, raw_na.parent)
    with fits.open(na) as hdul:
        dq_na = {hdul["SCI", v].header["CCDCHIP"]: hdul["DQ", v].data for v in (1, 2)}
    assert not dq_na[chip][pix] & 256
