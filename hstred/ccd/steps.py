"""Pure array algorithms of ACS/WFC CCD calibration (calacs ACSCCD + ACS2D).

Every function takes arrays (and scalars) and returns new arrays (only
``split_amplifiers`` and ``cut_reference`` return views, as they say); inputs are
never modified. Arrays are numpy ``[row, column]``, 0-indexed. Raw-frame arrays
include the 24 prescan columns on each side and the 20 virtual-overscan rows;
"amplifier arrays" are one amplifier's half of a raw chip (2068 x 2072 for full
frame) flipped so that its readout corner is at ``[0, 0]`` (prescan in the
first 24 columns, virtual overscan in the last 20 rows), as calacs's
``make_amp_array`` does.

The behaviour follows STScI's hstcal (``pkg/acs/lib``), including its
documented quirks where they change numbers; each such place says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

from hstred.acs import SM4_MJD, quadrants
from hstred.ccd.reffiles import BadPixelRow, OverscanParameters

__all__ = [
    "DQ_ATOD_SATURATED",
    "DQ_CALIBDEFECT",
    "DQ_SATURATED",
    "DQ_SINK",
    "NBIAS_COLS",
    "NVIRTUAL_ROWS",
    "ImageStatistics",
    "PostSM4BiasLevel",
    "PreSM4BiasLevel",
    "SerialLayout",
    "build_photmode",
    "compute_ccd_error",
    "compute_darktime",
    "compute_statistics",
    "convert_to_electrons",
    "correct_bias_shift",
    "correct_cross_talk",
    "cut_reference",
    "divide_flat",
    "flag_atod_saturation",
    "flag_bad_pixels",
    "flag_full_well_saturation",
    "flag_sink_pixels",
    "merge_amplifiers",
    "split_amplifiers",
    "subtract_bias_image",
    "subtract_bias_level_post_sm4",
    "subtract_bias_level_pre_sm4",
    "subtract_dark",
    "subtract_flash",
    "trim_overscan",
]

#: DQ bits set by these steps (hstcal ``acsdq.h``).
DQ_SATURATED = 256
DQ_CALIBDEFECT = 512
DQ_SINK = 1024
DQ_ATOD_SATURATED = 2048

#: Physical prescan columns per amplifier and virtual-overscan rows (full frame).
NBIAS_COLS = 24
NVIRTUAL_ROWS = 20

# Post-SM4 readout timing (hstcal blev_funcs_postsm4.c): serial pixel rate 1000/22 per
# microsecond and a 3.212 us parallel shift give 146 virtual pixels per row.
_SERIAL_FREQ = 1000.0 / 22.0
_PARALLEL_SHIFT_US = 3.212
NGAP_PIX = int(_SERIAL_FREQ * _PARALLEL_SHIFT_US + 0.5)


@dataclass(frozen=True)
class SerialLayout:
    """Where one chip's left/right amplifiers meet in an array.

    ``boundary_col`` is the first column read by the right amplifier (raw frame:
    AMPX + LTV1 = 2072 for full frame).
    """

    boundary_col: int


def _oriented(view: np.ndarray, flip_y: bool, flip_x: bool) -> np.ndarray:
    if flip_y:
        view = view[::-1, :]
    if flip_x:
        view = view[:, ::-1]
    return view


def split_amplifiers(image: np.ndarray, chip: int) -> dict[str, np.ndarray]:
    """Readout-oriented views of the two amplifier halves of a raw chip array.

    The halves are split at the middle column (calacs uses ``nx / 2``), each
    flipped so the amplifier is at ``[0, 0]``. The returned arrays are views.
    """
    half = image.shape[1] // 2
    out = {}
    for quad, cols in zip(quadrants(chip), (slice(0, half), slice(half, None)), strict=True):
        out[quad.amp] = _oriented(image[:, cols], quad.flip_y, quad.flip_x)
    return out


def merge_amplifiers(amps: Mapping[str, np.ndarray], chip: int, *,
                     dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`split_amplifiers`: a new chip array from the amplifier arrays."""
    quads = quadrants(chip)
    left = amps[quads[0].amp]
    ny, half = left.shape
    out = np.empty((ny, 2 * half), dtype=dtype)
    for quad, cols in zip(quads, (slice(0, half), slice(half, None)), strict=True):
        _oriented(out[:, cols], quad.flip_y, quad.flip_x)[...] = amps[quad.amp]
    return out


def cut_reference(ref: np.ndarray, *, ref_ltv: Sequence[float], target_shape: tuple[int, int],
                  target_ltv: Sequence[float]) -> np.ndarray:
    """The part of a reference array that overlays a science array.

    Both arrays place the detector with their LTV1/LTV2 (pixel = detector + LTV),
    so a science pixel ``(y, x)`` sits at reference pixel
    ``(y + ref_ltv2 - target_ltv2, x + ref_ltv1 - target_ltv1)``.
    """
    if ref.shape == tuple(target_shape):
        return ref
    x0 = round(ref_ltv[0] - target_ltv[0])
    y0 = round(ref_ltv[1] - target_ltv[1])
    ny, nx = target_shape
    if x0 < 0 or y0 < 0 or y0 + ny > ref.shape[0] or x0 + nx > ref.shape[1]:
        raise ValueError(f"reference {ref.shape} (LTV {tuple(ref_ltv)}) does not cover an "
                         f"array {tuple(target_shape)} (LTV {tuple(target_ltv)})")
    return ref[y0:y0 + ny, x0:x0 + nx]


# ---------------------------------------------------------------------------- DQICORR


def _as_dq(value: int) -> np.int16:
    """A 16-bit flag value as the int16 the DQ arrays use (bit 15 wraps to negative)."""
    return np.array(int(value) & 0xFFFF, dtype=np.uint16).view(np.int16)[()]


def flag_atod_saturation(raw_dn: np.ndarray, dq: np.ndarray, *, atodsat_dn: float) -> np.ndarray:
    """DQ with bit 2048 set where the raw value (DN) is at or above ATODSAT."""
    out = dq.copy()
    out[raw_dn >= atodsat_dn] |= DQ_ATOD_SATURATED
    return out


def flag_bad_pixels(dq: np.ndarray, rows: Sequence[BadPixelRow], *,
                    ltv: Sequence[float]) -> np.ndarray:
    """DQ with the BPIXTAB ``rows`` OR-ed in.

    Table coordinates are 1-indexed in the trimmed frame; ``ltv`` (LTV1, LTV2 of
    the array) moves them into its frame. Runs falling partly off the array are
    clipped, runs entirely off it are ignored (hstcal ``DQINormal``).
    """
    out = dq.copy()
    ny, nx = out.shape
    ltv1, ltv2 = int(ltv[0]), int(ltv[1])
    for row in rows:
        x0 = row.pix1 - 1 + ltv1
        y0 = row.pix2 - 1 + ltv2
        if row.axis == 1:
            lo, hi = x0, x0 + row.length - 1
            if hi < 0 or lo >= nx or y0 < 0 or y0 >= ny:
                continue
            out[y0, max(lo, 0):min(hi, nx - 1) + 1] |= _as_dq(row.value)
        else:
            lo, hi = y0, y0 + row.length - 1
            if x0 < 0 or x0 >= nx or hi < 0 or lo >= ny:
                continue
            out[max(lo, 0):min(hi, ny - 1) + 1, x0] |= _as_dq(row.value)
    return out


# ---------------------------------------------------------------------------- BIASCORR


def _compact(a: np.ndarray) -> np.ndarray:
    """A constant broadcast view (e.g. an empty reference ERR) as a 0-d array, so that
    arithmetic on it creates no full-size temporaries."""
    if a.ndim and a.size and not any(a.strides):
        return np.asarray(a.flat[0])
    return a


def _quadrature(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(a^2 + b^2) as a new float32 array, with few temporaries."""
    out = np.square(a, dtype=np.float32)
    out += np.square(_compact(b), dtype=np.float32)
    return np.sqrt(out, out=out)


def subtract_bias_image(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, bias_sci: np.ndarray,
                        bias_err: np.ndarray, bias_dq: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subtract a bias image (same units, DN): errors in quadrature, DQ OR-ed."""
    return (np.subtract(sci, bias_sci, dtype=np.float32), _quadrature(err, bias_err),
            dq | bias_dq)


def convert_to_electrons(sci: np.ndarray, err: np.ndarray, *, gain_left_e_per_dn: float,
                         gain_right_e_per_dn: float, layout: SerialLayout
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Multiply DN by each amplifier's gain: columns before ``layout.boundary_col``
    belong to the left amplifier (including its prescan), the rest to the right."""
    gain = np.empty(sci.shape[1], dtype=np.float32)
    gain[:layout.boundary_col] = gain_left_e_per_dn
    gain[layout.boundary_col:] = gain_right_e_per_dn
    return (sci * gain).astype(np.float32), (err * gain).astype(np.float32)


# ---------------------------------------------------------------------------- BLEVCORR


def _magic_square_mean(amp: np.ndarray) -> float:
    # The 10 x 10 "fat zero" patch in the prescan/virtual-overscan corner:
    # rows 2057-2066 and columns 13-22 of a full-frame amplifier array.
    ny = amp.shape[0]
    return float(np.mean(amp[ny - 11:ny - 1, 13:23], dtype=np.float64))


#: Bias-shift constants per amplifier A, B, C, D (hstcal ``bias_shift_corr``; ISR ACS 2012-02).
_BIAS_SHIFT_TIME_CONST_US = {"A": 37.290251, "B": 36.180001, "C": 37.867770, "D": 42.461249}
_BIAS_SHIFT_DC_RATIO = {"A": 0.3, "B": 0.3, "C": 0.3, "D": 0.3}
_BIAS_SHIFT_DSI_SENS = {"A": 2.9188919e-3, "B": 10.805754e-3, "C": 12.432145e-3,
                        "D": 3.8596253e-3}
_CROSS_TALK_SCALE = 9.1e-5


def correct_bias_shift(amps: Mapping[str, np.ndarray]
                       ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Remove the signal-dependent bias shift of dual-slope-integrator readouts.

    Each amplifier array (electrons, readout orientation) is read as one serial
    stream with ``NGAP_PIX`` virtual pixels (filled with the fat-zero level)
    after every row; the true DC level follows a first-order recursive filter of
    that stream, and the data are corrected for the DSI response to it. The
    post-correction fat-zero level is then subtracted.

    Returns the corrected arrays (float32) and the fat-zero level removed from each.
    """
    out, levels = {}, {}
    for amp, data in amps.items():
        ny, nx = data.shape
        square = _magic_square_mean(data)
        stream = np.empty((ny, nx + NGAP_PIX), dtype=np.float64)
        stream[:, :nx] = data
        stream[:, nx:] = square
        stream = stream.ravel()
        factor = 1.0 - np.exp(-1.0 / (_BIAS_SHIFT_TIME_CONST_US[amp] * _SERIAL_FREQ))
        ratio = _BIAS_SHIFT_DC_RATIO[amp]
        dc0 = square * ratio
        # dc[j] = x[j-1] * factor * ratio + (1 - factor) * dc[j-1], dc[0] = dc0
        dc_next, _ = scipy.signal.lfilter([factor * ratio], [1.0, -(1.0 - factor)], stream,
                                          zi=[(1.0 - factor) * dc0])
        dc_prev = np.concatenate(([dc0], dc_next[:-1]))
        corrected = (stream - _BIAS_SHIFT_DSI_SENS[amp] * dc_next
                     - (10.0 / 22.0) * (dc_next - dc_prev))
        corrected = corrected.reshape(ny, nx + NGAP_PIX)[:, :nx]
        level = _magic_square_mean(corrected)
        out[amp] = (corrected - level).astype(np.float32)
        levels[amp] = level
    return out, levels


def correct_cross_talk(sci: np.ndarray) -> np.ndarray:
    """Remove amplifier cross-talk on one raw chip: each pixel gains 9.1e-5 times
    its mirror pixel across the row (hstcal ``cross_talk_corr``).

    calacs updates the row in place from left to right, so the right half sees the
    already-corrected left half; that order is kept.
    """
    nx = sci.shape[1]
    half = (nx + 1) // 2
    out = sci.astype(np.float32, copy=True)
    mirrored = sci[:, ::-1]
    out[:, :half] += (mirrored[:, :half].astype(np.float64) * _CROSS_TALK_SCALE).astype(np.float32)
    left_mirror = out[:, :nx - half][:, ::-1]
    out[:, half:] += (left_mirror.astype(np.float64) * _CROSS_TALK_SCALE).astype(np.float32)
    return out


@dataclass(frozen=True)
class PostSM4BiasLevel:
    """What post-SM4 bias-level subtraction removed (electrons)."""

    levels_e: dict[str, float]
    rows_fixed: int
    rows_skipped: int

    def meanblev(self, amps: str) -> float:
        """MEANBLEV of a chip read by ``amps`` (mean of its amplifiers' levels)."""
        return float(np.mean([self.levels_e[a] for a in amps]))


def _clipped_column_means(values: np.ndarray, *, sigma: float, iterations: int) -> np.ndarray:
    """Per-column sigma-clipped means as hstcal ``calc_mean_std`` computes them.

    Each iteration keeps points within ``sigma`` times the previous standard
    deviation of the previous mean; the new standard deviation is measured
    around the previous mean (hstcal's convention).
    """
    n = values.shape[0]
    mean = values.mean(axis=0)
    std = np.sqrt(((values - mean) ** 2).sum(axis=0) / (n - 1))
    for _ in range(iterations):
        keep = np.abs(values - mean) <= sigma * std
        nused = keep.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            new_mean = np.where(keep, values, 0.0).sum(axis=0) / nused
            std = np.sqrt(np.where(keep, (values - mean) ** 2, 0.0).sum(axis=0) / (nused - 1))
        mean = new_mean
    return mean


def _prescan_column_offsets(amp: np.ndarray) -> np.ndarray:
    """Per prescan column offset from the row level (hstcal ``bias_col_mean_std``).

    Each row's prescan has the mean of its columns 13-24 removed; rows whose first
    six science columns reach 50000 e- are skipped; each column's 5-sigma clipped
    mean (4 iterations) is returned.
    """
    prescan = amp[:, :NBIAS_COLS].astype(np.float64)
    rowmean = prescan[:, 12:NBIAS_COLS].mean(axis=1)
    resid = prescan - rowmean[:, None]
    ok = np.all(amp[:, NBIAS_COLS:NBIAS_COLS + 6] < 50000, axis=1)
    return _clipped_column_means(resid[ok], sigma=5.0, iterations=4)


def _find_good_rows(amp: np.ndarray, prescan: np.ndarray) -> np.ndarray:
    """Rows usable for the bias level and destriping (hstcal ``find_good_rows``).

    ``prescan`` is the amplifier's prescan after the column offsets are removed.
    A row is rejected when its mean science level (above the mean of its and the
    previous row's prescan) is more than 100 e- from the amplifier's mean, or when
    any of its first six science columns exceeds 70000 e-. The first row is never
    used.
    """
    ny = amp.shape[0]
    nsci_rows = ny - NVIRTUAL_ROWS
    science = amp[:, NBIAS_COLS:]
    nsci_cols = science.shape[1]
    bias_mean = prescan[:nsci_rows].mean()
    amp_mean = science[:nsci_rows].sum(dtype=np.float64) / (nsci_cols * nsci_rows) - bias_mean
    row_sum = prescan.sum(axis=1)
    row_ref = np.empty(ny)
    row_ref[0] = row_sum[0] / NBIAS_COLS
    row_ref[1:] = (row_sum[1:] + row_sum[:-1]) / (2 * NBIAS_COLS)
    row_means = science.sum(axis=1, dtype=np.float64) / nsci_cols - row_ref
    # hstcal takes abs() of this double through an int conversion (truncation).
    too_far = np.abs(np.trunc(row_means - amp_mean)) > 100
    saturated = np.any(amp[:, NBIAS_COLS:NBIAS_COLS + 6] > 70000, axis=1)
    good = ~too_far & ~saturated
    good[0] = False
    return good


def _clipped_prescan_level(prescan: np.ndarray, good_rows: np.ndarray) -> float:
    """Mean prescan level with iterative 6x mean-absolute-deviation clipping
    (at least 6 and at most 11 passes; hstcal ``calc_bias_mean_std``)."""
    good = np.broadcast_to(good_rows[:, None], prescan.shape).copy()
    ntot1 = int(good.sum())
    nits = 0
    while True:
        ntot2 = ntot1
        nits += 1
        vals = prescan[good]
        mean = vals.mean() if vals.size else 0.0
        mad = np.abs(vals - mean).mean() if vals.size else 0.0
        good &= ~(np.abs(prescan - mean) > 6.0 * mad)
        ntot1 = int(good.sum())
        if not (nits <= 5 or (nits <= 10 and ntot1 < ntot2)):
            break
    return float(prescan[good].sum() / ntot1) if ntot1 else 0.0


@dataclass(frozen=True)
class _StripeModel:
    """Row-stripe levels interpolated along the serial readout (see ``_stripe_model``).

    For column ``j`` the model at row ``i`` is ``base[g, i] + slope[g, i] * t[j]`` with
    ``t[j] = (j - 11.5) / (nx + 146)`` and ``g = 0`` for columns before the first with
    ``t >= 0`` (their interpolation starts one row lower), ``g = 1`` after.
    """

    base: np.ndarray   # (2, ny)
    slope: np.ndarray  # (2, ny)
    t: np.ndarray      # (nx,)
    split: int         # first column of group 1

    def subtract_from(self, arr: np.ndarray) -> None:
        """Subtract the model from a float64 amplifier array in place."""
        for g, cols in enumerate((slice(0, self.split), slice(self.split, None))):
            arr[:, cols] -= self.base[g][:, None]
            arr[:, cols] -= self.slope[g][:, None] * self.t[None, cols]


def _stripe_model(prescans: Sequence[np.ndarray], good_rows: Sequence[np.ndarray],
                  nx: int) -> tuple[_StripeModel, int, int]:
    """Row-stripe model shared by the four amplifiers (hstcal ``remove_stripes``).

    Per row, each amplifier's prescan mean is used when that amplifier's row is
    good and its prescan standard deviation is below 15 e-; the row level is the
    mean over such amplifiers when at least two remain (else 0). The level at
    column ``j`` of row ``i`` is interpolated linearly at row
    ``i + (j - 11.5) / (nx + 146)``, following the serial readout time along the
    row (rows beyond the ends are extrapolated from the first/last two rows).
    """
    ny = prescans[0].shape[0]
    means = np.stack([p.mean(axis=1) for p in prescans])
    stds = np.stack([p.std(axis=1, ddof=1) for p in prescans])
    usable = np.stack(good_rows) & (stds < 15)
    count = usable.sum(axis=0)
    rowmeans = np.zeros(ny)
    fixed = count >= 2
    rowmeans[fixed] = np.where(usable, means, 0.0).sum(axis=0)[fixed] / count[fixed]
    t = (np.arange(nx) - 11.5) / (nx + NGAP_PIX)
    split = int(np.searchsorted(t, 0.0))  # floor(i + t) is i - 1 before, i after
    rows = np.arange(ny)
    base, slope = np.empty((2, ny)), np.empty((2, ny))
    for g, shift in enumerate((-1, 0)):
        lower = np.clip(rows + shift, 0, ny - 2)
        slope[g] = rowmeans[lower + 1] - rowmeans[lower]
        base[g] = rowmeans[lower] + (rows - lower) * slope[g]
    return (_StripeModel(base=base, slope=slope, t=t, split=split), int(fixed.sum()),
            int((~fixed).sum()))


def subtract_bias_level_post_sm4(amps: Mapping[str, np.ndarray]
                                 ) -> tuple[dict[str, np.ndarray], PostSM4BiasLevel]:
    """Post-SM4 full-frame bias level and stripe removal (hstcal ``doDestripe``).

    ``amps`` maps the four amplifier letters to their readout-oriented arrays in
    electrons (prescan in columns 0-23, virtual overscan in the last 20 rows).
    Steps, per amplifier: remove each prescan column's offset from the row level;
    find the usable rows; take the clipped mean prescan level over usable rows and
    subtract it everywhere. Then subtract the row-stripe model built from all four
    amplifiers' prescans.

    Returns new float32 amplifier arrays and the levels removed.
    """
    offsets, prescans, good_rows, levels = {}, {}, {}, {}
    for amp, data in amps.items():
        offsets[amp] = _prescan_column_offsets(data)
        prescans[amp] = data[:, :NBIAS_COLS].astype(np.float64) - offsets[amp]
        good_rows[amp] = _find_good_rows(data, prescans[amp])
    for amp in amps:
        levels[amp] = _clipped_prescan_level(prescans[amp], good_rows[amp])
        prescans[amp] -= levels[amp]
    letters = list(amps)
    nx = amps[letters[0]].shape[1]
    stripes, fixed, skipped = _stripe_model(
        [prescans[a] for a in letters], [good_rows[a] for a in letters], nx)
    out = {}
    for amp in letters:
        arr = amps[amp].astype(np.float64)
        arr[:, :NBIAS_COLS] -= offsets[amp]
        arr -= levels[amp]
        stripes.subtract_from(arr)
        out[amp] = arr.astype(np.float32)
        del arr
    return out, PostSM4BiasLevel(levels_e=levels, rows_fixed=fixed, rows_skipped=skipped)


@dataclass(frozen=True)
class PreSM4BiasLevel:
    """What pre-SM4 overscan subtraction removed from one chip (electrons)."""

    levels_e: tuple[float, float]  # left, right amplifier (mean over rows)
    drift_corrected: bool

    @property
    def meanblev(self) -> float:
        return float(np.mean(self.levels_e))


def _linear_fit(x: np.ndarray, y: np.ndarray, *, epsilon: float) -> tuple[float, float] | None:
    """Unweighted least-squares (slope, intercept), or None when singular/empty."""
    n = x.size
    if n < 1:
        return None
    sx, sy, sxy, sxx = x.sum(), y.sum(), (x * y).sum(), (x * x).sum()
    d = sxx - sx * sx / n
    if d == 0 or -epsilon < d < epsilon:
        return None
    xmean, ymean = sx / n, sy / n
    slope = (sxy - xmean * ymean * n) / d
    return slope, ymean - slope * xmean


def _clean_bias_fit(values: np.ndarray, valid: np.ndarray, readnoise_e: float) -> np.ndarray:
    """Reject high outliers among per-row overscan levels (hstcal ``cleanBiasFit``).

    First above mean + 3 sigma (sigma capped at the Poisson value sqrt(mean)),
    then above the new mean + 3 read-noise. The thresholds pass through C's
    integer ``abs``, i.e. they are truncated toward zero and made positive.
    """
    keep = valid.copy()
    if not keep.any():
        return keep
    mean = values[keep].mean()
    sdev = np.sqrt(((values[keep] - mean) ** 2).sum() / (keep.sum() - 1)) if keep.sum() > 1 \
        else np.nan
    with np.errstate(invalid="ignore"):
        poisson = np.sqrt(mean)
    sdev = min(sdev, poisson)
    threshold = abs(np.trunc(3.0 * sdev + mean)) if np.isfinite(sdev) else np.inf
    keep &= ~(values > threshold)
    if not keep.any():
        return keep
    mean = values[keep].mean()
    keep &= ~(values > abs(np.trunc(3.0 * readnoise_e + mean)))
    return keep


def _virtual_overscan_slope(sci: np.ndarray, good: np.ndarray, vx: tuple[int, int],
                            vy: tuple[int, int]) -> float | None:
    """Slope (e- per column) of the column medians of the virtual overscan."""
    ny, nx = sci.shape
    if vx[1] <= vx[0] or vy[1] <= vy[0]:
        return None
    x0, x1 = max(vx[0], 0), min(vx[1], nx - 1)
    y0, y1 = max(vy[0], 0), min(vy[1], ny - 1)
    block = np.where(good[y0:y1 + 1, x0:x1 + 1], sci[y0:y1 + 1, x0:x1 + 1], np.nan)
    cols = np.arange(x0, x1 + 1)
    has = np.any(good[y0:y1 + 1, x0:x1 + 1], axis=0)
    if not has.any():
        return None
    medians = np.nanmedian(block[:, has].astype(np.float64), axis=0)
    midcol = (vx[0] + vx[1]) // 2
    fit = _linear_fit((cols[has] - midcol).astype(np.float64), medians, epsilon=0.0)
    return None if fit is None else fit[0]


def subtract_bias_level_pre_sm4(sci: np.ndarray, dq: np.ndarray, *, overscan: OverscanParameters,
                                ampx: int, readnoise_e: tuple[float, float],
                                default_bias_e: float, sdqflags: int
                                ) -> tuple[np.ndarray, PreSM4BiasLevel]:
    """Pre-SM4 overscan bias subtraction of one raw chip (hstcal ``doBlev``).

    For each amplifier (left uses BIASSECTA, right BIASSECTB): the median of the
    good overscan pixels of every science row, high outliers rejected, is fitted
    with a straight line in row number; the slope of the virtual-overscan column
    medians (VX/VY) gives a drift along the row, zero at the middle of the bias
    section. ``level(row) + drift(col)`` is subtracted from the amplifier's
    science pixels; the overscan itself is left as is. If no line can be fitted,
    ``default_bias_e`` (CCDBIAS x gain) is used.

    hstcal evaluates the row fit at raw row numbers although it was fitted in
    trimmed row numbers (an offset of TRIMY1 rows on WFC1); kept for fidelity.
    """
    ny, nx = sci.shape
    (tx1, tx2), (ty1, ty2) = overscan.trimx, overscan.trimy
    good = (dq.astype(np.int32) & (sdqflags & 0xFFFF)) == 0
    do_drift = not (overscan.vy[0] <= 0 and overscan.vy[1] <= 0)
    out = sci.astype(np.float32, copy=True)
    begy, endy = ty1, ny - ty2
    sizey = endy - begy
    middle = sizey // 2
    levels = []
    bsa, bsb = overscan.biassecta, overscan.biassectb
    drift_slope = (_virtual_overscan_slope(sci, good, overscan.vx, overscan.vy)
                   if do_drift else None)
    drifted = drift_slope is not None
    slope_drift = 0.0 if drift_slope is None else drift_slope
    for side in (0, 1):
        if bsa[1] > 0 and bsb[1] > 0:
            sect = list(bsa if side == 0 else bsb)
        else:
            sect = list(bsb if bsa[1] == 0 else bsa)
        sect[0] = max(sect[0], 0)
        sect[1] = min(sect[1], nx - 1)
        begx = tx1 + (ampx if side == 1 else 0)
        endx = (ampx + tx1) if (side == 0 and ampx != 0) else nx - tx2
        endx = min(endx, nx)
        sizex = endx - begx
        zero_col = (sect[0] + sect[1]) / 2.0
        average_drift = (sizex / 2.0 - zero_col) * slope_drift if do_drift else 0.0
        # Per-row overscan medians of good pixels.
        if sect[1] != 0:
            block = sci[begy:endy, sect[0]:sect[1] + 1].astype(np.float64)
            ok = good[begy:endy, sect[0]:sect[1] + 1]
        else:
            block = np.empty((sizey, 0))
            ok = np.zeros((sizey, 0), bool)
        valid = ok.any(axis=1)
        values = np.zeros(sizey)
        if valid.any():
            values[valid] = np.nanmedian(np.where(ok, block, np.nan)[valid], axis=1)
        keep = _clean_bias_fit(values, valid, readnoise_e[side])
        rows_out = np.arange(sizey, dtype=np.float64) - middle
        fit = _linear_fit(rows_out[keep], values[keep], epsilon=float(np.finfo(np.float32).tiny))
        slope, intercept = (0.0, default_bias_e) if fit is None else fit
        raw_rows = np.arange(begy, endy, dtype=np.float64)
        biaslevel = (raw_rows - middle) * slope + intercept
        deval = (np.arange(begx, endx, dtype=np.float64) - zero_col) * slope_drift
        region = out[begy:endy, begx:endx]
        out[begy:endy, begx:endx] = (region - biaslevel[:, None] - deval[None, :]).astype(
            np.float32)
        levels.append(float(np.mean(biaslevel + average_drift)))
    return out, PreSM4BiasLevel(levels_e=(levels[0], levels[1]), drift_corrected=drifted)


# ---------------------------------------------------------------------------- DARKTIME


def compute_darktime(darktime_s: float, *, expstart_mjd: float, flashed: bool,
                     overhead_flashed_s: float, overhead_unflashed_s: float) -> float:
    """DARKTIME for full-frame data: after SM4, plus the CCDTAB overhead
    (OVRHFLS when post-flashed, else OVRHUFLS); unchanged before SM4."""
    if expstart_mjd >= SM4_MJD:
        return float(darktime_s) + (overhead_flashed_s if flashed else overhead_unflashed_s)
    return float(darktime_s)


# ---------------------------------------------------------------------------- saturation, noise


def flag_full_well_saturation(sci: np.ndarray, dq: np.ndarray, saturation_e: np.ndarray, *,
                              region: tuple[slice, slice]) -> np.ndarray:
    """DQ with bit 256 where ``sci`` exceeds the full-well image, inside ``region``
    (the science pixels; overscan is never flagged)."""
    out = dq.copy()
    out[region][sci[region] > saturation_e[region]] |= DQ_SATURATED
    return out


def compute_ccd_error(sci: np.ndarray, err: np.ndarray, *, readnoise_left_e: float,
                      readnoise_right_e: float, layout: SerialLayout,
                      bias_exposure: bool = False) -> np.ndarray:
    """ERR = sqrt(max(SCI, 0) + readnoise^2 + ERR^2) in electrons, per amplifier.

    For a bias exposure (TARGNAME starting with BIAS) calacs sets ERR to the
    read noise alone.
    """
    rn = np.empty(sci.shape[1], dtype=np.float32)
    rn[:layout.boundary_col] = readnoise_left_e
    rn[layout.boundary_col:] = readnoise_right_e
    if bias_exposure:
        return np.broadcast_to(rn, sci.shape).astype(np.float32)
    out = np.maximum(sci, np.float32(0), dtype=np.float32)
    out += rn * rn
    out += np.square(err, dtype=np.float32)
    return np.sqrt(out, out=out)


def flag_sink_pixels(sci: np.ndarray, dq: np.ndarray, sink_map: np.ndarray, *,
                     readout_at_top: bool) -> np.ndarray:
    """DQ with bit 1024 on sink pixels and their tails (hstcal ``SinkDetect``).

    ``sink_map`` (SNKCFILE, same frame as ``sci``): values < -1 mark sink pixels,
    -1 the pixel next to a sink on the amplifier side, positive values the
    upstream tail thresholds. Columns are walked away from the readout amplifier;
    tail pixels are flagged while their threshold exceeds the science value at
    the sink pixel.
    """
    out = dq.copy()
    ny, nx = sci.shape
    keep_going = np.zeros(nx, dtype=bool)
    sink_value = np.zeros(nx, dtype=np.float32)
    rows = range(ny - 1, -1, -1) if readout_at_top else range(ny)
    for j in rows:
        ref = sink_map[j]
        if not ref.any():
            keep_going[:] = False
            continue
        neg = ref < 0
        pos = ref > 0
        keep_going |= neg
        at_sink = ref < -1
        sink_value[at_sink] = sci[j, at_sink]
        tail = pos & keep_going
        above = ref > sink_value
        flag = neg | (tail & above)
        keep_going &= ~(tail & ~above)
        keep_going &= neg | pos
        out[j, flag] |= DQ_SINK
    return out


def trim_overscan(array: np.ndarray, *, trimx: tuple[int, int],
                  trimy: tuple[int, int]) -> np.ndarray:
    """A copy of ``array`` without ``trimx``/``trimy`` columns/rows at each end."""
    ny, nx = array.shape
    return array[trimy[0]:ny - trimy[1], trimx[0]:nx - trimx[1]].copy()


# ---------------------------------------------------------------------------- ACS2D


def _subtract_scaled(sci, err, dq, ref_sci, ref_err, ref_dq, scale, sdqflags):
    scaled = np.multiply(ref_sci, np.float32(scale), dtype=np.float32)
    good = (ref_dq.astype(np.int32) & (sdqflags & 0xFFFF)) == 0
    mean = float(scaled[good].mean(dtype=np.float64)) if good.any() else 0.0
    new_sci = np.subtract(sci, scaled, dtype=np.float32)
    del scaled
    new_err = _quadrature(err, np.multiply(_compact(ref_err), np.float32(scale),
                                           dtype=np.float32))
    return new_sci, new_err, dq | ref_dq, mean


def subtract_dark(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, dark_sci: np.ndarray,
                  dark_err: np.ndarray, dark_dq: np.ndarray, *, darktime_s: float,
                  sdqflags: int = 0xFFFF) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Subtract dark (e-/s) x DARKTIME; errors in quadrature, DQ OR-ed.

    Also returns MEANDARK: the mean scaled dark (e-) over pixels whose dark DQ
    has no serious (``sdqflags``) bit set.
    """
    return _subtract_scaled(sci, err, dq, dark_sci, dark_err, dark_dq, darktime_s, sdqflags)


def subtract_flash(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, flash_sci: np.ndarray,
                   flash_err: np.ndarray, flash_dq: np.ndarray, *, flashdur_s: float,
                   sdqflags: int = 0xFFFF) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Subtract post-flash (e-/s) x FLASHDUR; also returns MEANFLSH (e-)."""
    return _subtract_scaled(sci, err, dq, flash_sci, flash_err, flash_dq, flashdur_s, sdqflags)


def divide_flat(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, flat_sci: np.ndarray,
                flat_err: np.ndarray, flat_dq: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Divide by a flat field (hstcal ``div1d``).

    ERR = sqrt((ERR/F)^2 + (ERR_F * SCI / F^2)^2); DQ OR-ed with the flat's DQ.
    Where F = 0 the pixel is left unchanged and flagged 512.
    """
    zero = flat_sci == 0
    has_zero = bool(zero.any())
    f = np.where(zero, np.float32(1), flat_sci) if has_zero else flat_sci
    new_sci = np.divide(sci, f, dtype=np.float32)
    # ERR^2 = (ERR / F)^2 + (ERR_F * SCI / F^2)^2
    new_err = np.divide(err, f, dtype=np.float32)
    np.square(new_err, out=new_err)
    term = np.multiply(_compact(flat_err), new_sci, dtype=np.float32)
    term /= f
    np.square(term, out=term)
    new_err += term
    del term
    np.sqrt(new_err, out=new_err)
    if has_zero:
        new_sci[zero] = sci[zero]
        new_err[zero] = err[zero]
    new_dq = dq | flat_dq
    new_dq[zero] |= DQ_CALIBDEFECT
    return new_sci, new_err, new_dq


def _photmode_filter(name: str, lrfwave: float) -> str | None:
    name = name.strip().upper()
    if not name or name.startswith(("N/A", "CLEAR")):
        return None
    if name.startswith("POL"):
        return "POL_UV" if "UV" in name else "POL_V"
    if name.startswith("FR"):
        return f"{name}#{lrfwave:.4g}"
    return name


def build_photmode(*, detector: str, filter1: str, filter2: str, expstart_mjd: float,
                   obstype: str = "", lrfwave: float = -1.0) -> str:
    """PHOTMODE as calacs writes it, e.g. ``'ACS WFC1 F606W MJD#56000.1234'``.

    CLEAR and N/A filters are dropped, polarisers become POL_UV/POL_V, ramp filters
    carry ``#LRFWAVE``; WFC uses WFC1 for both chips.
    """
    parts = ["ACS"]
    det = detector.strip().upper()
    parts.append({"SBC": "SBC", "HRC": "HRC", "WFC": "WFC1"}.get(det, det))
    if obstype.strip().upper().startswith("CORON"):
        parts.append("CORON")
    for name in (filter1, filter2):
        token = _photmode_filter(name, lrfwave)
        if token:
            parts.append(token)
    parts.append(f"MJD#{expstart_mjd:0.4f}")
    return " ".join(parts)


@dataclass(frozen=True)
class ImageStatistics:
    """Statistics of good pixels (no serious DQ bit, ERR > 0), calacs ``doStat``."""

    ngoodpix: int
    goodmin: float
    goodmax: float
    goodmean: float
    snrmin: float
    snrmax: float
    snrmean: float
    errmin: float
    errmax: float
    errmean: float


def compute_statistics(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, *,
                       sdqflags: int = 0xFFFF) -> ImageStatistics:
    """NGOODPIX, GOODMIN/MAX/MEAN, SNRMIN/MAX/MEAN (and the ERR equivalents).

    Good pixels have no bit of ``sdqflags`` set in DQ and ERR > 0. With no good
    pixel, ``ngoodpix`` is 0 and the other values are NaN.
    """
    good = ((dq.astype(np.int32) & (sdqflags & 0xFFFF)) == 0) & (err > 0)
    n = int(good.sum())
    if n == 0:
        nan = float("nan")
        return ImageStatistics(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    s = sci[good]
    e = err[good]
    del good
    snr = s.astype(np.float64)
    snr /= e
    return ImageStatistics(
        ngoodpix=n,
        goodmin=float(s.min()), goodmax=float(s.max()),
        goodmean=float(s.sum(dtype=np.float64) / n),
        snrmin=float(snr.min()), snrmax=float(snr.max()), snrmean=float(snr.sum() / n),
        errmin=float(e.min()), errmax=float(e.max()),
        errmean=float(e.sum(dtype=np.float64) / n),
    )
