"""The stage cache's file hashes (hstred.manifest)."""

from __future__ import annotations

import hashlib
import json
import os

from hstred.manifest import Manifest


def test_files_hashed_at_once_in_order_and_cached(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(1000 + 37 * i) * (i + 1))
        paths.append(p)
    m = Manifest(tmp_path / "work")
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert m.hash_many(paths) == expected
    assert m.hash_files([paths[1], None, paths[0]]) == {str(paths[1]): expected[1],
                                                        str(paths[0]): expected[0]}
    m.record("stage", "unit", "k", paths)
    entry = Manifest(tmp_path / "work").lookup("stage", "unit", "k")
    assert list(entry["outputs"].values()) == expected
    paths[2].write_bytes(b"changed")  # a changed output invalidates the entry
    assert Manifest(tmp_path / "work").lookup("stage", "unit", "k") is None


def test_outputs_are_found_again_when_the_directory_is_mounted_elsewhere(tmp_path):
    """A run on the host and one in a container (DIR at /data) share finished work: the
    manifest stores paths inside the data directory relative to it."""
    host = tmp_path / "host"
    (host / "hstred_work" / "calibrated").mkdir(parents=True)
    out = host / "hstred_work" / "calibrated" / "x_flt.fits"
    out.write_bytes(b"calibrated")
    product = host / "P_F606W_drz_sci.fits"
    product.write_bytes(b"product")
    m = Manifest(host / "hstred_work")
    m.record("calibrate", "x", "key", [out, product])
    stored = json.loads((host / "hstred_work" / "manifest.json").read_text())
    assert set(stored["stages"]["calibrate"]["x"]["outputs"]) == {
        "hstred_work/calibrated/x_flt.fits", "P_F606W_drz_sci.fits"}
    moved = tmp_path / "data"
    host.rename(moved)  # the same directory seen at another place
    again = Manifest(moved / "hstred_work")
    assert again.lookup("calibrate", "x", "key") is not None
    assert sorted(again.outputs("calibrate", "x")) == [
        moved / "P_F606W_drz_sci.fits", moved / "hstred_work" / "calibrated" / "x_flt.fits"]
    (moved / "P_F606W_drz_sci.fits").write_bytes(b"changed")
    assert again.lookup("calibrate", "x", "key") is None


def test_software_part_of_keys_holds_the_code_digest():
    from hstred.manifest import code_digest, software_versions

    versions = software_versions()
    assert versions["hstred-code"] == code_digest()
    assert len(code_digest()) == 64
