"""The stage cache: what each stage consumed and produced, so re-runs skip finished work.

``DIR/hstred_work/manifest.json`` holds, per stage and per unit of work (an
exposure for calibration, a filter set for drizzling), a *key* — the content
hashes of every input file, the stage parameters, the software versions and the digest
of hstred's own code — and the outputs written with their hashes. Paths inside the data
directory are stored relative to it, so the host and a container that mounts the
directory elsewhere (``/data``) share finished work. A unit is done when its key matches and its
outputs still exist with the recorded hashes. The manifest is rewritten
atomically after every finished unit, so a run killed at any point resumes with
the units that completed.

File hashes are SHA-256 of the content, cached by (path, size, mtime) so that an
unchanged file is not read again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hstred.fileio import atomic_write_text

__all__ = ["Manifest", "file_sha256", "software_versions"]

_CHUNK = 8 << 20
_FORMAT = 1


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of hstred's own reduction code (every ``.py`` file of the package but the
    simulator's), so that a code change without a version bump redoes the work."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("simulate/"):
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of hstred (and the digest of its code) and the libraries that shape its
    products."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"hstred-code": code_digest()}
    for dist in ("hstred", "numpy", "scipy", "astropy", "arcticpy-no-gsl", "drizzlepac",
                 "drizzle", "stwcs", "tweakwcs", "photutils", "crds"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


class Manifest:
    """A JSON stage cache in ``work_dir/manifest.json``."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / "manifest.json"
        # Outputs are stored relative to the data directory (the work directory's parent),
        # so a run on the host and one in a container (the directory mounted at /data)
        # share finished work.
        self.root = Path(work_dir).resolve().parent
        self._lock = threading.Lock()
        self._data = {"format": _FORMAT, "hashes": {}, "stages": {}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                data = None  # a damaged manifest only costs a recomputation
            if isinstance(data, dict) and data.get("format") == _FORMAT:
                self._data = data

    # -------------------------------------------------------------- hashing
    def hash_file(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        stored = self._stored(path)
        cached = self._data["hashes"].get(stored)
        if cached and cached["stamp"] == stamp:
            return cached["sha256"]
        digest = file_sha256(path)
        with self._lock:
            self._data["hashes"][stored] = {"stamp": stamp, "sha256": digest}
        return digest

    def hash_many(self, paths: Iterable[Path]) -> list[str]:
        """:meth:`hash_file` of each path, in order; several files at once (hashlib and
        file reads release the GIL, so threads hash in parallel)."""
        paths = list(paths)
        workers = min(len(paths), os.cpu_count() or 1, 4)
        if workers < 2:
            return [self.hash_file(p) for p in paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.hash_file, paths))

    def hash_files(self, paths: Iterable[Path | None]) -> dict[str, str | None]:
        paths = [p for p in paths if p is not None]
        return {str(p): d for p, d in zip(paths, self.hash_many(paths), strict=True)}

    # -------------------------------------------------------------- units of work
    @staticmethod
    def make_key(**parts) -> str:
        """A digest of everything a unit's output depends on."""
        return hashlib.sha256(_canonical(parts).encode()).hexdigest()

    def lookup(self, stage: str, unit: str, key: str) -> dict | None:
        """The recorded entry when ``unit`` of ``stage`` is done with ``key`` and intact."""
        entry = self._data["stages"].get(stage, {}).get(unit)
        if not entry or entry.get("key") != key:
            return None
        for out, digest in entry.get("outputs", {}).items():
            path = self._path(out)
            if not path.is_file() or self.hash_file(path) != digest:
                return None
        return entry

    def record(self, stage: str, unit: str, key: str, outputs: Iterable[Path],
               info: Mapping | None = None) -> None:
        """Record a finished unit and save the manifest at once."""
        outputs = list(outputs)
        entry = {"key": key, "outputs": {self._stored(p): d for p, d in
                                         zip(outputs, self.hash_many(outputs), strict=True)}}
        entry.update(info or {})
        with self._lock:
            self._data["stages"].setdefault(stage, {})[unit] = entry
        self.save()

    def outputs(self, stage: str, unit: str) -> list[Path]:
        """The recorded outputs of ``unit`` of ``stage`` (empty when none is recorded)."""
        entry = self._data["stages"].get(stage, {}).get(unit) or {}
        return [self._path(p) for p in entry.get("outputs", {})]

    def _stored(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _path(self, stored: str) -> Path:
        return self.root / stored  # an absolute ``stored`` stays as it is

    def forget(self, stage: str) -> None:
        with self._lock:
            self._data["stages"].pop(stage, None)
        self.save()

    def entries(self, stage: str) -> dict:
        return dict(self._data["stages"].get(stage, {}))

    def save(self) -> None:
        with self._lock:
            text = json.dumps(self._data, indent=1, sort_keys=True, default=str)
        atomic_write_text(self.path, text)
