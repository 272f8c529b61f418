"""Run-record sections about the exposures, made from the stages' files.

The QA report draws only the run record and the products; what it shows of the
exposures is measured here, once, when the record is written: one row per exposure
(date, exposure time, sky, cosmic-ray fraction, CTE keywords) and a profile through a
bright star of a CTE-corrected exposure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from hstred.acs import quadrants
from hstred.ccd.calibrate import CTE_CARDS
from hstred.naming import filter_name, visit_name

__all__ = ["CTE_KEYWORDS", "cte_keywords", "exposure_rows", "cte_profile",
           "cosmic_ray_fraction"]

#: Bit AstroDrizzle's cosmic-ray identification sets in a working copy's DQ.
CR_BIT = 4096

#: Primary-header keywords of the CTE correction copied into the record per exposure.
CTE_KEYWORDS = ("PCTECORR", *(key for key, _name, _comment in CTE_CARDS))


def cte_keywords(calibrated) -> dict:
    """The CTE keywords of each calibrated file, by file name."""
    out = {}
    for path in calibrated:
        header = fits.getheader(path, 0)
        out[Path(path).name] = {k: header[k] for k in CTE_KEYWORDS if k in header}
    return out


def cosmic_ray_fraction(path: Path) -> float:
    """Fraction of an exposure's pixels flagged as cosmic rays (DQ bit 4096)."""
    flagged = total = 0
    with fits.open(path, memmap=True) as hdul:
        for hdu in hdul:
            if hdu.name == "DQ" and hdu.data is not None:
                flagged += int(np.count_nonzero(hdu.data & CR_BIT))
                total += hdu.data.size
    return flagged / total if total else 0.0


def _median_sky(path: Path) -> float:
    """Mean over the chips of each chip's median (every 8th pixel), in the file's units."""
    with fits.open(path, memmap=True) as hdul:
        skies = [float(np.median(hdu.data[::8, ::8])) for hdu in hdul
                 if hdu.name == "SCI" and hdu.data is not None]
    return float(np.mean(skies))


def exposure_rows(calibrated, cr_fractions: dict[str, float] | None = None) -> list[dict]:
    """One row per exposure: rootname, visit, filter, date, exposure time, sky (e-),
    cosmic-ray fraction (from the drizzle stage, by rootname; None when unknown), CTE
    trap density and PCTECORR."""
    cr_fractions = cr_fractions or {}
    rows = []
    for path in calibrated:
        path = Path(path)
        header = fits.getheader(path, 0)
        root = str(header.get("ROOTNAME", path.name[:9])).strip().lower()
        rows.append({
            "rootname": root,
            "visit": visit_name(root),
            "filter": filter_name(header.get("FILTER1", ""), header.get("FILTER2", "")),
            "date": Time(float(header["EXPSTART"]), format="mjd").isot[:19],
            "exptime_s": float(header.get("EXPTIME", 0.0)),
            "sky_e": _median_sky(path),
            "cr_fraction": cr_fractions.get(root),
            "cte_trap_density": header.get("CTETRAPD"),
            "pctecorr": header.get("PCTECORR", ""),
        })
    return rows


def cte_profile(flc: Path, *, half_width: int = 2, before_px: int = 8,
                after_px: int = 40) -> dict | None:
    """Profile through the brightest clean star of an FLC, corrected and re-trailed.

    The trailed profile is the arCTIc forward model applied to the corrected
    quadrant, i.e. the charge as the detector read it. Returns a JSON-friendly dict
    (``offsets`` in pixels away from the readout, ``trailed`` and ``corrected`` electrons
    above sky summed over ``2 * half_width + 1`` columns, ``description``), or None when
    no suitable star exists.
    """
    from hstred.cte.model import add_cte_to_quadrant

    header = fits.getheader(flc, 0)
    mjd = float(header["EXPSTART"])
    best = None
    with fits.open(flc) as hdul:
        for extver in (1, 2):
            sci = hdul["SCI", extver].data.astype(np.float64)
            dq = hdul["DQ", extver].data
            chip = int(hdul["SCI", extver].header["CCDCHIP"])
            for quad in quadrants(chip):
                q = sci[quad.flt]
                qdq = dq[quad.flt]
                sky = float(np.median(q[::4, ::4]))
                margin = after_px + 10
                inner = q[margin:-margin, margin:-margin]
                inner_dq = qdq[margin:-margin, margin:-margin]
                candidates = np.where((inner_dq == 0) & (inner < 30000.0), inner, -np.inf)
                iy, ix = np.unravel_index(np.argmax(candidates), candidates.shape)
                peak = candidates[iy, ix]
                if best is None or peak > best[0]:
                    best = (peak, chip, quad, q.copy(), sky, iy + margin, ix + margin)
    if best is None or not np.isfinite(best[0]):
        return None
    _peak, chip, quad, q, sky, y, x = best
    cols = slice(x - half_width, x + half_width + 1)
    # Parallel CTE acts on each column alone (arCTIc empties the traps between columns),
    # so trailing the star's columns gives what trailing the whole quadrant gives there.
    columns = np.ascontiguousarray(q[:, cols])
    trailed = add_cte_to_quadrant(columns, quad, mjd)
    away = -1 if quad.flip_y else 1  # trails point away from the readout row
    offsets = np.arange(-before_px, after_px + 1)
    rows = y + away * offsets
    corrected = np.array([columns[r].sum() for r in rows]) - sky * (2 * half_width + 1)
    retrailed = np.array([trailed[r].sum() for r in rows]) - sky * (2 * half_width + 1)
    return {"offsets": offsets.tolist(), "trailed": retrailed.tolist(),
            "corrected": corrected.tolist(),
            "description": f"{Path(flc).name}, chip {chip}, amplifier {quad.amp}, star at "
                           f"(x={x}, y={y}) of the quadrant; {2 * half_width + 1}-column sum"}
