"""Read noise and the CTE correction: how much the correction amplifies it, with and without
the read noise held out (``--cte-noise separate|amplify``), and what holding it out costs.

A quadrant strip (2048 rows, so every trail length, x --columns columns) per sky level and
date: Poisson sky and stars (100-10000 e-) clocked out through the arCTIc model (express 5,
as the simulator does), then 4.5 e- of read noise. Each is corrected three ways: whole
(``amplify``), with the read-noise estimate held out (``separate``), and with the *true*
read noise held out (``ideal``, what no method can know). Printed per setting: the robust
width of the blank-sky (corrected - truth) / sqrt(RN**2 + truth), and the charge left in the
star trails (rows 4-23 behind each star) as a fraction of the charge before correction
(negative: over-corrected). Then the separation's own time on one full 2048 x 2048 quadrant.

Usage: .venv/bin/python benchmarks/bench_cte_noise.py [--columns 48] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

READ_NOISE = 4.5
DATES = {"2012": 56000.0, "2024": 60400.0}
SKIES = (5.0, 15.0, 40.0, 100.0)


def main(argv=None) -> int:
    from hstred.cte.accuracy import noise_strip, noise_strip_residuals
    from hstred.cte.model import remove_cte_from_quadrant
    from hstred.cte.noise import separate_read_noise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print("blank-sky width (1 = the expected noise) | charge left in the trails, of before")
    print(f"{'date':>5} {'sky e-':>6} | {'amplify':>15} | {'separate':>15} | {'ideal':>15}")
    for date, mjd in DATES.items():
        for sky in SKIES:
            s = noise_strip(mjd, sky, columns=args.columns, seed=args.seed,
                            read_noise_e=READ_NOISE)
            _, before = noise_strip_residuals(s, s.observed)
            quad = s.quadrant
            results = {
                "amplify": remove_cte_from_quadrant(s.observed, quad, mjd),
                "separate": remove_cte_from_quadrant(s.observed, quad, mjd, READ_NOISE),
                "ideal": remove_cte_from_quadrant(s.trailed, quad, mjd) + s.noise,
            }
            cells = []
            for image in results.values():
                width, left = noise_strip_residuals(s, image)
                cells.append(f"{width:6.3f} {left / before:+7.3f}")
            print(f"{date:>5} {sky:6.0f} | " + " | ".join(cells), flush=True)
    quadrant = np.random.default_rng(args.seed).normal(40.0, 7.0, (2048, 2048))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        separate_read_noise(quadrant, READ_NOISE)
        best = min(best, time.perf_counter() - t0)
    print(f"separation of one 2048 x 2048 quadrant: {best:.2f} s (best of 3); "
          f"x 4 per exposure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
