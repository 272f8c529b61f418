"""Per-pixel noise of a drizzled image and the factor for its correlated noise.

A drizzled pixel is a weighted mean of the input pixels' drops that overlap it,
``S_j = sum_i w_i a_ij d_i / sum_i w_i a_ij`` (``a_ij``: overlap area, ``w_i``: the
final drizzle's weight of input pixel ``i``). With independent input noise of variance
``V_i`` its variance is ``sum_i (w_i a_ij)^2 V_i / (sum_i w_i a_ij)^2``: the inputs'
variance drizzled with squared weights. That is what :func:`drizzle_noise` computes, with
the ``drizzle`` library's kernels (``data2``), from

* the full variance of each calibrated exposure, ``ERR^2`` (sky, dark, read noise and
  the sources' own shot noise; the working copies hold only the background error that
  weights the drizzle, so the ERR arrays are read from the calibrated files);
* the weight map AstroDrizzle used for each chip in that very drizzle (its
  ``*_final_mask.fits``: the ERR weight with the DQ, static and cosmic-ray masks);
* the chip's pixel map onto the grid from its aligned WCS (distortion included),
  sampled every :data:`PIXMAP_STEP` pixels and interpolated, as AstroDrizzle does;
* the same kernel, pixfrac, pixel-scale ratio and exposure-time scaling.

The science is drizzled alongside (sky-subtracted by each chip's MDRIZSKY), and has to
reproduce AstroDrizzle's product: the check that both drizzles are the same operation.

Neighbouring output pixels share input pixels, so their noise is correlated and the
noise of a sum of pixels is not the per-pixel noise added in quadrature. The factor
``F(n)`` by which the noise of the mean of an n x n block exceeds ``sqrt(mean RMS^2)/n``
is measured by drizzling noise realisations through the same geometry: in up to
:data:`CORRELATION_WINDOWS` windows of :data:`CORRELATION_WINDOW_PX` pixels spread evenly
over the mosaic (:func:`correlation_windows`), :data:`CORRELATION_REALISATIONS`
realisations in all, from a fixed seed (the same inputs give the same factors). For large blocks it
approaches Casertano et al. (2000)'s ``R`` (:func:`casertano_r`), also recorded.

The blank-sky check (:func:`blank_sky_check`) then measures the product's own noise
against that prediction (header RMSMEAn, the report's Noise section).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from hstred.drizzle.tileset import read_window
from hstred.errors import StageError

__all__ = ["ChipInput", "Layer", "NoiseImages", "drizzle_noise", "drizzle_layers",
           "load_layer", "chip_parts", "chip_pixmap", "correlation_factors", "casertano_r",
           "rms_image",
           "write_rms", "rms_cards", "blank_sky_check", "noise_summary", "RMS_BLOCKS",
           "CHECK_BLOCKS", "robust_width", "block_sums", "noise_factors", "rms_pixels",
           "rms_header", "check_mismatch"]

#: Input pixels between the samples of a pixel map (AstroDrizzle's ``stepsize``).
PIXMAP_STEP = 10
#: Side (output pixels) of the window where the correlation factors are measured.
CORRELATION_WINDOW_PX = 256
#: Noise realisations drizzled, shared among the windows.
CORRELATION_REALISATIONS = 48
#: Windows where the correlation factors are measured, spread over the mosaic's depths.
CORRELATION_WINDOWS = 24
#: Block sides (output pixels) with a recorded correlation factor (header RMSCORn).
RMS_BLOCKS = (2, 4, 8, 16, 32)
#: Largest median |re-drizzled science - product| / RMS accepted: above it, the noise
#: drizzle is not the operation that made the product.
MAX_MEDIAN_MISMATCH = 0.05
#: log10 bins of the |re-drizzled science - product| / RMS histogram that tiles of one
#: product add up (:func:`histogram_quantile`).
MISMATCH_BINS = np.linspace(-10.0, 4.0, 14001)
_SEED = 20001  # the correlation realisations: same inputs, same factors
#: Block sides of the blank-sky check (RMSMEAn: measured over predicted noise).
CHECK_BLOCKS = (1, 4, 16)
#: Side (output pixels) of the window where the blank-sky check measures.
CHECK_WINDOW_PX = 2048
#: Sources: the 5 x 5 mean of SCI/RMS this many of its own sigmas above the sky, grown
#: by 5 pixels.
CHECK_SOURCE_SIGMA = 3.0


@dataclass(frozen=True)
class ChipInput:
    """One input chip of a final drizzle."""

    copy: Path  # aligned working copy: WCS, SCI, MDRIZSKY
    source: Path  # the calibrated exposure: its full ERR
    extver: int
    weight: Path  # AstroDrizzle's final weight map of this chip


@dataclass
class NoiseImages:
    """The science and variance drizzled with the product's weights."""

    sci: np.ndarray | None  # e-/s, sky-subtracted (None: a tiled product's summary)
    wht: np.ndarray | None  # sum of weights x overlaps (not scaled like the product's)
    var: np.ndarray | None  # (e-/s)^2 per pixel
    factors: dict[int, float]  # block side -> F(n)
    scale_ratio: float  # output over input pixel size
    blank_sky: dict[int, dict] = field(default_factory=dict)  # see blank_sky_check
    missing: int = 0  # covered product pixels without a variance (see rms_image)
    mismatch_median: float = float("nan")  # |sci - product| / RMS over covered pixels
    mismatch_p99: float = float("nan")
    mismatch_counts: np.ndarray | None = None  # their histogram (MISMATCH_BINS)


def casertano_r(scale_ratio: float, pixfrac: float) -> float:
    """Casertano et al. (2000) noise ratio ``R`` for the square kernel: the noise of a
    large area over its per-pixel noise added in quadrature (``scale_ratio`` = output
    over input pixel size)."""
    r = pixfrac / scale_ratio
    return r / (1.0 - 1.0 / (3.0 * r)) if r >= 1.0 else 1.0 / (1.0 - r / 3.0)


def _chip_wcs(path: Path, extver: int) -> WCS:
    from hstred.align.stage import read_chip_wcs

    return read_chip_wcs(path, extver)


@dataclass
class _Samples:
    """A chip's pixel map sampled every few pixels (:func:`_pixmap_samples`)."""

    xs: np.ndarray  # the sample columns
    ys: np.ndarray  # and rows
    ox: np.ndarray  # grid x at each sample (len(ys) x len(xs))
    oy: np.ndarray  # and grid y
    splines: tuple = ()  # their bilinear interpolants, made once (_interpolated)


def _pixmap_samples(wcs: WCS, grid: WCS, shape: tuple[int, int], step: int) -> _Samples:
    """A chip's pixel map sampled every ``step`` pixels (and at the last row and column)."""
    ny, nx = shape
    xs = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    ys = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = wcs.all_pix2world(gx, gy, 0)
    ox, oy = grid.all_world2pix(ra, dec, 0)
    return _Samples(xs=xs, ys=ys, ox=ox, oy=oy)


def _interpolated(samples: _Samples, box: tuple[int, int, int, int]) -> np.ndarray:
    """(rows, cols, 2) pixel map of the chip pixels ``box`` (r0, r1, c0, c1) from its
    samples, interpolated bilinearly (each pixel's value depends on its position only, so
    a part of the chip gets the values the whole would)."""
    from scipy.interpolate import RectBivariateSpline

    if not samples.splines:
        samples.splines = tuple(RectBivariateSpline(samples.ys, samples.xs, values, kx=1, ky=1)
                                for values in (samples.ox, samples.oy))
    r0, r1, c0, c1 = box
    out = np.empty((r1 - r0, c1 - c0, 2), dtype=np.float64)
    px, py = np.arange(c0, c1, dtype=float), np.arange(r0, r1, dtype=float)
    for k, spline in enumerate(samples.splines):
        out[..., k] = spline(py, px)
    return out


def chip_pixmap(wcs: WCS, grid: WCS, shape: tuple[int, int], step: int = PIXMAP_STEP
                ) -> np.ndarray:
    """(ny, nx, 2) positions of a chip's pixel centres on ``grid`` (0-based x, y),
    computed through the full WCS every ``step`` pixels and interpolated bilinearly."""
    samples = _pixmap_samples(wcs, grid, shape, step)
    return _interpolated(samples, (0, shape[0], 0, shape[1]))


def _reaching_box(samples, window: tuple[int, int, int, int], margin: float
                  ) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1): chip pixels holding every pixel whose map lands within
    ``margin`` of ``window`` (y0, y1, x0, x1), from the cells between the samples (a
    bilinear value stays between its cell's corner values; one more pixel of margin
    covers the interpolation's rounding); None when no cell can reach it."""
    xs, ys, ox, oy = samples.xs, samples.ys, samples.ox, samples.oy
    y0, y1, x0, x1 = window
    m = margin + 1.0
    corners = [np.stack([v[:-1, :-1], v[:-1, 1:], v[1:, :-1], v[1:, 1:]]) for v in (ox, oy)]
    lo = [c.min(axis=0) for c in corners]
    hi = [c.max(axis=0) for c in corners]
    cells = ((hi[0] > x0 - m) & (lo[0] < x1 + m) & (hi[1] > y0 - m) & (lo[1] < y1 + m))
    if len(xs) < 2 or len(ys) < 2 or not cells.any():
        return None
    rows, cols = np.nonzero(cells.any(axis=1))[0], np.nonzero(cells.any(axis=0))[0]
    return (int(ys[rows[0]]), int(ys[rows[-1] + 1]) + 1,
            int(xs[cols[0]]), int(xs[cols[-1] + 1]) + 1)


@dataclass
class Layer:
    """One input chip's arrays as drizzled (see :func:`drizzle_layers`)."""

    sci: np.ndarray  # e-, sky-subtracted
    var: np.ndarray  # e-^2
    weight: np.ndarray  # the final drizzle's weight of each pixel
    pixmap: np.ndarray  # (ny, nx, 2) output x, y of each pixel centre (0-based)
    exptime: float  # s
    ratio: float  # output over input pixel scale


def pixel_scale_arcsec(wcs: WCS) -> float:
    """The mean linear pixel scale of a celestial WCS at its reference point."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0


def _scale_ratio(header: fits.Header, wcs: WCS, grid: WCS) -> float:
    """Output over input pixel scale of a chip (its SCI ``header`` and ``wcs``): the
    input's linear scale is the one AstroDrizzle divides by (its wcslin_pscale)."""
    in_scale = float(header.get("IDCSCALE", 0.0)) or None
    return pixel_scale_arcsec(grid) / (in_scale or pixel_scale_arcsec(wcs))


def _section(hdu, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """An image HDU's pixels (``box``: rows r0..r1, columns c0..c1 only, read alone)."""
    if box is None:
        return np.asarray(hdu.data)
    return read_window(hdu, *box)


def load_layer(chip: ChipInput, grid: WCS, *, window: tuple[int, int, int, int] | None = None,
               pad: int = 0) -> Layer | None:
    """The arrays of one input chip as its final drizzle used them. With ``window``
    (y0, y1, x0, x1 of ``grid``), only its part whose drops can reach the window:
    ``crop_layer(load_layer(chip, grid), window, pad=pad)``, to the bit, without reading
    or mapping the rest of the chip (None when no part reaches it)."""
    return _load(chip, grid, None if window is None else [window], pad)[1][0]


def chip_parts(chip: ChipInput, grid: WCS, windows: Sequence[tuple[int, int, int, int]], *,
               pad: int = 0) -> tuple[float, list[Layer | None]]:
    """A chip's output-over-input pixel scale ratio and, for each window,
    ``load_layer(chip, grid, window=window, pad=pad)``: the files opened and the pixel map
    sampled once for all."""
    return _load(chip, grid, list(windows), pad)


def _load(chip: ChipInput, grid: WCS, windows: list | None, pad: int
          ) -> tuple[float, list[Layer | None]]:
    with (fits.open(chip.copy, memmap=False) as copy,
          fits.open(chip.source, memmap=False) as source,
          warnings.catch_warnings()):
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = copy["SCI", chip.extver].header
        exptime = float(copy[0].header["EXPTIME"])
        sky = float(header.get("MDRIZSKY", 0.0))
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        wcs = _chip_wcs(chip.copy, chip.extver)
        ratio = _scale_ratio(header, wcs, grid)
        try:
            err_hdu = source["ERR", chip.extver]
        except KeyError:
            raise StageError(f"{chip.source}[ERR,{chip.extver}]: no error array; the RMS map "
                             "needs the calibrated exposures' ERR") from None
        if tuple(err_hdu.shape) != shape:
            raise StageError(f"{chip.source}[ERR,{chip.extver}]: shape {tuple(err_hdu.shape)} "
                             f"differs from the science array's {shape}")
        with fits.open(chip.weight, memmap=False) as weights:
            wht_hdu = next((h for h in weights if h.is_image and h.shape), weights[0])
            if tuple(wht_hdu.shape) != shape:
                raise StageError(f"{chip.weight}: weight map shape {tuple(wht_hdu.shape)} "
                                 f"differs from {chip.copy.name}[SCI,{chip.extver}] {shape}")
            samples = _pixmap_samples(wcs, grid, shape, PIXMAP_STEP)
            hdus = (copy["SCI", chip.extver], err_hdu, wht_hdu)
            if windows is None:
                return ratio, [_layer(hdus, None, (0, shape[0], 0, shape[1]), 0, sky,
                                      samples=samples, exptime=exptime, ratio=ratio)]
            layers: list[Layer | None] = []
            margin = reach_margin(ratio)
            for window in windows:
                # the cells that can reach the window, then the pixels that do (crop_layer's
                # cut of the whole chip, from the part's map a block of rows at a time)
                box = _reaching_box(samples, window, margin)
                cut = None if box is None else _reach(
                    _map_blocks(samples, box), (box[1] - box[0], box[3] - box[2]), window,
                    margin)
                if cut is None:
                    layers.append(None)
                    continue
                part = (box[0] + cut[0].start, box[0] + cut[0].stop,
                        box[2] + cut[1].start, box[2] + cut[1].stop)
                layers.append(_layer(hdus, window, part, pad, sky, samples=samples,
                                     exptime=exptime, ratio=ratio))
    return ratio, layers


def _layer(hdus, window: tuple[int, int, int, int] | None, part: tuple[int, int, int, int],
           pad: int, sky: float, *, samples, exptime: float, ratio: float) -> Layer:
    """The chip pixels ``part`` (r0, r1, c0, c1) of the SCI, ERR and weight ``hdus`` as a
    layer, framed by ``pad`` empty pixels, its map less the ``window``'s origin (None: the
    whole chip, on the grid). Read and mapped only there, one array at a time."""
    def padded(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((pad, pad), (pad, pad))) if pad else a

    sci_hdu, err_hdu, wht_hdu = hdus
    box = None if window is None else part
    sci = padded(np.asarray(_section(sci_hdu, box), dtype=np.float32) - np.float32(sky))
    err = np.asarray(_section(err_hdu, box), dtype=np.float32)
    var = padded(np.nan_to_num(err ** 2))
    del err
    weight = padded(np.asarray(_section(wht_hdu, box), dtype=np.float32))
    origin = (0.0, 0.0) if window is None else (window[2], window[0])
    return Layer(sci=sci, var=var, weight=weight,
                 pixmap=_framed_map(samples, part, origin, pad), exptime=exptime, ratio=ratio)


def _add(d, chip: Layer, data, data2, *, pixfrac: float, pixmap=None, weight=None):
    d.add_image(data, exptime=chip.exptime, pixmap=chip.pixmap if pixmap is None else pixmap,
                data2=data2, weight_map=chip.weight if weight is None else weight,
                pixfrac=pixfrac, in_units="counts", iscale=chip.ratio ** 2,
                pixel_scale_ratio=chip.ratio)


def drizzle_layers(layers: Sequence[Layer], out_shape: tuple[int, int], *, pixfrac: float,
                   kernel: str):
    """The ``drizzle`` library's Drizzle of ``layers``: ``out_img`` the science (e-/s),
    ``out_img2[0]`` its variance, ``out_wht`` the summed weights (NaN where nothing
    landed)."""
    from drizzle.resample import Drizzle

    d = Drizzle(kernel=kernel, out_shape=out_shape, disable_ctx=True, fillval="NaN",
                fillval2="NaN")
    for layer in layers:
        _add(d, layer, layer.sci, layer.var, pixfrac=pixfrac)
    return d


def _chip_outline(chip: ChipInput, grid: WCS) -> np.ndarray:
    """(k, 2) outline of a chip on ``grid`` (x, y), its edges sampled every 1/8."""
    wcs = _chip_wcs(chip.copy, chip.extver)
    nx, ny = wcs.pixel_shape
    t = np.linspace(0.0, 1.0, 9)[:-1]
    x = np.r_[t * (nx - 1), np.full(8, nx - 1.0), (1 - t) * (nx - 1), np.zeros(8)]
    y = np.r_[np.zeros(8), t * (ny - 1), np.full(8, ny - 1.0), (1 - t) * (ny - 1)]
    return np.column_stack(grid.all_world2pix(*wcs.all_pix2world(x, y, 0), 0))


def correlation_windows(chips: Sequence[ChipInput], grid: WCS, *,
                        side: int = CORRELATION_WINDOW_PX,
                        count: int = CORRELATION_WINDOWS) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` side x side windows (y0, y1, x0, x1): every k-th of the grid's tiles
    whose centres some chip covers, in raster order. Spread evenly over the mosaic, they
    hold its deep and shallow parts (chip gaps, edges, single coverage) in proportion to
    their area, as the blocks a user measures do."""
    from matplotlib.path import Path as Polygon

    nx, ny = grid.pixel_shape
    outlines = [Polygon(_chip_outline(chip, grid)) for chip in chips]
    tiles = []
    for y0 in range(0, max(ny - side, 0) + 1, side):
        for x0 in range(0, max(nx - side, 0) + 1, side):
            window = window_around((x0 + side / 2, y0 + side / 2), (ny, nx), side)
            centre = ((window[2] + window[3]) / 2, (window[0] + window[1]) / 2)
            if any(o.contains_point(centre) for o in outlines):
                tiles.append(window)
    if not tiles:
        return [window_around((nx / 2, ny / 2), (ny, nx), side)]
    picks = np.unique(np.round(np.linspace(0, len(tiles) - 1, min(count, len(tiles)))))
    return [tiles[int(i)] for i in picks]


def window_around(centre: tuple[float, float], shape: tuple[int, int], side: int
                  ) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): a window of at most side x side pixels of a ``shape`` grid, as
    close to centred on ``centre`` (x, y) as the grid allows."""
    ny, nx = shape
    hy, hx = min(side, ny) // 2, min(side, nx) // 2
    y0 = int(np.clip(round(centre[1]) - hy, 0, ny - 2 * hy))
    x0 = int(np.clip(round(centre[0]) - hx, 0, nx - 2 * hx))
    return y0, y0 + 2 * hy, x0, x0 + 2 * hx


#: Zero-weight pixels added around a chip cut to a tile (:func:`crop_layer`). The drizzle
#: library finds the input pixels that land on its output from a polygon of straight lines
#: between the input's corners; when the input reaches beyond the output, the distortion
#: bends the chip's true edges outside those lines and the pixels there are left out (seen:
#: 3300 weighted pixels of one 3522 x 4086 tile of a full-frame program without RMS). A
#: frame of empty pixels moves the corners outwards; 4 pixels already restored every pixel
#: of that tile.
CROP_PAD_PX = 8


#: Rows of a pixel map tested at a time for the pixels that reach a window (the test's
#: temporaries stay a few MB).
CROP_ROWS = 256


def reach_margin(ratio: float) -> float:
    """Output pixels beyond a window within which an input pixel's centre may still drop
    onto it: a drop reaches at most an input pixel's half diagonal (1/ratio output pixels,
    pixfrac <= 1) beyond its centre, and an output pixel half a pixel beyond its own."""
    return 1.0 + 1.0 / ratio


def _reach(blocks, shape: tuple[int, int], window: tuple[int, int, int, int], margin: float
           ) -> tuple[slice, slice] | None:
    """Rows and columns of the pixels (of an array of ``shape``) whose drops can reach
    ``window`` (y0, y1, x0, x1), from their pixel map given in blocks of rows
    (``blocks``: (first row, (rows, columns, 2) map)); None when none can, or only a sliver
    at the window's edge (the drizzle library refuses those)."""
    y0, y1, x0, x1 = window
    ny, nx = shape
    reach_rows, reach_cols, within = np.zeros(ny, bool), np.zeros(nx, bool), 0
    for r, block in blocks:
        px, py = block[..., 0] - x0, block[..., 1] - y0
        inside = ((px > -margin) & (px < x1 - x0 + margin) & (py > -margin)
                  & (py < y1 - y0 + margin))
        reach_rows[r:r + block.shape[0]] = inside.any(axis=1)
        reach_cols |= inside.any(axis=0)
        within += int(np.count_nonzero((px > 0) & (px < x1 - x0 - 1) & (py > 0)
                                       & (py < y1 - y0 - 1)))
    rows, cols = np.nonzero(reach_rows)[0], np.nonzero(reach_cols)[0]
    if rows.size < 3 or cols.size < 3 or within < 9:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def crop_layer(layer: Layer, window: tuple[int, int, int, int], *, pad: int = 0
               ) -> Layer | None:
    """The part of ``layer`` whose drops can reach ``window``, its pixel map shifted to the
    window's origin (None when none can); with ``pad``, framed by that many pixels of zero
    weight, their pixel map extrapolated linearly (:data:`CROP_PAD_PX`)."""
    y0, _y1, x0, _x1 = window
    ny, nx = layer.pixmap.shape[:2]
    sl = _reach(((r, layer.pixmap[r:r + CROP_ROWS]) for r in range(0, ny, CROP_ROWS)),
                (ny, nx), window, reach_margin(layer.ratio))
    if sl is None:
        return None
    frame = ((pad, pad), (pad, pad))
    cut = {name: np.pad(getattr(layer, name)[sl], frame) for name in ("sci", "var", "weight")}
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    pixmap = np.empty((h + 2 * pad, w + 2 * pad, 2), dtype=layer.pixmap.dtype)
    for k, origin in enumerate((x0, y0)):
        framed(layer.pixmap[sl][..., k], origin, pad, pixmap[..., k])
    return Layer(**cut, pixmap=pixmap, exptime=layer.exptime, ratio=layer.ratio)


def framed(a: np.ndarray, origin: float, pad: int, out: np.ndarray) -> np.ndarray:
    """``np.pad(a - origin, pad, mode="reflect", reflect_type="odd")`` into ``out``, to the
    bit, without temporaries of ``a``'s size (a pixel map's frame, extrapolated
    linearly)."""
    h, w = a.shape
    if pad == 0:
        return np.subtract(a, origin, out=out)
    if min(h, w) <= pad:  # numpy reflects more than once: its own way
        out[...] = np.pad(a - origin, pad, mode="reflect", reflect_type="odd")
        return out
    np.subtract(a, origin, out=out[pad:pad + h, pad:pad + w])
    return _frame(out, pad)


def _frame(out: np.ndarray, pad: int) -> np.ndarray:
    """The outer ``pad`` pixels of ``out`` from its inner part, as numpy's odd reflection
    makes them (``pad`` smaller than the inner part's sides)."""
    h, w = out.shape[0] - 2 * pad, out.shape[1] - 2 * pad
    inner = out[pad:pad + h, pad:pad + w]
    # numpy pads the rows, then the columns of the padded rows: 2 * edge - reflected
    out[:pad, pad:pad + w] = 2 * inner[:1] - inner[pad:0:-1]
    out[pad + h:, pad:pad + w] = 2 * inner[-1:] - inner[-2:-pad - 2:-1]
    cols = out[:, pad:pad + w]
    out[:, :pad] = 2 * cols[:, :1] - cols[:, pad:0:-1]
    out[:, pad + w:] = 2 * cols[:, -1:] - cols[:, -2:-pad - 2:-1]
    return out


def _map_blocks(samples, box: tuple[int, int, int, int]):
    """(first row, pixel map) of the chip pixels ``box`` (r0, r1, c0, c1), interpolated
    :data:`CROP_ROWS` rows at a time (rows counted from ``r0``)."""
    r0, r1, c0, c1 = box
    for r in range(r0, r1, CROP_ROWS):
        yield r - r0, _interpolated(samples, (r, min(r + CROP_ROWS, r1), c0, c1))


def _framed_map(samples, part: tuple[int, int, int, int], origin: tuple[float, float],
                pad: int) -> np.ndarray:
    """The pixel map of the chip pixels ``part`` less ``origin`` (x, y), framed by ``pad``
    pixels as :func:`crop_layer` frames it (:func:`framed`), to the bit: interpolated a
    block of rows at a time straight into place."""
    h, w = part[1] - part[0], part[3] - part[2]
    out = np.empty((h + 2 * pad, w + 2 * pad, 2), dtype=np.float64)
    if pad and min(h, w) <= pad:  # numpy's own reflection of the whole
        whole = _interpolated(samples, part)
        for k in range(2):
            framed(whole[..., k], origin[k], pad, out[..., k])
        return out
    for r, block in _map_blocks(samples, part):
        for k in range(2):
            np.subtract(block[..., k], origin[k],
                        out=out[pad + r:pad + r + block.shape[0], pad:pad + w, k])
    if pad:
        for k in range(2):
            _frame(out[..., k], pad)
    return out


def _window_crops(layer: Layer, windows, crops: list[list[Layer]]) -> None:
    for k, window in enumerate(windows):
        crop = crop_layer(layer, window)
        if crop is not None:
            crops[k].append(crop)


def drizzle_noise(chips: Sequence[ChipInput], grid: WCS, *, pixfrac: float, kernel: str,
                  product_sci: np.ndarray | None = None, factors: bool = True) -> NoiseImages:
    """Drizzle the science and the variance of ``chips`` onto ``grid`` with the final
    drizzle's weights; measure the correlation factors (unless ``factors`` is False: a
    tile of a larger grid, whose factors :func:`noise_factors` measures over the whole);
    compare with ``product_sci`` (AstroDrizzle's science image) when given. One chip's
    arrays in memory at a time (and the window's cut-outs of all)."""
    from drizzle.resample import Drizzle

    if not chips:
        raise StageError("no input chips to drizzle the noise of")
    nx, ny = grid.pixel_shape
    windows = correlation_windows(chips, grid) if factors else []
    d = Drizzle(kernel=kernel, out_shape=(ny, nx), disable_ctx=True, fillval="NaN",
                fillval2="NaN")
    crops: list[list[Layer]] = [[] for _ in windows]
    ratios, added = [], 0
    for chip in chips:
        if factors:
            layer = load_layer(chip, grid)
            _window_crops(layer, windows, crops)
            ratios.append(layer.ratio)
        else:  # a tile: only the chip's part that reaches it (hstred.drizzle.tiled)
            ratio, (layer,) = chip_parts(chip, grid, [(0, ny, 0, nx)], pad=CROP_PAD_PX)
            ratios.append(ratio)
        if layer is not None:
            _add(d, layer, layer.sci, layer.var, pixfrac=pixfrac)
            added += 1
        del layer
    if added:
        sci, wht, var = d.out_img, d.out_wht, d.out_img2[0]
    else:  # a tile that the chips only graze
        sci, var = (np.full((ny, nx), np.nan, dtype=np.float32) for _ in range(2))
        wht = np.zeros((ny, nx), dtype=np.float32)
    groups = [(layers, wht[y0:y1, x0:x1], var[y0:y1, x0:x1])
              for layers, (y0, y1, x0, x1) in zip(crops, windows, strict=True) if layers]
    out = NoiseImages(sci=sci, wht=wht, var=var,
                      factors=(correlation_factors(groups, pixfrac=pixfrac, kernel=kernel)
                               if factors else {}),
                      scale_ratio=float(np.median(ratios)))
    if product_sci is not None:
        _compare(out, product_sci, exact=factors)
        if out.mismatch_counts is not None or factors:
            # a whole product must cover something (a tile may not)
            check_mismatch(out.mismatch_median)
    return out


#: Rows of a product compared with the noise drizzle's science at a time (the
#: comparison's temporaries stay a few tens of MB).
COMPARE_ROWS = 512


def _compare(out: NoiseImages, product_sci: np.ndarray, *, exact: bool) -> None:
    """``out``'s mismatch figures: ``|out.sci - product_sci| / sqrt(out.var)`` over the
    covered pixels, as a :data:`MISMATCH_BINS` histogram; its median and 99th percentile
    exact (``exact``, a whole product) or from the histogram (a tile, whose counts the
    product adds up). Row blocks at a time."""
    counts = np.zeros(MISMATCH_BINS.size - 1, dtype=np.int64)
    values = []
    for r in range(0, product_sci.shape[0], COMPARE_ROWS):
        rows = slice(r, r + COMPARE_ROWS)
        sci, var, prod = out.sci[rows], out.var[rows], product_sci[rows]
        covered = (out.wht[rows] > 0) & np.isfinite(prod) & (var > 0)
        z = np.abs(sci[covered] - prod[covered]) / np.sqrt(var[covered])
        counts += np.histogram(np.log10(np.maximum(z, 1e-30)), bins=MISMATCH_BINS)[0]
        if exact:
            values.append(z)
    if not counts.any():
        return
    out.mismatch_counts = counts
    if exact:
        z = np.concatenate(values)
        out.mismatch_median = float(np.median(z))
        out.mismatch_p99 = float(np.percentile(z, 99))
    else:
        out.mismatch_median = histogram_quantile(counts, 0.5)
        out.mismatch_p99 = histogram_quantile(counts, 0.99)


def compare_tile(out: NoiseImages, product_sci) -> np.ndarray | None:
    """``out``'s mismatch histogram against a part of the product (``product_sci``: an
    array, or rows read on demand by ``[r0:r1]``), its figures from the histogram; the
    histogram (None when no pixel is covered). The parts of a tile add theirs up for
    :func:`check_mismatch` (the median by :func:`histogram_quantile`)."""
    _compare(out, product_sci, exact=False)
    return out.mismatch_counts


def check_mismatch(median: float) -> None:
    """Stop unless the re-drizzled science reproduces the product (median difference
    within :data:`MAX_MEDIAN_MISMATCH` RMS)."""
    if not median <= MAX_MEDIAN_MISMATCH:
        raise StageError(f"the noise drizzle does not reproduce the science image (median "
                         f"difference {median:.3g} RMS); the RMS map would not describe the "
                         "product")


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1) of the values of a :data:`MISMATCH_BINS` histogram, to
    the bin's width (0.001 dex)."""
    total = int(np.sum(counts))
    if total == 0:
        return float("nan")
    k = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(10 ** (0.5 * (MISMATCH_BINS[k] + MISMATCH_BINS[k + 1])))


def noise_factors(chips: Sequence[ChipInput], grid: WCS, *, pixfrac: float, kernel: str,
                  windowed) -> tuple[dict[int, float], float]:
    """The correlation factors of a product on ``grid`` and its output-over-input pixel
    scale ratio, measured as :func:`drizzle_noise` does without drizzling the whole grid:
    the chips are cut to the correlation windows, and ``windowed(y0, y1, x0, x1)`` gives
    the product's weights and variance in a window (read from its files)."""
    windows = correlation_windows(chips, grid)
    crops: list[list[Layer]] = [[] for _ in windows]
    ratios = []
    for chip in chips:  # only the parts of the chips that reach the windows
        ratio, parts = chip_parts(chip, grid, windows)
        ratios.append(ratio)
        for k, part in enumerate(parts):
            if part is not None:
                crops[k].append(part)
    groups = [(layers, *windowed(*window))
              for layers, window in zip(crops, windows, strict=True) if layers]
    return (correlation_factors(groups, pixfrac=pixfrac, kernel=kernel),
            float(np.median(ratios)))


def block_sums(a: np.ndarray, n: int) -> np.ndarray:
    """Sums over n x n blocks (a partial last row or column of blocks left out)."""
    by, bx = a.shape[0] // n, a.shape[1] // n
    return a[:by * n, :bx * n].reshape(by, n, bx, n).sum(axis=(1, 3))


def correlation_factors(groups: Sequence[tuple[Sequence[Layer], np.ndarray, np.ndarray]], *,
                        pixfrac: float, kernel: str, blocks: Sequence[int] = RMS_BLOCKS,
                        realisations: int = CORRELATION_REALISATIONS) -> dict[int, float]:
    """``F(n)``: the noise of n x n block means over ``sqrt(mean var)/n``, measured on noise
    drizzled through windows of the grid. Each group is one window: the layers cut to it
    (pixel maps relative to its origin), the product's weights and variance there. The
    ``realisations`` are shared out among the windows; every block with all its pixels
    covered counts alike."""
    from drizzle.resample import Drizzle

    rng = np.random.default_rng(_SEED)
    per_window = max(2, -(-realisations // max(len(groups), 1)))
    z2 = {n: [] for n in blocks}
    for layers, wht, var in groups:
        covered = np.nan_to_num(wht) > 0
        if not covered.any():
            continue
        v = np.where(covered, var, 0.0)
        full = {n: block_sums(covered, n) == n * n for n in blocks}
        # each block's predicted variance of its mean without correlations, sum(var) / n^4
        predicted = {n: block_sums(v, n)[full[n]] / float(n) ** 4 for n in blocks}
        sigmas = [np.sqrt(layer.var) for layer in layers]
        for _ in range(per_window):
            d = Drizzle(kernel=kernel, out_shape=covered.shape, disable_ctx=True, fillval="0")
            for layer, sigma in zip(layers, sigmas, strict=True):
                noise = (rng.standard_normal(sigma.shape) * sigma).astype(np.float32)
                _add(d, layer, noise, None, pixfrac=pixfrac)
            img = np.where(covered, d.out_img, 0.0)
            for n in blocks:
                means = block_sums(img, n)[full[n]] / (n * n)
                z2[n].append(means ** 2 / predicted[n])
    factors = {}
    for n in blocks:
        values = np.concatenate(z2[n]) if z2[n] else np.empty(0)
        if values.size:
            factors[n] = float(np.sqrt(np.mean(values)))
    if not factors:
        raise StageError("the noise drizzle covered no block of its correlation windows")
    return factors


def robust_width(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: a Gaussian's sigma, robust to outliers."""
    values = np.asarray(values, dtype=float)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def blank_sky_check(sci: np.ndarray, rms: np.ndarray, factors: dict[int, float], *,
                    blocks: Sequence[int] = CHECK_BLOCKS, side: int = CHECK_WINDOW_PX
                    ) -> dict[int, dict]:
    """The noise measured in the product's blank sky against the RMS map's prediction.

    In a window of the grid, sources are masked (the 5 x 5 mean of SCI/RMS more than
    :data:`CHECK_SOURCE_SIGMA` of its own robust sigmas above the median, grown by 5
    pixels, and the edges of the coverage). For each block side n: the robust width of
    the n x n block means of SCI (less the blank sky's median) over
    ``sqrt(mean RMS^2) / n x F(n)``, with ``F(1) = 1``; 1 when the RMS map and its
    correlation factors describe the noise. ``{n: {"ratio": r, "blocks": count}}``;
    blocks with too few samples (< 50) are left out.
    """
    from scipy import ndimage

    finite = np.isfinite(sci) & np.isfinite(rms) & (np.nan_to_num(rms) > 0)
    if not finite.any():
        return {}
    ys, xs = np.nonzero(finite)
    y0, y1, x0, x1 = window_around((float(np.median(xs)), float(np.median(ys))), finite.shape,
                                   side)
    s = np.asarray(sci[y0:y1, x0:x1], dtype=np.float64)
    r = np.asarray(rms[y0:y1, x0:x1], dtype=np.float64)
    ok = finite[y0:y1, x0:x1]
    z = np.where(ok, s / np.where(ok, r, 1.0), 0.0)
    smooth = ndimage.uniform_filter(z, 5)
    level = np.median(smooth[ok])
    sources = ok & (smooth - level > CHECK_SOURCE_SIGMA * robust_width(smooth[ok]))
    blank = ok & ~ndimage.maximum_filter(sources, size=11) & ndimage.binary_erosion(
        ok, iterations=3)
    if blank.sum() < 1000:
        return {}
    residual = np.where(blank, s - np.median(s[blank]), 0.0)
    out = {}
    for n in blocks:
        full = block_sums(blank, n) == n * n
        if full.sum() < 50:
            continue
        mean = block_sums(residual, n)[full] / (n * n)
        predicted = np.sqrt(block_sums(np.where(blank, r, 0.0) ** 2, n)[full] / (n * n)) / n
        factor = 1.0 if n == 1 else factors.get(n, float("nan"))
        out[n] = {"ratio": robust_width(mean / (predicted * factor)),
                  "blocks": int(full.sum())}
    return out


def rms_cards(noise: NoiseImages, *, pixfrac: float) -> list[tuple]:
    """Header cards of an RMS map (value, comment) documenting its correlated noise."""
    cards = [("RMSCORR", round(casertano_r(noise.scale_ratio, pixfrac), 4),
              "Casertano+2000 R, large areas (square kernel)")]
    for n, f in sorted(noise.factors.items()):
        cards.append((f"RMSCOR{n}", round(f, 4), f"noise of {n}x{n} block mean / (RMS/{n})"))
    for n, check in sorted(noise.blank_sky.items()):
        cards.append((f"RMSMEA{n}", round(check["ratio"], 4),
                      f"blank sky: {n}x{n} noise measured / predicted"))
    cards += [("RMSCHK", round(noise.mismatch_median, 5),
               "median |science redrizzled - product| / RMS"),
              ("RMSCHK99", round(noise.mismatch_p99, 5), "99th percentile of the same")]
    return cards


def rms_pixels(noise: NoiseImages, product_wht: np.ndarray) -> tuple[np.ndarray, int]:
    """sqrt(variance) (e-/s, float32): NaN where the product has no weight
    (``product_wht``, or a mask of where it is positive), and at the few
    edge pixels that only a sliver of a drop reached in the product (the pixel maps
    differ by thousandths of a pixel); and the number of those."""
    known = (noise.wht > 0) & np.isfinite(noise.var)
    covered = product_wht > 0  # NaN compares False
    rms = np.sqrt(noise.var).astype(np.float32, copy=False)
    missing = int(np.count_nonzero(covered & ~known))
    known &= covered
    rms[~known] = np.nan
    return rms, missing


def rms_image(noise: NoiseImages, product_sci: np.ndarray, product_wht: np.ndarray
              ) -> np.ndarray:
    """The RMS image (:func:`rms_pixels`; ``noise.missing`` counts the covered pixels
    without one). Runs the blank-sky check on the product (``noise.blank_sky``)."""
    rms, noise.missing = rms_pixels(noise, product_wht)
    noise.blank_sky = blank_sky_check(product_sci, rms, noise.factors)
    return rms


def rms_header(noise: NoiseImages, header: fits.Header, *, pixfrac: float) -> fits.Header:
    """An RMS image's header: the science image's ``header`` and the noise cards."""
    hdr = header.copy()  # the science image's: its grid to the last digit, its history
    hdr["BUNIT"] = ("ELECTRONS/S", "1-sigma noise of each science pixel")
    for key, value, comment in rms_cards(noise, pixfrac=pixfrac):
        hdr[key] = (value, comment)
    hdr["RMSNMISS"] = (noise.missing, "weighted science pixels without an RMS (NaN)")
    hdr["COMMENT"] = ("Per-pixel noise of the science image: the calibrated exposures' "
                      "ERR^2 drizzled with the science's weights squared.")
    hdr["COMMENT"] = ("Noise of the mean of an n x n block: sqrt(mean RMS^2 over it) / n "
                      "x RMSCORn (RMSCORR for large areas).")
    return hdr


def write_rms(path: Path, rms: np.ndarray, noise: NoiseImages, header: fits.Header, *,
              pixfrac: float) -> Path:
    """Write the RMS image with the science image's ``header`` and the noise cards."""
    fits.PrimaryHDU(rms, header=rms_header(noise, header, pixfrac=pixfrac)).writeto(path)
    return path


def noise_summary(header: fits.Header) -> dict:
    """What an RMS image's header says of its noise, for the run record and the report:
    ``casertano_r``, ``correlation`` {"n": F(n)}, ``blank_sky`` {"n": measured / predicted}
    (block sides as strings, as JSON has them: the record's cache keys must not change
    when it is read back)."""

    def numbered(prefix: str) -> dict[str, float]:
        return {k[len(prefix):]: float(header[k]) for k in header
                if k.startswith(prefix) and k[len(prefix):].isdigit()}

    return {"casertano_r": float(header["RMSCORR"]), "correlation": numbered("RMSCOR"),
            "blank_sky": numbered("RMSMEA"), "missing": int(header["RMSNMISS"])}
