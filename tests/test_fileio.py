"""Atomic writes, all-or-nothing publishing, the data directory's lock and leftovers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from hstred.errors import DataDirBusyError, InputError
from hstred.fileio import (
    TMP_SUFFIX,
    atomic_path,
    atomic_write_text,
    check_destinations,
    environment_error,
    publish_all,
)
from hstred.manifest import Manifest
from hstred.workspace import data_dir_lock, remove_leftovers


def test_atomic_writes_are_ordinary_readable_files(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    manifest = Manifest(tmp_path / "work")
    manifest.save()
    for path in (tmp_path / "a.json", manifest.path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(tmp_path.rglob(f"*{TMP_SUFFIX}"))


def test_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "product.fits"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["product.fits"]


def test_publish_rolls_back_when_a_move_fails(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    sci, wht = tmp_path / "X_drz_sci.fits", tmp_path / "X_drz_wht.fits"
    sci.write_text("old sci")
    wht.write_text("old wht")
    (staging / sci.name).write_text("new sci")
    # the staged weight is missing: its move fails after the science image moved
    with pytest.raises(FileNotFoundError):
        publish_all([(staging / sci.name, sci), (staging / wht.name, wht)])
    assert sci.read_text() == "old sci" and wht.read_text() == "old wht"
    (staging / sci.name).write_text("new sci")
    (staging / wht.name).write_text("new wht")
    publish_all([(staging / sci.name, sci), (staging / wht.name, wht)])
    assert sci.read_text() == "new sci" and wht.read_text() == "new wht"
    assert os.listdir(staging) == []


def test_publish_removes_a_product_no_longer_made_all_or_nothing(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    sci, rms = tmp_path / "X_drz_sci.fits", tmp_path / "X_drz_rms.fits"
    sci.write_text("old sci")
    rms.write_text("old rms")
    # a failing move after the removal brings the removed file back
    with pytest.raises(FileNotFoundError):
        publish_all([(None, rms), (staging / sci.name, sci)])
    assert sci.read_text() == "old sci" and rms.read_text() == "old rms"
    (staging / sci.name).write_text("new sci")
    publish_all([(staging / sci.name, sci), (None, rms)])
    assert sci.read_text() == "new sci" and not rms.exists()
    assert sorted(os.listdir(tmp_path)) == ["X_drz_sci.fits", "staging"]
    publish_all([(None, rms)])  # nothing to remove: nothing happens


def test_publish_moves_tile_directories_all_or_nothing(tmp_path):
    """A tiled image is a directory and an index: the directory replaces an earlier one
    whole, a failure restores the earlier one, and a removed one comes back likewise."""
    staging = tmp_path / "staging"
    tiles, index = tmp_path / "X_drz_sci", tmp_path / "X_drz_sci.json"
    tiles.mkdir()
    (tiles / "old_tile.fits").write_text("old")
    index.write_text("old index")

    def stage():
        (staging / tiles.name).mkdir(parents=True)
        (staging / tiles.name / "new_tile.fits").write_text("new")
        (staging / index.name).write_text("new index")

    stage()
    # the index's move fails after the directory moved: the old directory comes back
    with pytest.raises(FileNotFoundError):
        publish_all([(staging / tiles.name, tiles), (staging / "missing.json", index)])
    assert os.listdir(tiles) == ["old_tile.fits"] and index.read_text() == "old index"
    shutil.rmtree(staging)
    stage()
    publish_all([(staging / tiles.name, tiles), (staging / index.name, index)])
    assert os.listdir(tiles) == ["new_tile.fits"] and index.read_text() == "new index"
    assert sorted(os.listdir(tmp_path)) == ["X_drz_sci", "X_drz_sci.json", "staging"]
    with pytest.raises(FileNotFoundError):  # a removal undone
        publish_all([(None, tiles), (None, index), (staging / "missing.fits", tmp_path / "y")])
    assert os.listdir(tiles) == ["new_tile.fits"] and index.read_text() == "new index"
    publish_all([(None, tiles), (None, index)])
    assert sorted(os.listdir(tmp_path)) == ["staging"]


def test_a_directory_in_the_way_is_named_before_work(tmp_path):
    (tmp_path / "X_F606W_drz_wht.fits").mkdir()
    with pytest.raises(InputError, match=r"X_F606W_drz_wht.fits: exists and is not a regular"):
        check_destinations([tmp_path / "X_F606W_drz_sci.fits", tmp_path / "X_F606W_drz_wht.fits"])


def test_environment_errors_name_the_file():
    full = environment_error(OSError(28, "No space left on device", "/d/x.fits"))
    assert str(full).startswith("/d/x.fits: no space left") and full.exit_code == 6
    assert "read-only" in str(environment_error(OSError(30, "Read-only file system", "/d")))
    assert environment_error(OSError(2, "No such file")) is None


def test_second_holder_of_the_lock_is_refused_with_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hstred.workspace import data_dir_lock\n"
         "with data_dir_lock(sys.argv[1], command='hstred run A'):\n"
         "    print('held', flush=True); time.sleep(30)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusyError, match=rf"process {holder.pid} on .*'hstred run A'"):
            with data_dir_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with data_dir_lock(tmp_path), data_dir_lock(tmp_path):  # released by the kill; re-entrant
        info = json.loads((tmp_path / "hstred_work" / "lock").read_text())
        assert info["pid"] == os.getpid()


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    staging = tmp_path / ".hstred-X-staging-abc"
    staging.mkdir()
    (staging / "X_F606W_drz_sci.fits").write_bytes(b"0" * 100)
    old_staging = tmp_path / ".X-staging-def"
    old_staging.mkdir()
    partial = tmp_path / "hstred_work" / "calibrated" / f".a_flt.fits.123{TMP_SUFFIX}"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    keep = [tmp_path / "a_raw.fits", tmp_path / ".profile"]
    for path in keep:
        path.write_text("input")
    removed = remove_leftovers(tmp_path)
    assert sorted(removed) == sorted([staging, old_staging, partial])
    assert all(p.exists() for p in keep) and not any(p.exists() for p in removed)


def test_a_full_disk_reported_without_errno_is_still_named(tmp_path):
    target = tmp_path / "a_flt.fits"
    with pytest.raises(OSError) as info, atomic_path(target):
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:  # what astropy's free-space check raises instead
            raise OSError("Not enough space on disk: " + str(exc)) from None
    assert info.value.errno == 28 and info.value.filename == str(target)
    assert str(environment_error(info.value)).startswith(f"{target}: no space left")
    assert os.listdir(tmp_path) == []


def test_numpys_full_disk_error_without_errno_is_named(tmp_path):
    target = tmp_path / "a_flt.fits"
    with pytest.raises(OSError) as info, atomic_path(target):
        raise OSError("Not enough free space to write 33554432 bytes after offset 83943360")
    assert info.value.errno == 28 and info.value.filename == str(target)
