"""A drizzled product's noise against the simulator's truth.

The noiseless truth images of a product's exposures (less the sky each had subtracted)
are drizzled like the product (its kernel and pixfrac, each chip's aligned WCS from the
working copy, the final drizzle's weights: background ERR and DQ with the cosmic-ray
flags), and so are the cosmic rays' charge (the truth's COSMIC images), so that
``SCI - truth - cosmic`` is the product's noise alone: the RMS image describes the noise,
not the cosmic-ray charge the rejection leaves where few exposures overlap or below its
thresholds. In blank sky (truth within 1 % of the noise of the sky level) the robust width
of that residual over the RMS should be 1 at the native pixel, and that of n x n block
means over ``sqrt(mean RMS^2) / n x RMSCORn`` too. Used by the tests and
``benchmarks/bench_rms.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["truth_on_grid", "residual_widths"]


def truth_on_grid(product, work_dir: Path, truth_images, grid: WCS, *, good_bits: int,
                  pixfrac: float, kernel: str, image: str = "TRUTH") -> np.ndarray:
    """The truth of ``product``'s exposures drizzled onto ``grid`` (pixel_shape set), e-/s.

    ``work_dir`` is the drizzle's kept work directory (``exposures/`` holds the working
    copies); ``truth_images`` the simulator's ``truth/<rootname>_truth.fits`` files.
    ``image`` "COSMIC" drizzles the cosmic rays' charge instead (no sky): with the same
    weights the flagged ones drop out, and what is left is the charge the cosmic-ray step
    left in the product.
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
                if h.name != image:
                    continue
                extver = h.header["EXTVER"]
                header = hdul["SCI", extver].header
                err = hdul["ERR", extver].data.astype(np.float64)
                good = ((hdul["DQ", extver].data & ~good_bits) == 0) & (err > 0)
                weight = np.where(good, (exptime / np.where(good, err, 1.0)) ** 2, 0.0)
                sky = np.float32(header["MDRIZSKY"] if image == "TRUTH" else 0.0)
                data = (h.data - sky).astype(np.float32)
                layers.append(Layer(sci=data, var=np.zeros_like(data),
                                    weight=weight.astype(np.float32),
                                    pixmap=chip_pixmap(read_chip_wcs(copy, extver), grid,
                                                       data.shape),
                                    exptime=exptime,
                                    ratio=pixel_scale_arcsec(grid) / header["IDCSCALE"]))
    return drizzle_layers(layers, (ny, nx), pixfrac=pixfrac, kernel=kernel).out_img


def residual_widths(sci: np.ndarray, truth: np.ndarray, rms: np.ndarray, factors: dict,
                    *, blocks=(4, 16), cosmic: np.ndarray | None = None
                    ) -> tuple[dict[int, float], dict[int, int]]:
    """({n: robust width}, {n: pixels or blocks}) of the blank-sky residual over the RMS
    prediction: n = 1 the native pixel, then each block side (``factors[n]``, RMSCORn).

    Blank sky is where ``truth`` holds no source light; with ``cosmic`` (the drizzled
    COSMIC image) the cosmic-ray charge left in the product is taken out of the residual
    too, so that it measures the noise alone."""
    covered = np.isfinite(sci) & np.isfinite(rms) & np.isfinite(truth)
    sky = np.median(truth[covered][::101])
    blank = covered & (np.abs(np.where(covered, truth, sky) - sky)
                       < 0.01 * np.where(covered, rms, np.inf))
    residual = np.where(blank, sci - truth - (0.0 if cosmic is None else cosmic), 0.0)
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
