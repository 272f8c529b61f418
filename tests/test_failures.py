"""Every failure is one line with its exit code, and leaves nothing half-done.

A table of bad inputs, options and environments, each run as a user runs it
(``hstred run`` in a fresh process) on a copy of one small simulated program, asserting
the exit code, a single stderr line naming the file or option, the same line in the log,
no product or partial file left behind and inputs byte-identical. Then: two runs on one
directory, a SIGKILL during the final drizzle and its resume, and a full disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scratch import fixture_dir

from hstred.simulate import SimulationConfig, simulate_program

pytestmark = pytest.mark.slow

OUTNAME = "FAIL"
QUICK = ["--cte", "none", "--workers", "2", "--quiet", "--satellites", "off", "--no-rms"]
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CRDS_SERVER_URL"] = "https://127.0.0.1:9"  # offline: nothing listens there
    env.pop("CRDS_PATH", None)
    env.pop("jref", None)
    return env


def _hstred(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hstred", *args], capture_output=True,
                          text=True, env=_env(), timeout=900, **kwargs)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """Two F606W exposures of one visit (CTE-free): raws and references."""
    with fixture_dir(tmp_path_factory, "fail_program") as out:
        simulate_program(out, SimulationConfig(visits=1, exposures=2, filters=("F606W",), seed=3,
                                               sources=150, cte=False))
        yield out


def _copy(program: Path, dst: Path) -> Path:
    """Raws copied, references hard-linked (a case that damages one replaces the link)."""
    dst.mkdir(parents=True, exist_ok=True)
    for raw in program.glob("*_raw.fits"):
        shutil.copy(raw, dst / raw.name)
    refs = program / "crds" / "references" / "hst" / "acs"
    target = dst / "crds" / "references" / "hst" / "acs"
    target.mkdir(parents=True)
    for ref in refs.iterdir():
        try:
            os.link(ref, target / ref.name)
        except OSError:
            shutil.copy(ref, target / ref.name)
    return dst


def _raws(data: Path) -> list[Path]:
    return sorted(data.glob("*_raw.fits"))


def _inputs(data: Path) -> dict[str, str]:
    """Checksums of every input: raw, calibrated and reference files."""
    files = [*data.glob("*_raw.fits"), *data.glob("*_fl?.fits"),
             *(data / "crds").rglob("*.fits")]
    return {str(p.relative_to(data)): _sha(p) for p in files if p.is_file()}


def _leftovers(data: Path) -> list[str]:
    """Products, staging directories and partial files anywhere under ``data``."""
    found = [*data.glob(f"{OUTNAME}_*"), *data.glob("singles/*"), *data.rglob(".hstred-*"),
             *data.rglob("*.hstred-tmp"), *data.rglob(".*-staging-*"), *data.rglob("*.tmp")]
    return sorted(str(p.relative_to(data)) for p in found)


# --------------------------------------------------------------------------- the cases
def _edit_header(path: Path, ext, **keys) -> None:
    with fits.open(path, mode="update") as hdul:
        for key, value in keys.items():
            if value is None:
                del hdul[ext].header[key]
            else:
                hdul[ext].header[key] = value


def _nan_stripe(data):
    raw = _raws(data)[0]
    with fits.open(raw) as hdul:
        hdus = [h.copy() for h in hdul]
    sci = hdus[1].data.astype(np.float32)
    sci[100:120, :] = np.nan
    hdus[1] = fits.ImageHDU(sci, header=hdus[1].header)
    for key in ("BZERO", "BSCALE"):
        hdus[1].header.remove(key, ignore_missing=True)
    fits.HDUList(hdus).writeto(raw, overwrite=True)
    return raw.name


def _truncate_ref(suffix):
    def prepare(data):
        ref = next((data / "crds").rglob(f"*_{suffix}.fits"))
        content = ref.read_bytes()
        ref.unlink()  # break the hard link: the shared copy stays intact
        ref.write_bytes(content[: len(content) * 30 // 68])
        return ref.name
    return prepare


def _remove_ref(data):
    ref = next((data / "crds").rglob("*_drk.fits"))
    ref.unlink()
    return ref.name


def _garbage_ref(data):
    ref = next((data / "crds").rglob("*_pfl.fits"))
    ref.unlink()
    ref.write_bytes(b"SIMPLE  = nonsense" * 10)
    return ref.name


def _header(ext, names=None, **keys):
    def prepare(data):
        raw = _raws(data)[-1]
        _edit_header(raw, ext, **keys)
        return names or raw.name
    return prepare


def _rename_sci(data):
    raw = _raws(data)[0]
    _edit_header(raw, 1, EXTNAME="SCX")
    return raw.name


def _drop_imset(data):
    raw = _raws(data)[0]
    with fits.open(raw) as hdul:
        fits.HDUList([h.copy() for h in hdul[:4]]).writeto(raw, overwrite=True)
    return raw.name


def _truncated_raw(data):
    raw = _raws(data)[0]
    raw.write_bytes(raw.read_bytes()[:5_000_000])
    return raw.name


def _not_fits(data):
    (data / "jd7199zzq_raw.fits").write_text("this is not a FITS file\n")
    return "jd7199zzq_raw.fits"


def _duplicate(data):
    raw = _raws(data)[0]
    shutil.copy(raw, data / "copy_raw.fits")
    return re.compile(rf"duplicate rootname (?=.*/copy_raw\.fits)(?=.*/{raw.name})")


def _flc_beside_raws(data):
    raw = _raws(data)[0]
    flc = data / "jd7150aaq_flc.fits"
    shutil.copy(raw, flc)
    _edit_header(flc, 0, ROOTNAME="jd7150aaq")
    return flc.name


def _dir_as_wht(data):
    (data / f"{OUTNAME}_F606W_drz_wht.fits").mkdir()
    return f"{OUTNAME}_F606W_drz_wht.fits"


def _file_as_report_dir(data):
    (data / f"{OUTNAME}_report_files").write_text("in the way\n")
    return f"{OUTNAME}_report_files"


def _empty(data):
    for raw in _raws(data):
        raw.unlink()
    return str(data.name)


def _saturated(data):
    raw = _raws(data)[-1]
    with fits.open(raw, mode="update", do_not_scale_image_data=True) as hdul:
        for extver in (1, 2):
            hdul["SCI", extver].data[:] = np.iinfo(np.int16).max  # 65535 DN with BZERO 32768
    return raw.name


def _nothing(_data):
    return None


@dataclass(frozen=True)
class Case:
    id: str
    prepare: Callable[[Path], str | re.Pattern | None]  # what the message must contain
    code: int
    args: tuple[str, ...] = ()
    names: str | None = None  # regex when the name does not come from ``prepare``
    outname: str = OUTNAME
    command: str = "run"
    data: str | None = None  # --data relative to the case directory (default: itself)


CASES = [
    Case("no-scheduler", _nothing, 6, ("--scheduler", "tcp://127.0.0.1:1"),
         names="--scheduler tcp://127.0.0.1:1"),
    Case("bad-scheduler-address", _nothing, 6, ("--scheduler", "nonsense://x"),
         names="--scheduler"),
    Case("nan-stripe-in-raw", _nan_stripe, 2),
    Case("truncated-bias", _truncate_ref("bia"), 3),
    Case("truncated-flat", _truncate_ref("pfl"), 3),
    Case("garbage-flat", _garbage_ref, 3),
    Case("missing-dark", _remove_ref, 3),
    Case("wht-destination-is-directory", _dir_as_wht, 2),
    Case("report-dir-destination-is-file", _file_as_report_dir, 2),
    Case("sci-renamed", _rename_sci, 2),
    Case("ccdamp-c", _header(0, CCDAMP="C"), 2),
    Case("subarray", _header(0, SUBARRAY=True), 2),
    Case("one-imset", _drop_imset, 2),
    Case("outname-with-space", _nothing, 2, outname="MY FIELD", names="OUTNAME 'MY FIELD'"),
    Case("outname-dotfile", _nothing, 2, outname=".hidden", names="OUTNAME '.hidden'"),
    Case("all-saturated-exposure", _saturated, 5),
    Case("flc-beside-raws", _flc_beside_raws, 2),
    Case("data-dir-missing", _nothing, 2, data="missing", names="missing: no such directory"),
    Case("missing-exptime", _header(0, EXPTIME=None), 2, names=r"no EXPTIME keyword"),
    Case("zero-exptime", _header(0, EXPTIME=0.0), 2, names=r"EXPTIME=0"),
    Case("duplicate-rootname", _duplicate, 2),
    Case("refs-no-fetch", _remove_ref, 3, ("--no-fetch",), command="refs",
         names="--no-fetch"),
    Case("pixel-scale", _nothing, 2, ("--pixel-scale", "5"), names="--pixel-scale"),
    Case("kernel", _nothing, 2, ("--kernel", "boxcar"), names="--kernel"),
    Case("from-stage", _nothing, 2, ("--from", "align"), names="--from"),
    Case("workers-zero", _nothing, 2, ("--workers", "0"), names="--workers"),
    Case("truncated-raw", _truncated_raw, 2),
    Case("not-fits", _not_fits, 2),
    Case("no-inputs", _empty, 2),
    Case("mixed-targets", _header(0, TARGNAME="OTHER"), 2, names="--allow-mixed-targets"),
    Case("wrong-detector", _header(0, DETECTOR="HRC"), 2, names="ACS/HRC"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure_is_one_line_and_leaves_nothing(case, program, tmp_path):
    data = _copy(program, tmp_path / "data")
    name = case.prepare(data)
    before = _inputs(data)
    target = data / case.data if case.data else data
    if case.command == "refs":
        result = _hstred("refs", "--data", str(target), *case.args)
    else:
        result = _hstred("run", case.outname, "--data", str(target), *QUICK, *case.args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.code, result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("hstred: error: ")
    pattern = case.names or (name if isinstance(name, re.Pattern) else re.escape(name))
    assert re.search(pattern, line), line
    assert "Traceback" not in result.stderr
    if case.data:
        assert not target.exists()  # nothing created for a directory that does not exist
    log = data / "hstred_work" / "hstred.log"
    if log.exists():
        assert line.removeprefix("hstred: error: ") in log.read_text()
    in_the_way = name if isinstance(name, str) else ""
    leftovers = [p for p in _leftovers(data) if p != in_the_way]
    assert leftovers == []
    assert _inputs(data) == before  # inputs byte-identical


# --------------------------------------------------------------------------- concurrency
def _descendants(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes) -> list:
    import psutil

    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="module")
def killed(program, tmp_path_factory):
    """A run killed (SIGKILL, main process only) while its final drizzle has children."""
    with fixture_dir(tmp_path_factory, "killed") as root:
        data = _copy(program, root)
        cmd = [sys.executable, "-m", "hstred", "run", OUTNAME, "--data", str(data), *QUICK]
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        final = data / "hstred_work" / "drizzle" / OUTNAME / "final"
        children: list = []
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < 900:
            if final.exists():
                children = _descendants(proc.pid)
                if children:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        yield data, proc.returncode, children


def test_sigkill_during_final_drizzle_leaves_no_process(killed):
    data, returncode, children = killed
    assert returncode == -signal.SIGKILL  # the run was killed, it did not finish
    assert children, "the final drizzle had no worker process when the run was killed"
    deadline = time.time() + 30
    while _alive(children) and time.time() < deadline:
        time.sleep(0.2)
    assert _alive(children) == []
    assert list(data.glob(".hstred-*"))  # the staging directory the kill left


@pytest.fixture(scope="module")
def resumed(killed):
    """The killed run resumed; a second run started 3 s later on the same directory."""
    data, _code, _children = killed
    cmd = [sys.executable, "-m", "hstred", "run", OUTNAME, "--data", str(data), *QUICK]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = data / "hstred_work" / "lock"
    t0 = time.time()
    while time.time() - t0 < 300 and first.poll() is None:  # until the first holds the lock
        try:
            if json.loads(lock.read_text()).get("pid") == first.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    time.sleep(3)
    second = _hstred("run", "OTHER", "--data", str(data), *QUICK)
    children = _descendants(first.pid)
    out, err = first.communicate(timeout=900)
    return data, first, err, second, children


def test_second_run_is_refused_while_the_first_finishes(resumed):
    data, first, first_err, second, _children = resumed
    assert second.returncode == 7, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert f"{data}: another hstred run is working in this directory (process {first.pid}" in line
    assert first.returncode == 0, first_err
    for suffix in ("sci", "wht"):  # (QUICK: --no-rms)
        assert np.isfinite(fits.getdata(data / f"{OUTNAME}_F606W_drz_{suffix}.fits")).any()
    assert not list(data.glob("OTHER_*"))


def test_resume_removes_staging_and_leaves_no_process(resumed):
    data, _first, _err, _second, children = resumed
    assert _leftovers(data) == sorted(
        f"{OUTNAME}_{x}" for x in ("F606W_drz_sci.fits", "F606W_drz_wht.fits", "report.html",
                                   "report_files", "run.json"))
    assert _alive(children) == []


# --------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 150 MB tmpfs (skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_too_small_is_refused_before_work(program, small_disk):
    data = small_disk / "data"
    data.mkdir()
    for raw in program.glob("*_raw.fits"):
        shutil.copy(raw, data / raw.name)
    (data / "crds").symlink_to(program / "crds")
    before = _inputs(data)
    free = shutil.disk_usage(small_disk).free
    result = _hstred("run", OUTNAME, "--data", str(data), *QUICK)
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.search(rf"{data}: .* free but about .* needed", line), line
    assert _leftovers(data) == [] and not (data / "hstred_work" / "calibrated").exists()
    assert shutil.disk_usage(small_disk).free >= free - 1_000_000  # only the log and lock
    assert _inputs(data) == before


def test_disk_filling_anyway_removes_partial_files(program, small_disk):
    """The up-front estimate bypassed: the first calibrated file (168 MB) cannot fit."""
    data = small_disk / "data"
    data.mkdir()
    for raw in program.glob("*_raw.fits"):
        shutil.copy(raw, data / raw.name)
    (data / "crds").symlink_to(program / "crds")
    before = _inputs(data)
    free = shutil.disk_usage(small_disk).free
    script = ("import hstred.stages as s; s.check_free_space = lambda *a, **k: None; "
              "from hstred.cli import run; run()")
    result = subprocess.run([sys.executable, "-c", script, "run", OUTNAME, "--data", str(data),
                             "--cte", "none", "--workers", "1", "--quiet"],
                            capture_output=True, text=True, env=_env(), timeout=900)
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "no space left on the device" in line and str(data) in line, line
    assert line.removeprefix("hstred: error: ") in (data / "hstred_work" / "hstred.log").read_text()
    assert _leftovers(data) == []
    assert list((data / "hstred_work" / "calibrated").glob("*")) == []
    assert shutil.disk_usage(small_disk).free >= free - 1_000_000  # the space is given back
    assert _inputs(data) == before


def test_read_only_data_directory(program, tmp_path):
    data = _copy(program, tmp_path / "data")
    view = tmp_path / "read-only"
    view.mkdir()
    bound = subprocess.run(["mount", "--bind", str(data), str(view)], capture_output=True,
                           text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)],
                                 capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here: {remount.stderr.strip()}")
        before = _inputs(data)
        result = _hstred("run", OUTNAME, "--data", str(view), *QUICK)
        assert result.returncode == 6, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert re.search(rf"{view}\S*: read-only file system; .*--data DIR", line), line
    finally:
        subprocess.run(["umount", str(view)], check=False)
    assert _leftovers(data) == [] and not (data / "hstred_work").exists()
    assert _inputs(data) == before
