"""hstred run end to end: products, run record, report, cache, resume after SIGKILL, Dask."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from hstred.calibrate import CalibrateConfig, run_calibrate
from hstred.cli import app

pytestmark = pytest.mark.slow

OUTNAME = "TEST"
RUN_ARGS = ["--cte", "none", "--workers", "2", "--quiet"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_program(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for raw in src.glob("*_raw.fits"):
        shutil.copy(raw, dst / raw.name)
    (dst / "crds").symlink_to(src / "crds")
    return dst


def _run(data: Path, *extra: str):
    return CliRunner().invoke(app, ["run", OUTNAME, "--data", str(data), *RUN_ARGS, *extra])


@pytest.fixture(scope="module")
def reduced(sim_program_two_visits, tmp_path_factory):
    """The two-visit program reduced once, uninterrupted."""
    src, _config, _result = sim_program_two_visits
    data = _copy_program(src, tmp_path_factory.mktemp("run_full"))
    checksums = {p.name: _sha(p) for p in data.glob("*_raw.fits")}
    t0 = time.perf_counter()
    result = _run(data)
    seconds = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    return data, checksums, seconds


def test_products_record_and_report(reduced):
    data, checksums, _seconds = reduced
    sci = data / f"{OUTNAME}_F814W_drz_sci.fits"
    wht = data / f"{OUTNAME}_F814W_drz_wht.fits"
    assert sci.is_file() and wht.is_file()
    assert np.isfinite(fits.getdata(sci)).any()
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert record["outname"] == OUTNAME
    assert {"numpy", "astropy", "drizzlepac", "arcticpy-no-gsl"} <= set(record["software"])
    assert len(record["references"]) == 2
    assert record["drizzle"]["solutions"]
    # the camera's distortion, applied with stwcs from the simulated references
    assert len(record["drizzle"]["distortion"]) == 2
    for d in record["drizzle"]["distortion"]:
        assert d["applied"] and d["wcsname"].startswith("IDC_")
        assert d["files"]["IDCTAB"] == record["references"][f"{d['rootname']}_raw.fits"]["IDCTAB"]
    assert fits.getval(sci, "DSTWCSN") == d["wcsname"]
    assert (data / f"{OUTNAME}_report.html").is_file()
    assert "<h2>Distortion</h2>" in (data / f"{OUTNAME}_report.html").read_text()
    assert (data / "hstred_work" / "hstred.log").is_file()
    # inputs are never modified
    assert {p.name: _sha(p) for p in data.glob("*_raw.fits")} == checksums


def test_rerun_with_nothing_changed_redoes_nothing(reduced):
    data, _checksums, _full_seconds = reduced
    report = data / f"{OUTNAME}_report.html"
    stamps = {p: p.stat().st_mtime_ns for p in [report, *data.glob(f"{OUTNAME}_*_drz_*.fits")]}
    result = _run(data)
    assert result.exit_code == 0, result.output
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert len(record["skipped"]["calibrate"]) == 2
    assert record["skipped"]["drizzle"] is True
    assert record["skipped"]["report"] is True
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    # a changed option redoes the drizzle stage and the report, not the calibration
    result = _run(data, "--pixfrac", "0.9")
    assert result.exit_code == 0, result.output
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert len(record["skipped"]["calibrate"]) == 2
    assert record["skipped"]["drizzle"] is False and record["skipped"]["report"] is False
    assert record["config"]["drizzle"]["pixfrac"] == 0.9
    assert _run(data).exit_code == 0  # back to the defaults for the tests below


def _kill_when(proc: subprocess.Popen, condition, timeout_s: float = 600) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if condition() or proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_then_resume_matches_uninterrupted_run(reduced, sim_program_two_visits,
                                                       tmp_path):
    full, _checksums, _seconds = reduced
    src, _config, _result = sim_program_two_visits
    data = _copy_program(src, tmp_path / "killed")
    cmd = [sys.executable, "-m", "hstred", "run", OUTNAME, "--data", str(data), *RUN_ARGS,
           "--workers", "1"]
    manifest_path = data / "hstred_work" / "manifest.json"

    def calibrated_units():
        try:
            return set(json.loads(manifest_path.read_text())["stages"].get("calibrate", {}))
        except (OSError, ValueError, KeyError):
            return set()

    # killed as soon as the first exposure is recorded, then again during drizzling
    proc = subprocess.Popen(cmd, start_new_session=True)
    _kill_when(proc, lambda: len(calibrated_units()) >= 1)
    first_done = calibrated_units()
    assert len(first_done) >= 1
    proc = subprocess.Popen(cmd, start_new_session=True)
    _kill_when(proc, lambda: (data / "hstred_work" / "drizzle").exists())
    assert not list(data.glob(f"{OUTNAME}_*_drz_sci.fits"))  # no partial products
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert first_done <= set(record["skipped"]["calibrate"])
    for suffix in ("sci", "wht"):
        a = fits.getdata(full / f"{OUTNAME}_F814W_drz_{suffix}.fits")
        b = fits.getdata(data / f"{OUTNAME}_F814W_drz_{suffix}.fits")
        np.testing.assert_array_equal(a, b)


def test_dask_backend_matches_local(sim_program_two_visits, tmp_path):
    distributed = pytest.importorskip("distributed")
    from hstred.execution import DaskBackend, LocalBackend

    src, _config, _result = sim_program_two_visits
    config = CalibrateConfig(cte="arctic", engine="native", cte_iterations=1, cte_express=20)
    local = run_calibrate(src, config, out_dir=tmp_path / "local", backend=LocalBackend(1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = run_calibrate(src, config, out_dir=tmp_path / "dask",
                               backend=DaskBackend(client=client))
        assert len(client.scheduler_info()["workers"]) == 2
    for a, b in zip(local.outputs, remote.outputs, strict=True):
        with fits.open(a) as ha, fits.open(b) as hb:
            for x, y in zip(ha[1:], hb[1:], strict=True):
                np.testing.assert_array_equal(x.data, y.data)


def test_report_renders_in_headless_chromium(reduced, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    data, _checksums, _seconds = reduced
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", (data / f"{OUTNAME}_report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.01  # images and text drawn
