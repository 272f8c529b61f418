"""AstroDrizzle's parallel steps (hstred.drizzle.parallel): no waiting on a polling
loop, blotting on several cores, and products identical to the serial steps."""

from __future__ import annotations

import multiprocessing
import shutil
import time

import numpy as np
import pytest
from astropy.io import fits
from scratch import fixture_dir
from test_drizzle_synthetic import write_fake_program

from hstred.drizzle.grid import compute_output_grid
from hstred.drizzle.parallel import launch_and_wait, parallel_steps
from hstred.drizzle.runner import final_parameters, run_astrodrizzle

_CONTEXT = multiprocessing.get_context("fork")


def _busy(running, peak, seconds):
    with running.get_lock():
        running.value += 1
        peak.value = max(peak.value, running.value)
    time.sleep(seconds)
    with running.get_lock():
        running.value -= 1


def _fail():
    raise SystemExit(3)


def test_launch_and_wait_keeps_the_pool_full_without_polling():
    running, peak = _CONTEXT.Value("i", 0), _CONTEXT.Value("i", 0)
    # one long and three short tasks on two slots: the short ones follow each other on
    # the second slot while the long one runs, so the whole takes about the long one
    durations = (0.9, 0.3, 0.3, 0.3)
    procs = [_CONTEXT.Process(target=_busy, args=(running, peak, d)) for d in durations]
    t0 = time.perf_counter()
    launch_and_wait(procs, 2)
    elapsed = time.perf_counter() - t0
    assert all(p.exitcode == 0 for p in procs)
    assert peak.value == 2
    assert elapsed < 1.6  # drizzlepac's launcher checks once a second: 2 s or more


def test_launch_and_wait_reports_a_failed_process():
    procs = [_CONTEXT.Process(target=_fail, name="bad-task"),
             _CONTEXT.Process(target=time.sleep, args=(0.05,))]
    with pytest.raises(RuntimeError, match="bad-task, exitcode: 3"):
        launch_and_wait(procs, 2)
    assert procs[1].exitcode == 0  # the others still ran to the end


def test_drizzlepac_functions_are_restored():
    from drizzlepac import ablot
    from stsci.tools import mputil

    before = (mputil.launch_and_wait, ablot.run_blot)
    with parallel_steps(2):
        assert mputil.launch_and_wait is launch_and_wait
        assert ablot.run_blot is not before[1]
    with pytest.raises(ValueError), parallel_steps(2):
        raise ValueError
    assert (mputil.launch_and_wait, ablot.run_blot) == before


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "parallel") as d:
        yield write_fake_program(d, chip_shape=(128, 256), visits=2, exposures=2,
                                 filters=("F606W",), n_stars=40, cr_per_chip=40)


def _final(program, where, num_cores):
    copies = []
    where.mkdir()
    for p in program.paths:
        shutil.copyfile(p, where / p.name)
        copies.append(where / p.name)
    grid = compute_output_grid([(program.stars["ra"], program.stars["dec"])],
                               scale_arcsec=0.03)
    pars = final_parameters(len(copies), grid, kernel="square", pixfrac=0.8,
                            weight_type="ERR", num_cores=num_cores, good_bits=0,
                            sky_method="localmin")
    out = run_astrodrizzle(copies, "f", run_dir=where / "run", parameters=pars,
                           expected_chips=2 * len(copies))
    dq = [fits.getdata(c, ("DQ", x)) for c in copies for x in (1, 2)]
    return fits.getdata(out.sci), fits.getdata(out.wht), dq


def test_parallel_steps_give_the_serial_products(four, tmp_path):
    """Separate drizzles, blots and cosmic-ray flags on two cores: every pixel of the
    product, its weight and the flags written into the inputs as with one core."""
    sci1, wht1, dq1 = _final(four, tmp_path / "serial", 1)
    sci2, wht2, dq2 = _final(four, tmp_path / "parallel", 2)
    assert np.array_equal(sci1, sci2, equal_nan=True)
    assert np.array_equal(wht1, wht2)
    assert all(np.array_equal(a, b) for a, b in zip(dq1, dq2, strict=True))
    assert any((d & 4096).any() for d in dq2)  # cosmic rays were found and flagged
