"""Fast unit tests of the simulator's building blocks (tiny arrays, hand-worked answers)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits

from hstred.acs import CHIP_NX, CHIP_NY, RAW_NX, RAW_NY, chip_layout
from hstred.errors import InputError
from hstred.simulate import SimulationConfig
from hstred.simulate import detector as det
from hstred.simulate import psf as psfmod
from hstred.simulate import references as refs
from hstred.simulate import wcs as w
from hstred.simulate.catalog import draw_truth_catalog
from hstred.simulate.config import FILTERS, era_of_date, filter_keywords, validate_config
from hstred.simulate.plan import plan_program
from hstred.simulate.rawfile import mjd_to_datetime
from hstred.simulate.rng import rng_for

# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("changes", [
    {"visits": 0}, {"visits": 100}, {"exposures": 0}, {"filters": ()},
    {"filters": ("F999W",)}, {"filters": ("F606W", "F606W")}, {"filters": "F606W"},
    {"seed": -1}, {"date": "yesterday"}, {"date": "2008-01-01"}, {"date": "2002-02-28"},
    {"date": "2041-01-01"}, {"sources": 0},
    {"exptime_s": 0.0}, {"program": "D71"}, {"program": "d7"}, {"target": "a b"},
])
def test_invalid_configuration_raises_input_error(changes):
    with pytest.raises(InputError):
        validate_config(SimulationConfig(**changes))


@pytest.mark.parametrize("date, era", [
    ("2002-03-01", "pre-SM4"), ("2004-05-01", "pre-SM4"), ("2007-01-26", "pre-SM4"),
    ("2007-01-27", None), ("2009-05-31", None), ("2009-06-01", "post-SM4"),
    ("2040-12-31", "post-SM4"), ("2002-02-28", None)])
def test_simulated_eras(date, era):
    import datetime

    assert era_of_date(datetime.date.fromisoformat(date)) == era
    if era is None:
        with pytest.raises(InputError) as info:
            validate_config(SimulationConfig(date=date))
        message = str(info.value)
        assert "\n" not in message and date in message
        assert "2002-03-01 to 2007-01-26" in message and "2009-06-01" in message
    else:
        validate_config(SimulationConfig(date=date))


def test_gap_message_names_the_failure():
    with pytest.raises(InputError, match="out of service from 2007-01-27"):
        validate_config(SimulationConfig(date="2008-06-01"))


def test_program_must_stay_in_one_era():
    # Visits follow 10-40 days apart: three visits from 2007-01-20 run into the gap.
    with pytest.raises(InputError, match="visit 2 would fall on 2007-"):
        plan_program(SimulationConfig(date="2007-01-20", visits=3, exposures=1,
                                      filters=("F606W",)))
    plan = plan_program(SimulationConfig(date="2006-12-01", visits=2, exposures=1,
                                         filters=("F606W",)))
    assert len(plan.visits) == 2


def test_detector_set_up_by_era():
    pre = det.detector_for_date(53126.0)   # 2004-05-01
    post = det.detector_for_date(60000.0)
    assert pre is det.PRE_SM4_DETECTOR and post is det.DEFAULT_DETECTOR
    assert det.detector_for_date(54962.0) is det.DEFAULT_DETECTOR  # SM4 boundary
    # Pre-SM4: gain 1, offset 3, no JWROTYPE, no DSI/cross-talk, no stripes, no DARKTIME
    # overhead; the bias level drifts and the superbias holds no amplifier level.
    assert (pre.ccdgain, pre.ccdofst, pre.jwrotype) == (1.0, 3, None)
    assert not pre.dual_slope_integrator and pre.stripe_rms_e == 0.0
    assert (pre.ovrhufls_s, pre.ovrhfls_s) == (0.0, 0.0)
    assert pre.bias_row_drift_e > 0 and pre.bias_column_drift_e > 0
    assert not pre.superbias_holds_level
    assert all(0.9 < g < 1.1 for g in pre.gain_e_per_dn.values())
    # At gain 1 the A-to-D converter saturates before the full well.
    assert pre.atodsat_dn * max(pre.gain_e_per_dn.values()) < pre.saturate_e
    assert (post.ccdgain, post.jwrotype, post.dual_slope_integrator) == (2.0, "DS_int", True)
    assert post.atodsat_dn * min(post.gain_e_per_dn.values()) > post.saturate_e


def test_bias_drift_is_linear_and_shared_by_the_amplifiers():
    drift = det.bias_drift(rng_for(1, "drift-test"), params=det.PRE_SM4_DETECTOR)
    assert drift.shape == (RAW_NY, RAW_NX)
    rows = drift[:, 0]
    cols = drift[0, :]
    np.testing.assert_allclose(np.diff(rows), np.diff(rows)[0], atol=1e-12)
    np.testing.assert_allclose(np.diff(cols), np.diff(cols)[0], atol=1e-12)
    # No step between the amplifiers: one plane over the chip.
    plane = rows[:, None] + cols[None, :] - drift[0, 0]
    np.testing.assert_allclose(drift, plane, atol=1e-9)
    assert np.all(det.bias_drift(rng_for(1, "x"), params=det.DEFAULT_DETECTOR) == 0.0)


def test_superbias_without_amplifier_levels_before_sm4():
    frame = det.bias_frame(3, 1, det.PRE_SM4_DETECTOR)
    sb = det.superbias(frame, 1, params=det.PRE_SM4_DETECTOR)
    assert abs(np.median(sb[:, :100])) < 2.0 and abs(np.median(sb[:, -100:])) < 2.0
    assert np.median(frame[:, :100]) == pytest.approx(det.PRE_SM4_DETECTOR.bias_dn["A"], abs=3)
    post = det.bias_frame(3, 1)
    assert det.superbias(post, 1) is post


def test_ccdtab_has_a_row_per_era_and_chip(tmp_path):
    path = tmp_path / "x_ccd.fits"
    refs.ccdtab_hdul("x_ccd.fits", date=mjd_to_datetime(60000).date()).writeto(path)
    data = fits.getdata(path, 1)
    keys = sorted((float(r["CCDGAIN"]), int(r["CCDOFSTA"]), int(r["CCDCHIP"])) for r in data)
    assert keys == [(1.0, 3, 1), (1.0, 3, 2), (2.0, 1, 1), (2.0, 1, 2)]
    pre = next(r for r in data if r["CCDGAIN"] == 1.0)
    assert pre["ATODGNB"] == pytest.approx(det.PRE_SM4_DETECTOR.gain_e_per_dn["B"])
    assert pre["OVRHUFLS"] == 0.0


def test_default_configuration_is_valid():
    config = SimulationConfig()
    assert validate_config(config) is config


def test_filters_sit_on_their_real_filter_wheels():
    # FILTER1 wheel: F475W, F606W, F775W, F850LP; FILTER2 wheel: F435W, F814W.
    assert filter_keywords("F606W") == ("F606W", "CLEAR2L")
    assert filter_keywords("F475W") == ("F475W", "CLEAR2L")
    assert filter_keywords("F775W") == ("F775W", "CLEAR2L")
    assert filter_keywords("F850LP") == ("F850LP", "CLEAR2L")
    assert filter_keywords("F814W") == ("CLEAR1L", "F814W")
    assert filter_keywords("F435W") == ("CLEAR1L", "F435W")


def test_rng_streams_are_reproducible_and_independent():
    a = rng_for(3, "noise", "x").normal(size=4)
    b = rng_for(3, "noise", "x").normal(size=4)
    c = rng_for(3, "noise", "y").normal(size=4)
    d = rng_for(4, "noise", "x").normal(size=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_mjd_to_datetime_known_epochs():
    assert mjd_to_datetime(51544.5).isoformat() == "2000-01-01T12:00:00"
    assert mjd_to_datetime(60462.0).date().isoformat() == "2024-06-01"


# ---------------------------------------------------------------- sky geometry


def test_tangent_plane_round_trip_and_scale():
    ra0, dec0 = 150.0, 60.0
    ra = np.array([150.0, 150.01, 149.95])
    dec = np.array([60.0, 60.02, 59.97])
    xi, eta = w.tangent_plane(ra, dec, ra0_deg=ra0, dec0_deg=dec0)
    ra2, dec2 = w.from_tangent_plane(xi, eta, ra0_deg=ra0, dec0_deg=dec0)
    np.testing.assert_allclose(ra2, ra, atol=1e-11)
    np.testing.assert_allclose(dec2, dec, atol=1e-11)
    # Near the centre xi ~ dRA cos(dec), eta ~ dDec.
    assert xi[1] == pytest.approx(0.01 * np.cos(np.radians(60.0)), rel=1e-3)
    assert eta[1] == pytest.approx(0.02, rel=1e-3)


def test_perturb_sky_shift_and_rotation():
    center = (20.0, -30.0)
    shift_only = w.WcsError(0.6, -0.8, 0.0, *center)
    ra, dec = w.perturb_sky(np.array([center[0]]), np.array([center[1]]), shift_only)
    xi, eta = w.tangent_plane(ra, dec, ra0_deg=center[0], dec0_deg=center[1])
    assert xi[0] * 3600 == pytest.approx(0.6, abs=1e-9)
    assert eta[0] * 3600 == pytest.approx(-0.8, abs=1e-9)
    # A point 100" north moves toward the east when position angles increase.
    rot = w.WcsError(0.0, 0.0, 0.05, *center)
    north = w.from_tangent_plane(0.0, 100.0 / 3600, ra0_deg=center[0], dec0_deg=center[1])
    ra, dec = w.perturb_sky(np.array([north[0]]), np.array([north[1]]), rot)
    xi, eta = w.tangent_plane(ra, dec, ra0_deg=center[0], dec0_deg=center[1])
    assert xi[0] * 3600 == pytest.approx(100.0 * np.sin(np.radians(0.05)), rel=1e-9)
    assert np.hypot(xi[0], eta[0]) * 3600 == pytest.approx(100.0, rel=1e-9)


def _stwcs_chips(tmp_path, *, pa_v3: float, date: str, vafactor: float = 1.0):
    """Each chip's WCS as stwcs derives it from simulated references for an attitude."""
    import datetime as dt

    from hstred.simulate import distortion as dist

    day = dt.date.fromisoformat(date)
    tmp_path.mkdir(parents=True, exist_ok=True)
    names = {"IDCTAB": "sim_idc.fits", "NPOLFILE": "sim_npl.fits", "D2IMFILE": "sim_d2i.fits"}
    dist.idctab_hdul(names["IDCTAB"], date=day).writeto(tmp_path / names["IDCTAB"])
    dist.npolfile_hdul(names["NPOLFILE"], seed=3, filter_name="F606W",
                       date=day).writeto(tmp_path / names["NPOLFILE"])
    dist.d2imfile_hdul(names["D2IMFILE"], seed=3, date=day).writeto(tmp_path / names["D2IMFILE"])
    att = w.hst_attitude(ra_deg=150.0, dec_deg=2.0, pa_v3_deg=pa_v3)
    idc = dist.idc_model()
    crval = {c: w.tel_to_sky(att, idc[c].v2ref_arcsec, idc[c].v3ref_arcsec) for c in (1, 2)}
    primary = fits.Header()
    for key, value in {"INSTRUME": "ACS", "DETECTOR": "WFC", "TELESCOP": "HST",
                       "ROOTNAME": "jtest01aaq", "FILTER1": "F606W", "FILTER2": "CLEAR2L",
                       "PA_V3": pa_v3, "DATE-OBS": date,
                       **{k: f"jref${n}" for k, n in names.items()}}.items():
        primary[key] = value
    chips = dist.stwcs_chip_wcs(primary, dist.reference_point_headers(crval, vafactor),
                                tmp_path)
    return att, chips


def test_stwcs_reading_of_the_references_reproduces_the_siaf_geometry(tmp_path):
    att, chips = _stwcs_chips(tmp_path, pa_v3=80.0, date="2004-07-01")
    for chip in (1, 2):
        x, y, ra, dec = w.chip_sky_grid(att, chip)
        px, py = chips[chip].world2pix(ra, dec)
        # Only the lookup tables and the (small, near TDD_DATE) time terms differ.
        assert np.max(np.hypot(px - x, py - y)) < 0.6
        scale = np.sqrt(abs(np.linalg.det(chips[chip].wcs.wcs.cd))) * 3600
        assert 0.048 < scale < 0.051
    # WFC2's top row lies next to WFC1's bottom row, ~50 pixels (2.5") apart.
    ra2, dec2 = chips[2].pix2world(2048.0, 2048.0)
    ra1, dec1 = chips[1].pix2world(2048.0, 1.0)
    xi, eta = w.tangent_plane(ra1, dec1, ra0_deg=ra2, dec0_deg=dec2)
    assert 2.0 < np.hypot(xi, eta) * 3600 < 3.5
    # ORIENTAT follows PA_V3 through the aperture's V3IdlYAngle (~177.5 deg).
    cd = chips[1].wcs.wcs.cd
    orientat = np.degrees(np.arctan2(cd[0, 1], cd[1, 1])) % 360
    assert (orientat - 80.0) % 360 == pytest.approx(177.3, abs=1.0)


def test_time_dependent_terms_and_velocity_aberration_move_the_corners(tmp_path):
    _, early = _stwcs_chips(tmp_path / "a", pa_v3=80.0, date="2004-07-01")
    _, late = _stwcs_chips(tmp_path / "b", pa_v3=80.0, date="2024-07-01")
    _, aberrated = _stwcs_chips(tmp_path / "c", pa_v3=80.0, date="2004-07-01", vafactor=1.0001)
    corner = (np.array([1.0, 4096.0]), np.array([1.0, 2048.0]))
    for other, low, high in ((late, 0.05, 1.0), (aberrated, 0.1, 0.4)):
        ra, dec = early[1].pix2world(*corner)
        x, y = other[1].world2pix(ra, dec)
        moved = np.hypot(x - corner[0], y - corner[1])
        assert low < moved.max() < high, moved


def test_distorted_pixel_area_map_matches_finite_differences(tmp_path):
    _, chips = _stwcs_chips(tmp_path, pa_v3=30.0, date="2012-03-01")
    wcs = chips[2]
    pam = wcs.pixel_area_map()
    assert pam.shape == (CHIP_NY, CHIP_NX) and 0.85 < pam.min() and pam.max() < 1.1
    for (y, x) in [(0, 0), (2047, 4095), (1017, 2033)]:
        jac = wcs.jacobian([x + 1.0], [y + 1.0], step=0.5)[0]
        area = abs(np.linalg.det(jac)) * 3600.0**2 / 0.05**2
        assert pam[y, x] == pytest.approx(area, rel=2e-3)


def test_attitude_puts_the_wfc_reference_point_on_the_target():
    att = w.hst_attitude(ra_deg=33.0, dec_deg=-40.0, pa_v3_deg=200.0)
    ra, dec = w.aperture_reference_sky(att)
    assert ra == pytest.approx(33.0, abs=1e-9)
    assert dec == pytest.approx(-40.0, abs=1e-9)


# ---------------------------------------------------------------- detector


def test_bleeding_conserves_charge_and_caps_at_full_well():
    charge = np.zeros((20, 3))
    charge[10, 1] = 5000.0
    well = np.full((20, 3), 1000.0)
    before = charge.copy()
    out = det.bleed_saturated(charge, well)
    np.testing.assert_array_equal(charge, before)  # input untouched
    assert out.max() <= 1000.0
    assert out.sum() == pytest.approx(5000.0)
    # 4000 e- of excess shared equally: two full pixels each way.
    np.testing.assert_allclose(out[8:13, 1], [1000.0] * 5)
    assert out[:, [0, 2]].sum() == 0.0


def test_bleeding_at_the_chip_edge_loses_charge():
    charge = np.zeros((5, 1))
    charge[0, 0] = 3000.0
    out = det.bleed_saturated(charge, np.full((5, 1), 1000.0))
    np.testing.assert_allclose(out[:, 0], [1000.0, 1000.0, 0.0, 0.0, 0.0])


def test_readout_rows_follow_the_amplifier_side():
    assert det.readout_rows(2)[0] == 0  # WFC2 is read from row 0 (amps C, D)
    assert det.readout_rows(1)[0] == RAW_NY - 1  # WFC1 from the top (amps A, B)


def test_read_out_chip_puts_bias_gain_and_clipping_where_expected():
    charge = np.full((CHIP_NY, CHIP_NX), 1000.0)
    charge[5, 5] = 1.0e7  # beyond the A-to-D range
    bias = np.full((RAW_NY, RAW_NX), 100.0, dtype=np.float32)
    params = det.DetectorParams(read_noise_e={a: 0.0 for a in "ABCD"})
    stripes = np.zeros(RAW_NY + 2)
    raw = det.read_out_chip(charge, 2, bias_dn=bias, stripes_e=stripes,
                            offsets_dn={a: 0.0 for a in "ABCD"}, rng=np.random.default_rng(0),
                            params=params, dsi=False)
    assert raw.dtype == np.uint16 and raw.shape == (RAW_NY, RAW_NX)
    lay = chip_layout(2)
    assert raw[lay.science_rows, lay.science_cols][5, 5] == 65535
    assert raw[0, 0] == 100  # prescan: bias only
    assert raw[RAW_NY - 1, 100] == 100  # virtual overscan (WFC2: last rows)
    assert raw[100, 30] == round(100 + 1000 / params.gain_e_per_dn["C"])
    assert raw[100, RAW_NX - 30] == round(100 + 1000 / params.gain_e_per_dn["D"])


def test_stripes_are_shared_by_amplifiers_in_readout_order():
    stripes = np.zeros(RAW_NY + 2)
    stripes[1] = 40.0  # sampled at the prescan of the first row read by every amplifier
    params = det.DetectorParams(read_noise_e={a: 0.0 for a in "ABCD"})
    zero = np.zeros((CHIP_NY, CHIP_NX))
    bias = np.zeros((RAW_NY, RAW_NX), dtype=np.float32)
    kwargs = dict(bias_dn=bias, stripes_e=stripes, offsets_dn={a: 0.0 for a in "ABCD"},
                  params=params, dsi=False)
    wfc2 = det.read_out_chip(zero, 2, rng=np.random.default_rng(0), **kwargs)
    wfc1 = det.read_out_chip(zero, 1, rng=np.random.default_rng(0), **kwargs)
    gain = params.gain_e_per_dn
    assert wfc2[0, 11] == round(40 / gain["C"]) and wfc2[0, RAW_NX - 12] == round(40 / gain["D"])
    assert wfc1[RAW_NY - 1, 12] == round(40 / gain["A"])
    assert wfc1[RAW_NY - 1, RAW_NX - 13] == round(40 / gain["B"])
    assert wfc2[2:, :].max() == 0 and wfc1[:-2, :].max() == 0


def test_stripe_level_drifts_linearly_along_the_serial_readout():
    ramp = np.arange(-1.0, RAW_NY + 1.0)  # level = readout time in rows
    levels = det.stripe_levels(ramp, 2)
    j = np.arange(RAW_NX // 2)
    expected = 100 + (j - 11.5) / 2218
    np.testing.assert_allclose(levels[100, : RAW_NX // 2], expected, atol=1e-12)
    np.testing.assert_allclose(levels[100, RAW_NX // 2:], expected[::-1], atol=1e-12)
    np.testing.assert_allclose(det.stripe_levels(ramp, 1)[RAW_NY - 1 - 100], levels[100])


def test_readout_electronics_add_cross_talk_and_a_bias_shift_calacs_removes():
    from hstred.ccd import steps

    truth = np.zeros((RAW_NY, RAW_NX))
    truth[1000, 500] = 60000.0  # amplifier C (WFC2, left half)
    shifted = det.add_readout_electronics(truth, 2)
    np.testing.assert_array_equal(truth[1000, 500], 60000.0)  # input untouched
    # Cross-talk: a negative ghost at the mirror pixel, read by amplifier D.
    ghost = shifted[1000, RAW_NX - 1 - 500]
    assert ghost == pytest.approx(-det.CROSS_TALK * 60000.0, rel=0.05)
    # Bias shift: the bright pixel and those read after it (same row, larger x) are
    # raised; the pixels read before it are not.
    assert shifted[1000, 500] - 60000.0 > 3.0
    assert 0.05 < shifted[1000, 501] < shifted[1000, 500] - 60000.0
    assert shifted[1000, 499] == pytest.approx(0.0, abs=1e-9)
    # calacs's BLEVCORR algorithm (hstred.ccd.steps) undoes both to float32 precision.
    amps, levels = steps.correct_bias_shift(steps.split_amplifiers(shifted, 2))
    back = steps.correct_cross_talk(steps.merge_amplifiers(amps, 2))
    np.testing.assert_allclose(back, truth, atol=2e-3)


def test_cosmic_ray_rate_and_deposits():
    rng = np.random.default_rng(1)
    image, n = det.cosmic_ray_image(rng, exptime_s=100.0, shape=(512, 512))
    area_cm2 = 512 * 512 * (15e-4) ** 2
    expected = det.DEFAULT_DETECTOR.cosmic_rays_per_cm2_s * area_cm2 * 100.0
    assert abs(n - expected) < 5 * np.sqrt(expected)
    assert image.min() >= 0.0
    per_event = image.sum() / n
    assert 800.0 < per_event < 6000.0  # median ~1000 e-, long tail
    affected = np.count_nonzero(image > 20.0) / n
    assert 3.0 < affected < 15.0  # pixels per event, peaked at 4-5


def test_defects_mask_and_qe_response():
    defects = det.draw_defects(7)
    assert {d.chip for d in defects} == {1, 2}
    mask = det.defect_mask(defects, 1)
    col = next(d for d in defects if d.chip == 1 and d.axis == 2 and d.length == CHIP_NY)
    assert mask[:, col.x].all()
    qe = det.qe_map(7, 1, "F606W", defects)
    assert 0.97 < np.median(qe) < 1.03
    assert np.median(qe[:, col.x]) < 0.1


def test_dark_rate_hot_pixels_change_a_little_between_visits():
    params = det.DEFAULT_DETECTOR
    d1 = det.dark_rate_map(3, 2, visit=1, mjd=60000.0)
    d2 = det.dark_rate_map(3, 2, visit=2, mjd=60000.0)
    hot1 = d1 >= params.hot_threshold_e_per_s
    hot2 = d2 >= params.hot_threshold_e_per_s
    assert 0.004 < hot1.mean() < 0.01
    overlap = np.count_nonzero(hot1 & hot2) / np.count_nonzero(hot1)
    assert 0.75 < overlap < 0.95
    assert np.median(d1) == pytest.approx(params.dark_median_e_per_s(60000.0), rel=0.1)


# ---------------------------------------------------------------- PSF and sources


@pytest.mark.parametrize("name", ["F435W", "F606W", "F814W", "F850LP"])
def test_psf_delivers_all_the_light_centred_on_the_source(name):
    model = psfmod.psf_model(name)
    stamp, x0, y0 = psfmod.render_point_source(model, x0=300.37, y0=200.81, flux=1000.0)
    assert stamp.sum() == pytest.approx(1000.0, rel=1e-6)
    yy, xx = np.mgrid[0:stamp.shape[0], 0:stamp.shape[1]]
    r = np.hypot(xx + x0 - 300.37, yy + y0 - 200.81)
    core = r < 6
    cx = (stamp[core] * (xx[core] + x0)).sum() / stamp[core].sum()
    cy = (stamp[core] * (yy[core] + y0)).sum() / stamp[core].sum()
    assert abs(cx - 300.37) < 0.01 and abs(cy - 200.81) < 0.01
    assert 0.06 < model.fwhm_arcsec() < 0.1
    ee_01 = stamp[r <= 2].sum() / 1000.0  # 0.1" radius
    assert 0.5 < ee_01 < 0.85


def test_psf_is_broader_in_the_red():
    blue, red = psfmod.psf_model("F435W"), psfmod.psf_model("F850LP")
    assert red.fwhm_arcsec() > blue.fwhm_arcsec()
    assert red.total_inner < blue.total_inner  # more light in the wings


def test_galaxy_stamp_holds_its_flux_and_shape_orientation():
    model = psfmod.psf_model("F606W")
    jac = np.array([[-0.05, 0.0], [0.0, 0.05]])  # x to the west, y to the north
    stamp, x0, y0 = psfmod.render_galaxy(model, x0=100.0, y0=100.0, flux=5000.0,
                                         jacobian_arcsec=jac, r_eff_arcsec=0.4, n=1.0,
                                         ellip=0.6, pa_deg=0.0)
    assert stamp.sum() == pytest.approx(5000.0, rel=1e-4)
    yy, xx = np.mgrid[0:stamp.shape[0], 0:stamp.shape[1]]
    dx, dy = xx + x0 - 100.0, yy + y0 - 100.0
    inner = np.hypot(dx, dy) < 15  # second moments without the PSF's far wings
    ixx = (stamp * dx**2)[inner].sum() / stamp[inner].sum()
    iyy = (stamp * dy**2)[inner].sum() / stamp[inner].sum()
    assert iyy > 2.0 * ixx  # elongated north-south, as pa = 0 says


def test_add_stamp_clips_at_the_image_edge():
    image = np.zeros((5, 5))
    psfmod.add_stamp(image, np.ones((3, 3)), -1, 3)
    assert image.sum() == 4.0 and image[3:5, 0:2].sum() == 4.0


def test_truth_catalog_columns_and_ranges():
    cat = draw_truth_catalog(np.random.default_rng(2), n_sources=300, center_ra_deg=10.0,
                             center_dec_deg=-5.0, radius_arcsec=100.0,
                             filters=("F606W", "F814W"))
    assert len(cat) == 300
    assert list(cat["id"]) == list(range(1, 301))
    assert set(cat["kind"]) == {"star", "galaxy"}
    for col in ("ra", "dec", "flux_F606W", "flux_F814W", "r_eff_arcsec", "sersic_n",
                "ellip", "pa_deg"):
        assert col in cat.colnames
    assert np.all(cat["flux_F606W"] > 0) and np.all(cat["flux_F814W"] > 0)
    xi, eta = w.tangent_plane(cat["ra"], cat["dec"], ra0_deg=10.0, dec0_deg=-5.0)
    assert np.hypot(xi, eta).max() * 3600 <= 100.0 + 1e-6
    gal = cat[cat["kind"] == "galaxy"]
    stars = cat[cat["kind"] == "star"]
    assert np.all(np.isfinite(gal["r_eff_arcsec"])) and np.all(np.isnan(stars["sersic_n"]))
    assert np.all((gal["ellip"] >= 0) & (gal["ellip"] < 1))


# ---------------------------------------------------------------- references and plan


def test_reference_names_look_like_crds_names_and_are_deterministic():
    name = refs.reference_name(1, "BIASFILE")
    assert re.fullmatch(r"[0-9a-z]{8}j_bia\.fits", name)
    assert refs.reference_name(1, "BIASFILE") == name
    assert refs.reference_name(2, "BIASFILE") != name
    assert refs.reference_name(1, "PFLTFILE", "F606W").endswith("j_pfl.fits")
    assert refs.reference_name(1, "SATUFILE").endswith("j_sat.fits")


def test_ccdtab_has_the_27_calacs_columns():
    hdul = refs.ccdtab_hdul("x_ccd.fits", date=mjd_to_datetime(60000).date())
    names = set(hdul[1].columns.names)
    needed = {"CCDAMP", "CCDCHIP", "CCDGAIN", "BINAXIS1", "BINAXIS2", "AMPX", "AMPY",
              "ATODSAT", "SATURATE", "OVRHFLS", "OVRHUFLS"}
    needed |= {f"{p}{a}" for p in ("CCDOFST", "CCDBIAS", "ATODGN", "READNSE") for a in "ABCD"}
    assert len(needed) == 27 and needed <= names
    assert sorted(hdul[1].data["CCDCHIP"]) == [1, 1, 2, 2]  # one row per era and chip
    assert hdul[0].header["FILETYPE"] == "CCD PARAMETERS"


def test_oscntab_matches_the_shared_geometry():
    hdul = refs.oscntab_hdul("x_osc.fits", date=mjd_to_datetime(60000).date())
    data = hdul[1].data
    assert len(hdul[1].columns) == 18
    for row in data:
        lay = chip_layout(int(row["CCDCHIP"]))
        assert (row["NX"], row["NY"]) == (RAW_NX, RAW_NY)
        assert (row["TRIMX1"], row["TRIMX2"]) == (24, 24)
        assert (row["TRIMY1"], row["TRIMY2"]) == (lay.trimy1, lay.trimy2)


def test_imphttab_interpolates_photflam_linearly_in_mjd(tmp_path):
    hdul = refs.imphttab_hdul("x_imp.fits", date=mjd_to_datetime(60000).date())
    assert hdul[0].header["NEXTEND"] == 3 and hdul[0].header["PARNUM"] == 1
    path = tmp_path / "x_imp.fits"
    hdul.writeto(path)
    with fits.open(path) as written:
        table = written["PHOTFLAM"]
        # Archive layout: lower-case names, variable-length arrays for the MJD grid.
        assert table.columns.names[:4] == ["obsmode", "datacol", "photflam", "photflam1"]
        assert table.columns["photflam1"].format.startswith("PD(")
        assert table.columns["par1values"].format.startswith("PD(")
        data = table.data
        row = data[list(data["obsmode"]).index("acs,wfc1,f606w,mjd#")]
        assert row["datacol"] == "PHOTFLAM1" and row["par1names"] == "MJD#"
        n = row["nelem1"]
        assert len(row["photflam1"]) == n == len(row["par1values"])
        value = np.interp(60000.0, row["par1values"], row["photflam1"])
        fixed = data[list(data["obsmode"]).index("acs,wfc1,f606w")]
        assert len(fixed["photflam1"]) == 0 and fixed["nelem1"] == 0
    info = FILTERS["F606W"]
    expected = info.photflam * (1 + info.sens_loss_per_year * (60000.0 - info.photflam_mjd)
                                / 365.25)
    assert value == pytest.approx(expected, rel=1e-9)


def test_bpixtab_archive_layout_and_rows_per_readout(tmp_path):
    defects = (det.Defect(chip=2, x=10, y=0, length=CHIP_NY, axis=2, response=0.0),
               det.Defect(chip=1, x=3000, y=7, length=1, axis=1, response=0.0))
    path = tmp_path / "x_bpx.fits"
    refs.bpixtab_hdul("x_bpx.fits", defects, date=mjd_to_datetime(60000).date()).writeto(path)
    with fits.open(path) as hdul:
        table = hdul[1]
        assert table.name == "BPX"
        for name in ("PIX1", "PIX2", "LENGTH", "AXIS", "VALUE", "CCDCHIP", "CCDGAIN"):
            assert table.columns[name].format == "I", name
        rows = [(r["CCDCHIP"], r["CCDAMP"], r["PIX1"], r["PIX2"], r["LENGTH"], r["AXIS"],
                 r["VALUE"], r["CCDGAIN"]) for r in table.data]
    # One-indexed; a full-frame row and a row for the amplifier that reads the defect.
    assert sorted(rows) == sorted([
        (1, "ABCD", 3001, 8, 1, 1, 4, -999), (1, "B", 3001, 8, 1, 1, 4, -999),
        (2, "ABCD", 11, 1, CHIP_NY, 2, 4, -999), (2, "C", 11, 1, CHIP_NY, 2, 4, -999)])


def test_empty_reference_extensions_are_bitpix_16_with_integer_pixvalue(tmp_path):
    flat = {1: np.ones((CHIP_NY, CHIP_NX)), 2: np.ones((CHIP_NY, CHIP_NX))}
    path = tmp_path / "x_pfl.fits"
    refs.flat_hdul("x_pfl.fits", flat, filter_name="F606W",
                   date=mjd_to_datetime(60000).date()).writeto(path)
    with fits.open(path) as hdul:
        for name in ("ERR", "DQ"):
            for ver in (1, 2):
                h = hdul[name, ver].header
                assert (h["BITPIX"], h["NAXIS"]) == (16, 0)
                assert type(h["PIXVALUE"]) is int and h["PIXVALUE"] == 0
                assert (h["NPIX1"], h["NPIX2"]) == (CHIP_NX, CHIP_NY)


def test_image_reference_rejects_wrong_shapes():
    bad = {1: np.zeros((10, 10)), 2: np.zeros((10, 10))}
    with pytest.raises(ValueError):
        refs.flat_hdul("x_pfl.fits", bad, filter_name="F606W",
                       date=mjd_to_datetime(60000).date())


def test_plan_visits_dates_rolls_pointings_and_errors():
    config = SimulationConfig(visits=3, exposures=3, filters=("F606W", "F814W"), seed=4)
    plan = plan_program(config)
    assert len(plan.visits) == 3
    roots = [e.rootname for e in plan.exposures()]
    assert len(set(roots)) == 18
    for v in plan.visits:
        for e in v.exposures:
            assert re.fullmatch(r"jd71" + f"{v.number:02d}" + r"[a-z][0-9a-z]q", e.rootname)
            assert e.rootname[:6] == v.visit_id
        assert {e.filter_name for e in v.exposures} == {"F606W", "F814W"}
        assert 5.0 <= np.hypot(*v.offset_arcsec) <= 20.0
        assert 0.2 <= np.hypot(v.wcs_error.dx_arcsec, v.wcs_error.dy_arcsec) <= 1.0
        assert abs(v.wcs_error.rotation_deg) <= 0.05
        steps = sorted({e.dither_px for e in v.exposures})
        assert steps == [(0.0, 0.0), (2.5, 1.5), (5.0, 3.0)]
    for a, b in zip(plan.visits[:-1], plan.visits[1:], strict=True):
        assert 9.5 <= b.start_mjd - a.start_mjd <= 41.0
        dpa = (b.pa_v3_deg - a.pa_v3_deg + 180.0) % 360.0 - 180.0
        assert 3.0 <= abs(dpa) <= 8.0
    starts = [e.expstart_mjd for e in plan.exposures()]
    assert starts == sorted(starts)
    assert mjd_to_datetime(plan.visits[0].start_mjd).date().isoformat() == "2024-06-01"
