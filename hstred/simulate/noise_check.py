"""A drizzled product's noise against the simulator's truth.

The noiseless truth images of a product's exposures (less the sky each had subtracted)
are drizzled like the product (its kernel and pixfrac, each chip's aligned WCS from the
working copy, the final drizzle's weights: background ERR and DQ with the cosmic-ray
flags), so that ``SCI - truth`` is the product's noise alone. In blank sky (truth within
1 % of the noise of the sky level) the robust width of ``(SCI - truth) / RMS`` should be 1
at the native pixel, and that of n x n block means over ``sqrt(mean RMS^2) / n x RMSCORn``
too. Used by the tests and ``benchmarks/bench_rms.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["truth_on_grid", "residual_widths"]


def truth_on_grid(product, work_dir: Path, truth_images, grid: WCS, *, good_bits: int,
                  pixfrac: float, kernel: str) -> np.ndarray:
    """The truth of ``product``'s exposures drizzled onto ``grid`` (pixel_shape set), e-/s.

    ``work_dir`` is the drizzle's kept work directory (``exposures/`` holds the working
    copies); ``truth_images`` the simulator's ``truth/<rootname>_truth.fits`` files.
    """
    from hstred.align.stage import read_chip_wcs
    from hstred.drizzle.noise import Layer, chip_pixmap, drizzle_layers, pixel_scale_arcsec

    truths = {Path(p).name.split("_")[0]: Path(p) for p in truth_images}
    nx, ny = grid.pixel_shape
    layers = []
    for root in product.exposures:
        copy = next((Path(work_dir) / "exposures").glob(f"{root}_fl?.fits"))
        with fits.open(copy) as hdul, fits.open(truths[root]) as truth:
            exptime = float(hdul[0].header["EXPTIME"])
            for h in truth[1:]:
                extver = h.header["EXTVER"]
                header = hdul["SCI", extver].header
                err = hdul["ERR", extver].data.astype(np.float64)
                good = ((hdul["DQ", extver].data & ~good_bits) == 0) & (err > 0)
                weight = np.where(good, (exptime / np.where(good, err, 1.0)) ** 2, 0.0)
                data = (h.data - np.float32(header["MDRIZSKY"])).astype(np.float32)
                layers.append(Layer(sci=data, var=np.zeros_like(data),
                                    weight=weight.astype(np.float32),
                                    pixmap=chip_pixmap(read_chip_wcs(copy, extver), grid,
                                                       data.shape),
                                    exptime=exptime,
                                    ratio=pixel_scale_arcsec(grid) / header["IDCSCALE"]))
    return drizzle_layers(layers, (ny, nx), pixfrac=pixfrac, kernel=kernel).out_img


def residual_widths(sci: np.ndarray, truth: np.ndarray, rms: np.ndarray, factors: dict,
                    *, blocks=(4, 16)) -> tuple[dict[int, float], dict[int, int]]:
    """({n: robust width}, {n: pixels or blocks}) of the blank-sky residual over the RMS
    prediction: n = 1 the native pixel, then each block side (``factors[n]``, RMSCORn)."""
    covered = np.isfinite(sci) & np.isfinite(rms) & np.isfinite(truth)
    sky = np.median(truth[covered][::101])
    blank = covered & (np.abs(np.where(covered, truth, sky) - sky)
                       < 0.01 * np.where(covered, rms, np.inf))
    residual = np.where(blank, sci - truth, 0.0)
    from hstred.drizzle.noise import block_sums, robust_width

    widths = {1: robust_width(residual[blank] / rms[blank])}
    counts = {1: int(blank.sum())}
    for n in blocks:
        full = block_sums(blank.astype(np.int32), n) == n * n
        mean = block_sums(residual, n)[full] / n**2
        predicted = np.sqrt(block_sums(np.where(blank, rms, 0.0) ** 2, n)[full] / n**2) / n
        widths[n] = robust_width(mean / (predicted * factors[n]))
        counts[n] = int(full.sum())
    return widths, counts
