"""The yardstick of bench_pipeline.py: a plain serial reduction of a directory of raws.

The same libraries as ``hstred run``, called in the same order, one exposure after
another, with their default settings and no cache:

1. input checks with astropy (one TARGNAME, EXPTIME > 0, ACS/WFC);
2. references named in the headers (``jref$name``), looked up in DATA/crds;
3. calibration of each exposure: the CCD arithmetic of ``hstred.ccd`` (there is no
   library for it apart from calacs, which cannot be installed here) with arcticpy's
   ACS model applied per quadrant in between; arcticpy's OpenMP threads as the
   environment sets them (bench_pipeline.py runs the script with OMP_NUM_THREADS=1, as
   arcticpy from PyPI, built without OpenMP, would run, and once more on all cores);
4. per filter and visit, AstroDrizzle with its defaults; photutils catalogs of the
   visit images; tweakwcs ``align_wcs`` with its defaults, the visit groups of every
   filter aligned to the first; the solutions written into the exposures' WCS;
5. per filter, AstroDrizzle with its defaults.

Settings that are not library defaults, because the defaults cannot work here:
``updatewcs=False`` (the headers already hold the distortion; there are no
IDCTAB files), arcticpy ``express=5`` with 3 iterations (express 0, the library
default, is the exact and several hundred times slower clocking), and the
XYXYMatch search radius of 60 pixels (visit pointings may be off by 1 arcsec).

Prints one JSON line: per-stage start and end times (epoch seconds) and the products.

Usage: python benchmarks/plain_serial.py DATA_DIR WORK_DIR
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def check_inputs(raws: list[Path]) -> list[fits.Header]:
    headers = [fits.getheader(r, 0) for r in raws]
    targets = {h["TARGNAME"] for h in headers}
    if len(targets) != 1:
        sys.exit(f"several targets: {sorted(targets)}")
    for raw, h in zip(raws, headers, strict=True):
        if not h["EXPTIME"] > 0 or h["INSTRUME"] != "ACS" or h["DETECTOR"] != "WFC":
            sys.exit(f"{raw}: not an ACS/WFC exposure with EXPTIME > 0")
    return headers


def references(header: fits.Header, cache: Path) -> dict[str, Path | None]:
    refs = {}
    for key, value in header.items():
        if isinstance(value, str) and value.startswith("jref$"):
            refs[key] = cache / value.split("$", 1)[1]
        elif key.endswith(("FILE", "TAB")) and value == "N/A":
            refs[key] = None
    return refs


def remove_cte(quad_data: np.ndarray, quad, expstart_mjd: float,
               read_noise_e: float) -> np.ndarray:
    """arcticpy's correction of the whole quadrant, read noise and all (the library's
    plain use; ``read_noise_e``, which hstred holds out of the correction, is unused)."""
    import arcticpy

    from hstred.acs import to_readout_orientation

    roe, ccd, traps = arcticpy.CTI_model_for_HST_ACS(expstart_mjd + 2400000.5)
    image = np.ascontiguousarray(to_readout_orientation(quad_data, quad), dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        out = arcticpy.remove_cti(image, 3, parallel_roe=roe, parallel_ccd=ccd,
                                  parallel_traps=traps, parallel_express=5, verbosity=0)
    return to_readout_orientation(out, quad)


def calibrate(raws: list[Path], headers, cache: Path, out: Path) -> list[Path]:
    from hstred.ccd import apply_cte, ccd_stage, two_d_stage, write_calibrated

    out.mkdir(parents=True, exist_ok=True)
    flcs = []
    for raw, header in zip(raws, headers, strict=True):
        refs = references(header, cache)
        chips = ccd_stage(raw, refs)
        chips = apply_cte(chips, remove_cte)
        chips = two_d_stage(chips, refs)
        flcs.append(write_calibrated(chips, out))
    return flcs


def drizzle(files: list[Path], output: str, run_dir: Path) -> Path:
    from drizzlepac import astrodrizzle

    run_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in files:  # AstroDrizzle writes cosmic-ray flags into its inputs
        shutil.copyfile(f, run_dir / f.name)
        copies.append(str(run_dir / f.name))
    with contextlib.chdir(run_dir):
        astrodrizzle.AstroDrizzle(copies, output=output, updatewcs=False,
                                  runfile=str(run_dir / "astrodrizzle.log"))
    # _drc_ for CTE-corrected (_flc) inputs, _drz_ otherwise
    return next(run_dir.glob(f"{output}_dr?_sci.fits"))


def catalog(sci_path: Path):
    """Pixel positions (0-based) of the sources in a drizzled image and its WCS."""
    from photutils.segmentation import SourceCatalog, detect_sources, detect_threshold

    with fits.open(sci_path) as hdul:
        data = hdul[0].data.astype(np.float64)
        wcs = WCS(hdul[0].header)
    wht = fits.getdata(sci_path.with_name(sci_path.name.replace("_sci", "_wht")))
    mask = ~(wht > 0)
    threshold = detect_threshold(data, nsigma=5.0, mask=mask)
    segments = detect_sources(data, threshold, npixels=10, mask=mask)
    cat = SourceCatalog(data, segments, mask=mask)
    good = np.isfinite(cat.xcentroid) & np.isfinite(cat.ycentroid)
    return cat.xcentroid[good], cat.ycentroid[good], wcs


def align(groups: dict[str, list[Path]], images: dict[str, Path]) -> None:
    """tweakwcs: each visit group (all chips of its exposures) fitted to the first group."""
    from astropy.table import Table
    from tweakwcs import FITSWCSCorrector, XYXYMatch, align_wcs

    correctors, owners = [], []
    for gid, (name, files) in enumerate(groups.items()):
        x, y, wcs = catalog(images[name])
        ra, dec = wcs.all_pix2world(x, y, 0)
        for path in files:
            with fits.open(path) as hdul:
                for ext in [h for h in hdul if h.name == "SCI"]:
                    w = WCS(ext.header, hdul)
                    cx, cy = w.all_world2pix(ra, dec, 0)
                    ny, nx = ext.data.shape
                    on = (cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)
                    cat = Table({"x": cx[on], "y": cy[on]})
                    correctors.append(FITSWCSCorrector(w, meta={"catalog": cat,
                                                                "group_id": gid}))
                    owners.append((path, ext.ver))
    align_wcs(correctors, match=XYXYMatch(searchrad=60.0))
    for corrector, (path, extver) in zip(correctors, owners, strict=True):
        with fits.open(path, mode="update") as hdul:
            hdr = hdul["SCI", extver].header
            for key, value in corrector.wcs.to_header(relax=True).items():
                if key.startswith(("CRVAL", "CRPIX", "CD", "PC", "CDELT")):
                    hdr[key] = value


def main(data: Path, work: Path) -> dict:
    stages: dict[str, list[float]] = {}

    def mark(stage: str, start: float) -> None:
        stages[stage] = [start, time.time()]

    t = time.time()
    raws = sorted(data.glob("*_raw.fits"))
    headers = check_inputs(raws)
    mark("inputs", t)

    t = time.time()
    flcs = calibrate(raws, headers, data / "crds" / "references" / "hst" / "acs",
                     work / "calibrated")
    mark("calibrate", t)

    t = time.time()
    groups: dict[str, list[Path]] = defaultdict(list)
    for flc in flcs:
        h = fits.getheader(flc, 0)
        filt = next(h[k] for k in ("FILTER1", "FILTER2") if not h[k].startswith("CLEAR"))
        groups[f"{filt}_{flc.name[:6]}"].append(flc)
    images = {name: drizzle(files, f"visit_{name}", work / "visits" / name)
              for name, files in groups.items()}
    mark("visit_drizzle", t)

    t = time.time()
    aligned = {name: [work / "visits" / name / f.name for f in files]
               for name, files in groups.items()}
    align(aligned, images)
    mark("align", t)

    t = time.time()
    by_filter: dict[str, list[Path]] = defaultdict(list)
    for name, files in aligned.items():
        by_filter[name.split("_")[0]].extend(files)
    products = [str(drizzle(files, f"plain_{filt}", work / "products" / filt))
                for filt, files in sorted(by_filter.items())]
    mark("final_drizzle", t)
    return {"stages": stages, "products": products}


if __name__ == "__main__":
    data_dir, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
    print(json.dumps(main(data_dir, work_dir)))
