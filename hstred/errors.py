"""The hstred exception family.

Library code raises these (chained with ``from err``); only the command-line
layer turns them into exit statuses and a one-line message on stderr.
"""

from __future__ import annotations

__all__ = [
    "HstredError",
    "InputError",
    "ReferenceFileError",
    "StageError",
    "QualityGateError",
    "RunEnvironmentError",
    "DataDirBusyError",
]


class HstredError(Exception):
    """Base class. ``exit_code`` is the documented process exit status."""

    exit_code = 1


class InputError(HstredError):
    """The user's input files or options are unusable."""

    exit_code = 2


class ReferenceFileError(HstredError):
    """Calibration reference files are missing, unreadable or do not match."""

    exit_code = 3


class StageError(HstredError):
    """A processing stage failed."""

    exit_code = 4


class QualityGateError(HstredError):
    """A product or an exposure failed a quality gate (alignment, no usable pixels)."""

    exit_code = 5


class RunEnvironmentError(HstredError):
    """The machine cannot run the work: permissions, disk space, network, a missing
    Dask scheduler."""

    exit_code = 6


class DataDirBusyError(HstredError):
    """Another hstred process holds the data directory's lock."""

    exit_code = 7
