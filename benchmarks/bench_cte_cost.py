"""Per-exposure cost of the pixel-CTE correction on one core, for CTE settings.

Simulates (once, cached in --dir) one full-frame 2024 F606W exposure with CTE
trails, runs the native CCD steps on it, then times the CTE correction of all four
amplifier quadrants (``apply_cte``, as the calibration stage runs it) with arcticpy's
OpenMP limited to one thread, once per setting, best of --repeat runs: CPU seconds
(on a machine shared with other jobs, the wall time an idle core would take) and
wall seconds. The
default settings compared are the former default (express 5, 3 iterations) and
the calibration stage's current default (``CalibrateConfig``), each with the read noise
held out of the correction (``--cte-noise separate``, the default; its cost included) and
without (``amplify``).

Usage: .venv/bin/python benchmarks/bench_cte_cost.py [--dir DIR] [--repeat 1]
       [--setting EXPRESS ITERATIONS ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: The default before it was chosen from the accuracy map (bench_cte_accuracy.py).
FORMER_DEFAULT = (5, 3)


def _simulate(directory: Path) -> Path:
    from hstred.simulate import SimulationConfig, simulate_program

    raws = sorted(directory.glob("*_raw.fits"))
    if not raws:
        t0 = time.perf_counter()
        simulate_program(directory, SimulationConfig(visits=1, exposures=1,
                                                     filters=("F606W",), seed=11,
                                                     date="2024-06-01"))
        print(f"simulated one full-frame exposure in {time.perf_counter() - t0:.1f} s")
        raws = sorted(directory.glob("*_raw.fits"))
    return raws[0]


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from hstred.calibrate import CalibrateConfig, _cte_function
    from hstred.ccd import apply_cte, ccd_stage
    from hstred.cte.model import load_arcticpy
    from hstred.cte.noise import NOISE_METHODS
    from hstred.refs import resolve_references

    default = CalibrateConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hstred-bench-cte-cost"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--setting", type=int, nargs=2, action="append",
                        metavar=("EXPRESS", "ITERATIONS"),
                        help="express factor and iterations to time (repeatable)")
    args = parser.parse_args(argv)
    settings = args.setting or [FORMER_DEFAULT, (default.cte_express, default.cte_iterations)]
    args.dir.mkdir(parents=True, exist_ok=True)
    raw = _simulate(args.dir)
    (refset,) = resolve_references([raw], args.dir)
    chips = ccd_stage(raw, refset.paths)

    load_arcticpy()  # its OpenMP runtime must be loaded for the limit to reach it
    print(f"CTE correction of {raw.name} (4 quadrants of 2048 x 2048), one core:")
    print(f"  {'express':>7} {'iterations':>10} {'read noise':>10} {'CPU s':>8} {'wall s':>8}")
    with threadpool_limits(limits=1, user_api="openmp"):
        for express, iterations in settings:
            for noise in NOISE_METHODS:
                cte = _cte_function(CalibrateConfig(cte_express=express,
                                                    cte_iterations=iterations,
                                                    cte_noise=noise))
                best = (float("inf"), float("inf"))
                for _ in range(args.repeat):
                    t0, c0 = time.perf_counter(), time.process_time()
                    apply_cte(chips, cte)
                    best = min(best, (time.process_time() - c0, time.perf_counter() - t0))
                print(f"  {express:>7} {iterations:>10} {noise:>10} {best[0]:8.2f} "
                      f"{best[1]:8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
