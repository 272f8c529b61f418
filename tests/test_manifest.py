"""The stage cache's file hashes (hstred.manifest)."""

from __future__ import annotations

import hashlib
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
