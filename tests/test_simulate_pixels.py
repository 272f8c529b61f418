"""The simulated pixels follow the detector model that the reference files describe.

A raw file calibrated by hand with its own reference files, the recorded
amplifier offsets and the documented readout electronics must reproduce the
noiseless truth image within the noise;
bias levels and stripes must live in the prescan columns as in real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from hstred.acs import AMP_BOUNDARY_RAW, PRESCAN, RAW_NX, chip_layout, raw_to_trimmed
from hstred.ccd.calibrate import ExposureInfo
from hstred.ccd.reffiles import read_ccd_parameters
from hstred.simulate import detector as det
from hstred.simulate.references import CRDS_SUBDIR

pytestmark = pytest.mark.slow


def _ref(out: Path, header, key: str) -> Path:
    return out / CRDS_SUBDIR / header[key].split("$", 1)[1]


def _sci(hdul, chip: int):
    return next(h for h in hdul if h.name == "SCI" and h.header["CCDCHIP"] == chip)


def _amp_gain_map(chip: int, gains: dict, ncols: int = RAW_NX) -> np.ndarray:
    left, right = chip_layout(chip).amps
    g = np.empty(ncols)
    g[:AMP_BOUNDARY_RAW] = gains[left]
    g[AMP_BOUNDARY_RAW:] = gains[right]
    return g


@pytest.fixture(scope="module")
def hand_calibrated(sim_program_small):
    """Per chip: (calibrated FLT e-, expected 1-sigma noise, truth image, masks)."""
    out, _, result = sim_program_small
    truth = json.loads(result.truth_json.read_text())
    exp = truth["visits"][0]["exposures"][0]
    detector = truth["detector"]
    raw = fits.open(result.raw_files[0])
    h = raw[0].header
    bias = fits.open(_ref(out, h, "BIASFILE"))
    dark = fits.open(_ref(out, h, "DARKFILE"))
    flat = fits.open(_ref(out, h, "PFLTFILE"))
    timg = fits.open(result.truth_images[0])
    det_truth = fits.open(out / "truth" / "detector.fits")
    chips = {}
    for chip in (1, 2):
        lay = chip_layout(chip)
        dn = _sci(raw, chip).data.astype(float) - _sci(bias, chip).data
        left, right = lay.amps
        gain = _amp_gain_map(chip, detector["gain_e_per_dn"])
        offsets_e = np.where(np.arange(RAW_NX) < AMP_BOUNDARY_RAW,
                             exp["bias_offsets_dn"][left], exp["bias_offsets_dn"][right]) * gain
        dark_e = _sci(dark, chip).data * (h["DARKTIME"] + detector["ovrhufls_s"])
        pflt = _sci(flat, chip).data
        t = next(x for x in timg[1:] if x.header["CCDCHIP"] == chip).data.astype(float)
        # The noiseless raw signal (e- above the superbias) and what the post-SM4
        # electronics (cross-talk, bias shift) make of it.
        expected = np.zeros(dn.shape) + offsets_e[None, :]
        raw_to_trimmed(expected, chip)[:] += t * pflt + dark_e
        electronics = det.add_readout_electronics(expected, chip) - expected
        electrons = raw_to_trimmed(dn * gain - offsets_e[None, :] - electronics, chip)
        calibrated = (electrons - dark_e) / pflt
        rn = np.where(np.arange(4096) < 2048, detector["read_noise_e"][left],
                      detector["read_noise_e"][right])
        variance = t * pflt + dark_e + rn[None, :] ** 2 + detector["stripe_rms_e"] ** 2 + 0.4
        sigma = np.sqrt(variance) / pflt
        bad = det_truth["BADPIX", lay.imset].data.astype(bool)
        chips[chip] = dict(calibrated=calibrated, sigma=sigma, truth=t, bad=bad, pflt=pflt,
                           electrons=electrons, dark_e=dark_e)
    return chips, exp, truth


def test_hand_calibration_reproduces_the_truth_image(hand_calibrated):
    chips, _, _ = hand_calibrated
    for chip, c in chips.items():
        z = ((c["calibrated"] - c["truth"]) / c["sigma"])[~c["bad"]][::7]
        med = np.median(z)
        robust_sigma = 1.4826 * np.median(np.abs(z - med))
        assert abs(med) < 0.03, chip
        assert robust_sigma == pytest.approx(1.0, abs=0.05), chip


def test_calibrated_sky_is_flat_while_collected_sky_follows_pixel_area(hand_calibrated,
                                                                        sim_program_small):
    out, _, _ = sim_program_small
    chips, exp, truth = hand_calibrated
    sky_rate = truth["visits"][0]["sky_e_per_s"]["F606W"]
    pam = fits.getdata(out / "truth" / "detector.fits", "PAM", 1)  # chip 2 (imset 1)
    c = chips[2]
    lo = np.unravel_index(np.argmin(pam[::64, ::64]), pam[::64, ::64].shape)
    hi = np.unravel_index(np.argmax(pam[::64, ::64]), pam[::64, ::64].shape)
    medians = {}
    for name, (j, i) in (("lo", lo), ("hi", hi)):
        ys = slice(max(j * 64 - 40, 0), j * 64 + 40)
        xs = slice(max(i * 64 - 40, 0), i * 64 + 40)
        medians[name] = (np.median(c["calibrated"][ys, xs]),
                         np.median((c["electrons"] - c["dark_e"])[ys, xs]), pam[j * 64, i * 64])
    expected = sky_rate * exp["exptime_s"]
    for cal, _, _ in medians.values():
        assert cal == pytest.approx(expected, rel=0.03)
    ratio = medians["hi"][1] / medians["lo"][1]
    assert ratio == pytest.approx(medians["hi"][2] / medians["lo"][2], rel=0.04)
    assert medians["hi"][2] / medians["lo"][2] > 1.08


def test_cosmic_rays_hit_about_one_percent_of_pixels(hand_calibrated):
    chips, exp, _ = hand_calibrated
    for c in chips.values():
        excess = ((c["calibrated"] - c["truth"]) / c["sigma"])[~c["bad"]]
        fraction = np.count_nonzero(excess > 5.0) / excess.size
        # ACS: 1.5-3 % of pixels per 1000 s; this exposure is 500 s.
        assert 0.004 < fraction < 0.02
    assert exp["chips"]["1"]["cosmic_rays"] > 5000


def test_prescan_holds_the_bias_level_of_each_amplifier(sim_program_small):
    out, _, result = sim_program_small
    truth = json.loads(result.truth_json.read_text())
    exp = truth["visits"][0]["exposures"][0]
    h = fits.getheader(result.raw_files[0], 0)
    info = ExposureInfo.from_header(h, result.raw_files[0])
    with fits.open(result.raw_files[0]) as raw, fits.open(_ref(out, h, "BIASFILE")) as bias:
        for chip in (1, 2):
            lay = chip_layout(chip)
            data = _sci(raw, chip).data.astype(float)
            superbias = _sci(bias, chip).data
            # The CCDTAB holds one row per chip and detector set-up; calacs's selection.
            ccd = read_ccd_parameters(_ref(out, h, "CCDTAB"), ccdamp=info.ccdamp, chip=chip,
                                      ccdgain=info.ccdgain, ccdofst=info.ccdofst)
            for amp, cols in zip(lay.amps, (slice(0, PRESCAN), slice(RAW_NX - PRESCAN, RAW_NX)),
                                 strict=True):
                prescan = data[lay.science_rows, cols]
                level = np.median(prescan)
                assert level == pytest.approx(ccd.bias_dn[amp], abs=6.0)
                expected = np.median(superbias[lay.science_rows, cols]) + \
                    exp["bias_offsets_dn"][amp]
                assert level == pytest.approx(expected, abs=0.6)
                # Only bias, stripes and read noise: no light, dark or cosmic rays.
                noise = np.std(prescan - superbias[lay.science_rows, cols])
                assert noise == pytest.approx(truth["detector"]["read_noise_e"][amp]
                                              / truth["detector"]["gain_e_per_dn"][amp], rel=0.15)
            over = data[lay.virtual_overscan_rows, PRESCAN:RAW_NX - PRESCAN]
            sb_over = superbias[lay.virtual_overscan_rows, PRESCAN:RAW_NX - PRESCAN]
            assert np.max(over - sb_over) < 40  # no sources, cosmic rays or hot pixels


def test_row_stripes_correlate_across_amplifiers(sim_program_small):
    out, _, result = sim_program_small
    h = fits.getheader(result.raw_files[0], 0)
    means = {}
    with fits.open(result.raw_files[0]) as raw, fits.open(_ref(out, h, "BIASFILE")) as bias:
        for chip in (1, 2):
            lay = chip_layout(chip)
            resid = _sci(raw, chip).data.astype(float) - _sci(bias, chip).data
            # Per-row prescan means in readout order (row 0 = first row read).
            order = slice(None) if chip == 2 else slice(None, None, -1)
            for amp, cols in zip(lay.amps, (slice(0, PRESCAN), slice(RAW_NX - PRESCAN, RAW_NX)),
                                 strict=True):
                means[amp] = resid[:, cols].mean(axis=1)[order]
    for a, b in (("A", "B"), ("C", "D"), ("A", "C"), ("B", "D")):
        corr = np.corrcoef(means[a], means[b])[0, 1]
        assert corr > 0.3, (a, b, corr)
        shifted = np.corrcoef(means[a][1:], means[b][:-1])[0, 1]
        assert abs(shifted) < 0.1, (a, b, shifted)
