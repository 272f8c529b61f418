"""The observing plan of a simulated program: visits, exposures, dates, rolls, dithers.

Everything here is drawn from the seed (stream ``"plan"``): the target position,
the first visit's time of day, later visits 10-40 days apart, the roll (PA_V3)
stepping 3-8 degrees per visit, a pointing offset of 5-20" per visit (a POS TARG in
the ideal frame of aperture WFC, so visits overlap heavily), each visit's header-WCS
error (shift 0.2-1", rotation up to 0.05 deg about the target) and sky level.
Within a visit all filters are observed, each with the ACS-WFC-DITHER-LINE steps
of (2.5, 1.5) pixels.

A mosaic (``pointings`` N x M) observes its pointings in ``visits`` epochs. An epoch
draws the date, roll and pointing offset as a visit does, and observes every pointing
in a visit of its own, one after another on the same day at the same roll, each with
its own header-WCS error and sky (the first pointing from the program's stream, the
others from ``"plan", "pointing", epoch, index``). A
pointing's POS TARG adds its place in the mosaic, :data:`MOSAIC_STEP_ARCSEC` apart in
the POS TARG frame, so neighbours overlap by about 10 %, as a generic pattern's offsets
do. The epoch's visits share its dark reference file (one USEAFTER date). A 1 x 1
mosaic is the plain program, draw for draw.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from hstred.errors import InputError
from hstred.simulate import detector as det
from hstred.simulate.config import (
    FILTERS,
    SimulationConfig,
    era_message,
    era_of_date,
    validate_config,
)
from hstred.simulate.rng import rng_for
from hstred.simulate.wcs import (
    WcsError,
    aperture_reference_sky,
    dither_tel_point,
    fov_center_tel,
    hst_attitude,
    tel_to_sky,
)

__all__ = [
    "DITHER_STEP_PX",
    "ExposurePlan",
    "VisitPlan",
    "ProgramPlan",
    "plan_program",
    "date_to_mjd",
    "MOSAIC_STEP_ARCSEC",
    "mosaic_cells",
    "catalog_radius_arcsec",
    "catalog_sources",
]

#: ACS-WFC-DITHER-LINE step between pattern points, in pixels (x, y).
DITHER_STEP_PX = (2.5, 1.5)
_SLOT_OVERHEAD_S = 150.0
#: Step between neighbouring pointings of a mosaic (arcsec, POS TARG frame of aperture
#: WFC): 90 % of the 202" field of view, so neighbours overlap by about 10 %.
MOSAIC_STEP_ARCSEC = 0.9 * 202.0
#: From one mosaic visit's last exposure to the next visit's first (s): the Earth
#: occultation and the next guide-star acquisition.
_VISIT_GAP_S = 3000.0
#: Radius of the truth catalog around the field centre for one pointing (arcsec).
_POINTING_CATALOG_RADIUS_ARCSEC = 150.0
_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
_MJD_EPOCH_DATE = _dt.date(1858, 11, 17)


@dataclass(frozen=True)
class ExposurePlan:
    """One exposure: where and when it points and how its dither differs."""

    rootname: str
    visit: int
    filter_name: str
    index: int
    dither_step: int
    expstart_mjd: float
    exptime_s: float
    darktime_s: float
    dither_px: tuple[float, float]
    postarg_arcsec: tuple[float, float]
    shutter: str


@dataclass(frozen=True)
class VisitPlan:
    """One visit: date, roll, pointing offset, header-WCS error and its exposures."""

    number: int
    visit_id: str
    start_mjd: float
    pa_v3_deg: float
    offset_arcsec: tuple[float, float]
    wcs_error: WcsError
    sky_e_per_s: dict
    exposures: tuple[ExposurePlan, ...]
    #: True sky position (RA, Dec deg) of aperture WFC's reference point at the
    #: visit's first dither position.
    pointing: tuple[float, float] = (0.0, 0.0)
    #: The epoch (1, 2, ...) the visit belongs to: the visit number unless a mosaic.
    epoch: int = 1
    #: (column, row) of the visit's pointing in the mosaic; (0, 0) unless a mosaic.
    cell: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ProgramPlan:
    """The whole program: target, catalog footprint, visits."""

    config: SimulationConfig
    target_ra_deg: float
    target_dec_deg: float
    catalog_center: tuple[float, float]
    proposid: int
    visits: tuple[VisitPlan, ...]

    def exposures(self) -> tuple[ExposurePlan, ...]:
        return tuple(e for v in self.visits for e in v.exposures)


def mosaic_cells(pointings: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[float, float]]]:
    """[((column, row), (x, y) offset in arcsec)] of a mosaic's pointings, row by row,
    centred on the target."""
    cols, rows = pointings
    return [((i, j), ((i - (cols - 1) / 2.0) * MOSAIC_STEP_ARCSEC,
                      (j - (rows - 1) / 2.0) * MOSAIC_STEP_ARCSEC))
            for j in range(rows) for i in range(cols)]


def catalog_radius_arcsec(config: SimulationConfig) -> float:
    """Radius of the truth catalog's disk: one pointing's, widened to the mosaic's corners."""
    reach = max(float(np.hypot(*offset)) for _, offset in mosaic_cells(config.pointings))
    return _POINTING_CATALOG_RADIUS_ARCSEC + reach


def catalog_sources(config: SimulationConfig) -> int:
    """Sources in the truth catalog: ``config.sources`` per pointing's disk, at the same
    density over the whole catalog disk."""
    scale = (catalog_radius_arcsec(config) / _POINTING_CATALOG_RADIUS_ARCSEC) ** 2
    return int(round(config.sources * scale))


def _exposure_id(index: int) -> str:
    return _ID_CHARS[10 + index // 36] + _ID_CHARS[index % 36]


def date_to_mjd(date: _dt.date) -> float:
    """Modified Julian Date of 00:00 UT on ``date``."""
    return float((date - _MJD_EPOCH_DATE).days)


def _check_one_era(config: SimulationConfig, visits: list) -> None:
    """Every visit must fall in the first visit's era (one detector set-up per program)."""
    first = era_of_date(config.start_date)
    for visit in visits:
        day = _MJD_EPOCH_DATE + _dt.timedelta(days=int(visit.start_mjd))
        if era_of_date(day) != first:
            raise InputError(f"visit {visit.number} would fall on {day.isoformat()}, outside "
                             f"the {first} era of the first visit: {era_message(day)}; "
                             "start earlier or simulate fewer visits")


def _visit(config: SimulationConfig, number: int, epoch: int, cell: tuple[int, int],
           start: float, pa: float, offset: tuple[float, float], error: WcsError, sky: dict,
           target_ra: float, target_dec: float) -> tuple[VisitPlan, float]:
    """One visit's plan, and the time its last exposure ends (MJD)."""
    visit_id = f"j{config.program}{number:02d}"
    exposures = []
    t = start
    index = 0
    for filter_name in config.filters:
        for step in range(config.exposures):
            dither = (DITHER_STEP_PX[0] * step, DITHER_STEP_PX[1] * step)
            postarg = (offset[0] + 0.05 * dither[0], offset[1] + 0.05 * dither[1])
            exposures.append(ExposurePlan(
                rootname=f"{visit_id}{_exposure_id(index)}q",
                visit=number,
                filter_name=filter_name,
                index=index,
                dither_step=step,
                expstart_mjd=round(t, 8),
                exptime_s=float(config.exptime_s),
                darktime_s=round(float(config.exptime_s)
                                 + det.DEFAULT_DETECTOR.darktime_overhead_s, 3),
                dither_px=dither,
                postarg_arcsec=(round(postarg[0], 4), round(postarg[1], 4)),
                shutter="AB"[index % 2],
            ))
            t += (config.exptime_s + _SLOT_OVERHEAD_S) / 86400.0
            index += 1
    v2, v3 = dither_tel_point(*exposures[0].postarg_arcsec)
    pointing = aperture_reference_sky(hst_attitude(ra_deg=target_ra, dec_deg=target_dec,
                                                   pa_v3_deg=round(pa, 6), v2_arcsec=v2,
                                                   v3_arcsec=v3))
    return VisitPlan(number=number, visit_id=visit_id, start_mjd=round(start, 8),
                     pa_v3_deg=round(pa, 6), offset_arcsec=offset, wcs_error=error,
                     sky_e_per_s=sky, exposures=tuple(exposures), pointing=pointing,
                     epoch=epoch, cell=cell), t


def plan_program(config: SimulationConfig) -> ProgramPlan:
    """Draw the program's target, visits and exposures from the seed."""
    config = validate_config(config)
    rng = rng_for(config.seed, "plan")
    target_ra = float(rng.uniform(0.0, 360.0))
    target_dec = float(np.degrees(np.arcsin(rng.uniform(-0.8, 0.8))))
    pa0 = float(rng.uniform(0.0, 360.0))
    visits = []
    start = date_to_mjd(config.start_date) + float(rng.uniform(1.0, 20.0)) / 24.0
    pa = pa0
    cells = mosaic_cells(config.pointings)
    for epoch in range(1, config.visits + 1):
        if epoch > 1:
            start += float(rng.integers(10, 41)) + float(rng.uniform(-0.3, 0.3))
            pa = (pa + float(rng.uniform(3.0, 8.0)) * float(rng.choice([-1.0, 1.0]))) % 360.0
        radius = float(rng.uniform(5.0, 20.0))
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
        offset = (float(radius * np.cos(angle)), float(radius * np.sin(angle)))
        t = start
        for index, (cell, cell_offset) in enumerate(cells):
            # the first pointing draws from the program's stream, as a plain visit does
            draw = rng if index == 0 else rng_for(config.seed, "plan", "pointing", epoch, index)
            shift = float(draw.uniform(0.2, 1.0))
            shift_angle = float(draw.uniform(0.0, 2.0 * np.pi))
            error = WcsError(dx_arcsec=shift * np.cos(shift_angle),
                             dy_arcsec=shift * np.sin(shift_angle),
                             rotation_deg=float(draw.uniform(-0.05, 0.05)),
                             center_ra_deg=target_ra, center_dec_deg=target_dec)
            sky = {f: FILTERS[f].sky_e_per_s * float(draw.uniform(0.85, 1.25))
                   for f in config.filters}
            number = (epoch - 1) * len(cells) + index + 1
            if index:
                t += _VISIT_GAP_S / 86400.0
            visit, t = _visit(config, number, epoch, cell, t, pa,
                              (offset[0] + cell_offset[0], offset[1] + cell_offset[1]),
                              error, sky, target_ra, target_dec)
            visits.append(visit)
    _check_one_era(config, visits)
    att = hst_attitude(ra_deg=target_ra, dec_deg=target_dec, pa_v3_deg=pa0)
    center = tel_to_sky(att, *fov_center_tel())
    proposid = 10000 + int(config.program, 36) % 9000
    return ProgramPlan(config=config, target_ra_deg=target_ra, target_dec_deg=target_dec,
                       catalog_center=(float(center[0]), float(center[1])),
                       proposid=proposid, visits=tuple(visits))
