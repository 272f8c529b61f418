"""Configuration and result types of the ACS/WFC observing-program simulator.

Also holds the per-filter optical facts the simulator uses (filter-wheel
placement, pivot wavelength, bandwidth, sky brightness, PSF halo), so that the
catalog, PSF, raw-header and reference-file modules agree on them.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, fields
from pathlib import Path

from hstred.errors import InputError

__all__ = [
    "SimulationConfig",
    "SimulationResult",
    "FilterInfo",
    "FILTERS",
    "FIRST_POST_SM4_DATE",
    "FIRST_WFC_DATE",
    "WFC_FAILURE_DATE",
    "era_of_date",
    "era_message",
    "validate_config",
    "filter_keywords",
    "MAX_POINTINGS",
    "parse_pointings",
]

#: First date simulated: ACS/WFC science began in March 2002 (launch on SM3B).
FIRST_WFC_DATE = _dt.date(2002, 3, 1)
#: ACS/WFC stopped working on 2007-01-27 (failure of the Side-2 electronics); the
#: original electronics (bias level from the overscan) are simulated before that.
WFC_FAILURE_DATE = _dt.date(2007, 1, 27)
#: ACS/WFC resumed science after Servicing Mission 4 (MJD 54962 = 2009-05-24); the
#: simulator models the post-SM4 electronics (prescan bias level, row stripes).
FIRST_POST_SM4_DATE = _dt.date(2009, 6, 1)
#: Last start date simulated.
LAST_SIMULATED_YEAR = 2040


def era_of_date(date: _dt.date) -> str | None:
    """'pre-SM4' (2002-03-01 .. 2007-01-26), 'post-SM4' (2009-06-01 .. 2040), else None."""
    if FIRST_WFC_DATE <= date < WFC_FAILURE_DATE:
        return "pre-SM4"
    if FIRST_POST_SM4_DATE <= date and date.year <= LAST_SIMULATED_YEAR:
        return "post-SM4"
    return None


def era_message(date: _dt.date) -> str:
    """One line saying why ``date`` lies outside the simulated eras."""
    eras = (f"{FIRST_WFC_DATE.isoformat()} to "
            f"{(WFC_FAILURE_DATE - _dt.timedelta(days=1)).isoformat()} or "
            f"{FIRST_POST_SM4_DATE.isoformat()} to {LAST_SIMULATED_YEAR}")
    if WFC_FAILURE_DATE <= date < FIRST_POST_SM4_DATE:
        why = (f"ACS/WFC was out of service from {WFC_FAILURE_DATE.isoformat()} until "
               "Servicing Mission 4")
    elif date < FIRST_WFC_DATE:
        why = "ACS/WFC science began in March 2002"
    else:
        why = "it is beyond the simulated years"
    return f"date {date.isoformat()} cannot be simulated: {why}; choose a date from {eras}"


@dataclass(frozen=True)
class FilterInfo:
    """Facts about one ACS/WFC filter used by the simulator.

    ``wheel`` is the filter wheel holding it (1 -> FILTER1, 2 -> FILTER2; the
    other wheel then holds CLEAR1L/CLEAR2L, as in real headers).  Wavelengths are
    in Angstrom.  ``ab_zeropoint`` is the AB magnitude giving 1 e-/s.
    ``sky_e_per_s`` is a typical zodiacal sky count rate per 0.05" x 0.05"
    pixel.  ``photflam`` is an approximate inverse sensitivity
    (erg cm-2 s-1 A-1 per e-/s) at ``photflam_mjd``; it decreases with time in the
    simulated IMPHTTAB by ``sens_loss_per_year``.  ``halo_fraction`` is the
    fraction of the light scattered into the broad long-wavelength CCD halo.
    """

    name: str
    wheel: int
    pivot_angstrom: float
    bandwidth_angstrom: float
    photflam: float
    ab_zeropoint: float
    sky_e_per_s: float
    halo_fraction: float
    photflam_mjd: float = 57000.0
    sens_loss_per_year: float = 0.0005


FILTERS: dict[str, FilterInfo] = {
    f.name: f
    for f in (
        FilterInfo("F435W", 2, 4329.0, 293.0, 3.13e-19, 25.66, 0.035, 0.0),
        FilterInfo("F475W", 1, 4746.0, 420.0, 1.83e-19, 26.06, 0.065, 0.0),
        FilterInfo("F606W", 1, 5921.0, 672.0, 7.78e-20, 26.50, 0.125, 0.0),
        FilterInfo("F775W", 1, 7692.0, 434.0, 9.98e-20, 25.66, 0.085, 0.01),
        FilterInfo("F814W", 2, 8045.0, 654.0, 7.03e-20, 25.94, 0.100, 0.015),
        FilterInfo("F850LP", 1, 9033.0, 525.0, 1.51e-19, 24.84, 0.050, 0.08),
    )
}


def filter_keywords(name: str) -> tuple[str, str]:
    """FILTER1, FILTER2 header values for an ACS/WFC filter (the other wheel is CLEAR)."""
    info = FILTERS[name]
    return (name, "CLEAR2L") if info.wheel == 1 else ("CLEAR1L", name)


#: Largest number of pointings along one side of a simulated mosaic.
MAX_POINTINGS = 9


def parse_pointings(text: str) -> tuple[int, int]:
    """``"3x2"`` -> (3, 2): the columns and rows of a mosaic (InputError if malformed)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        _fail(f"--pointings must be N x M such as 3x3, got {text!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    ``exposures`` counts exposures per visit and per filter; ``date`` is the
    ISO date of the first visit (later visits follow days to weeks apart);
    ``sources`` is the number of truth sources (stars and galaxies);
    ``program`` is the 3-character program code of the rootnames; ``satellites`` the
    fraction of exposures crossed by a satellite trail (:mod:`hstred.simulate.trails`);
    ``pointings`` the (columns, rows) of a mosaic: each of the ``visits`` epochs observes
    every pointing in a visit of its own (:mod:`hstred.simulate.plan`), and ``sources``
    then counts the sources per pointing's area.
    """

    visits: int = 2
    exposures: int = 2
    filters: tuple[str, ...] = ("F606W", "F814W")
    seed: int = 1
    date: str = "2024-06-01"
    sources: int = 400
    cte: bool = True
    truth_images: bool = False
    exptime_s: float = 500.0
    program: str = "d71"
    target: str = "SIMCLUSTER"
    satellites: float = 0.0
    pointings: tuple[int, int] = (1, 1)

    def __post_init__(self):
        if isinstance(self.pointings, list):  # as JSON and to_dict() give it back
            object.__setattr__(self, "pointings", tuple(self.pointings))

    @property
    def start_date(self) -> _dt.date:
        return _dt.date.fromisoformat(self.date)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["filters"] = list(self.filters)
        out["pointings"] = list(self.pointings)
        return out


@dataclass(frozen=True)
class SimulationResult:
    """Paths written by :func:`hstred.simulate.simulate_program`."""

    raw_files: tuple[Path, ...]
    reference_dir: Path
    truth_catalog: Path
    truth_json: Path
    truth_images: tuple[Path, ...]
    gaia_catalog: Path | None = None  # the Gaia DR3-like catalog of the field


def _fail(message: str) -> None:
    raise InputError(message)


def validate_config(config: SimulationConfig) -> SimulationConfig:
    """Check a configuration; return it unchanged or raise InputError (one line)."""
    if not isinstance(config.visits, int) or not 1 <= config.visits <= 99:
        _fail(f"visits must be an integer from 1 to 99, got {config.visits!r}")
    if not isinstance(config.exposures, int) or not 1 <= config.exposures <= 50:
        _fail(f"exposures must be an integer from 1 to 50 per visit and filter, "
              f"got {config.exposures!r}")
    if isinstance(config.filters, str) or not config.filters:
        _fail(f"filters must be a non-empty tuple of names from {sorted(FILTERS)}")
    unknown = [f for f in config.filters if f not in FILTERS]
    if unknown:
        _fail(f"unsupported filter(s) {unknown}; choose from {sorted(FILTERS)}")
    if len(set(config.filters)) != len(config.filters):
        _fail(f"filters must not repeat, got {list(config.filters)}")
    pointings = config.pointings
    if (isinstance(pointings, str) or len(tuple(pointings)) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_POINTINGS
                       for n in pointings)):
        _fail(f"pointings must be N x M with N and M from 1 to {MAX_POINTINGS}, "
              f"got {pointings!r}")
    if config.visits * pointings[0] * pointings[1] > 99:
        _fail(f"{config.visits} visits x {pointings[0]}x{pointings[1]} pointings make "
              f"{config.visits * pointings[0] * pointings[1]} visits, more than the 99 that "
              "2-digit visit numbers allow; simulate fewer visits or pointings")
    if config.exposures * len(config.filters) > 26 * 36:
        _fail("too many exposures per visit for 2-character exposure ids; "
              "reduce exposures or filters")
    if not isinstance(config.seed, int) or config.seed < 0:
        _fail(f"seed must be a non-negative integer, got {config.seed!r}")
    try:
        start = _dt.date.fromisoformat(config.date)
    except (TypeError, ValueError):
        _fail(f"date must be an ISO date such as 2024-06-01, got {config.date!r}")
    if era_of_date(start) is None:
        _fail(era_message(start))
    if not isinstance(config.sources, int) or not 1 <= config.sources <= 100_000:
        _fail(f"sources must be an integer from 1 to 100000, got {config.sources!r}")
    if not 0.5 <= float(config.exptime_s) <= 3600.0:
        _fail(f"exptime_s must be between 0.5 and 3600 s, got {config.exptime_s!r}")
    if (isinstance(config.satellites, bool) or not isinstance(config.satellites, int | float)
            or not 0.0 <= config.satellites <= 1.0):
        _fail(f"satellites must be a fraction from 0 to 1, got {config.satellites!r}")
    if not isinstance(config.program, str) or not re.fullmatch(r"[a-z0-9]{3}", config.program):
        _fail(f"program must be 3 lower-case letters or digits, got {config.program!r}")
    if (not isinstance(config.target, str)
            or not re.fullmatch(r"[A-Za-z0-9_+\-.]{1,30}", config.target)):
        _fail(f"target must be 1-30 characters of letters, digits or _+-., "
              f"got {config.target!r}")
    return config
