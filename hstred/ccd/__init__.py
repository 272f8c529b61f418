"""Native ACS/WFC CCD calibration (calacs ACSCCD + ACS2D): raw -> ``_flt`` / ``_flc``.

``calibrate_exposure`` does everything for one exposure; ``ccd_stage``,
``apply_cte``/``record_cte_correction``, ``two_d_stage`` and ``write_calibrated``
expose the parts so that pixel-CTE correction can run elsewhere (e.g. quadrants in
parallel) between the CCD and 2-D stages.
"""

from hstred.ccd.calibrate import (
    CCD_STEPS,
    TWO_D_STEPS,
    CTEFunction,
    ExposureInfo,
    apply_cte,
    calibrate_exposure,
    calibrated_name,
    ccd_stage,
    record_cte_correction,
    two_d_stage,
    write_calibrated,
)
from hstred.ccd.chipdata import ChipData

__all__ = [
    "CCD_STEPS",
    "TWO_D_STEPS",
    "CTEFunction",
    "ChipData",
    "ExposureInfo",
    "apply_cte",
    "calibrate_exposure",
    "calibrated_name",
    "ccd_stage",
    "record_cte_correction",
    "two_d_stage",
    "write_calibrated",
]
