"""Calibration reference files: names from headers, local lookup, CRDS fetch."""

from hstred.refs.resolve import (
    REFERENCE_KEYWORDS,
    ReferenceSet,
    needed_references,
    resolve_references,
    search_paths,
)

__all__ = [
    "REFERENCE_KEYWORDS",
    "ReferenceSet",
    "needed_references",
    "resolve_references",
    "search_paths",
]
