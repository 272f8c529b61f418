"""The arCTIc ACS/WFC parallel CTE model (Massey et al. 2014) applied per quadrant.

Images are trimmed, bias-free electron arrays of one chip (2048 x 4096). Each
amplifier quadrant is flipped so its readout corner is at [0, 0] (arCTIc clocks
toward row 0), processed, and flipped back, so trails run away from the
amplifier that read them out.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass
from importlib.metadata import version

import numpy as np

from hstred.acs import CHIP_NX, CHIP_NY, Quadrant, quadrants, to_readout_orientation

__all__ = [
    "MJD_TO_JD",
    "CORRECTION_EXPRESS",
    "CORRECTION_ITERATIONS",
    "CTEModel",
    "cte_model_for_date",
    "add_cte_to_quadrant",
    "remove_cte_from_quadrant",
    "add_cte_to_chip",
    "remove_cte_from_chip",
    "arcticpy_version",
    "load_arcticpy",
]

MJD_TO_JD = 2400000.5

#: The correction's default express factor and iterations; the calibration stage and its
#: command line take their defaults from here. The accuracy map
#: (``benchmarks/bench_cte_accuracy.py``, README) finds no express 1-5 setting within
#: :data:`hstred.cte.accuracy.ACCURACY_BOUNDS` of the exact model in 2024 (this one
#: included), and every cheaper setting further from it than this one, so it stays; its
#: measured accuracy is :data:`hstred.cte.accuracy.DEFAULT_SETTING_ACCURACY`.
CORRECTION_EXPRESS = 5
CORRECTION_ITERATIONS = 3


def load_arcticpy():
    """Import arcticpy (and so load its OpenMP runtime); returns the module."""
    import arcticpy

    return arcticpy


_arcticpy = load_arcticpy


def arcticpy_version() -> str:
    return version("arcticpy-no-gsl")


@dataclass(frozen=True)
class CTEModel:
    """Parameters of the arCTIc ACS model at one date (for headers and truth files)."""

    name: str
    mjd: float
    trap_densities: tuple[float, ...]
    release_timescales: tuple[float, ...]
    full_well_depth: float
    well_fill_power: float

    @property
    def total_trap_density(self) -> float:
        return float(sum(self.trap_densities))

    def to_dict(self) -> dict:
        return asdict(self)


def _arctic_objects(mjd: float):
    return _arcticpy().CTI_model_for_HST_ACS(mjd + MJD_TO_JD)


def cte_model_for_date(mjd: float) -> CTEModel:
    """The arcticpy ACS model for an exposure starting at ``mjd`` (EXPSTART)."""
    _roe, ccd, traps = _arctic_objects(mjd)
    phase = ccd.phases[0] if hasattr(ccd, "phases") else ccd
    return CTEModel(
        name="arCTIc HST/ACS (Massey et al. 2014)",
        mjd=float(mjd),
        trap_densities=tuple(float(t.density) for t in traps),
        release_timescales=tuple(float(t.release_timescale) for t in traps),
        full_well_depth=float(getattr(phase, "full_well_depth", 84700.0)),
        well_fill_power=float(getattr(phase, "well_fill_power", 0.478)),
    )


def _run_arctic(data: np.ndarray, mjd: float, *, remove: bool, express: int,
                n_iterations: int) -> np.ndarray:
    roe, ccd, traps = _arctic_objects(mjd)
    image = np.ascontiguousarray(data, dtype=np.float64)
    kwargs = dict(parallel_roe=roe, parallel_ccd=ccd, parallel_traps=traps,
                  parallel_express=express, verbosity=0)
    # remove_cti prints each iteration number whatever the verbosity.
    with contextlib.redirect_stdout(io.StringIO()):
        if remove:
            return _arcticpy().remove_cti(image, n_iterations, **kwargs)
        return _arcticpy().add_cti(image, **kwargs)


def add_cte_to_quadrant(quad_data: np.ndarray, quad: Quadrant, mjd: float, *,
                        express: int = 5) -> np.ndarray:
    """Add parallel CTE trails to one quadrant given in detector orientation."""
    oriented = to_readout_orientation(quad_data, quad)
    out = _run_arctic(oriented, mjd, remove=False, express=express, n_iterations=0)
    return np.ascontiguousarray(to_readout_orientation(out, quad))


def remove_cte_from_quadrant(quad_data: np.ndarray, quad: Quadrant, mjd: float,
                             read_noise_e: float | None = None, *,
                             express: int = CORRECTION_EXPRESS,
                             n_iterations: int = CORRECTION_ITERATIONS) -> np.ndarray:
    """Remove parallel CTE trails from one quadrant given in detector orientation.

    With ``read_noise_e`` (the amplifier's read noise, e-), the read-noise estimate of
    :func:`hstred.cte.noise.separate_read_noise` is held out of the correction and added
    back afterwards; without it the whole quadrant is corrected.
    """
    noise = None
    if read_noise_e is not None:
        from hstred.cte.noise import separate_read_noise

        quad_data, noise = separate_read_noise(quad_data, read_noise_e)
    oriented = to_readout_orientation(quad_data, quad)
    out = _run_arctic(oriented, mjd, remove=True, express=express,
                      n_iterations=n_iterations)
    out = np.ascontiguousarray(to_readout_orientation(out, quad))
    return out if noise is None else out + noise


def _check_chip(image: np.ndarray) -> None:
    if image.shape != (CHIP_NY, CHIP_NX):
        raise ValueError(f"expected a trimmed {CHIP_NY}x{CHIP_NX} chip, got {image.shape}")


def add_cte_to_chip(image: np.ndarray, chip: int, mjd: float, *, express: int = 5) -> np.ndarray:
    """Return a copy of a trimmed chip electron image with CTE trails added."""
    _check_chip(image)
    out = np.empty(image.shape, dtype=np.float64)
    for quad in quadrants(chip):
        out[quad.flt] = add_cte_to_quadrant(image[quad.flt], quad, mjd, express=express)
    return out


def remove_cte_from_chip(image: np.ndarray, chip: int, mjd: float, *,
                         express: int = CORRECTION_EXPRESS,
                         n_iterations: int = CORRECTION_ITERATIONS) -> np.ndarray:
    """Return a copy of a trimmed chip electron image with CTE trails removed."""
    _check_chip(image)
    out = np.empty(image.shape, dtype=np.float64)
    for quad in quadrants(chip):
        out[quad.flt] = remove_cte_from_quadrant(image[quad.flt], quad, mjd, express=express,
                                                 n_iterations=n_iterations)
    return out
