"""Benchmark of the calibration stage: per-step, per-exposure, serial vs parallel.

Simulates (once, cached in --dir) a full-frame program of --exposures exposures,
then calibrates it with 1 worker and with --workers workers, each in a fresh
process, and prints:

* the native CCD steps' wall time per step (one exposure, CTE off),
* per-exposure times (CCD steps, CTE correction, 2-D steps, write) and peak memory
  per worker for each configuration,
* the wall-time speed-up of the CTE-corrected program and whether the parallel
  outputs are identical to the serial ones (bit for bit).

Usage: .venv/bin/python benchmarks/bench_calibrate.py [--dir DIR] [--exposures 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits


def _simulate(directory: Path, exposures: int) -> None:
    from hstred.simulate import SimulationConfig, simulate_program

    if sorted(directory.glob("*_raw.fits")):
        return
    t0 = time.perf_counter()
    simulate_program(directory, SimulationConfig(visits=1, exposures=exposures,
                                                 filters=("F606W",), seed=11,
                                                 date="2024-06-01"))
    print(f"simulated {exposures} full-frame exposures in {time.perf_counter() - t0:.1f} s")


class _StepTimes(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.times: dict[str, float] = {}

    def emit(self, record):
        seconds = getattr(record, "step_seconds", None)
        if seconds is not None:
            self.times[record.step_name] = self.times.get(record.step_name, 0.0) + seconds


def _step_profile(raw: Path, data_dir: Path, queue) -> None:
    """One exposure through the native steps without CTE, timing every step."""
    from hstred.ccd import ccd_stage, two_d_stage, write_calibrated
    from hstred.refs import resolve_references

    handler = _StepTimes()
    logger = logging.getLogger("hstred.ccd")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    (refset,) = resolve_references([raw], data_dir)
    t0 = time.perf_counter()
    chips = ccd_stage(raw, refset.paths)
    t1 = time.perf_counter()
    chips = two_d_stage(chips, refset.paths)
    t2 = time.perf_counter()
    out = write_calibrated(chips, data_dir / "bench_steps")
    t3 = time.perf_counter()
    out.unlink()
    queue.put({"steps": handler.times, "ccd_s": t1 - t0, "two_d_s": t2 - t1,
               "write_s": t3 - t2,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _calibrate(data_dir: Path, out_dir: Path, workers: int, cte: str, queue) -> None:
    from hstred.calibrate import CalibrateConfig, run_calibrate
    from hstred.execution import LocalBackend

    result = run_calibrate(data_dir, CalibrateConfig(cte=cte, engine="native"),
                           out_dir=out_dir, backend=LocalBackend(workers=workers))
    queue.put(result)


def _in_child(target, *args):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    value = queue.get()
    proc.join()
    if proc.exitcode:
        sys.exit(f"benchmark child failed with exit code {proc.exitcode}")
    return value


def _identical(dir_a: Path, dir_b: Path) -> bool:
    files = sorted(p.name for p in dir_a.glob("*.fits"))
    if files != sorted(p.name for p in dir_b.glob("*.fits")):
        return False
    for name in files:
        with fits.open(dir_a / name) as a, fits.open(dir_b / name) as b:
            for ha, hb in zip(a[1:], b[1:], strict=True):
                if not np.array_equal(ha.data, hb.data):
                    return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hstred-bench-calibrate"))
    parser.add_argument("--exposures", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    _simulate(args.dir, args.exposures)
    raws = sorted(args.dir.glob("*_raw.fits"))

    prof = _in_child(_step_profile, raws[0], args.dir)
    print(f"\nNative CCD steps, one full-frame exposure ({raws[0].name}), CTE off:")
    for name, seconds in prof["steps"].items():
        print(f"  {name:<32} {seconds:7.2f} s")
    print(f"  {'CCD stage (steps 1-10)':<32} {prof['ccd_s']:7.2f} s")
    print(f"  {'2-D stage (steps 11-15)':<32} {prof['two_d_s']:7.2f} s")
    print(f"  {'write FLT':<32} {prof['write_s']:7.2f} s")
    print(f"  peak memory {prof['peak_rss_mb']:.0f} MB")

    runs = {}
    for workers in (1, args.workers):
        out = args.dir / f"out_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        runs[workers] = _in_child(_calibrate, args.dir, out, workers, "arctic")
        result = runs[workers]
        print(f"\nCTE-corrected calibration, {len(raws)} exposures, {workers} worker(s): "
              f"wall {result.wall_s:.1f} s")
        print(f"  {'exposure':<11}{'ccd':>7}{'cte':>8}{'2d':>7}{'write':>7}{'total':>8}"
              f"{'peak MB':>9}")
        for t in result.timings:
            print(f"  {t.rootname:<11}{t.ccd_s:7.2f}{t.cte_s:8.2f}{t.two_d_s:7.2f}"
                  f"{t.write_s:7.2f}{t.total_s:8.2f}{t.peak_rss_mb:9.0f}")
    serial, parallel = runs[1], runs[args.workers]
    same = _identical(args.dir / "out_w1", args.dir / f"out_w{args.workers}")
    print(f"\nspeed-up with {args.workers} workers: {serial.wall_s / parallel.wall_s:.2f}x; "
          f"outputs identical: {same}")
    cte_share = np.mean([t.cte_s for t in serial.timings]) / prof["ccd_s"]
    print(f"CTE step / native CCD steps per exposure: {cte_share:.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
