"""Same seed, same bytes; another seed, other data; existing outputs are never overwritten."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

from hstred.errors import InputError
from hstred.simulate import SimulationConfig, simulate_program

pytestmark = pytest.mark.slow


@pytest.fixture
def scratch(tmp_path):
    """A temporary directory removed after the test (full-frame programs are large)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def _all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_files(sim_program_small, scratch):
    out, config, _ = sim_program_small
    again = simulate_program(scratch / "again", config)
    files = _all_files(out)
    assert files == _all_files(scratch / "again")
    assert any(p.name.endswith("_raw.fits") for p in files)
    _, mismatch, errors = filecmp.cmpfiles(out, scratch / "again", [str(p) for p in files],
                                           shallow=False)
    assert mismatch == [] and errors == []
    assert again.raw_files[0].name == sim_program_small[2].raw_files[0].name


def test_another_seed_gives_other_data(sim_program_small, scratch):
    out, config, first = sim_program_small
    other = SimulationConfig(**{**config.to_dict(), "filters": tuple(config.filters),
                                "seed": config.seed + 1, "truth_images": False,
                                "sources": 50})
    result = simulate_program(scratch / "other", other)
    a = fits.getdata(first.raw_files[0], 1)
    b = fits.getdata(result.raw_files[0], 1)
    assert (a != b).mean() > 0.5
    assert fits.getheader(first.raw_files[0])["BIASFILE"] != \
        fits.getheader(result.raw_files[0])["BIASFILE"]


def test_refuses_to_overwrite_an_existing_simulation(sim_program_small):
    out, config, result = sim_program_small
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="already exists"):
        simulate_program(out, config)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after


def test_a_failed_run_leaves_no_files(scratch, monkeypatch):
    import hstred.simulate.program as program

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while rendering")

    monkeypatch.setattr(program, "photon_rate_image", broken)
    messages: list[str] = []
    config = SimulationConfig(visits=1, exposures=1, filters=("F814W",), seed=3, cte=False,
                              sources=10)
    with pytest.raises(RuntimeError, match="simulated failure"):
        simulate_program(scratch / "broken", config, progress=messages.append)
    assert any("reference" in m for m in messages)  # it got as far as the references
    assert [p for p in (scratch / "broken").rglob("*") if p.is_file()] == []
