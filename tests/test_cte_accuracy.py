"""The default CTE setting against the exact arCTIc model, and where it is recorded."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from hstred.calibrate import CalibrateConfig, _cte_info
from hstred.ccd.calibrate import record_cte_correction
from hstred.ccd.chipdata import ChipData
from hstred.cli import app
from hstred.cte.accuracy import (
    DEFAULT_SETTING_ACCURACY,
    compare_with_reference,
    correction_iterates,
    corrections,
    realistic_quadrant,
)
from hstred.cte.model import (
    CORRECTION_EXPRESS,
    CORRECTION_ITERATIONS,
    MJD_TO_JD,
    load_arcticpy,
)
from hstred.record import cte_keywords

MJD_2024 = 60462.0


@pytest.mark.parametrize("n_iterations", [1, 3])
def test_iterates_are_those_of_arcticpy_remove_cti(n_iterations):
    rng = np.random.default_rng(2)
    image = rng.normal(20.0, 5.0, (300, 6))  # some pixels negative
    image[100, 2] += 3000.0
    arcticpy = load_arcticpy()
    roe, ccd, traps = arcticpy.CTI_model_for_HST_ACS(MJD_2024 + MJD_TO_JD)
    with contextlib.redirect_stdout(io.StringIO()):
        expected = arcticpy.remove_cti(image, n_iterations, parallel_roe=roe, parallel_ccd=ccd,
                                       parallel_traps=traps, parallel_express=2, verbosity=0)
    iterates = correction_iterates(image, MJD_2024, express=2, n_iterations=n_iterations)
    got = iterates[0] if n_iterations == 1 else iterates[n_iterations]
    assert np.array_equal(got, expected)


@pytest.fixture(scope="module")
def quadrant_2024():
    """The map's 2024 quadrant (``bench_cte_accuracy.py --columns 16``): 2048 rows, so
    every trail length, by 16 columns (32 stars), trailed by the exact model."""
    return realistic_quadrant(MJD_2024, n_columns=16, seed=0)


def test_default_setting_within_its_recorded_accuracy(quadrant_2024):
    """The hardest date of the map (most traps): the default against express 0, both with
    the read noise handled as the calibration stage does by default."""
    q = quadrant_2024
    noise = CalibrateConfig().cte_noise
    exact = corrections(q, express=0, n_iterations=CORRECTION_ITERATIONS, noise=noise)
    n = CORRECTION_ITERATIONS if CORRECTION_ITERATIONS > 1 else 0
    default = corrections(q, express=CORRECTION_EXPRESS, n_iterations=CORRECTION_ITERATIONS,
                          noise=noise)
    accuracy = compare_with_reference(default[n], exact[n], q)
    assert DEFAULT_SETTING_ACCURACY.holds_for(accuracy), accuracy
    # the comparison can fail: one express-1 pass is measurably further from the model
    cruder = corrections(q, express=1, n_iterations=1, noise=noise)
    assert not DEFAULT_SETTING_ACCURACY.holds_for(compare_with_reference(cruder[0], exact[n], q))
    # the correction does its job: the trails are gone
    assert abs(accuracy.trail_left_fraction) < 0.05


def test_realistic_quadrant_is_seeded_and_trailed_away_from_readout(quadrant_2024):
    q = quadrant_2024
    small = [realistic_quadrant(MJD_2024, n_rows=128, n_columns=16, seed=1) for _ in range(2)]
    assert np.array_equal(small[0].trailed, small[1].trailed)
    trail = q.trailed - q.truth
    behind = sum(trail[int(y) + 4:int(y) + 30, int(x) - 2:int(x) + 3].sum() for y, x, _ in q.stars)
    ahead = sum(trail[int(y) - 30:int(y) - 4, int(x) - 2:int(x) + 3].sum() for y, x, _ in q.stars)
    assert behind > 1000 and abs(ahead) < 0.2 * behind
    assert 10.0 <= q.sky.min() < q.sky.max() <= 100.0
    assert len(q.stars) == 32


def test_header_and_run_record_carry_setting_and_accuracy(tmp_path):
    default = _cte_info(CalibrateConfig(), MJD_2024)
    other = _cte_info(CalibrateConfig(cte_express=CORRECTION_EXPRESS + 1), MJD_2024)
    assert default["express"] == CORRECTION_EXPRESS
    assert default["n_iterations"] == CORRECTION_ITERATIONS
    assert default["accuracy_rms_read_noise"] == DEFAULT_SETTING_ACCURACY.rms_read_noise
    assert "accuracy_rms_read_noise" not in other  # not measured for other settings

    header = fits.Header({"EXPSTART": MJD_2024})
    chip = ChipData(sci=np.zeros((2, 2), np.float32), err=np.zeros((2, 2), np.float32),
                    dq=np.zeros((2, 2), np.int16), units="ELECTRONS", primary=header,
                    header=fits.Header({"CCDCHIP": 1}))
    (marked,) = record_cte_correction([chip], default)
    h = marked.primary
    assert (h["CTEEXPR"], h["CTE_NIT"]) == (CORRECTION_EXPRESS, CORRECTION_ITERATIONS)
    assert h["CTEACRMS"] == DEFAULT_SETTING_ACCURACY.rms_read_noise
    assert h["CTEACFLX"] == DEFAULT_SETTING_ACCURACY.flux_fraction
    assert h["CTEACCEN"] == DEFAULT_SETTING_ACCURACY.centroid_px
    assert "CTEACRMS" not in record_cte_correction([chip], other)[0].primary

    path = tmp_path / "x_flc.fits"
    fits.PrimaryHDU(header=h).writeto(path)
    record = cte_keywords([path])["x_flc.fits"]
    assert record["CTEEXPR"] == CORRECTION_EXPRESS and record["CTE_NIT"] == CORRECTION_ITERATIONS
    assert record["CTEACFLX"] == DEFAULT_SETTING_ACCURACY.flux_fraction


def test_cli_takes_cte_defaults_from_the_config(monkeypatch, tmp_path):
    import hstred.pipeline

    seen = []

    def fake_run(data, outname, config, **kwargs):
        seen.append(config.calibrate)
        raise hstred.pipeline.InputError("stop here")

    monkeypatch.setattr(hstred.pipeline, "run_pipeline", fake_run)
    res = CliRunner().invoke(app, ["calibrate", "--data", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert (seen[0].cte_express, seen[0].cte_iterations) == (CORRECTION_EXPRESS,
                                                             CORRECTION_ITERATIONS)
    res = CliRunner().invoke(app, ["calibrate", "--data", str(tmp_path), "--cte-express", "0",
                                   "--cte-iterations", "7"])
    assert (seen[1].cte_express, seen[1].cte_iterations) == (0, 7)
