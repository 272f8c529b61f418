"""Unit tests of the CCD calibration algorithms on tiny arrays with hand-worked answers."""

from __future__ import annotations

import numpy as np
import pytest

from hstred.acs import SM4_MJD
from hstred.ccd import steps
from hstred.ccd.reffiles import BadPixelRow, OverscanParameters


def frozen(*arrays):
    """Copies to compare against after a call (inputs must never change)."""
    return [a.copy() for a in arrays]


def assert_unchanged(originals, arrays):
    for before, after in zip(originals, arrays, strict=True):
        np.testing.assert_array_equal(before, after)


# ---------------------------------------------------------------------------- geometry


def test_split_amplifiers_orients_each_readout_corner_to_origin():
    image = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    amps = steps.split_amplifiers(image, 1)  # WFC1: A (left) and B (right) read at the top
    assert set(amps) == {"A", "B"}
    assert amps["A"][0, 0] == image[-1, 0]
    assert amps["B"][0, 0] == image[-1, -1]
    amps2 = steps.split_amplifiers(image, 2)  # WFC2: C and D read at row 0
    assert amps2["C"][0, 0] == image[0, 0]
    assert amps2["D"][0, 0] == image[0, -1]
    for chip, parts in ((1, amps), (2, amps2)):
        np.testing.assert_array_equal(steps.merge_amplifiers(parts, chip), image)


def test_cut_reference_uses_ltv_offsets():
    ref = np.arange(5 * 7).reshape(5, 7)
    cut = steps.cut_reference(ref, ref_ltv=(2, 1), target_shape=(3, 4), target_ltv=(0, 0))
    np.testing.assert_array_equal(cut, ref[1:4, 2:6])
    assert steps.cut_reference(ref, ref_ltv=(0, 0), target_shape=(5, 7), target_ltv=(3, 3)) is ref
    with pytest.raises(ValueError):
        steps.cut_reference(ref, ref_ltv=(5, 0), target_shape=(3, 4), target_ltv=(0, 0))


# ---------------------------------------------------------------------------- DQICORR


def test_flag_atod_saturation_sets_2048_at_or_above_threshold():
    raw = np.array([[100, 65534], [65535, 70000]], dtype=np.float32)
    dq = np.array([[0, 4], [0, 0]], dtype=np.int16)
    before = frozen(raw, dq)
    out = steps.flag_atod_saturation(raw, dq, atodsat_dn=65534)
    np.testing.assert_array_equal(out, [[0, 2052], [2048, 2048]])
    assert_unchanged(before, (raw, dq))


def test_flag_bad_pixels_shifts_by_ltv_and_clips_runs():
    dq = np.zeros((4, 6), dtype=np.int16)
    rows = [
        BadPixelRow(pix1=1, pix2=1, length=3, axis=1, value=4),     # row, trimmed (1,1)..(3,1)
        BadPixelRow(pix1=2, pix2=1, length=10, axis=2, value=16),   # column clipped at the edge
        BadPixelRow(pix1=50, pix2=1, length=2, axis=1, value=8),    # entirely off the array
        BadPixelRow(pix1=4, pix2=3, length=1, axis=1, value=32768),  # bit 15
    ]
    before = frozen(dq)
    out = steps.flag_bad_pixels(dq, rows, ltv=(2, 1))
    expected = np.zeros((4, 6), dtype=np.int32)
    expected[1, 2:5] |= 4
    expected[1:4, 3] |= 16
    expected[3, 5] |= 32768
    np.testing.assert_array_equal(out.view(np.uint16), expected)
    assert_unchanged(before, (dq,))


# ---------------------------------------------------------------------------- bias, gain


def test_subtract_bias_image_propagates_errors_and_dq():
    sci = np.array([[10.0, 20.0]], np.float32)
    err = np.array([[3.0, 0.0]], np.float32)
    dq = np.array([[1, 0]], np.int16)
    bsci, berr, bdq = (np.array([[1.0, 2.0]], np.float32), np.array([[4.0, 2.0]], np.float32),
                       np.array([[2, 8]], np.int16))
    before = frozen(sci, err, dq, bsci, berr, bdq)
    s, e, d = steps.subtract_bias_image(sci, err, dq, bsci, berr, bdq)
    np.testing.assert_allclose(s, [[9.0, 18.0]])
    np.testing.assert_allclose(e, [[5.0, 2.0]])
    np.testing.assert_array_equal(d, [[3, 8]])
    assert s.dtype == np.float32 and e.dtype == np.float32
    assert_unchanged(before, (sci, err, dq, bsci, berr, bdq))


def test_convert_to_electrons_per_amplifier():
    sci = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    err = np.ones_like(sci)
    s, e = steps.convert_to_electrons(sci, err, gain_left_e_per_dn=2.0, gain_right_e_per_dn=3.0,
                                      layout=steps.SerialLayout(boundary_col=2))
    np.testing.assert_allclose(s, [[2.0, 4.0, 9.0, 12.0]])
    np.testing.assert_allclose(e, [[2.0, 2.0, 3.0, 3.0]])
    np.testing.assert_array_equal(sci, [[1.0, 2.0, 3.0, 4.0]])


# ------------------------------------------------------------------------ bias shift, cross talk


def test_cross_talk_uses_left_to_right_update_order():
    sci = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    s = 9.1e-5
    out = steps.correct_cross_talk(sci)
    left0, left1 = 1 + 4 * s, 2 + 3 * s
    expected = [left0, left1, 3 + left1 * s, 4 + left0 * s]
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(sci, [[1.0, 2.0, 3.0, 4.0]])


def _bias_shift_loop(data, amp):
    """Direct transcription of the published recursion, one pixel at a time."""
    ny, nx = data.shape
    freq = 1000.0 / 22.0
    tau = {"A": 37.290251, "B": 36.180001, "C": 37.867770, "D": 42.461249}[amp]
    dsi = {"A": 2.9188919e-3, "B": 10.805754e-3, "C": 12.432145e-3, "D": 3.8596253e-3}[amp]
    ngap = int(freq * 3.212 + 0.5)
    square = data[ny - 11:ny - 1, 13:23].astype(np.float64).mean()
    stream = []
    for row in data.astype(np.float64):
        stream.extend(row)
        stream.extend([square] * ngap)
    factor = 1 - np.exp(-1 / (tau * freq))
    dc = [square * 0.3]
    for x in stream:
        dc.append(x * factor * 0.3 + (1 - factor) * dc[-1])
    corr = [stream[j] - dsi * dc[j + 1] - 10 / 22 * (dc[j + 1] - dc[j])
            for j in range(len(stream))]
    out = np.array(corr).reshape(ny, nx + ngap)[:, :nx]
    level = out[ny - 11:ny - 1, 13:23].mean()
    return out - level, level


def test_bias_shift_of_constant_image_leaves_zero():
    c = 1000.0
    amps = {"A": np.full((30, 30), c, np.float32)}
    out, levels = steps.correct_bias_shift(amps)
    # A flat stream keeps the DC level at c * 0.3, so the data become c (1 - dsi * 0.3).
    assert levels["A"] == pytest.approx(c * (1 - 2.9188919e-3 * 0.3), rel=1e-12)
    np.testing.assert_allclose(out["A"], 0.0, atol=1e-9)


def test_bias_shift_matches_pixel_by_pixel_recursion():
    rng = np.random.default_rng(3)
    data = (100 + rng.normal(0, 5, (24, 40))).astype(np.float32)
    data[5, 30] = 40000.0  # a bright pixel leaves a decaying trail
    amps = {"D": data}
    before = frozen(data)
    out, levels = steps.correct_bias_shift(amps)
    expected, level = _bias_shift_loop(data, "D")
    assert levels["D"] == pytest.approx(level, rel=1e-10)
    np.testing.assert_allclose(out["D"], expected, rtol=1e-6, atol=1e-3)
    assert_unchanged(before, (data,))


# ---------------------------------------------------------------------------- post-SM4 BLEVCORR


NY, NX = 60, 40  # 40 science rows + 20 virtual rows; 24 prescan + 16 science columns


def _amps(levels, signal=0.0):
    amps = {}
    for amp, level in levels.items():
        a = np.full((NY, NX), level, dtype=np.float32)
        a[:NY - 20, 24:] += signal
        amps[amp] = a
    return amps


def test_post_sm4_removes_per_amp_level():
    levels = {"A": 10.0, "B": 20.0, "C": 30.0, "D": 40.0}
    amps = _amps(levels, signal=5.0)
    before = frozen(*amps.values())
    out, result = steps.subtract_bias_level_post_sm4(amps)
    assert result.levels_e == pytest.approx(levels)
    assert result.meanblev("AB") == pytest.approx(15.0)
    for amp in levels:
        np.testing.assert_allclose(out[amp][:NY - 20, 24:], 5.0, atol=1e-5)
        np.testing.assert_allclose(out[amp][:, :24], 0.0, atol=1e-5)
    assert result.rows_skipped == 1  # row 0 is never used
    assert_unchanged(before, amps.values())


def test_post_sm4_removes_prescan_column_pattern_and_ignores_bad_rows():
    levels = {"A": 10.0, "B": 20.0, "C": 30.0, "D": 40.0}
    amps = _amps(levels)
    pattern = np.zeros(24)
    pattern[:3] = [6.0, -3.0, 1.5]  # columns 1-12 may differ from the 13-24 reference
    for a in amps.values():
        a[:, :24] += pattern
    # Row 7 of amp B holds a bright source (rejected: >100 e- above the amp mean), and
    # a glitch in its prescan that must not leak into the level.
    amps["B"][7, 24:] += 1000.0
    amps["B"][7, :24] += 50.0
    out, result = steps.subtract_bias_level_post_sm4(amps)
    assert result.levels_e == pytest.approx(levels, abs=1e-9)
    np.testing.assert_allclose(out["A"][:, :24], 0.0, atol=1e-5)
    np.testing.assert_allclose(out["B"][7, 24:], 1000.0, atol=1e-3)


def test_post_sm4_destripes_with_readout_time_interpolation():
    levels = {"A": 10.0, "B": 20.0, "C": 30.0, "D": 40.0}
    amps = _amps(levels)
    slope = 0.2  # e- per row, a drifting bias common to all amplifiers
    rows = np.arange(NY)[:, None]
    for a in amps.values():
        a += (slope * rows).astype(np.float32)
    out, result = steps.subtract_bias_level_post_sm4(amps)
    good_rows = np.arange(1, NY)
    mean_row = good_rows.mean()
    for amp, level in levels.items():
        assert result.levels_e[amp] == pytest.approx(level + slope * mean_row)
    # The stripe model at (i, j) is slope * (i + (j - 11.5) / (NX + 146) - mean_row), so a
    # pure row drift leaves -slope * (j - 11.5) / (NX + 146) in the interior rows.
    cols = np.arange(NX)
    expected = -slope * (cols - 11.5) / (NX + 146)
    for amp in levels:
        np.testing.assert_allclose(out[amp][2:NY - 2], np.broadcast_to(expected, (NY - 4, NX)),
                                   atol=1e-4)


# ---------------------------------------------------------------------------- pre-SM4 BLEVCORR


def _pre_sm4_chip():
    ny, nx = 30, 20  # rows 0-24 science, 25-29 virtual overscan; 3 overscan columns per side
    osc = OverscanParameters(trimx=(3, 3), trimy=(0, 5), vx=(3, 16), vy=(26, 28),
                             biassecta=(0, 2), biassectb=(17, 19))
    rows = np.arange(ny, dtype=np.float64)[:, None]
    sci = np.zeros((ny, nx)) + 100.0 + 0.5 * rows
    sci[:25, 3:17] += 7.0  # signal in the science region
    return sci.astype(np.float32), np.zeros((ny, nx), np.int16), osc


def test_pre_sm4_fits_overscan_level_per_row():
    sci, dq, osc = _pre_sm4_chip()
    before = frozen(sci, dq)
    out, result = steps.subtract_bias_level_pre_sm4(sci, dq, overscan=osc, ampx=7,
                                                    readnoise_e=(5.0, 5.0), default_bias_e=0.0,
                                                    sdqflags=0xFFFF)
    np.testing.assert_allclose(out[:25, 3:17], 7.0, atol=1e-4)
    # Overscan columns are left as they were.
    np.testing.assert_array_equal(out[:, :3], sci[:, :3])
    assert result.levels_e[0] == pytest.approx(100 + 0.5 * 12)
    assert result.meanblev == pytest.approx(106.0)
    assert_unchanged(before, (sci, dq))


def test_pre_sm4_rejects_overscan_outliers_and_flagged_pixels():
    sci, dq, osc = _pre_sm4_chip()
    sci[4, 0:3] += 1000.0   # cosmic ray in the overscan of row 4
    sci[9, 17] = 5000.0     # one flagged overscan pixel: excluded from row 9's median
    dq[9, 17] = 16
    out, _ = steps.subtract_bias_level_pre_sm4(sci, dq, overscan=osc, ampx=7,
                                               readnoise_e=(5.0, 5.0), default_bias_e=0.0,
                                               sdqflags=0xFFFF)
    np.testing.assert_allclose(out[:25, 3:17], 7.0, atol=1e-4)


def test_pre_sm4_virtual_overscan_drift_along_rows():
    sci, dq, osc = _pre_sm4_chip()
    g = 0.1  # e- per column, seen in the virtual overscan
    cols = np.arange(sci.shape[1])
    sci = sci + (g * cols).astype(np.float32)[None, :] * 1.0
    out, result = steps.subtract_bias_level_pre_sm4(sci, dq, overscan=osc, ampx=7,
                                                    readnoise_e=(5.0, 5.0), default_bias_e=0.0,
                                                    sdqflags=0xFFFF)
    assert result.drift_corrected
    # Left amp: overscan columns 0-2 (mean column 1) carry the row level; the drift is zero at
    # column 1, so every science pixel gets back exactly the 7 e- signal.
    np.testing.assert_allclose(out[:25, 3:10], 7.0, atol=1e-4)
    # Right amp: bias section 17-19 (zero at column 18).
    np.testing.assert_allclose(out[:25, 10:17], 7.0, atol=1e-4)


def test_pre_sm4_falls_back_to_default_bias_without_overscan_pixels():
    sci, dq, osc = _pre_sm4_chip()
    dq[:, :3] = 4
    dq[:, 17:] = 4
    out, result = steps.subtract_bias_level_pre_sm4(sci, dq, overscan=osc, ampx=7,
                                                    readnoise_e=(5.0, 5.0), default_bias_e=50.0,
                                                    sdqflags=0xFFFF)
    assert result.levels_e == pytest.approx((50.0, 50.0))
    np.testing.assert_allclose(out[0, 3:17], sci[0, 3:17] - 50.0)


# ---------------------------------------------------------------------------- DARKTIME, saturation


def test_compute_darktime_adds_overheads_only_after_sm4():
    kwargs = dict(overhead_flashed_s=22.0, overhead_unflashed_s=11.0)
    assert steps.compute_darktime(500.0, expstart_mjd=SM4_MJD + 1, flashed=False,
                                  **kwargs) == 511.0
    assert steps.compute_darktime(500.0, expstart_mjd=SM4_MJD + 1, flashed=True,
                                  **kwargs) == 522.0
    assert steps.compute_darktime(500.0, expstart_mjd=SM4_MJD - 1, flashed=True,
                                  **kwargs) == 500.0


def test_flag_full_well_saturation_only_inside_region():
    sci = np.array([[90.0, 90.0, 90.0], [50.0, 85.0, 80.0]], np.float32)
    sat = np.full_like(sci, 80.0)
    dq = np.zeros(sci.shape, np.int16)
    out = steps.flag_full_well_saturation(sci, dq, sat, region=(slice(0, 2), slice(1, 3)))
    np.testing.assert_array_equal(out, [[0, 256, 256], [0, 256, 0]])  # strictly above
    assert not dq.any()


def test_compute_ccd_error_adds_poisson_and_read_noise():
    sci = np.array([[16.0, -10.0, 9.0]], np.float32)
    err = np.array([[3.0, 3.0, 0.0]], np.float32)
    out = steps.compute_ccd_error(sci, err, readnoise_left_e=4.0, readnoise_right_e=1.0,
                                  layout=steps.SerialLayout(boundary_col=2))
    np.testing.assert_allclose(out, [[np.sqrt(41.0), 5.0, np.sqrt(10.0)]], rtol=1e-6)
    bias = steps.compute_ccd_error(sci, err, readnoise_left_e=4.0, readnoise_right_e=1.0,
                                   layout=steps.SerialLayout(boundary_col=2), bias_exposure=True)
    np.testing.assert_allclose(bias, [[4.0, 4.0, 1.0]])


# ---------------------------------------------------------------------------- SINKCORR


def test_flag_sink_pixels_follows_tail_until_it_drops_below_sink_value():
    column_map = np.array([0, -1, -5, 999, 10, 3, 8, 0], np.float32)
    sci_col = np.array([0, 0, 5, 0, 0, 0, 0, 0], np.float32)
    sink = np.stack([column_map, np.zeros(8, np.float32)], axis=1)
    sci = np.stack([sci_col, np.zeros(8, np.float32)], axis=1)
    dq = np.zeros(sci.shape, np.int16)
    out = steps.flag_sink_pixels(sci, dq, sink, readout_at_top=False)
    # downstream (-1), sink, then 999 and 10 exceed SCI = 5 at the sink; 3 ends the tail,
    # so 8 further up is not flagged.
    np.testing.assert_array_equal(out[:, 0] // 1024, [0, 1, 1, 1, 1, 0, 0, 0])
    assert not out[:, 1].any()
    # The same column read from the top: the walk starts at the other end.
    flipped = steps.flag_sink_pixels(sci[::-1], dq, sink[::-1], readout_at_top=True)
    np.testing.assert_array_equal(flipped[::-1, 0] // 1024, [0, 1, 1, 1, 1, 0, 0, 0])


def test_trim_overscan_returns_a_copy():
    a = np.arange(30).reshape(5, 6)
    t = steps.trim_overscan(a, trimx=(1, 2), trimy=(0, 1))
    np.testing.assert_array_equal(t, a[0:4, 1:4])
    t[0, 0] = -1
    assert a[0, 1] == 1


# ---------------------------------------------------------------------------- ACS2D


def test_subtract_dark_scales_by_darktime_and_reports_meandark():
    sci = np.full((2, 2), 100.0, np.float32)
    err = np.full((2, 2), 3.0, np.float32)
    dq = np.zeros((2, 2), np.int16)
    dark = np.array([[0.01, 0.02], [0.03, 1.0]], np.float32)
    derr = np.full((2, 2), 0.001, np.float32)
    ddq = np.array([[0, 0], [0, 16]], np.int16)
    before = frozen(sci, err, dq, dark, derr, ddq)
    s, e, d, meandark = steps.subtract_dark(sci, err, dq, dark, derr, ddq, darktime_s=400.0)
    np.testing.assert_allclose(s, [[96.0, 92.0], [88.0, -300.0]], rtol=1e-6)
    np.testing.assert_allclose(e, np.sqrt(9.0 + 0.4 ** 2), rtol=1e-6)
    np.testing.assert_array_equal(d, ddq)
    assert meandark == pytest.approx((4.0 + 8.0 + 12.0) / 3)  # flagged dark pixel excluded
    assert_unchanged(before, (sci, err, dq, dark, derr, ddq))


def test_subtract_flash_scales_by_flashdur():
    sci = np.full((1, 2), 50.0, np.float32)
    s, e, d, mean = steps.subtract_flash(sci, np.zeros_like(sci), np.zeros((1, 2), np.int16),
                                         np.array([[2.0, 4.0]], np.float32),
                                         np.zeros((1, 2), np.float32),
                                         np.zeros((1, 2), np.int16), flashdur_s=3.0)
    np.testing.assert_allclose(s, [[44.0, 38.0]])
    assert mean == pytest.approx(9.0)


def test_divide_flat_propagates_flat_error_and_flags_zero():
    sci = np.array([[100.0, 30.0]], np.float32)
    err = np.array([[10.0, 1.0]], np.float32)
    dq = np.array([[0, 0]], np.int16)
    flat = np.array([[2.0, 0.0]], np.float32)
    ferr = np.array([[0.1, 0.1]], np.float32)
    fdq = np.array([[4, 0]], np.int16)
    s, e, d = steps.divide_flat(sci, err, dq, flat, ferr, fdq)
    assert s[0, 0] == pytest.approx(50.0)
    # sqrt((10/2)^2 + (0.1 * 100 / 4)^2) = sqrt(25 + 6.25)
    assert e[0, 0] == pytest.approx(np.sqrt(31.25))
    assert s[0, 1] == 30.0 and e[0, 1] == 1.0
    np.testing.assert_array_equal(d, [[4, 512]])


@pytest.mark.parametrize(("f1", "f2", "expected"), [
    ("F606W", "CLEAR2L", "ACS WFC1 F606W MJD#56789.1235"),
    ("CLEAR1L", "F814W", "ACS WFC1 F814W MJD#56789.1235"),
    ("F606W", "POL60UV", "ACS WFC1 F606W POL_UV MJD#56789.1235"),
    ("FR656N", "CLEAR2L", "ACS WFC1 FR656N#6560 MJD#56789.1235"),
])
def test_build_photmode(f1, f2, expected):
    assert steps.build_photmode(detector="WFC", filter1=f1, filter2=f2,
                                expstart_mjd=56789.12346, lrfwave=6560.0) == expected


def test_compute_statistics_ignores_serious_flags_and_nonpositive_errors():
    sci = np.array([[10.0, 20.0, 30.0, 40.0]], np.float32)
    err = np.array([[1.0, 4.0, 0.0, 5.0]], np.float32)
    dq = np.array([[0, 0, 0, 16]], np.int16)
    stats = steps.compute_statistics(sci, err, dq, sdqflags=16)
    assert stats.ngoodpix == 2
    assert (stats.goodmin, stats.goodmax, stats.goodmean) == (10.0, 20.0, 15.0)
    assert (stats.snrmin, stats.snrmax, stats.snrmean) == (5.0, 10.0, 7.5)
    assert (stats.errmin, stats.errmax, stats.errmean) == (1.0, 4.0, 2.5)
    # When bit 16 is not serious the flagged pixel counts.
    assert steps.compute_statistics(sci, err, dq, sdqflags=8).ngoodpix == 3
