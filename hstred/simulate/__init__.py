"""Simulator of ACS/WFC observing programs: raw files, reference files and truth.

Writes full-frame ACS/WFC raw files in the real raw format, the calibration
reference files that describe the simulated detector, and the truth (catalog,
injected WCS errors, detector defects, optional noiseless images) needed to
check every pipeline stage.  See :mod:`hstred.simulate.program` for the outputs
and conventions.
"""

from hstred.simulate.config import SimulationConfig, SimulationResult
from hstred.simulate.program import simulate_program

__all__ = ["SimulationConfig", "SimulationResult", "simulate_program"]
