"""The ACS/WFC CCD model: quantum efficiency, dark current, defects, saturation,
cosmic rays, bias and readout.

Units and conventions
---------------------
* Trimmed chip arrays are 2048 x 4096 ``[y, x]`` in electrons (e-) or e-/s;
  raw-sized arrays are 2068 x 4144 and laid out as :mod:`hstred.acs` says.
* The quantum-efficiency (QE) map multiplies the photons collected by a pixel;
  it averages about one and holds the large-scale response, pixel-to-pixel
  variations, dust motes and the injected low-response columns.
* Dark current accumulates for ``DARKTIME + OVRHUFLS`` seconds.
* Charge beyond a pixel's full well (3 % above its SATUFILE level, e-) bleeds
  equally up and down its column.  A-to-D saturation clips at 65535 DN.
* Bias (DN) = BIASFILE frame + a per-exposure amplifier offset + row stripes
  common to all four amplifiers of a readout row (post-SM4 electronics); the
  prescan columns and virtual-overscan rows hold bias, stripes and read noise
  only.
* The post-SM4 electronics (JWROTYPE 'DS_int', gain 2) add amplifier
  cross-talk (-9.1e-5 x the mirror pixel) and the dual-slope-integrator bias
  shift (ACS ISR 2012-02), which calacs's BLEVCORR removes.
* Before SM4 (2002-2007, :data:`PRE_SM4_DETECTOR`, gain 1) there are no stripes,
  cross-talk or bias shift; the bias level drifts linearly along rows and
  columns instead (:func:`bias_drift`), as the pre-SM4 overscan fit assumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import signal, special

from hstred.acs import (
    AMP_BOUNDARY_RAW,
    CHIP_NX,
    CHIP_NY,
    PRESCAN,
    RAW_NX,
    RAW_NY,
    SM4_MJD,
    chip_layout,
)
from hstred.simulate.config import FILTERS
from hstred.simulate.rng import rng_for

__all__ = [
    "DetectorParams",
    "DEFAULT_DETECTOR",
    "PRE_SM4_DETECTOR",
    "ERA_DETECTORS",
    "detector_for_date",
    "bias_drift",
    "superbias",
    "Defect",
    "BAD_PIXEL_DQ",
    "HOT_PIXEL_DQ",
    "draw_defects",
    "defect_mask",
    "qe_map",
    "dark_rate_map",
    "saturation_map",
    "bias_frame",
    "cosmic_ray_image",
    "bleed_saturated",
    "stripe_pattern",
    "stripe_levels",
    "readout_rows",
    "read_out_chip",
    "add_readout_electronics",
    "CROSS_TALK",
]

#: DQ value of injected bad detector pixels/columns (BPIXTAB VALUE).
BAD_PIXEL_DQ = 4
#: DQ value of hot pixels in the dark reference files.
HOT_PIXEL_DQ = 16
_WFC_PIXEL_CM = 15.0e-4


@dataclass(frozen=True)
class DetectorParams:
    """Electronics and CCD parameters used by the simulator (also written to CCDTAB).

    The defaults are typical post-SM4 gain-2 values of the four amplifiers (CEB-R
    electronics read with the dual-slope integrator, JWROTYPE 'DS_int');
    :data:`PRE_SM4_DETECTOR` holds the 2002-2007 set-up.  ``dark_e_per_s_2009``/
    ``dark_growth_per_year`` give the median dark rate's linear rise since 2009.5.
    ``jwrotype`` is the raw header's JWROTYPE (None: the keyword is absent).
    ``bias_offset_e``, ``bias_row_drift_e`` and ``bias_column_drift_e`` are the rms
    of a chip's bias-level offset and of its linear drift along the rows and the
    columns (end to end) in one exposure, e- (:func:`bias_drift`), which pre-SM4
    calibration fits from the overscan; ``bias_offset_rms_dn`` is the post-SM4
    per-amplifier offset.
    """

    gain_e_per_dn: dict = field(default_factory=lambda: {
        "A": 2.02, "B": 1.886, "C": 2.017, "D": 2.011})
    read_noise_e: dict = field(default_factory=lambda: {
        "A": 4.35, "B": 3.75, "C": 4.05, "D": 5.05})
    bias_dn: dict = field(default_factory=lambda: {
        "A": 4221.2, "B": 4029.7, "C": 4441.7, "D": 4631.5})
    ccdgain: float = 2.0
    ccdofst: int = 1
    atodsat_dn: int = 65535
    #: Nominal full well (CCDTAB SATURATE), e-.
    saturate_e: float = 84700.0
    #: Mean and spread of the per-pixel saturation level (SATUFILE), e-.
    saturation_mean_e: float = 77400.0
    saturation_spread_e: float = 2500.0
    #: Charge a pixel holds before spilling, relative to its SATUFILE level.
    full_well_over_satufile: float = 1.03
    ovrhufls_s: float = 3.8
    ovrhfls_s: float = 22.3
    #: Difference DARKTIME - EXPTIME written in raw headers.
    darktime_overhead_s: float = 3.2
    stripe_rms_e: float = 0.9
    bias_offset_rms_dn: float = 1.5
    dark_e_per_s_2009: float = 0.004
    dark_growth_per_year: float = 0.0004
    hot_threshold_e_per_s: float = 0.08
    hot_fraction: float = 0.006
    warm_fraction: float = 0.03
    #: Fraction of a chip's hot pixels that change from one visit to another.
    hot_turnover: float = 0.15
    cosmic_rays_per_cm2_s: float = 1.2
    era: str = "post-SM4"
    jwrotype: str | None = "DS_int"
    #: Amplifier cross-talk and the DSI bias shift (the post-SM4 CEB-R electronics).
    dual_slope_integrator: bool = True
    #: Whether the BIASFILE written holds the amplifiers' bias levels (``bias_dn``).
    superbias_holds_level: bool = True
    bias_offset_e: float = 0.0
    bias_row_drift_e: float = 0.0
    bias_column_drift_e: float = 0.0

    def dark_median_e_per_s(self, mjd: float) -> float:
        years = (mjd - 55012.0) / 365.25  # since 2009-07-01
        return self.dark_e_per_s_2009 + self.dark_growth_per_year * max(years, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_DETECTOR = DetectorParams()

#: The ACS/WFC set-up of March 2002 - January 2007 (original CCD electronics box).
#: GAIN=1 was the common WFC setting then.  Per-amplifier gains and read noise at
#: gain 1 follow the ACS Instrument Handbook of that time (Cycle 15, table 4.2;
#: ACS ISR 2004-01), amplifier A's read noise after its June 2003 rise (~5.6 e-);
#: values rounded, not read from an archive CCDTAB.  CCDOFST 3 is the offset calacs
#: assumes when a header has none (hstcal getacskeys.c).  The bias levels (DN) are
#: illustrative.  A-to-D saturation (65535 DN ~ 65500 e-) comes
#: before the full well at gain 1.  calacs adds no DARKTIME overhead before SM4,
#: so OVRHFLS/OVRHUFLS are 0.  There are no post-SM4 row stripes, DSI bias shift or
#: cross-talk correction; the raw header has no JWROTYPE.  The bias level drifts a
#: little along the rows and columns, and calibration fits it from the physical
#: prescan (BIASSECTA/B) and the virtual overscan (VX/VY).  That fit rejects outlying
#: rows with a scatter capped at the Poisson value of the overscan level (hstcal
#: cleanBiasFit), which presumes the whole level (~2000 e-) is still there after
#: BIASCORR, as with the archive's superbiases: so the BIASFILE is written without the
#: amplifier levels (:func:`superbias`).
PRE_SM4_DETECTOR = DetectorParams(
    gain_e_per_dn={"A": 1.000, "B": 0.972, "C": 1.011, "D": 1.018},
    read_noise_e={"A": 5.57, "B": 4.70, "C": 5.18, "D": 4.80},
    bias_dn={"A": 2206.4, "B": 2420.9, "C": 2292.3, "D": 2505.1},
    ccdgain=1.0,
    ccdofst=3,
    ovrhufls_s=0.0,
    ovrhfls_s=0.0,
    stripe_rms_e=0.0,
    bias_offset_rms_dn=0.0,
    superbias_holds_level=False,
    era="pre-SM4",
    jwrotype=None,
    dual_slope_integrator=False,
    bias_offset_e=1.5,
    bias_row_drift_e=2.0,
    bias_column_drift_e=1.0,
)

#: One detector set-up per simulated era (written together into the CCDTAB).
ERA_DETECTORS: tuple[DetectorParams, ...] = (PRE_SM4_DETECTOR, DEFAULT_DETECTOR)


def detector_for_date(mjd: float) -> DetectorParams:
    """The electronics of an exposure starting at ``mjd``: pre- or post-SM4."""
    return DEFAULT_DETECTOR if mjd >= SM4_MJD else PRE_SM4_DETECTOR


@dataclass(frozen=True)
class Defect:
    """An injected low-response run of pixels along a column (AXIS 2) or row (AXIS 1).

    ``x``, ``y`` are 0-indexed FLT coordinates of the first pixel; BPIXTAB
    stores them 1-indexed.  ``response`` multiplies the QE.
    """

    chip: int
    x: int
    y: int
    length: int
    axis: int
    response: float
    dq: int = BAD_PIXEL_DQ

    def to_dict(self) -> dict:
        return asdict(self)


def draw_defects(seed: int) -> tuple[Defect, ...]:
    """Dead and weak columns and a few dead pixels on each chip."""
    out: list[Defect] = []
    for chip in (2, 1):
        rng = rng_for(seed, "defects", chip)
        cols = rng.choice(np.arange(30, CHIP_NX - 30), size=6, replace=False)
        for k, x in enumerate(sorted(int(c) for c in cols)):
            if k % 3 == 0:  # dead over the whole column
                out.append(Defect(chip, x, 0, CHIP_NY, 2, float(rng.uniform(0.01, 0.08))))
            else:  # weak over part of the column
                length = int(rng.integers(200, 1500))
                y0 = int(rng.integers(0, CHIP_NY - length))
                out.append(Defect(chip, x, y0, length, 2, float(rng.uniform(0.3, 0.6))))
        for _ in range(12):
            x, y = int(rng.integers(0, CHIP_NX)), int(rng.integers(0, CHIP_NY))
            out.append(Defect(chip, x, y, 1, 1, float(rng.uniform(0.01, 0.05))))
    return tuple(out)


def defect_mask(defects: tuple[Defect, ...], chip: int) -> np.ndarray:
    """uint8 mask (1 = injected defect) of a trimmed chip."""
    mask = np.zeros((CHIP_NY, CHIP_NX), dtype=np.uint8)
    for d in defects:
        if d.chip != chip:
            continue
        if d.axis == 2:
            mask[d.y:d.y + d.length, d.x] = 1
        else:
            mask[d.y, d.x:d.x + d.length] = 1
    return mask


def _smooth_field(rng: np.random.Generator, *, n_modes: int, amplitude: float,
                  shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> np.ndarray:
    """A smooth random field of rms about ``amplitude`` from separable cosine modes."""
    ny, nx = shape
    x = np.arange(nx) / nx
    y = np.arange(ny) / ny
    params = [(rng.uniform(0.2, 2.5, size=2), rng.uniform(0.0, 2.0 * np.pi, size=2),
               rng.normal(0.0, amplitude * np.sqrt(4.0 / n_modes))) for _ in range(n_modes)]
    cols = np.stack([a * np.cos(2 * np.pi * k[1] * y + ph[1]) for k, ph, a in params], axis=1)
    rows = np.stack([np.cos(2 * np.pi * k[0] * x + ph[0]) for k, ph, _ in params], axis=0)
    return cols @ rows  # sum of the modes' outer products in one matrix product


def _dust_motes(rng: np.random.Generator, *, n: int, depth_scale: float) -> np.ndarray:
    """Multiplicative dust-mote (ring-shaped shadow) pattern of a trimmed chip."""
    out = np.ones((CHIP_NY, CHIP_NX))
    for _ in range(n):
        cx, cy = rng.uniform(0, CHIP_NX), rng.uniform(0, CHIP_NY)
        radius = rng.uniform(12.0, 35.0)
        depth = rng.uniform(0.01, 0.04) * depth_scale
        half = int(radius * 1.6) + 2
        x0, y0 = int(cx) - half, int(cy) - half
        yy, xx = np.mgrid[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1]
        r = np.hypot(xx - cx, yy - cy) / radius
        shadow = depth * np.exp(-0.5 * ((r - 0.8) / 0.25) ** 2)
        ys = slice(max(y0, 0), min(y0 + 2 * half + 1, CHIP_NY))
        xs = slice(max(x0, 0), min(x0 + 2 * half + 1, CHIP_NX))
        out[ys, xs] *= 1.0 - shadow[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return out


def qe_map(seed: int, chip: int, filter_name: str, defects: tuple[Defect, ...]) -> np.ndarray:
    """Relative quantum efficiency (mean ~1) of a trimmed chip in a filter, float64."""
    common_rng = rng_for(seed, "qe-common", chip)
    filt_rng = rng_for(seed, "qe-filter", chip, filter_name)
    blue = 6000.0 / FILTERS[filter_name].pivot_angstrom
    qe = 1.0 + _smooth_field(common_rng, n_modes=12, amplitude=0.02)
    qe += _smooth_field(filt_rng, n_modes=8, amplitude=0.012 * blue)
    qe *= _dust_motes(rng_for(seed, "dust", chip), n=20, depth_scale=blue)
    qe *= 1.0 + 0.005 * common_rng.standard_normal(size=qe.shape, dtype=np.float32)
    qe *= 1.0 + 0.002 * filt_rng.standard_normal(size=qe.shape, dtype=np.float32)
    for d in defects:
        if d.chip != chip:
            continue
        if d.axis == 2:
            qe[d.y:d.y + d.length, d.x] *= d.response
        else:
            qe[d.y, d.x:d.x + d.length] *= d.response
    return qe


def dark_rate_map(seed: int, chip: int, *, visit: int, mjd: float,
                  params: DetectorParams = DEFAULT_DETECTOR) -> np.ndarray:
    """Noise-free dark current (e-/s) of a trimmed chip during a visit, float32.

    Most hot pixels persist from visit to visit; ``hot_turnover`` of them are
    replaced (annealed away / newly created) in each visit.
    """
    median = params.dark_median_e_per_s(mjd)
    base_rng = rng_for(seed, "dark", chip)
    rate = median * (1.0 + _smooth_field(base_rng, n_modes=6, amplitude=0.08))
    npix = CHIP_NX * CHIP_NY
    n_hot = int(params.hot_fraction * npix)
    n_warm = int(params.warm_fraction * npix)
    flat = rate.ravel()
    warm_idx = base_rng.choice(npix, size=n_warm, replace=False)
    flat[warm_idx] += np.exp(base_rng.uniform(np.log(0.02), np.log(0.075), size=n_warm))
    hot_idx = base_rng.choice(npix, size=n_hot, replace=False)
    hot_rate = np.exp(base_rng.uniform(np.log(0.09), np.log(4.0), size=n_hot))
    visit_rng = rng_for(seed, "dark-visit", chip, visit)
    keep = visit_rng.uniform(size=n_hot) >= params.hot_turnover
    n_new = int(n_hot - keep.sum())
    new_idx = visit_rng.choice(npix, size=n_new, replace=False)
    new_rate = np.exp(visit_rng.uniform(np.log(0.09), np.log(4.0), size=n_new))
    flat[hot_idx[keep]] += hot_rate[keep]
    flat[new_idx] += new_rate
    return rate.astype(np.float32)


def saturation_map(seed: int, chip: int, params: DetectorParams = DEFAULT_DETECTOR) -> np.ndarray:
    """Per-pixel saturation level (e-) of a raw-sized chip, float32 (the SATUFILE)."""
    rng = rng_for(seed, "saturation", chip)
    smooth = _smooth_field(rng, n_modes=8, amplitude=params.saturation_spread_e / 2.0,
                           shape=(RAW_NY, RAW_NX))
    noise = rng.standard_normal(size=(RAW_NY, RAW_NX), dtype=np.float32)
    noise *= params.saturation_spread_e / 6.0
    return (params.saturation_mean_e + smooth + noise).astype(np.float32)


def _amp_columns(chip: int) -> tuple[tuple[str, slice], tuple[str, slice]]:
    left, right = chip_layout(chip).amps
    return (left, slice(0, AMP_BOUNDARY_RAW)), (right, slice(AMP_BOUNDARY_RAW, RAW_NX))


def readout_rows(chip: int) -> np.ndarray:
    """Readout order index of each raw row (0 = first row read by the amplifiers)."""
    rows = np.arange(RAW_NY)
    return rows if not chip_layout(chip).trimy1 else rows[::-1]


def bias_frame(seed: int, chip: int, params: DetectorParams = DEFAULT_DETECTOR) -> np.ndarray:
    """Raw-sized superbias (DN, float32): amplifier levels and fixed 2-D structure.

    Structure: a column pattern (0.4 DN rms), a decaying ramp over the first
    ~150 rows read (2 DN), a gentle gradient along the serial direction and
    pixel-to-pixel fixed-pattern noise (0.3 DN).
    """
    rng = rng_for(seed, "bias", chip)
    out = np.empty((RAW_NY, RAW_NX))
    order = readout_rows(chip).astype(float)
    ramp = 2.0 * np.exp(-order / 150.0)
    for amp, cols in _amp_columns(chip):
        ncol = cols.stop - cols.start
        # Distance from the amplifier in the serial direction (pixels read first = 0).
        serial = np.arange(ncol, dtype=float)
        if cols.start != 0:
            serial = serial[::-1]
        column_pattern = rng.normal(0.0, 0.4, size=ncol) + 0.8 * serial / ncol
        out[:, cols] = params.bias_dn[amp] + column_pattern[None, :] + ramp[:, None]
    out += 0.3 * rng.standard_normal(size=out.shape, dtype=np.float32)
    return out.astype(np.float32)


def superbias(frame_dn: np.ndarray, chip: int, *,
              params: DetectorParams = DEFAULT_DETECTOR) -> np.ndarray:
    """The BIASFILE array of a chip (DN, float32) from its :func:`bias_frame`: without
    the amplifiers' ``bias_dn`` levels unless ``params.superbias_holds_level``."""
    if params.superbias_holds_level:
        return frame_dn
    out = np.array(frame_dn, dtype=np.float32, copy=True)
    for amp, cols in _amp_columns(chip):
        out[:, cols] -= np.float32(params.bias_dn[amp])
    return out


def cosmic_ray_image(rng: np.random.Generator, *, exptime_s: float,
                     params: DetectorParams = DEFAULT_DETECTOR,
                     shape: tuple[int, int] = (CHIP_NY, CHIP_NX)) -> tuple[np.ndarray, int]:
    """Charge (e-) deposited by cosmic rays in a trimmed chip, and the number of events.

    Events arrive at ``cosmic_rays_per_cm2_s`` over the chip area, with
    isotropic directions (cos^2 of the incidence angle uniform) through a
    12 um thick sensitive layer; the charge per um of path follows a Moyal
    (Landau-like) law (most probable ~70 e-/um, so a median event leaves about
    1000 e-), 5 % of events are heavy ions with 3-10 times more; the charge
    diffuses over neighbouring pixels (sigma 0.45 pixel).
    """
    ny, nx = shape
    area_cm2 = nx * ny * _WFC_PIXEL_CM**2
    n_events = int(rng.poisson(params.cosmic_rays_per_cm2_s * area_cm2 * exptime_s))
    if n_events == 0:
        return np.zeros(shape), 0
    thickness_um = 12.0
    pixel_um = _WFC_PIXEL_CM * 1e4
    x0 = rng.uniform(-0.5, nx - 0.5, n_events)
    y0 = rng.uniform(-0.5, ny - 0.5, n_events)
    phi = rng.uniform(0.0, 2.0 * np.pi, n_events)
    cos_t = np.sqrt(rng.uniform(0.0004, 1.0, n_events))
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    length_px = np.minimum(thickness_um * tan_t / pixel_um, 300.0)
    path_um = thickness_um / cos_t
    per_um = np.clip(70.0 + 12.0 * _moyal_standard(rng, n_events), 40.0, None)
    heavy = rng.uniform(size=n_events) < 0.05
    per_um = np.where(heavy, per_um * rng.uniform(3.0, 10.0, n_events), per_um)
    charge = np.minimum(per_um * path_um, 6.0e4)
    n_pts = np.maximum(np.ceil(length_px / 0.3).astype(int), 1) + 1
    event = np.repeat(np.arange(n_events), n_pts)
    first = np.repeat(np.cumsum(n_pts) - n_pts, n_pts)
    frac = (np.arange(event.size) - first) / np.maximum(n_pts[event] - 1, 1) - 0.5
    px = x0[event] + frac * length_px[event] * np.cos(phi[event])
    py = y0[event] + frac * length_px[event] * np.sin(phi[event])
    q = charge[event] / n_pts[event]
    image = _splat_gaussian(px, py, q, shape=shape, sigma_px=0.45)
    return image, n_events


def _moyal_standard(rng: np.random.Generator, n: int) -> np.ndarray:
    # If Z is standard normal, -ln(Z^2) follows the standard Moyal law (mode 0).
    z = rng.standard_normal(n)
    return -np.log(z**2)


def _splat_gaussian(px: np.ndarray, py: np.ndarray, q: np.ndarray, *, shape: tuple[int, int],
                    sigma_px: float) -> np.ndarray:
    """Deposit charges ``q`` at (px, py) spread by a pixel-integrated Gaussian (4x4)."""
    ny, nx = shape
    ix = np.floor(px).astype(np.int64)
    iy = np.floor(py).astype(np.int64)
    fx, fy = px - ix, py - iy
    offs = np.array([-1, 0, 1, 2])
    s = sigma_px * np.sqrt(2.0)

    def weights(f: np.ndarray) -> np.ndarray:
        edges_hi = (offs[None, :] + 0.5 - f[:, None]) / s
        edges_lo = (offs[None, :] - 0.5 - f[:, None]) / s
        w = 0.5 * (special.erf(edges_hi) - special.erf(edges_lo))
        return w / w.sum(axis=1, keepdims=True)

    wx, wy = weights(fx), weights(fy)
    # All 16 neighbour deposits of all points in a single weighted histogram.
    yy = iy[:, None, None] + offs[None, :, None]
    xx = ix[:, None, None] + offs[None, None, :]
    weight = q[:, None, None] * wy[:, :, None] * wx[:, None, :]
    ok = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
    flat_index = (yy * nx + xx)[ok]
    total = np.bincount(flat_index, weights=weight[ok], minlength=ny * nx)
    return total.reshape(shape)


def bleed_saturated(charge: np.ndarray, full_well: np.ndarray) -> np.ndarray:
    """Return a copy of ``charge`` with charge above ``full_well`` bled along columns.

    Each run of over-full pixels in a column is capped at the full well and its
    excess is shared equally between the pixels above and below it, filling
    them up to their own full well in turn; charge pushed past the chip edge is
    lost.  Charge and full well are in electrons, arrays ``[y, x]``.
    """
    out = np.array(charge, dtype=np.float64, copy=True)
    over = out > full_well
    if not over.any():
        return out
    for col in np.flatnonzero(over.any(axis=0)):
        c = out[:, col]
        w = np.asarray(full_well[:, col], dtype=np.float64)
        rows = np.flatnonzero(c > w)
        # Contiguous runs of over-full pixels.
        breaks = np.flatnonzero(np.diff(rows) > 1)
        starts = np.concatenate(([rows[0]], rows[breaks + 1]))
        stops = np.concatenate((rows[breaks], [rows[-1]]))
        for a, b in zip(starts, stops, strict=True):
            seg = slice(a, b + 1)
            excess = float(np.sum(np.maximum(c[seg] - w[seg], 0.0)))
            if excess <= 0.0:
                continue
            c[seg] = np.minimum(c[seg], w[seg])
            _fill(c, w, np.arange(b + 1, c.size), excess / 2.0)
            _fill(c, w, np.arange(a - 1, -1, -1), excess / 2.0)
        out[:, col] = c
    return out


def _fill(c: np.ndarray, w: np.ndarray, order: np.ndarray, amount: float) -> None:
    """Fill pixels ``order`` of column ``c`` up to ``w`` with ``amount`` e- (in place)."""
    if order.size == 0 or amount <= 0.0:
        return
    room = np.maximum(w[order] - c[order], 0.0)
    filled = np.cumsum(room)
    k = int(np.searchsorted(filled, amount))
    if k >= order.size:
        c[order] += room
        return
    c[order[:k]] += room[:k]
    c[order[k]] += amount - (filled[k - 1] if k > 0 else 0.0)


#: Dual-slope-integrator (DSI) bias shift of the post-SM4 electronics, per amplifier
#: (ACS ISR 2012-02; the constants calacs's BLEVCORR uses for JWROTYPE='DS_int').
DSI_TIME_CONSTANT_US = {"A": 37.290251, "B": 36.180001, "C": 37.867770, "D": 42.461249}
DSI_DC_RATIO = 0.3
DSI_SENSITIVITY = {"A": 2.9188919e-3, "B": 10.805754e-3, "C": 12.432145e-3, "D": 3.8596253e-3}
#: Serial pixels per microsecond and the parallel-shift time between rows.
SERIAL_PIXELS_PER_US = 1000.0 / 22.0
PARALLEL_SHIFT_US = 3.212
#: Amplifier cross-talk: each pixel loses this fraction of its mirror pixel's signal.
CROSS_TALK = 9.1e-5


def _amp_views(image: np.ndarray, chip: int) -> dict[str, np.ndarray]:
    """Readout-ordered views (amplifier at [0, 0]) of a raw chip's two amplifier halves."""
    out = {}
    halves = (slice(0, AMP_BOUNDARY_RAW), slice(AMP_BOUNDARY_RAW, RAW_NX))
    flip_y = chip_layout(chip).trimy1 > 0  # WFC1 is read from the top
    for k, (amp, cols) in enumerate(zip(chip_layout(chip).amps, halves, strict=True)):
        view = image[:, cols]
        if flip_y:
            view = view[::-1, :]
        if k == 1:  # the right amplifier reads from the last column
            view = view[:, ::-1]
        out[amp] = view
    return out


def _fat_zero(amp_view: np.ndarray) -> float:
    # Mean of the 10 x 10 prescan patch read just before the end of the frame.
    ny = amp_view.shape[0]
    return float(np.mean(amp_view[ny - 11:ny - 1, 13:23], dtype=np.float64))


def _dsi_response(measured: np.ndarray, amp: str) -> np.ndarray:
    """Signal the DSI adds to each pixel of a readout-ordered amplifier array (e-).

    The amplifier's DC level follows a first-order recursive filter of the serial
    stream (rows separated by the parallel-shift gap, which reads the fat-zero
    level); the DSI output shifts by ``sensitivity x DC`` plus a term in the DC
    change per pixel.
    """
    ny, nx = measured.shape
    ngap = int(SERIAL_PIXELS_PER_US * PARALLEL_SHIFT_US + 0.5)
    fat_zero = _fat_zero(measured)
    stream = np.empty((ny, nx + ngap))
    stream[:, :nx] = measured
    stream[:, nx:] = fat_zero
    stream = stream.ravel()
    factor = 1.0 - np.exp(-1.0 / (DSI_TIME_CONSTANT_US[amp] * SERIAL_PIXELS_PER_US))
    dc0 = DSI_DC_RATIO * fat_zero
    dc, _ = signal.lfilter([factor * DSI_DC_RATIO], [1.0, -(1.0 - factor)], stream,
                           zi=[(1.0 - factor) * dc0])
    # response = sensitivity x dc + (10/22) x (dc - previous dc), computed in place.
    step = np.empty_like(dc)
    step[0] = dc[0] - dc0
    np.subtract(dc[1:], dc[:-1], out=step[1:])
    step *= 10.0 / 22.0
    dc *= DSI_SENSITIVITY[amp]
    dc += step
    return dc.reshape(ny, nx + ngap)[:, :nx]


def add_readout_electronics(electrons: np.ndarray, chip: int) -> np.ndarray:
    """Return a copy of a raw-sized chip (e- above bias) with cross-talk and DSI bias shift.

    Cross-talk: every pixel loses ``CROSS_TALK`` times the signal of its mirror
    pixel across the row (read at the same time by the other amplifier).  Bias
    shift: each amplifier adds :func:`_dsi_response` of what it reads, solved
    self-consistently (the response depends on the shifted signal itself).
    """
    if electrons.shape != (RAW_NY, RAW_NX):
        raise ValueError(f"expected a raw {RAW_NY}x{RAW_NX} chip, got {electrons.shape}")
    crossed = electrons - CROSS_TALK * electrons[:, ::-1]
    out = np.empty_like(crossed)
    true_views = _amp_views(crossed, chip)
    out_views = _amp_views(out, chip)
    for amp, target in true_views.items():
        # Fixed point measured = target + response(measured): the response is well
        # under 1 % of the signal, so two passes leave errors below 1e-3 e-.
        measured = target + _dsi_response(target, amp)
        out_views[amp][...] = target + _dsi_response(measured, amp)
    return out


#: Serial clock periods per row for one amplifier: its 2072 prescan + science columns
#: plus the 146 periods of the row transfer (hstcal's de-striping uses the same count).
ROW_PERIODS = RAW_NX // 2 + 146
#: The prescan's centre, in readout columns: where a row's stripe level is sampled.
_PRESCAN_CENTRE = (PRESCAN - 1) / 2.0


def stripe_pattern(rng: np.random.Generator, *, params: DetectorParams = DEFAULT_DETECTOR
                   ) -> np.ndarray:
    """Bias-stripe samples (e-) common to all amplifiers, one per readout row.

    The post-SM4 bias level wanders with readout time; these are its values at the
    centre of each row's prescan, for readout rows -1 .. RAW_NY (``RAW_NY + 2``
    samples, the ends for interpolation). :func:`stripe_levels` spreads them over
    the pixels of a row in serial readout time.
    """
    return rng.normal(0.0, params.stripe_rms_e, size=RAW_NY + 2)


def stripe_levels(stripes_e: np.ndarray, chip: int) -> np.ndarray:
    """The stripe level (e-) of every raw pixel of ``chip`` from :func:`stripe_pattern`.

    The level at serial readout column ``j`` of readout row ``r`` is the samples
    interpolated linearly at ``r + (j - 11.5) / 2218``: the bias drifts continuously
    between one row's prescan and the next.
    """
    if stripes_e.shape != (RAW_NY + 2,):
        raise ValueError(f"expected {RAW_NY + 2} stripe samples, got {stripes_e.shape}")
    order = readout_rows(chip).astype(np.float64)
    half = RAW_NX // 2
    t = (np.arange(half) - _PRESCAN_CENTRE) / ROW_PERIODS  # readout column j -> row fraction
    left = np.interp(order[:, None] + t[None, :], np.arange(-1, RAW_NY + 1), stripes_e)
    return np.concatenate([left, left[:, ::-1]], axis=1)  # right amps read from the far edge


def bias_drift(rng: np.random.Generator, *, params: DetectorParams = DEFAULT_DETECTOR
               ) -> np.ndarray:
    """A raw-sized chip's bias-level change in one exposure (e-, float64): an offset
    plus a drift linear along the rows and along the columns, shared by both
    amplifiers of the chip.

    The offset is normal with rms ``bias_offset_e``, the end-to-end changes along
    the rows and columns with rms ``bias_row_drift_e`` and ``bias_column_drift_e``.
    This is the model the pre-SM4 BLEVCORR fits: a line in row number per amplifier
    from the prescan, and one slope in column number per chip from the virtual
    overscan (an amplifier-to-amplifier step there would be taken for a slope).
    """
    rows = (np.arange(RAW_NY) - (RAW_NY - 1) / 2.0) / RAW_NY
    cols = (np.arange(RAW_NX) - (RAW_NX - 1) / 2.0) / RAW_NX
    offset = rng.normal(0.0, params.bias_offset_e)
    row_drift = rng.normal(0.0, params.bias_row_drift_e)
    column_drift = rng.normal(0.0, params.bias_column_drift_e)
    return offset + row_drift * rows[:, None] + column_drift * cols[None, :]


def read_out_chip(charge: np.ndarray, chip: int, *, bias_dn: np.ndarray, stripes_e: np.ndarray,
                  offsets_dn: dict, rng: np.random.Generator,
                  params: DetectorParams = DEFAULT_DETECTOR, dsi: bool = True,
                  drift_e: np.ndarray | None = None) -> np.ndarray:
    """Convert a trimmed charge image (e-) into a raw-sized uint16 DN array.

    Adds the row stripes, any bias drift (``drift_e``, raw-sized e-), read noise and
    this exposure's amplifier offsets, then
    (with ``dsi``) amplifier cross-talk and the dual-slope-integrator bias shift
    of the post-SM4 electronics; converts to DN with each amplifier's gain, adds
    the bias frame, rounds to integers and clips at 0 and the A-to-D limit.
    """
    if charge.shape != (CHIP_NY, CHIP_NX):
        raise ValueError(f"expected a trimmed {CHIP_NY}x{CHIP_NX} chip, got {charge.shape}")
    lay = chip_layout(chip)
    electrons = np.zeros((RAW_NY, RAW_NX))
    electrons[lay.science_rows, lay.science_cols] = charge
    electrons += stripe_levels(stripes_e, chip)
    if drift_e is not None:
        electrons += drift_e
    for amp, cols in _amp_columns(chip):
        block = electrons[:, cols]
        noise = rng.standard_normal(size=block.shape, dtype=np.float32)
        noise *= params.read_noise_e[amp]
        block += noise
        block += offsets_dn[amp] * params.gain_e_per_dn[amp]
    if dsi:
        electrons = add_readout_electronics(electrons, chip)
    dn = np.empty((RAW_NY, RAW_NX))
    for amp, cols in _amp_columns(chip):
        dn[:, cols] = electrons[:, cols] / params.gain_e_per_dn[amp]
    dn += bias_dn
    np.rint(dn, out=dn)
    np.clip(dn, 0.0, float(params.atodsat_dn), out=dn)
    return dn.astype(np.uint16)
