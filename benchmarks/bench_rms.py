"""The RMS images of drizzled products against the truth, and what making them costs.

A simulated full-frame program (CTE off, truth images kept) is calibrated and drizzled;
for each filter's product the noiseless truth and the cosmic rays' charge are drizzled
alike and the blank-sky noise (SCI - truth - cosmic-ray charge left in) / RMS widths
printed at the native pixel and for 4 x 4, 16 x 16 and 32 x 32 block means over the RMS
prediction with the header's RMSCORn (1 = the RMS image is right;
hstred.simulate.noise_check), then the same with the cosmic-ray charge left in, beside
the pipeline's own truth-free blank-sky check (RMSMEAn) and the time the RMS image took.

Usage: .venv/bin/python benchmarks/bench_rms.py [--date 2024-06-01] [--visits 2]
       [--exposures 2] [--out /tmp/hstred-bench-rms]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from astropy.io import fits
    from astropy.wcs import WCS

    from hstred.calibrate import CalibrateConfig, run_calibrate
    from hstred.drizzle import DrizzleConfig, run_drizzle
    from hstred.drizzle.stage import distortion_references
    from hstred.execution import LocalBackend
    from hstred.simulate import SimulationConfig, simulate_program
    from hstred.simulate.noise_check import residual_widths, truth_on_grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2024-06-01")
    parser.add_argument("--visits", type=int, default=2)
    parser.add_argument("--exposures", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hstred-bench-rms"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    sim = simulate_program(args.out / "raw", SimulationConfig(
        visits=args.visits, exposures=args.exposures, filters=("F606W",), seed=1, cte=False,
        truth_images=True, date=args.date))
    cal = run_calibrate(args.out / "raw", CalibrateConfig(cte="none"),
                        out_dir=args.out / "cal").outputs
    config = DrizzleConfig(satellites="off")
    t0 = time.perf_counter()
    result = run_drizzle(args.out / "cal", "bench", config, inputs=cal,
                         work_dir=args.out / "work", backend=LocalBackend(workers=2),
                         distortion=distortion_references(cal, args.out / "raw", fetch=False))
    total = time.perf_counter() - t0
    print(f"{len(cal)} exposures, {args.date}: drizzle stage {total:.1f} s")
    blocks = (4, 16, 32)
    for p in result.products:
        with fits.open(p.sci) as hdul:
            sci, grid = hdul[0].data.astype(float), WCS(hdul[0].header)
        rms, hdr = fits.getdata(p.rms, header=True)
        wht = fits.getdata(p.wht)
        grid.pixel_shape = sci.shape[::-1]
        truth, cosmic = (truth_on_grid(p, args.out / "work", sim.truth_images, grid,
                                       good_bits=config.good_bits, pixfrac=config.pixfrac,
                                       kernel=config.kernel, image=image)
                         for image in ("TRUTH", "COSMIC"))
        factors = {n: hdr[f"RMSCOR{n}"] for n in blocks}
        sci = np.where(wht > 0, sci, np.nan)
        widths, counts = residual_widths(sci, truth, rms.astype(float), factors,
                                         blocks=blocks, cosmic=cosmic)
        with_cr, _ = residual_widths(sci, truth, rms.astype(float), factors, blocks=blocks)
        print(f"{p.filter}: grid {sci.shape[1]} x {sci.shape[0]}; RMS image "
              f"{p.noise['seconds']:.1f} s")
        print("  block side        " + "".join(f"{n:>9d}" for n in (1, *blocks)))
        print("  RMSCORn           " + "".join(f"{(1.0 if n == 1 else hdr[f'RMSCOR{n}']):9.3f}"
                                                for n in (1, *blocks)))
        print("  noise: width      " + "".join(f"{widths[n]:9.3f}" for n in (1, *blocks)))
        print("  truth: samples    " + "".join(f"{counts[n]:9d}" for n in (1, *blocks)))
        print("  with CR left in   " + "".join(f"{with_cr[n]:9.3f}" for n in (1, *blocks)))
        print("  check: RMSMEAn   " + "".join(
            f"{hdr[f'RMSMEA{n}']:9.3f}" if f"RMSMEA{n}" in hdr else f"{'-':>9}"
            for n in (1, *blocks)))
        print(f"  Casertano R {hdr['RMSCORR']:.4f}; re-drizzled science against the product: "
              f"median {hdr['RMSCHK']:.2g} RMS, 99th percentile {hdr['RMSCHK99']:.2g} RMS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
