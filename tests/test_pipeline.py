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
from scratch import fixture_dir
from typer.testing import CliRunner

from hstred.calibrate import CalibrateConfig, run_calibrate
from hstred.cli import app
from hstred.naming import PRODUCT_KINDS

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
    with fixture_dir(tmp_path_factory, "run_full") as root:
        data = _copy_program(src, root)
        checksums = {p.name: _sha(p) for p in data.glob("*_raw.fits")}
        t0 = time.perf_counter()
        result = _run(data)
        seconds = time.perf_counter() - t0
        assert result.exit_code == 0, result.output
        yield data, checksums, seconds


def test_products_record_and_report(reduced):
    data, checksums, _seconds = reduced
    sci, wht, rms = (data / f"{OUTNAME}_F814W_drz_{k}.fits" for k in PRODUCT_KINDS)
    assert sci.is_file() and wht.is_file() and rms.is_file()
    assert np.isfinite(fits.getdata(sci)).any()
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert record["outname"] == OUTNAME
    assert [p["rms"] for p in record["drizzle"]["products"]] == [rms.name]
    assert {"numpy", "astropy", "drizzlepac", "drizzle", "arcticpy-no-gsl"} <= set(
        record["software"])
    assert len(record["references"]) == 2
    assert record["drizzle"]["solutions"]
    # the camera's distortion, applied with stwcs from the simulated references
    assert len(record["drizzle"]["distortion"]) == 2
    for d in record["drizzle"]["distortion"]:
        assert d["applied"] and d["wcsname"].startswith("IDC_")
        assert d["files"]["IDCTAB"] == record["references"][f"{d['rootname']}_raw.fits"]["IDCTAB"]
    assert fits.getval(sci, "DSTWCSN") == d["wcsname"]
    assert (data / f"{OUTNAME}_report.html").is_file()
    page = (data / f"{OUTNAME}_report.html").read_text()
    assert "<h2>Distortion</h2>" in page and "<h2>Warnings</h2>" in page
    assert "<h2>References</h2>" in page
    # the Noise section: blank-sky noise against the RMS image, from the record
    noise = record["drizzle"]["products"][0]["noise"]
    assert set(noise["correlation"]) == {"2", "4", "8", "16", "32"}
    assert "<h2>Noise</h2>" in page and (data / f"{OUTNAME}_report_files" / "noise.png").is_file()
    assert all(0.8 < v < 1.2 for v in noise["blank_sky"].values()), noise
    assert all(digest in page for digest in record["reference_sha256"].values())
    assert record["schema"] == "hstred-run/3" and record["engine"] == "native"
    # the report draws the record: exposure rows and per-visit residual vectors are in it
    rows = {r["rootname"]: r for r in record["exposures"]}
    assert len(rows) == 2 and all(r["cr_fraction"] is not None for r in rows.values())
    assert all(r["sky_e"] > 0 and r["filter"] == "F814W" for r in rows.values())
    aligned = [s for s in record["drizzle"]["solutions"] if s["status"] == "ALIGNED"]
    assert aligned and all(len(s["residuals"]["dx_mas"]) == s["n_matches"] for s in aligned)
    assert all(np.sqrt(np.mean(np.square(s["residuals"]["dx_mas"])
                               + np.square(s["residuals"]["dy_mas"]))) / 1000
               == pytest.approx(s["rms_arcsec"], rel=1e-6) for s in aligned)
    for s in aligned:
        figure = f"residuals_{s['visit']}_{s['filter']}.png"
        assert figure in page and (data / f"{OUTNAME}_report_files" / figure).is_file()
    assert record["cte_profile"] is None  # --cte none: no CTE panel
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
    # hstred calibrate and hstred drizzle are the run limited to their stages: the same
    # cache, checks and record. Calibration is found done; a changed drizzle option
    # redoes the drizzle stage and the report, not the calibration. Without the RMS
    # image (--no-rms), the earlier one, which no longer describes the product, goes.
    result = CliRunner().invoke(app, ["calibrate", "--data", str(data), "--cte", "none"])
    assert result.exit_code == 0, result.output
    assert "calibrated 0 exposures (2 already done)" in result.output
    rms = data / f"{OUTNAME}_F814W_drz_rms.fits"
    assert rms.is_file()
    result = CliRunner().invoke(app, ["drizzle", OUTNAME, "--data", str(data),
                                      "--pixfrac", "0.9", "--no-rms", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert not rms.exists() and not list(data.glob(".*previous"))
    assert "No RMS images were made" in (data / f"{OUTNAME}_report.html").read_text()
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert "calibrate" not in record["skipped"] and record["config"]["calibrate"] is None
    assert record["skipped"]["drizzle"] is False and record["skipped"]["report"] is False
    assert record["config"]["drizzle"]["pixfrac"] == 0.9
    assert record["calibrated"] == [p.relative_to(data).as_posix() for p in sorted(
        (data / "hstred_work" / "calibrated").glob("*_flt.fits"))]
    assert fits.getval(data / f"{OUTNAME}_F814W_drz_sci.fits", "DRZPIXFR") == 0.9
    # the run with the same options reuses what the stage commands did
    result = _run(data, "--pixfrac", "0.9", "--no-rms")
    assert result.exit_code == 0, result.output
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert len(record["skipped"]["calibrate"]) == 2 and record["skipped"]["drizzle"] is True
    # (the next test goes back to the default options)


def _read_pty(master: int, proc: subprocess.Popen, timeout_s: float = 900) -> list:
    """(seconds since start, bytes) of everything the child writes to the terminal."""
    import select

    chunks, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic() - t0, data))
        elif proc.poll() is not None:
            break
    return chunks


def test_progress_advances_during_the_drizzle_stage(reduced):
    """Under a terminal, the display names the drizzle stage's sub-steps and keeps being
    redrawn while AstroDrizzle runs (its output capture must not swallow the display).

    The run goes back to the default options after the test above (the products of the
    tests below are those of the default options): the calibration is reused and the
    drizzle stage redone."""
    import pty

    data = reduced[0]
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "hstred", "run", OUTNAME, "--data",
                             str(data), "--cte", "none", "--workers", "2"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    try:
        chunks = _read_pty(master, proc)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0, b"".join(c for _t, c in chunks)[-3000:].decode(errors="replace")
    text = [(t, c.decode(errors="replace")) for t, c in chunks]
    seen = {}
    for t, c in text:
        for step in ("drizzle: working copies", "drizzle: visits", "drizzle: alignment",
                     "drizzle: filter F814W", "report"):
            if step in c:
                seen.setdefault(step, t)
    assert "calibrate (cached)" in "".join(c for _t, c in text)
    assert list(seen) == ["drizzle: working copies", "drizzle: visits", "drizzle: alignment",
                          "drizzle: filter F814W", "report"], seen
    start, end = seen["drizzle: working copies"], seen["report"]
    times = [t for t, _c in text if start <= t <= end]
    gaps = np.diff(times)
    print(f"\ndrizzle stage {end - start:.1f} s on the terminal, {len(times)} redraws, "
          f"longest pause {gaps.max():.2f} s")
    assert end - start > 5.0
    assert gaps.max() < 5.0  # never frozen


def test_drizzle_command_needs_the_calibration_first(sim_program_two_visits, tmp_path):
    src, _config, _result = sim_program_two_visits
    data = _copy_program(src, tmp_path / "data")
    result = CliRunner().invoke(app, ["drizzle", OUTNAME, "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert "2 exposure(s) not calibrated yet" in result.output
    assert "run hstred calibrate first" in result.output
    assert not list(data.glob(f"{OUTNAME}_*"))


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
    """Killed twice, then resumed with ``--config`` (the uninterrupted run's record):
    finished exposures are kept and the products are those of the uninterrupted run."""
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
    # resumed with the uninterrupted run's options replayed from its record
    replay = [sys.executable, "-m", "hstred", "run", OUTNAME, "--data", str(data), "--config",
              str(full / f"{OUTNAME}_run.json"), "--workers", "1", "--quiet"]
    result = subprocess.run(replay, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert first_done <= set(record["skipped"]["calibrate"])
    expected = json.loads((full / f"{OUTNAME}_run.json").read_text())
    assert record["schema"] == expected["schema"] == "hstred-run/3"
    for key in ("references", "reference_sha256", "engine"):
        assert record[key] == expected[key]
    named = {n for refs in record["references"].values() for n in refs.values() if n}
    assert named and named <= set(record["reference_sha256"])
    assert all(len(v) == 64 for v in record["reference_sha256"].values())
    for suffix in PRODUCT_KINDS:
        a = fits.getdata(full / f"{OUTNAME}_F814W_drz_{suffix}.fits")
        b = fits.getdata(data / f"{OUTNAME}_F814W_drz_{suffix}.fits")
        np.testing.assert_array_equal(a, b)


def test_dask_backend_matches_local(sim_program_two_visits, tmp_path):
    distributed = pytest.importorskip("distributed")
    from hstred.execution import DaskBackend, LocalBackend

    src, _config, _result = sim_program_two_visits
    config = CalibrateConfig(cte="arctic", engine="native", cte_iterations=1, cte_express=1)
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


def _listing(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*")}


def test_plan_before_and_after_a_run_writes_nothing(reduced, sim_program_two_visits, tmp_path):
    from hstred.calibrate import CalibrateConfig
    from hstred.drizzle import DrizzleConfig
    from hstred.pipeline import PipelineConfig
    from hstred.plan import CACHED, RUN, make_plan

    plan_args = ["--cte", "none"]
    # before: a fresh copy of the program, nothing calibrated
    src, _config, _result = sim_program_two_visits
    fresh = _copy_program(src, tmp_path / "fresh")
    before = _listing(fresh)
    result = CliRunner().invoke(app, ["plan", OUTNAME, "--data", str(fresh), *plan_args])
    assert result.exit_code == 0, result.output
    assert "run: not calibrated yet" in result.output
    assert f"drizzle {OUTNAME}: run (after calibrating 2 exposure(s))" in result.output
    assert f"report {OUTNAME}: run (after the drizzle)" in result.output
    assert _listing(fresh) == before  # no hstred_work, no log, no lock

    # after: the reduced directory, with the options of its run
    data = reduced[0]
    before = _listing(data)
    result = CliRunner().invoke(app, ["plan", OUTNAME, "--data", str(data), *plan_args])
    assert result.exit_code == 0, result.output
    assert f"drizzle {OUTNAME}: cached" in result.output
    assert f"report {OUTNAME}: cached" in result.output
    assert "0 cached" not in result.output and "2 cached" in result.output
    config = PipelineConfig(calibrate=CalibrateConfig(cte="none"))
    plan = make_plan(data, config, OUTNAME)
    assert [e.calibrate for e in plan.exposures] == [CACHED, CACHED]
    assert plan.drizzle.state == CACHED and all(exists for _p, exists in plan.drizzle.products)
    # changed options: what would be redone, and why
    plan = make_plan(data, PipelineConfig(calibrate=CalibrateConfig(cte="none"),
                                          drizzle=DrizzleConfig(pixfrac=0.9)), OUTNAME)
    assert [e.calibrate for e in plan.exposures] == [CACHED, CACHED]
    assert plan.drizzle.state == RUN and "options" in plan.drizzle.reason
    plan = make_plan(data, PipelineConfig(calibrate=CalibrateConfig(cte="arctic")), OUTNAME)
    assert {e.calibrate for e in plan.exposures} == {RUN}
    assert all("options" in e.reason for e in plan.exposures)
    assert plan.drizzle.state == RUN
    plan = make_plan(data, config, OUTNAME, from_stage="drizzle")
    assert [e.calibrate for e in plan.exposures] == [CACHED, CACHED]
    assert plan.drizzle.state == RUN and plan.drizzle.reason == "redone on request"
    assert plan.report.state == RUN
    assert _listing(data) == before

    # the same directory mounted elsewhere (as at /data in the container): the cache keys
    # hold no absolute path, so nothing is redone (hard links: no data copied)
    moved = tmp_path / "mounted_elsewhere"
    shutil.copytree(data, moved, symlinks=True, copy_function=os.link,
                    ignore=shutil.ignore_patterns("lock", "hstred.log", "drizzle"))
    result = CliRunner().invoke(app, ["plan", OUTNAME, "--data", str(moved), *plan_args])
    assert result.exit_code == 0, result.output
    assert f"drizzle {OUTNAME}: cached" in result.output
    assert f"report {OUTNAME}: cached" in result.output
    result = _run(moved)
    assert result.exit_code == 0, result.output
    record = json.loads((moved / f"{OUTNAME}_run.json").read_text())
    assert len(record["skipped"]["calibrate"]) == 2
    assert record["skipped"]["drizzle"] is True and record["skipped"]["report"] is True
    assert record["calibrated"] == [p.relative_to(data).as_posix() for p in sorted(
        (data / "hstred_work" / "calibrated").glob("*_flt.fits"))]
    assert _listing(data) == before


def test_tiled_products_through_the_commands(reduced, tmp_path):
    """``hstred drizzle --tiled-products --no-rms`` on a reduced directory: the products
    become tile indexes and directories (the FITS images, the RMS image's too, go), named
    on the terminal and in the record; the report previews them; an unchanged rerun
    reuses them; a lost tile file is seen by ``plan`` as a drizzle to redo."""
    from hstred.drizzle.tileset import TiledProduct

    data = tmp_path / "tiles"
    shutil.copytree(reduced[0], data, symlinks=True)
    args = ["drizzle", OUTNAME, "--data", str(data), "--tiled-products", "--no-rms",
            "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = data / f"{OUTNAME}_F814W_drz_sci.json"
    assert str(index) in result.output
    for kind in PRODUCT_KINDS:
        assert (data / f"{OUTNAME}_F814W_drz_{kind}.json").is_file() == (kind != "rms")
        assert not (data / f"{OUTNAME}_F814W_drz_{kind}.fits").exists()
    assert not (data / f"{OUTNAME}_F814W_drz_rms").exists()
    product = TiledProduct(index)
    assert len(product.tiles) >= 2 and product.header["EXPTIME"] > 0
    record = json.loads((data / f"{OUTNAME}_run.json").read_text())
    assert record["drizzle"]["products"][0]["sci"] == index.name
    manifest = json.loads((data / "hstred_work" / "manifest.json").read_text())
    recorded = manifest["stages"]["drizzle"][OUTNAME]["outputs"]
    tile = product.directory / product.tiles[0].file
    assert tile.relative_to(data).as_posix() in recorded
    assert (data / f"{OUTNAME}_report_files" / "F814W_sci.png").is_file()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((data / f"{OUTNAME}_run.json").read_text())["skipped"]["drizzle"] is True
    tile.unlink()
    result = CliRunner().invoke(app, ["plan", OUTNAME, "--data", str(data), "--cte", "none",
                                      "--tiled-products", "--no-rms"])
    assert result.exit_code == 0, result.output
    assert f"drizzle {OUTNAME}: run (its products are missing or changed)" in result.output
