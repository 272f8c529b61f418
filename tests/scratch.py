"""Directories of module- and session-scoped fixtures, removed when the fixture ends."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def fixture_dir(tmp_path_factory, name: str) -> Iterator[Path]:
    """A fresh directory under pytest's base temp, removed with its contents afterwards.

    A full-frame program and its reductions take gigabytes. ``tmp_path`` directories of
    passing tests go as soon as each test ends (``tmp_path_retention_policy`` in
    pyproject.toml); shared fixtures use this, so that a test run's disk use peaks at what
    the modules in progress hold instead of growing with every module run.
    """
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
