"""The free-space estimate made before any work: from the inputs' own image sizes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from test_drizzle_synthetic import write_fake_program

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.inputs import check_inputs
from hstred.pipeline import PipelineConfig, space_needed


def _full_frame_copy(flc, dest):
    """``flc``'s headers with full 4096 x 2048 SCI arrays (all the estimate reads)."""
    with fits.open(flc) as hdul:
        hdus = [fits.PrimaryHDU(header=hdul[0].header)]
        for h in hdul[1:]:
            if h.name == "SCI":
                hdus.append(fits.ImageHDU(np.zeros((CHIP_NY, CHIP_NX), np.float32),
                                          header=h.header, name="SCI", ver=h.ver))
        fits.HDUList(hdus).writeto(dest)
    return dest


def test_estimate_follows_the_image_sizes(tmp_path):
    prog = write_fake_program(tmp_path / "small", chip_shape=(64, 128), visits=1, exposures=2,
                              filters=("F606W",), n_stars=5)
    small = check_inputs(prog.paths)
    (tmp_path / "full").mkdir()
    full = [replace(e, path=_full_frame_copy(e.path, tmp_path / "full" / e.path.name))
            for e in small]
    config = PipelineConfig()
    one_calibrated = 2 * CHIP_NX * CHIP_NY * 10  # float32 SCI, ERR; int16 DQ

    calibrate = space_needed(full, n_calibrate=2, drizzle=False, config=config)
    assert calibrate == pytest.approx(1.1 * 2 * one_calibrated)
    ratio = (2 * 64 * 128) / (2 * CHIP_NX * CHIP_NY)
    assert space_needed(small, n_calibrate=2, drizzle=False, config=config) == pytest.approx(
        ratio * calibrate)

    # Drizzling adds working copies, separate drizzles, blots and the products: for two
    # full-frame exposures at 0.03", a few hundred MB each; for the cut-outs, a few MB.
    drizzle_full = space_needed(full, n_calibrate=2, drizzle=True, config=config)
    assert 4 * calibrate < drizzle_full < 20 * calibrate
    drizzle_small = space_needed(small, n_calibrate=2, drizzle=True, config=config)
    assert drizzle_small < 0.01 * drizzle_full
    assert space_needed([], n_calibrate=0, drizzle=True, config=config) == 0.0
