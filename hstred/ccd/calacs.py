"""The calacs engine: hstcal's acsccd.e and acs2d.e with hstred's CTE correction between.

calacs resolves ``jref$name`` through the ``jref`` environment variable, so the
exposure's resolved references are linked into one private directory first. The
raw file is copied into a private working directory (calacs writes beside its
input); the chain is

    acsccd.e  ROOT_raw.fits -> ROOT_blv_tmp.fits   (bias, overscan, gain, ..., trim)
    arCTIc    ROOT_blv_tmp  -> ROOT_blc_tmp.fits   (PCTECORR=COMPLETE + model keywords)
    acs2d.e   ROOT_blc_tmp  -> ROOT_flc.fits       (dark (DRKCFILE), flat, photometry)

or acs2d.e straight from blv_tmp to ``_flt`` without CTE correction.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.ccd.calibrate import apply_cte
from hstred.ccd.chipdata import ChipData
from hstred.errors import StageError

__all__ = ["calibrate_with_calacs", "run_program"]


def run_program(args: list[str], *, cwd: Path, env: Mapping[str, str]) -> None:
    """Run one hstcal program; a non-zero exit raises StageError with its last lines."""
    proc = subprocess.run(args, cwd=cwd, env=dict(env), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise StageError(f"{args[0]} failed on {args[-2]} (exit {proc.returncode}): {tail}")


def _link_references(references: Mapping[str, Path | None], jref: Path) -> None:
    for path in references.values():
        if path is not None and not (jref / Path(path).name).exists():
            (jref / Path(path).name).symlink_to(Path(path).resolve())


def _read_chips(path: Path) -> list[ChipData]:
    with fits.open(path) as hdul:
        primary = hdul[0].header.copy()
        chips = []
        for extver in (1, 2):
            sci = hdul["SCI", extver]
            chips.append(ChipData(sci=np.asarray(sci.data, dtype=np.float32).copy(),
                                  err=np.asarray(hdul["ERR", extver].data,
                                                 dtype=np.float32).copy(),
                                  dq=np.asarray(hdul["DQ", extver].data, dtype=np.int16).copy(),
                                  units=str(sci.header.get("BUNIT", "ELECTRONS")).upper(),
                                  header=sci.header.copy(), primary=primary,
                                  err_header=hdul["ERR", extver].header.copy(),
                                  dq_header=hdul["DQ", extver].header.copy()))
    return chips


def _correct_blv(blv: Path, blc: Path, cte: Callable, cte_info: Mapping) -> None:
    from hstred.ccd.calibrate import write_calibrated

    chips = _read_chips(blv)
    for chip in chips:
        if chip.shape != (CHIP_NY, CHIP_NX):
            raise StageError(f"{blv.name}: calacs left a {chip.shape} chip; expected the trimmed "
                             f"{CHIP_NY}x{CHIP_NX} full frame")
    write_calibrated(apply_cte(chips, cte, cte_info=cte_info), blc)


def calibrate_with_calacs(raw: Path, references: Mapping[str, Path | None], out_dir: Path, *,
                          cte: Callable | None, cte_info_for: Callable[[float], dict]):
    """Calibrate ``raw`` with acsccd.e + (arCTIc) + acs2d.e into ``out_dir``."""
    from hstred.calibrate import ExposureTiming, _peak_rss_mb

    raw = Path(raw)
    root = fits.getval(raw, "ROOTNAME").strip().lower()
    suffix = "flc" if cte is not None else "flt"
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix=f"calacs-{root}-", dir=out_dir) as tmp:
        work = Path(tmp)
        jref = work / "jref"
        jref.mkdir()
        _link_references(references, jref)
        env = dict(os.environ, jref=str(jref) + "/")
        local_raw = work / f"{root}_raw.fits"
        local_raw.write_bytes(raw.read_bytes())
        t0 = time.perf_counter()
        run_program(["acsccd.e", local_raw.name, f"{root}_blv_tmp.fits"], cwd=work, env=env)
        t1 = time.perf_counter()
        two_d_input = f"{root}_blv_tmp.fits"
        if cte is not None:
            expstart = float(fits.getval(work / two_d_input, "EXPSTART"))
            _correct_blv(work / two_d_input, work / f"{root}_blc_tmp.fits", cte,
                         cte_info_for(expstart))
            two_d_input = f"{root}_blc_tmp.fits"
        t2 = time.perf_counter()
        run_program(["acs2d.e", two_d_input, f"{root}_{suffix}.fits"], cwd=work, env=env)
        t3 = time.perf_counter()
        final = out_dir / f"{root}_{suffix}.fits"
        os.replace(work / f"{root}_{suffix}.fits", final)
        t4 = time.perf_counter()
    return ExposureTiming(rootname=root, output=final, engine="calacs", ccd_s=t1 - t0,
                          cte_s=t2 - t1, two_d_s=t3 - t2, write_s=t4 - t3, total_s=t4 - t0,
                          peak_rss_mb=_peak_rss_mb())
