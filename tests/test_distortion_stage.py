"""The distortion path of the pipeline: what happens when the references are, or are not, there.

A raw or calibrated ACS/WFC exposure holds only a linear WCS; hstred applies the camera's
distortion with stwcs before any drizzle, or stops (exit 3, one line) when the files
cannot be had. Archive files that carry a solution are used as they are.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from scratch import fixture_dir

from hstred.ccd import calibrate_exposure
from hstred.distortion import (
    DISTORTION_KEYWORDS,
    apply_distortion,
    distortion_reference_names,
    has_distortion_solution,
)
from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.drizzle.stage import distortion_references
from hstred.refs import resolve_references
from hstred.simulate.references import CRDS_SUBDIR

pytestmark = pytest.mark.slow

OFFLINE = {"CRDS_SERVER_URL": "https://127.0.0.1:9"}


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def program(sim_program_small, tmp_path_factory):
    """The small simulated exposure, its references and its calibrated (linear) FLT."""
    sim_dir, _config, result = sim_program_small
    with fixture_dir(tmp_path_factory, "distortion_stage") as d:
        raw = result.raw_files[0]
        (refs,) = resolve_references([raw], sim_dir, fetch=False)
        flt = calibrate_exposure(raw, dict(refs.paths), d / "calibrated")
        yield {"sim_dir": sim_dir, "raw": raw, "refs": refs, "flt": flt, "dir": d}


def _hstred(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **OFFLINE, **(env_extra or {})}
    env.pop("CRDS_PATH", None)
    env.pop("jref", None)
    return subprocess.run([sys.executable, "-m", "hstred", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_calibrated_exposure_keeps_the_linear_wcs_and_names_its_references(program):
    with fits.open(program["flt"]) as hdul:
        assert not has_distortion_solution(hdul)
        names = distortion_reference_names(hdul[0].header)
    assert all(names[k] == program["refs"].paths[k].name for k in DISTORTION_KEYWORDS)


def test_raw_run_without_distortion_references_stops_before_any_work(program, tmp_path):
    data = tmp_path / "data"
    cache = data / CRDS_SUBDIR
    cache.mkdir(parents=True)
    raw = data / program["raw"].name
    shutil.copyfile(program["raw"], raw)
    removed = {program["refs"].paths[k].name for k in ("IDCTAB", "D2IMFILE")}
    for path in (program["sim_dir"] / CRDS_SUBDIR).iterdir():
        if path.name not in removed:
            shutil.copyfile(path, cache / path.name)
    before = _digest(raw)
    proc = _hstred("run", "NODIST", "--data", str(data), "--cte", "none", "--quiet")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in removed), proc.stderr
    assert "crds sync --files" in lines[0]
    assert _digest(raw) == before
    assert not list(data.glob("NODIST*")) and not list(data.rglob("*_fl?.fits"))


def _flt_alone(program, directory: Path) -> Path:
    """The calibrated FLT copied into an otherwise empty directory (no references)."""
    directory.mkdir()
    flt = directory / program["flt"].name
    shutil.copyfile(program["flt"], flt)
    return flt


def test_linear_archive_flt_without_references_is_refused(program, tmp_path):
    data = tmp_path / "flt"
    flt = _flt_alone(program, data)
    before = _digest(flt)
    proc = _hstred("drizzle", "LIN", "--data", str(data))
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for key in DISTORTION_KEYWORDS:
        assert program["refs"].paths[key].name in lines[0]
    assert _digest(flt) == before
    assert not list(data.glob("LIN*")) and not list(data.glob(".*staging*"))


def test_linear_flt_naming_no_idctab_is_refused(program, tmp_path):
    data = tmp_path / "flt"
    flt = _flt_alone(program, data)
    with fits.open(flt, mode="update") as hdul:
        for key in DISTORTION_KEYWORDS:
            hdul[0].header[key] = "N/A"
    proc = _hstred("drizzle", "NOIDC", "--data", str(data))
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "IDCTAB" in proc.stderr and "crds bestrefs" in proc.stderr
    assert not list(data.glob("NOIDC*"))


def test_archive_flt_with_a_solution_is_drizzled_as_it_is(program, tmp_path):
    """An FLT that already carries stwcs's solution needs no reference file at all."""
    data = tmp_path / "archive"
    flt = _flt_alone(program, data)
    refs = program["refs"].paths
    apply_distortion(flt, {k: refs[k] for k in DISTORTION_KEYWORDS})
    with fits.open(flt) as hdul:
        assert has_distortion_solution(hdul)
        wcsname = hdul[1].header["WCSNAME"]
    assert distortion_references([flt], data, fetch=False) == {}
    before = _digest(flt)
    result = run_drizzle(data, "ARCH", DrizzleConfig(satellites="off", rms=False),
                         fetch_references=False)
    assert _digest(flt) == before
    (info,) = result.distortion
    assert info.wcsname == wcsname and not info.applied
    header = fits.getheader(result.products[0].sci)
    assert header["DSTWCSN"] == wcsname and header["DSTAPPL"] is False
    assert header["DSTIDC"] == refs["IDCTAB"].name
