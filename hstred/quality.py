"""Data-quality gates on calibrated exposures, before any drizzling.

AstroDrizzle drops an exposure without usable pixels and fails later on the visit's
missing median image, naming neither the exposure nor the cause. Each calibrated chip
is therefore checked here, and every exposure that fails is named with its cause:

* no pixels at all (an empty SCI extension);
* no usable pixel (NGOODPIX = 0, or every pixel flagged in DQ outside the good bits):
  the share of saturated pixels (DQ 256 full well, 2048 A-to-D) is given;
* a constant image (an empty readout);
* unflagged NaN or infinite values in SCI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.errors import QualityGateError

__all__ = ["exposure_problems", "check_exposure_quality"]

_SATURATED = 256 | 2048


def _chip_problem(hdul: fits.HDUList, extver: int, good_bits: int) -> str | None:
    sci_hdu = hdul["SCI", extver]
    sci = sci_hdu.data
    where = f"SCI,{extver}"
    if sci is None or sci.size == 0:
        return f"{where} holds no pixels (an empty exposure)"
    dq = hdul["DQ", extver].data if ("DQ", extver) in hdul else None
    flagged = np.zeros(sci.shape, bool) if dq is None or dq.shape != sci.shape else (
        (dq.astype(np.int64) & ~int(good_bits)) != 0)
    finite = np.isfinite(sci)
    bad_values = int(np.count_nonzero(~finite & ~flagged))
    if bad_values:
        return (f"{where} has {bad_values} NaN or infinite pixels not flagged in DQ "
                "(a damaged calibration)")
    usable = ~flagged & finite
    ngoodpix = sci_hdu.header.get("NGOODPIX")
    if not usable.any() or ngoodpix == 0:
        saturated = 0.0 if dq is None else float(np.mean((dq & _SATURATED) != 0))
        return (f"{where} has no usable pixel (NGOODPIX = {ngoodpix}; {saturated:.0%} of "
                "its pixels saturated, DQ 256/2048)")
    values = sci[usable]
    if values.size > 1 and float(values.max()) == float(values.min()):
        return f"{where} is constant ({float(values[0]):g} everywhere): an empty readout"
    return None


def exposure_problems(path: Path, *, good_bits: int) -> list[str]:
    """Every chip problem of one calibrated exposure (empty list when it is usable)."""
    problems = []
    with fits.open(path, memmap=True) as hdul:
        extvers = sorted(int(h.header.get("EXTVER", 1)) for h in hdul[1:]
                         if str(h.header.get("EXTNAME", "")).strip().upper() == "SCI")
        for extver in extvers:
            problem = _chip_problem(hdul, extver, good_bits)
            if problem:
                problems.append(problem)
    return problems


def check_exposure_quality(paths: Sequence[Path], *, good_bits: int,
                           sources: dict[str, Path] | None = None) -> None:
    """Raise :class:`QualityGateError` naming every unusable exposure and why.

    ``sources`` maps a calibrated file's name to the input it came from (the raw file),
    so the message names the file to remove.
    """
    sources = sources or {}
    failures = []
    for path in paths:
        problems = exposure_problems(Path(path), good_bits=good_bits)
        if problems:
            origin = sources.get(Path(path).name, Path(path))
            failures.append(f"{origin}: {'; '.join(problems)}")
    if failures:
        raise QualityGateError(f"unusable exposure(s), nothing drizzled: {' | '.join(failures)}"
                               "; move such files out of the directory and run again")
