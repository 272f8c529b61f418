"""CTE trails run away from the readout amplifier in every quadrant.

The same seed simulated with and without CTE differs only by the trails: the
photon, cosmic-ray and read-noise streams are shared, so the prescan and
overscan agree (to the rounding of the tiny bias shift that follows the signal)
and every difference in the science pixels is charge moved by the traps.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from hstred.acs import quadrants, raw_to_trimmed, to_readout_orientation

pytestmark = pytest.mark.slow


def _sci(path, chip):
    with fits.open(path) as hdul:
        sci = next(h for h in hdul if h.name == "SCI" and h.header["CCDCHIP"] == chip)
        return sci.data.astype(float)


def test_cte_trails_point_away_from_the_amplifier(sim_program_small, sim_program_small_cte):
    plain = sim_program_small[2].raw_files[0]
    trailed = sim_program_small_cte[2].raw_files[0]
    assert plain.name == trailed.name
    for chip in (1, 2):
        a, b = _sci(plain, chip), _sci(trailed, chip)
        diff = b - a
        science = raw_to_trimmed(diff, chip)
        # Prescan and overscan untouched (up to the amplifiers' bias shift, which follows
        # the signal read before them): the trails live in the science pixels only.
        mask = np.ones(diff.shape, dtype=bool)
        raw_to_trimmed(mask, chip)[:] = False
        assert np.abs(diff[mask]).max() <= 1
        assert np.count_nonzero(diff[mask]) < 0.01 * mask.sum()
        base = raw_to_trimmed(a, chip)
        for quad in quadrants(chip):
            d = to_readout_orientation(science[quad.flt], quad)
            img = to_readout_orientation(base[quad.flt], quad)
            level = np.median(img)
            # Bright pixels (cosmic rays, source edges) whose leading neighbours (read
            # before them) are faint: traps fill there and release into the rows read after.
            bright = img[5:-15, :] > level + 1000
            faint_before = np.all([img[5 - k:-15 - k, :] < level + 50 for k in (2, 3, 4)],
                                  axis=0)
            ys, xs = np.nonzero(bright & faint_before)
            ys = ys + 5
            assert ys.size > 100, quad.amp
            after = np.mean([d[ys + k, xs].mean() for k in range(2, 8)])
            before = np.mean([d[ys - k, xs].mean() for k in range(2, 5)])
            assert after > 1.0, (quad.amp, after)  # DN of trailed charge per pixel
            assert after > 5 * abs(before), (quad.amp, after, before)
            assert d[ys, xs].mean() < -after  # the bright pixels lost charge


def test_cte_model_is_recorded_per_exposure(sim_program_small_cte):
    _, _, result = sim_program_small_cte
    truth = json.loads(result.truth_json.read_text())
    exp = truth["visits"][0]["exposures"][0]
    model = exp["cte_model"]
    assert model["mjd"] == pytest.approx(exp["expstart_mjd"])
    assert len(model["trap_densities"]) == 3 and model["full_well_depth"] > 8e4
    assert truth["cte"]["enabled"] and truth["cte"]["express"] == 5
