"""Session fixtures: full-frame simulated programs, simulated once per test session."""

from __future__ import annotations

import pytest
from scratch import fixture_dir

from hstred.simulate import SimulationConfig, simulate_program

#: One visit, one F606W exposure, no CTE trails, with truth images: the format,
#: pixel-chain, bias and astrometry checks use it.
SMALL_CONFIG = SimulationConfig(visits=1, exposures=1, filters=("F606W",), seed=11,
                                cte=False, truth_images=True)


#: Test files that reduce whole simulated programs, heaviest first (measured worker time).
_HEAVY_FILES = ("test_pipeline.py", "test_drizzle_simulated.py", "test_satellites.py",
                "test_gaia_simulated.py",
                "test_regression.py", "test_failures.py", "test_calibrate_stage.py")


def pytest_collection_modifyitems(config, items):
    """The heaviest test files first, then the other slow ones, then the rest.

    ``make test`` hands whole files to two workers in this order, as each becomes free:
    long files started first run side by side, and the short ones fill the gaps at the
    end instead of one long file running alone while the other worker idles.
    """
    weights: dict[str, tuple[int, int]] = {}
    for item in items:
        name = item.path.name
        if name in _HEAVY_FILES:
            weight = (0, _HEAVY_FILES.index(name))
        else:
            weight = (1, 0) if item.get_closest_marker("slow") else (2, 0)
        weights[name] = min(weights.get(name, weight), weight)
    items.sort(key=lambda item: weights[item.path.name])  # stable: files stay whole


def _simulate(tmp_path_factory, name: str, config: SimulationConfig):
    """Simulate into a fresh directory; yield it and remove it (~0.4 GB) afterwards."""
    with fixture_dir(tmp_path_factory, name) as out:
        yield out, config, simulate_program(out, config)


@pytest.fixture(scope="session")
def sim_program_small(tmp_path_factory):
    """(directory, config, SimulationResult) of the small CTE-free program."""
    yield from _simulate(tmp_path_factory, "sim_small", SMALL_CONFIG)


@pytest.fixture(scope="session")
def sim_program_small_cte(tmp_path_factory):
    """The small program again, same seed, with CTE trails (and no truth images)."""
    config = SimulationConfig(**{**SMALL_CONFIG.to_dict(), "filters": ("F606W",),
                                 "cte": True, "truth_images": False})
    yield from _simulate(tmp_path_factory, "sim_small_cte", config)


@pytest.fixture(scope="session")
def sim_program_two_visits(tmp_path_factory):
    """Two visits of one F814W exposure each (CTE-free): dates, rolls, pointings, errors."""
    config = SimulationConfig(visits=2, exposures=1, filters=("F814W",), seed=5, cte=False)
    yield from _simulate(tmp_path_factory, "sim_two_visits", config)


@pytest.fixture(scope="session")
def sim_program_late_cte(tmp_path_factory):
    """A 2025 exposure (about 4.5 traps per pixel) with CTE trails and its truth image."""
    config = SimulationConfig(visits=1, exposures=1, filters=("F606W",), seed=21,
                              date="2025-06-01", sources=900, cte=True, truth_images=True)
    yield from _simulate(tmp_path_factory, "sim_late_cte", config)


@pytest.fixture(scope="session")
def sim_program_pre_sm4(tmp_path_factory):
    """The small CTE-free program in May 2004: pre-SM4 gain-1 electronics."""
    config = SimulationConfig(**{**SMALL_CONFIG.to_dict(), "filters": ("F606W",),
                                 "date": "2004-05-01"})
    yield from _simulate(tmp_path_factory, "sim_pre_sm4", config)


@pytest.fixture(scope="session")
def sim_program_pre_sm4_cte(tmp_path_factory):
    """A March 2005 exposure with CTE trails (the arCTIc release times before July 2006)."""
    config = SimulationConfig(visits=1, exposures=1, filters=("F814W",), seed=31,
                              date="2005-03-01", sources=300, cte=True, truth_images=True)
    yield from _simulate(tmp_path_factory, "sim_pre_sm4_cte", config)
