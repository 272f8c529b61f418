"""Accuracy/cost map of the pixel-CTE correction against the exact arCTIc model.

For each date (2003, 2012, 2024 by default) a seeded realistic quadrant in readout
orientation (``hstred.cte.accuracy.realistic_quadrant``: sky 10-100 e-, faint and
bright stars at every distance from the readout, hot pixels, cosmic rays, Poisson
and read noise) is clocked out through the exact model (express 0) and corrected
with express 1-5 and 1-5 iterations, and with the exact model itself (express 0,
1-5 iterations). Each setting is compared with the exact model's correction with
the same number of iterations, and (``vs exact@N``) with the exact correction
after the most iterations run. Printed per setting:

* seconds: CPU time of the correction of the crop on one thread (the wall time
  on an idle core);
* rms: RMS pixel difference from the exact correction, in read noises;
* trail: charge left in the star trails, % of the trails before correction;
* dflux, dcen: worst star's aperture-flux (% of its flux) and centroid (pixels,
  along the columns) difference from the exact correction; the mean over stars
  in brackets;
* ok: within the bounds of ``hstred.cte.accuracy.ACCURACY_BOUNDS`` (pixel RMS,
  flux and centroid) on this date.

The default crop is 2048 rows (every trail length: stars every 64 rows from the
readout out to the far end) by 16 columns (32 stars, sky 10-100 e-); ``--columns
128`` or ``--columns 2048`` (full quadrants) add stars and columns at a cost that
grows with them: the exact model clocks every transfer, about 4 s per add per 16
columns on an idle core, so full quadrants take hours. The trailed quadrants and
the exact corrections are cached in --cache; later runs take seconds.
``--markdown`` prints the README table.

``--cte-noise separate`` (the default, as in the calibration stage) holds the quadrant's
read-noise estimate (``hstred.cte.noise``) out of every correction, the exact one included,
and adds it back; ``amplify`` corrects the read noise with the rest, as before that option
existed. The differences between settings are then those of the CTE model on the charge
that was clocked out, not of how each setting amplifies the read noise.

Usage: .venv/bin/python benchmarks/bench_cte_accuracy.py [--dates 2003 2012 2024]
       [--columns 16] [--max-iterations 5] [--cache DIR] [--markdown]
       [--cte-noise separate|amplify]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

#: Dates of the map (EXPSTART, MJD): mid-2003, mid-2012, mid-2024.
DATES_MJD = {"2003": 52791.0, "2012": 56079.0, "2024": 60462.0}


def _cached_exact(year: str, columns: int, max_iterations: int, cache: Path, noise: str):
    """The test quadrant and the exact model's iterates (computed once, then cached)."""
    from hstred.cte.accuracy import TestQuadrant, corrections, realistic_quadrant
    from hstred.cte.model import arcticpy_version

    mjd = DATES_MJD[year]
    path = cache / (f"exact_{year}_{columns}_{max_iterations}_{noise}"
                    f"_arcticpy{arcticpy_version()}.npz")
    if path.is_file():
        with np.load(path) as f:
            quadrant = TestQuadrant(mjd=float(f["mjd"]), truth=f["truth"], trailed=f["trailed"],
                                    sky=f["sky"], stars=f["stars"],
                                    read_noise_e=float(f["read_noise_e"]))
            return quadrant, list(f["iterates"]), list(f["timings"])
    t0 = time.perf_counter()
    quadrant = realistic_quadrant(mjd, n_columns=columns)
    timings: list[float] = []
    iterates = corrections(quadrant, noise=noise, express=0, n_iterations=max_iterations,
                           timings=timings)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, mjd=mjd, truth=quadrant.truth, trailed=quadrant.trailed, sky=quadrant.sky,
             stars=quadrant.stars, read_noise_e=quadrant.read_noise_e,
             iterates=np.array(iterates), timings=np.array(timings))
    tmp.rename(path)
    print(f"{year}: exact model for {columns} columns in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return quadrant, iterates, timings


def _iterate(iterates: list, n: int):
    """remove_cti's result with n iterations (see correction_iterates)."""
    return iterates[0] if n == 1 else iterates[n]


def map_date(year: str, *, columns: int, express_values, max_iterations: int, cache: Path,
             noise: str):
    """Rows of the map for one date: dicts of setting, cost and accuracy."""
    from hstred.cte.accuracy import ACCURACY_BOUNDS, compare_with_reference, corrections

    quadrant, exact, exact_timings = _cached_exact(year, columns, max_iterations, cache, noise)
    rows = []
    for express in express_values:
        if express == 0:
            iterates, timings = exact, exact_timings
        else:
            timings = []
            iterates = corrections(quadrant, noise=noise, express=express,
                                   n_iterations=max_iterations, timings=timings)
        for n in range(1, max_iterations + 1):
            corrected = _iterate(iterates, n)
            same_n = compare_with_reference(corrected, _iterate(exact, n), quadrant)
            longest = compare_with_reference(corrected, _iterate(exact, max_iterations),
                                             quadrant)
            rows.append({"year": year, "express": express, "iterations": n,
                         "seconds": float(sum(timings[:n])), "accuracy": same_n,
                         "rms_vs_longest": longest.rms_read_noise,
                         "ok": ACCURACY_BOUNDS.holds_for(same_n)})
    return rows


def _print_text(rows, columns: int, max_iterations: int) -> None:
    print(f"\nCTE correction of a 2048 x {columns} crop, one core, against the exact model "
          "(express 0) with the same iterations")
    head = (f"{'date':>4} {'expr':>4} {'iter':>4} {'seconds':>7} {'rms':>6} "
            f"{'vs exact@' + str(max_iterations):>10} {'trail %':>7} {'dflux % (mean)':>18} "
            f"{'dcen px (mean)':>18} {'flux/truth':>10} ok")
    print(head)
    for r in rows:
        a = r["accuracy"]
        print(f"{r['year']:>4} {r['express']:>4} {r['iterations']:>4} {r['seconds']:7.2f} "
              f"{a.rms_read_noise:6.3f} {r['rms_vs_longest']:10.3f} "
              f"{100 * a.trail_left_fraction:7.2f} "
              f"{100 * a.max_flux_fraction:8.3f} ({100 * a.mean_flux_fraction:+7.3f}) "
              f"{a.max_centroid_px:7.4f} ({a.mean_centroid_px:+8.4f}) "
              f"{a.flux_to_truth:10.4f} {'yes' if r['ok'] else 'no'}")


def _print_markdown(rows, years) -> None:
    """One line per setting, the dates side by side (the README table)."""
    print("| express | iterations | " + " | ".join(
        f"{y}: s, rms, trail %, dflux %, dcen px" for y in years) + " | all dates |")
    print("|---:|---:|" + "---|" * len(years) + ":---:|")
    settings = sorted({(r["express"], r["iterations"]) for r in rows},
                      key=lambda s: (s[0] == 0, s))
    for express, n in settings:
        cells, ok = [], True
        for y in years:
            (r,) = [r for r in rows if r["year"] == y and (r["express"], r["iterations"])
                    == (express, n)]
            a = r["accuracy"]
            ok &= r["ok"]
            cells.append(f"{r['seconds']:.3f}, {a.rms_read_noise:.3f}, "
                         f"{100 * a.trail_left_fraction:.1f}, {100 * a.max_flux_fraction:.3f}, "
                         f"{a.max_centroid_px:.4f}")
        print(f"| {express} | {n} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")


def cheapest_within_bounds(rows, years):
    """The (express, iterations) within the bounds on every date with the least total time."""
    settings = {(r["express"], r["iterations"]) for r in rows if r["express"] > 0}
    good = []
    for s in settings:
        mine = [r for r in rows if (r["express"], r["iterations"]) == s]
        if len(mine) == len(years) and all(r["ok"] for r in mine):
            good.append((sum(r["seconds"] for r in mine), s))
    return min(good)[1] if good else None


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from hstred.calibrate import CalibrateConfig
    from hstred.cte.accuracy import ACCURACY_BOUNDS
    from hstred.cte.model import load_arcticpy
    from hstred.cte.noise import NOISE_METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", nargs="+", default=list(DATES_MJD), choices=list(DATES_MJD))
    parser.add_argument("--columns", type=int, default=16)
    parser.add_argument("--express", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--max-iterations", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/hstred-bench-cte-accuracy"))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--cte-noise", choices=NOISE_METHODS, default=CalibrateConfig().cte_noise,
                        help="read noise held out of every correction (separate, the "
                             "calibration stage's default) or corrected with the rest")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)

    load_arcticpy()  # its OpenMP runtime must be loaded for the limit to reach it
    rows = []
    with threadpool_limits(limits=1, user_api="openmp"):
        for year in args.dates:
            rows += map_date(year, columns=args.columns, express_values=args.express,
                             max_iterations=args.max_iterations, cache=args.cache,
                             noise=args.cte_noise)
    if args.markdown:
        _print_markdown(rows, args.dates)
    else:
        _print_text(rows, args.columns, args.max_iterations)
    best = cheapest_within_bounds(rows, args.dates)
    print(f"\nread noise: {args.cte_noise}; bounds: {ACCURACY_BOUNDS.describe()}")
    print("cheapest setting within the bounds on every date: "
          + (f"express {best[0]}, {best[1]} iterations" if best else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
