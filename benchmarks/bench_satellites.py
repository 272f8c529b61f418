"""Benchmark of the satellite-trail search against the calibration, per exposure.

Simulates (once, cached in --dir) a one-visit F606W program of --exposures full-frame
exposures with CTE trails, half of them crossed by a satellite, calibrates it (native
engine, arCTIc CTE correction, one worker) and, in one warm process on one core, searches
every calibrated exposure for trails (hstred.satellites, as the drizzle stage runs it).
Prints per exposure: calibration wall time (from the calibration's own timings), the
search's wall time, its share of the calibration, the trails found and the fraction of
pixels masked; and the search's breakdown for one exposure (acstools' MRT step, the
full-resolution trace).

Usage: .venv/bin/python benchmarks/bench_satellites.py [--dir DIR] [--exposures 4]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hstred-bench-satellites"))
    parser.add_argument("--exposures", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from hstred.calibrate import CalibrateConfig
    from hstred.execution import LocalBackend
    from hstred.pipeline import PipelineConfig, run_pipeline
    from hstred.satellites import BINSIZE, search_exposure
    from hstred.simulate import SimulationConfig, simulate_program

    args.dir.mkdir(parents=True, exist_ok=True)
    if not sorted(args.dir.glob("*_raw.fits")):
        t0 = time.perf_counter()
        simulate_program(args.dir, SimulationConfig(visits=1, exposures=args.exposures,
                                                    filters=("F606W",), seed=2,
                                                    satellites=0.5))
        print(f"simulated {args.exposures} exposures in {time.perf_counter() - t0:.1f} s")
    calibrated: dict[str, float] = {}

    def on_exposure(timing, done, total):
        calibrated[timing.rootname] = timing.total_s

    config = PipelineConfig(calibrate=CalibrateConfig(cte="arctic", engine="native"))
    result = run_pipeline(args.dir, None, config, command="calibrate",
                          backend=LocalBackend(workers=1), on_exposure=on_exposure)
    paths = sorted(result.calibrated)
    search_exposure(paths[0])  # imports and caches out of the figures
    print(f"satellite search (acstools binsize {BINSIZE}, one core) against calibration "
          "(CCD steps + arCTIc + 2-D steps, one core):")
    print(f"{'exposure':10s} {'calibrate s':>11s} {'search s':>9s} {'share':>6s} "
          f"{'trails':>6s} {'masked %':>8s}")
    shares = []
    for p in paths:
        root = p.name[:9]
        t0 = time.perf_counter()
        search, _ = search_exposure(p)
        seconds = time.perf_counter() - t0
        cal = calibrated.get(root)
        share = seconds / cal if cal else float("nan")
        shares.append(share)
        print(f"{root:10s} {cal if cal else float('nan'):11.1f} {seconds:9.2f} "
              f"{100 * share:5.1f}% {len(search.trails):6d} {100 * search.masked_fraction:8.3f}")
    print(f"mean share of the calibration: {100 * sum(shares) / len(shares):.1f}% "
          "(goal: <= 15%)")
    profile = cProfile.Profile()
    profile.enable()
    search_exposure(paths[0])
    profile.disable()
    stats = pstats.Stats(profile)
    total = max(stats.total_tt, 1e-9)
    for name, label in (("run_mrt", "acstools MRT"), ("find_mrt_sources", "acstools sources"),
                        ("filter_sources", "acstools filter"), ("_trace", "full-res trace")):
        cum = sum(v[3] for k, v in stats.stats.items() if k[2] == name)
        print(f"  {label:18s} {cum:6.2f} s ({100 * cum / total:4.1f}% of the search, "
              "profiled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
