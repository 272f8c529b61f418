"""Relative alignment of visits: source catalogs, reference choice, tweakwcs fits."""

from hstred.align.apply import write_aligned_wcs
from hstred.align.catalog import detect_point_sources
from hstred.align.fit import GroupAlignment, align_group, gate_alignment
from hstred.align.reference import choose_reference
from hstred.align.stage import AlignmentOutcome, VisitImage, align_visits

__all__ = [
    "AlignmentOutcome",
    "GroupAlignment",
    "VisitImage",
    "align_group",
    "align_visits",
    "choose_reference",
    "detect_point_sources",
    "gate_alignment",
    "write_aligned_wcs",
]
