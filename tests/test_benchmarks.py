"""The benchmark scripts' own code against the pipeline functions they call."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from hstred.acs import quadrants

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_script_cte_fits_the_calibration_call():
    # hstred.ccd.apply_cte calls cte(quadrant, quad, expstart_mjd, read_noise_e)
    plain = _script("plain_serial")
    quad = quadrants(1)[0]
    image = np.full((40, 30), 100.0)
    image[10, 12] = 5000.0
    out = plain.remove_cte(image, quad, 60000.0, 4.5)
    assert out.shape == image.shape and np.isfinite(out).all()
    # charge moved back, not made: the total changes by the trails cut off at the edges
    assert not np.array_equal(out, image) and abs(out.sum() - image.sum()) < 1e-3 * image.sum()
