"""Satellite trails: found with acstools' median Radon transform, masked at full resolution.

A trail that is bright in one exposure of a few survives cosmic-ray rejection and, in a
weak-lensing image, is a coherent false shear across the field. Each chip of a
calibrated exposure is searched in two steps:

1. **Detection** (acstools ``findsat_mrt.WfcWrapper``, Stark et al. 2022): bad pixels
   masked, the median sky subtracted, the chip binned ``BINSIZE`` x ``BINSIZE``, its
   median Radon transform (MRT) computed and searched for line-like sources with the
   package's line kernels; each candidate's cross-profile is measured in the binned
   image (acstools' width and signal-to-noise filter; its persistence check is replaced
   by the full-resolution one below).
2. **Full-resolution trace** (here): the chip's pixels are sampled in a band along each
   candidate line, the band is cut into segments of ``SEGMENT_PX`` along the line, and
   each segment's median cross-profile gives the trail's centre there. A trail is kept
   when its profile reaches ``THRESHOLD`` sigma and it is seen (3 sigma) in at least
   ``MIN_PERSISTENCE`` of its segments: a diffraction spike or the edge of a bleed
   column is short and fails that, a satellite crosses the chip. The centres are fitted
   with a quadratic (the camera's distortion bends a trail by a few pixels across a
   chip; straight when the quadratic bends more than ``MAX_BEND_PX``), and the mask
   covers, in each segment, every pixel where the median profile is above the sky's
   1 sigma per pixel or above half the trail's peak, whichever is wider, plus
   ``MASK_MARGIN_PX``. A trail's pixels are set to the sky before the next
   candidate is followed, so a candidate crossing it does not borrow its light.

Pixels of a trail get DQ bit :data:`TRAIL_DQ` (16384, the value acstools uses for
ACS/WFC), which no drizzle counts as good.

Cost and binning (``benchmarks/bench_satellites.py``): the MRT's cost grows with the
square of the binned size, and a trail's signal-to-noise in it does not depend on the
binning as long as a bin is wider than the trail. acstools' documented ``binsize`` of 4
costs about 100 s per chip and 16 about 5 s; at 32 the whole search (both chips, MRT about
half of it) takes about 4 s per exposure on one core, against about 45 s for calibrating
the exposure with arCTIc on one core (9 %), and the full-resolution trace brings back the
precision the coarse grid gives up. The price is shorter trails: the MRT ignores lines
shorter than ``MIN_LENGTH_BINNED`` bins (``MIN_LENGTH_BINNED`` x 32 px), so a trail that
only clips a chip's corner for fewer pixels is not found.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from scipy import ndimage

__all__ = [
    "TRAIL_DQ",
    "BINSIZE",
    "SATELLITE_MODES",
    "FoundTrail",
    "TrailSearch",
    "search_chip",
    "search_exposure",
    "mask_exposure",
]

#: DQ bit of a satellite trail's pixels (acstools' value for ACS/WFC).
TRAIL_DQ = 16384
#: ``--satellites``: ``mask`` finds and masks trails, ``off`` leaves exposures as they are.
SATELLITE_MODES = ("mask", "off")
#: acstools ``binsize`` of the detection step.
BINSIZE = 32
#: Detection threshold (MRT and full-resolution profile), sigma.
THRESHOLD = 5.0
#: Shortest line the MRT considers, in binned pixels.
MIN_LENGTH_BINNED = 12
#: Widest trail kept, full-resolution pixels (acstools' default ``max_width``).
MAX_WIDTH_PX = 75.0
#: Length of the segments the full-resolution trace is cut into, pixels.
SEGMENT_PX = 256
#: Fraction of a trail's segments it must be seen in (3 sigma) to be kept.
MIN_PERSISTENCE = 0.5
SEGMENT_SNR = 3.0
#: Largest bend of a trail from a straight line across a chip, pixels: a satellite
#: follows a great circle, which the camera's distortion bends by a few pixels (up to 7
#: measured); a quadratic that bends more is fitting segments the trail only grazes, and
#: the trail is fitted straight.
MAX_BEND_PX = 15.0
#: Pixels added on each side of the masked band.
MASK_MARGIN_PX = 2.0
#: DQ bits not counted as bad when the trails are searched (as acstools: cosmic rays
#: found by a drizzle, and earlier trail masks); saturated pixels are bad.
IGNORE_FLAGS = (4096, 8192, TRAIL_DQ)
#: Half-size (rho bins, theta steps) of the box around a candidate searched for the MRT's peak.
_PEAK_SEARCH = (5, 3)
#: MRT peaks (signal-to-noise) taken as candidates too when StarFinder passed them over,
#: at most this many per chip.
_EXTRA_PEAK_SNR = 2 * THRESHOLD
_EXTRA_PEAKS = 2
#: Noise of a median, relative to the noise of a mean of the same pixels.
_MEDIAN_NOISE = 1.2533

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundTrail:
    """One trail on one chip: its centre line's end points (0-based pixel coordinates of
    the chip's SCI array, where it meets the chip's edges), its FWHM, peak (e-) and
    signal-to-noise across the whole chip (a saturated trail: the width of its saturated
    core, the peak of its unsaturated wings, no signal-to-noise), the fraction of its segments it
    was seen in, its largest bend from a straight line, and the pixels masked."""

    extver: int
    x0: float
    y0: float
    x1: float
    y1: float
    fwhm_px: float
    peak_e: float
    snr: float | None  # None: saturated, no noise to compare with
    saturated: bool
    persistence: float
    bend_px: float
    masked_pixels: int

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrailSearch:
    """The trails found in one exposure (``path``: the exposure searched), the fraction of
    its pixels masked, how many candidate lines were followed, and the search's wall time
    (kept out of :meth:`to_dict`, which goes into the run record)."""

    rootname: str
    path: Path | None = None
    trails: tuple[FoundTrail, ...] = ()
    masked_fraction: float = 0.0
    candidates: int = 0
    seconds: float = field(default=0.0, compare=False)
    searched: bool = True  # False: not a full-frame exposure, not searched

    def to_dict(self) -> dict:
        return {"rootname": self.rootname, "path": self.path, "searched": self.searched,
                "trails": [t.to_dict() for t in self.trails],
                "masked_fraction": round(self.masked_fraction, 7),
                "candidates": self.candidates}


def _quiet_acstools() -> None:
    # acstools reports every step at INFO and "No sources found" as a warning.
    for name in ("findsat_mrt", "utils_findsat_mrt"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _candidates(path: Path, hdu: int) -> list[tuple[float, float, float, float]]:
    """acstools' candidate lines in one chip, as full-resolution end points, strongest
    first."""
    from acstools.findsat_mrt import WfcWrapper

    _quiet_acstools()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder = WfcWrapper(str(path), extension=hdu, binsize=BINSIZE,
                            ignore_flags=list(IGNORE_FLAGS), processes=1,
                            threshold=THRESHOLD, min_length=MIN_LENGTH_BINNED,
                            max_width=MAX_WIDTH_PX / BINSIZE * 3.0,
                            check_persistence=False, save_catalog=False,
                            save_diagnostic=False, save_mrt=False, save_mask=False)
        finder.run_mrt()
        sources = finder.find_mrt_sources()
        if sources is not None and len(sources):
            finder.filter_sources()
            keep = finder.source_list[finder.source_list["status"] >= 1]
        else:
            keep = []
    from acstools.utils_findsat_mrt import streak_endpoints

    order = np.argsort(-np.asarray(keep["snr"], dtype=float), kind="stable") if len(keep) \
        else []
    # StarFinder's centroid with acstools' kernels (made for finer binning) can sit a few
    # bins off the MRT's peak at this binning: take the peak near it.
    snr = np.nan_to_num(finder.mrt / finder.mrt_err, nan=-np.inf)
    # the MRT's own strongest peaks that StarFinder passed over (a trail that only clips a
    # corner sits at the edge of the transform, where the kernels do not fit)
    starts = [(float(keep["ycentroid"][k]), float(keep["xcentroid"][k])) for k in order]
    peaks = (ndimage.maximum_filter(snr, size=(2 * _PEAK_SEARCH[0] + 1,
                                               2 * _PEAK_SEARCH[1] + 1)) == snr) & (
        snr >= _EXTRA_PEAK_SNR)
    extra = 0
    for i, j in sorted(zip(*np.nonzero(peaks), strict=True), key=lambda ij: (-snr[ij], ij)):
        if extra == _EXTRA_PEAKS:
            break
        if all(abs(i - a) > _PEAK_SEARCH[0] or abs(j - b) > _PEAK_SEARCH[1]
               for a, b in starts):
            starts.append((float(i), float(j)))
            extra += 1
    lines = []
    for yc, xc in starts:
        i0, j0 = int(round(yc)), int(round(xc))
        rows = slice(max(0, i0 - _PEAK_SEARCH[0]), i0 + _PEAK_SEARCH[0] + 1)
        cols = slice(max(0, j0 - _PEAK_SEARCH[1]), j0 + _PEAK_SEARCH[1] + 1)
        i, j = np.unravel_index(np.argmax(snr[rows, cols]), snr[rows, cols].shape)
        rho = float(finder.rho[rows.start + i])
        theta = float(finder.theta[cols.start + j])
        (bx0, by0), (bx1, by1) = np.asarray(streak_endpoints(rho, -theta, finder.image.shape),
                                            dtype=float)
        # a binned pixel i covers full-resolution pixels i*B .. i*B + B - 1
        lines.append(tuple((v + 0.5) * BINSIZE - 0.5 for v in (bx0, by0, bx1, by1)))
    return lines


def _bad_pixels(dq: np.ndarray) -> np.ndarray:
    return (dq & ~np.uint32(sum(IGNORE_FLAGS))) != 0


def _band(image: np.ndarray, p0: np.ndarray, u: np.ndarray, n: np.ndarray, s: np.ndarray,
          t: np.ndarray, centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels sampled (nearest) on the grid ``p0 + s u + (t + centre(s)) n``, shape
    (len(t), len(s)), NaN off the chip and on bad pixels; and where the grid is on the
    chip."""
    offset = t[:, None] + (centre[None, :] if centre is not None else 0.0)
    x = p0[0] + s[None, :] * u[0] + offset * n[0]
    y = p0[1] + s[None, :] * u[1] + offset * n[1]
    inside = (x > -0.5) & (x < image.shape[1] - 0.5) & (y > -0.5) & (y < image.shape[0] - 0.5)
    values = ndimage.map_coordinates(image, [y, x], order=0, mode="constant", cval=np.nan,
                                     prefilter=False)
    return values, inside


def _row_medians(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` (NaN for a row without a finite value), by one sort:
    numpy's own is slow on many short rows."""
    srt = np.sort(a, axis=1)  # NaN sort last
    n = np.isfinite(a).sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum(n - 1, 0)[:, None] // 2, axis=1)[:, 0]
    hi = np.take_along_axis(srt, (n // 2)[:, None], axis=1)[:, 0] if a.shape[1] else lo
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def _profiles(band: np.ndarray, inside: np.ndarray, segments: list[np.ndarray]):
    """Median cross-profile of each segment, its number of good pixels per row, and which
    rows are saturated (mostly bad pixels where the band is on the chip)."""
    finite = np.isfinite(band)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.stack([_row_medians(band[:, idx]) for idx in segments])
    n_ok = np.stack([finite[:, idx].sum(axis=1) for idx in segments])
    n_in = np.stack([inside[:, idx].sum(axis=1) for idx in segments])
    return prof, n_ok, n_in


def _extent(profile: np.ndarray, t: np.ndarray, level: float, bad: np.ndarray) -> float:
    """Half-width of the contiguous run around t = 0 where the profile is above
    ``level`` (a saturated core, NaN, counts as above)."""
    above = (profile > level) | bad
    i0 = int(np.argmin(np.abs(t)))
    if not above[i0]:
        return 0.0
    lo = i0
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = i0
    while hi < len(t) - 1 and above[hi + 1]:
        hi += 1
    return float(max(abs(t[lo]), abs(t[hi]))) + 0.5


def _reject(line, reason: str, *args) -> None:
    log.debug("candidate (%.0f, %.0f)-(%.0f, %.0f) is no trail: " + reason, *line, *args)
    return None


def _trace(image: np.ndarray, sigma: float, line: tuple[float, float, float, float],
           extver: int) -> tuple[FoundTrail, np.ndarray] | None:
    """Follow a candidate line at full resolution: the trail it holds (and its mask), or
    None when it is not a trail."""
    p0 = np.array(line[:2])
    p1 = np.array(line[2:])
    length = float(np.hypot(*(p1 - p0)))
    if length < MIN_LENGTH_BINNED * BINSIZE / 2:
        return _reject(line, "too short")
    u = (p1 - p0) / length
    n = np.array([-u[1], u[0]])
    t = np.arange(-3 * BINSIZE, 3 * BINSIZE + 1, dtype=float)  # the line is good to a bin
    s = np.arange(-BINSIZE, length + BINSIZE + 1.0)  # past its ends, to the chip's edges
    segments = np.array_split(np.arange(len(s)), max(2, int(round(len(s) / SEGMENT_PX))))
    seg_s = np.array([s[idx].mean() for idx in segments])
    outer = np.abs(t) > 2 * BINSIZE
    core_rows = np.abs(t) < 2 * BINSIZE

    # first pass, along the straight candidate line: where the trail is in each segment
    band, inside = _band(image, p0, u, n, s, t)
    prof, n_ok, n_in = _profiles(band, inside, segments)
    sat = (n_ok < 0.5 * n_in) & core_rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        background = float(np.nanmedian(prof[:, outer]))
        whole = np.nanmedian(np.where(sat, np.inf, prof), axis=0) - background
    if not np.isfinite(background) or not np.isfinite(whole).any():
        return _reject(line, "no pixels")
    top = float(np.nanmax(np.where(np.isinf(whole), np.nan, whole)))
    template = np.nan_to_num(np.where(np.isinf(whole), top, whole), nan=0.0)
    smooth = ndimage.uniform_filter1d(template, 3, mode="nearest")
    near = np.abs(t) <= 1.5 * BINSIZE
    c0 = float(t[near][np.argmax(smooth[near])])
    width = _extent(template, t - c0, 0.5 * template.max(), np.zeros(len(t), bool))
    window = np.abs(t - c0) <= max(8.0, 2.0 * width)
    shifts = np.arange(-BINSIZE, BINSIZE + 1)
    centres, snrs, good = [], [], []
    for k in range(len(segments)):
        p = np.nan_to_num(np.where(sat[k], top, prof[k] - background), nan=0.0)
        score = np.array([np.sum(np.roll(p, -d)[window] * template[window]) for d in shifts])
        j = int(np.argmax(score))
        d = float(shifts[j])
        if 0 < j < len(shifts) - 1:  # parabolic peak
            den = score[j - 1] - 2 * score[j] + score[j + 1]
            if den < 0:
                d += 0.5 * (score[j - 1] - score[j + 1]) / den
        centres.append(c0 + d)
        at = np.abs(t - (c0 + d)) <= 1.0
        good.append(np.median(n_in[k][at]) >= SEGMENT_PX / 8)
        if sat[k][at].any():
            snrs.append(np.inf)
        else:
            npix = max(1.0, float(np.median(n_ok[k][at])))
            snrs.append(np.max(p[at]) / (_MEDIAN_NOISE * sigma / np.sqrt(npix)))
    centres, snrs, good = np.array(centres), np.array(snrs), np.array(good)
    seen = good & (snrs >= SEGMENT_SNR)
    persistence = float(seen.sum() / max(1, good.sum()))
    if persistence < MIN_PERSISTENCE or seen.sum() < 2:
        return _reject(line, "persistence %.2f", persistence)
    # the centre line: a quadratic through the segments that see it (a straight line for
    # a short one, or when the quadratic bends more than a trail can), one 3-px clip
    ss, cc = seg_s[seen], centres[seen]
    on = inside[len(t) // 2]
    for deg in ((2, 1) if seen.sum() >= 4 else (1,)):
        coef = np.polyfit(ss, cc, deg)
        keep = np.abs(np.polyval(coef, ss) - cc) <= 3.0
        if keep.sum() > deg + 1 and not keep.all():
            coef = np.polyfit(ss[keep], cc[keep], deg)
        centre = np.polyval(coef, s)
        chord = np.polyval(np.polyfit(s[on], centre[on], 1), s[on]) if on.sum() > 2 \
            else centre[on]
        bend = float(np.max(np.abs(centre[on] - chord))) if on.any() else 0.0
        if bend <= MAX_BEND_PX:
            break

    # second pass, along the fitted centre line: profile, width and mask
    band, inside = _band(image, p0, u, n, s, t, centre=centre)
    prof, n_ok, n_in = _profiles(band, inside, segments)
    sat = (n_ok < 0.5 * n_in) & core_rows
    finite = np.isfinite(band)
    sat_all = (finite.sum(axis=1) < 0.5 * inside.sum(axis=1)) & core_rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        whole = _row_medians(band) - background
    core = np.abs(t) <= 1
    if sat_all[core].any():
        peak = float(np.nanmax(np.where(sat_all, np.nan, whole)))
        snr = float("inf")
    else:
        peak = float(np.max(whole[core]))
        npix = max(1.0, float(np.median(finite[core].sum(axis=1))))
        snr = peak / (_MEDIAN_NOISE * sigma / np.sqrt(npix))
    if snr < THRESHOLD:
        return _reject(line, "signal-to-noise %.1f", snr)
    if sat_all[core].any():  # the peak is unknown: the width of the saturated core
        fwhm = 2.0 * _extent(np.zeros_like(whole), t, 1.0, sat_all) - 1.0
    else:
        fwhm = 2.0 * _extent(whole, t, 0.5 * peak, sat_all) - 1.0
    if fwhm > MAX_WIDTH_PX:
        return _reject(line, "FWHM %.1f px", fwhm)
    level = min(sigma, 0.5 * peak)
    widths = [_extent(prof[k] - background, t, level, sat[k]) for k in range(len(segments))]
    widths = np.maximum(np.array(widths), _extent(whole, t, level, sat_all)) + MASK_MARGIN_PX
    half = np.interp(s, seg_s, widths)
    line_xy = p0 + s[:, None] * u + centre[:, None] * n
    mask = _rasterise(image.shape, line_xy, half)
    on = inside[len(t) // 2]
    if not on.any():
        return _reject(line, "off the chip")
    (x0, y0), (x1, y1) = line_xy[np.flatnonzero(on)[[0, -1]]]
    trail = FoundTrail(extver=extver, x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1),
                       fwhm_px=float(fwhm), peak_e=peak,
                       snr=float(snr) if np.isfinite(snr) else None,
                       saturated=bool(sat_all[core].any()), persistence=persistence,
                       bend_px=bend, masked_pixels=int(mask.sum()))
    return trail, mask


def _rasterise(shape: tuple[int, int], line: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Pixels within ``half`` (perpendicular distance, per point) of a densely sampled
    (1 px steps) centre line ``line`` (N x 2, x and y)."""
    ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    d = np.gradient(line, axis=0)
    d /= np.hypot(d[:, 0], d[:, 1])[:, None]
    # walk along the axis the line runs along most; at each point, cover the pixels
    # across it within the half-width (perpendicular distance over the cosine)
    along = 0 if np.median(np.abs(d[:, 0])) >= np.median(np.abs(d[:, 1])) else 1
    across = 1 - along
    cos = np.abs(d[:, along])
    reach = half / np.maximum(cos, 0.05)
    span = int(np.ceil(reach.max())) + 1
    offsets = np.arange(-span, span + 1)
    pos = np.rint(line[:, along]).astype(int)
    ok = (pos >= 0) & (pos < (nx if along == 0 else ny))
    centre = line[ok, across]
    other = np.rint(centre).astype(int)[:, None] + offsets[None, :]
    inside = (np.abs(other - centre[:, None]) <= reach[ok, None]) & (other >= 0) & (
        other < (ny if along == 0 else nx))
    rows = np.broadcast_to(pos[ok][:, None], other.shape)[inside]
    cols = other[inside]
    if along == 0:
        mask[cols, rows] = True
    else:
        mask[rows, cols] = True
    return mask


def search_chip(path: Path, hdu: int, extver: int, image: np.ndarray, dq: np.ndarray
                ) -> tuple[list[FoundTrail], np.ndarray, int]:
    """Trails on one chip, the SCI array ``image`` at HDU index ``hdu`` of ``path``:
    (trails, mask, number of acstools candidates)."""
    lines = _candidates(path, hdu)
    mask = np.zeros(image.shape, dtype=bool)
    trails: list[FoundTrail] = []
    if not lines:
        return trails, mask, 0
    work = image.astype(np.float64)
    work[_bad_pixels(dq)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # the sky and its noise from every 4th pixel of every 4th row (plenty, and fast)
        sample = work[::4, ::4]
        work -= np.nanmedian(sample)
        sigma = float(mad_std(sample, ignore_nan=True))
    for line in lines:
        found = _trace(work, sigma, line, extver)
        if found is None:
            continue
        trail, trail_mask = found
        # one trail can come back as two candidates (a near-vertical line sits at both
        # ends of the MRT's angle range; a short one at several angles): keep the first
        if (trail_mask & mask).sum() > 0.5 * trail.masked_pixels:
            log.debug("candidate (%.0f, %.0f)-(%.0f, %.0f) follows a trail already found",
                      *line)
            continue
        trails.append(trail)
        mask |= trail_mask
        work[trail_mask] = 0.0  # the sky: later candidates do not see this trail
    return trails, mask, len(lines)


def search_exposure(path: Path) -> tuple[TrailSearch, dict[int, np.ndarray]]:
    """Search every chip of a calibrated exposure (FLT/FLC); the masks by EXTVER."""
    start = time.perf_counter()
    path = Path(path)
    masks, trails, candidates, n_pixels, n_masked = {}, [], 0, 0, 0
    with fits.open(path) as hdul:
        for hdu, h in enumerate(hdul):
            if h.name != "SCI" or h.data is None:
                continue
            extver = int(h.header.get("EXTVER", 1))
            found, mask, n = search_chip(path, hdu, extver, h.data, hdul["DQ", extver].data)
            masks[extver] = mask
            trails += found
            candidates += n
            n_pixels += mask.size
            n_masked += int(mask.sum())
    return TrailSearch(rootname=path.name.split("_")[0].lower(), path=path, trails=tuple(trails),
                       masked_fraction=n_masked / max(1, n_pixels), candidates=candidates,
                       seconds=time.perf_counter() - start), masks


def mask_exposure(path: Path) -> TrailSearch:
    """Search a working copy and set :data:`TRAIL_DQ` on its trails' pixels, in place."""
    search, masks = search_exposure(path)
    if any(m.any() for m in masks.values()):
        with fits.open(path, mode="update") as hdul:
            for extver, mask in masks.items():
                if mask.any():
                    dq = hdul["DQ", extver]
                    dq.data = dq.data | np.where(mask, TRAIL_DQ, 0).astype(dq.data.dtype)
    return search
