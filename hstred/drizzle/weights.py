"""Inverse-variance drizzle weights without the sources' own shot noise.

A calibrated ERR array holds the full per-pixel error, including the shot noise of
the source itself. Weighting by ``1/ERR**2`` gives the bright pixels of a star less
weight than its faint ones, which lowers drizzled fluxes (by about 10 % for
well-exposed stars at 0.03"/pixel, pixfrac 0.8). The background variance is also not
recoverable pixel by pixel as ``ERR**2 - SCI``: flat-fielding scales the two
differently, leaving a source term of a few per cent of the signal.

The weights used here are therefore the local background variance: the median of
``ERR**2`` over good (DQ = 0) pixels in blocks of ``block_px`` x ``block_px`` pixels,
interpolated bilinearly between block centres. Medians ignore the few pixels that
sources occupy; what remains is the sky, dark and read-noise variance and its
large-scale flat-field structure, as in AstroDrizzle's own IVM weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.errors import StageError

__all__ = ["background_variance", "write_background_errors"]


def background_variance(err: np.ndarray, *, dq: np.ndarray | None = None,
                        block_px: int = 64) -> np.ndarray:
    """Smooth background variance map (squared units of ``err``) from an error array.

    Parameters
    ----------
    err : 2-D array
        1-sigma errors (e.g. electrons).
    dq : 2-D integer array, optional
        Pixels with any DQ bit set are left out of the block medians.
    block_px : int
        Block size in pixels; blocks without any good pixel take the median of all
        blocks.

    Returns
    -------
    ndarray (float32) of the same shape; the input is not modified.
    """
    var = np.asarray(err, dtype=np.float64) ** 2
    good = np.isfinite(var) & (var > 0)
    if dq is not None:
        good &= np.asarray(dq) == 0
    ny, nx = var.shape
    by, bx = -(-ny // block_px), -(-nx // block_px)
    padded = np.full((by * block_px, bx * block_px), np.nan)
    padded[:ny, :nx] = np.where(good, var, np.nan)
    blocks = padded.reshape(by, block_px, bx, block_px).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(by, bx, block_px * block_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        med = np.nanmedian(blocks, axis=2)
    if not np.isfinite(med).any():
        raise ValueError("no good pixels to estimate the background variance")
    med = np.where(np.isfinite(med), med, np.nanmedian(med))
    # Bilinear interpolation between block centres (flat beyond the outer centres),
    # done separably: along x for each block row, then along y.
    centres_x = (np.arange(bx) + 0.5) * block_px - 0.5
    centres_y = (np.arange(by) + 0.5) * block_px - 0.5
    px, py = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
    rows = np.stack([np.interp(px, centres_x, med[j]) for j in range(by)])
    out = np.empty((ny, nx), dtype=np.float32)
    wy = np.interp(py, centres_y, np.arange(by, dtype=float))
    j0 = np.floor(wy).astype(int)
    j1 = np.minimum(j0 + 1, by - 1)
    f = (wy - j0)[:, None]
    out[:] = (1.0 - f) * rows[j0] + f * rows[j1]
    return out


def write_background_errors(path: Path, extvers, *, block_px: int = 64) -> None:
    """Replace the ERR arrays of a working copy by sqrt(background variance), in place."""
    with fits.open(path, mode="update") as hdul:
        for extver in extvers:
            sci = hdul["SCI", extver].data
            err = hdul["ERR", extver].data
            dq = hdul["DQ", extver].data
            if err is None or err.shape != sci.shape:
                raise StageError(f"{path}[ERR,{extver}]: no error array to weight by; "
                                 "use weight_type='EXP'")
            var = background_variance(err, dq=dq if dq is not None and dq.shape == sci.shape
                                      else None, block_px=block_px)
            hdul["ERR", extver].data = np.sqrt(var).astype(np.float32)
            hdul["ERR", extver].header["HISTORY"] = (
                f"hstred: ERR replaced by the {block_px}-pixel block-median background error "
                "for drizzle weights")
        hdul.flush()
