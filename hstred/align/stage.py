"""Align visit groups: catalogs of their drizzled images, reference choice, tweakwcs fits.

Reads the visit images and the chip WCSs of the exposures' working copies; returns
the corrected WCSs and the fit records. Writing the WCSs back is
:func:`hstred.align.apply.write_aligned_wcs`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from hstred.align.catalog import detect_point_sources
from hstred.align.fit import (
    GroupAlignment,
    align_group,
    assign_sources_to_chips,
    gate_alignment,
    reference_alignment,
)
from hstred.align.reference import (
    chip_outline,
    choose_reference,
    overlap_scores,
    points_in_footprint,
)
from hstred.errors import StageError

__all__ = ["VisitImage", "AlignmentOutcome", "read_chip_wcs", "visit_catalog", "align_visits",
           "chip_key"]

log = logging.getLogger(__name__)

#: A source of a newly aligned group joins the reference catalog unless one already in it
#: lies this close (arcsec): a star seen by two groups is one reference source.
MERGE_RADIUS_ARCSEC = 0.1


class _MergedCatalog:
    """The reference catalog growing as groups are aligned (RA, Dec in degrees)."""

    def __init__(self, ra: np.ndarray, dec: np.ndarray):
        self.ra, self.dec = np.asarray(ra, float), np.asarray(dec, float)

    def _unit(self, ra, dec) -> np.ndarray:
        ra, dec = np.radians(ra), np.radians(dec)
        return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra),
                                np.sin(dec)])

    def add(self, ra: np.ndarray, dec: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        if ra.size == 0:
            return
        chord = 2.0 * np.sin(np.radians(MERGE_RADIUS_ARCSEC / 3600.0) / 2.0)
        if self.ra.size:
            distance, _ = cKDTree(self._unit(self.ra, self.dec)).query(
                self._unit(ra, dec), distance_upper_bound=chord)
            new = ~np.isfinite(distance)
        else:
            new = np.ones(ra.size, dtype=bool)
        self.ra = np.concatenate([self.ra, ra[new]])
        self.dec = np.concatenate([self.dec, dec[new]])


@dataclass(frozen=True)
class VisitImage:
    """A visit group's drizzled image and the chips (file, EXTVER) that went into it."""

    name: str
    sci: Path
    wht: Path
    chips: tuple[tuple[Path, int], ...]


@dataclass(frozen=True)
class AlignmentOutcome:
    """Fits of every group, gate verdicts (``None`` = passed) and source counts.

    ``aligned_sources`` holds each group's sources (RA, Dec in degrees) through its
    corrected chip WCSs, i.e. in the common frame; ``frame`` is the alignment frame
    (the reference visit image's celestial WCS).
    """

    reference: str
    fits: dict[str, GroupAlignment]
    failures: dict[str, str]
    n_sources: dict[str, int]
    overlap: dict[str, int]
    aligned_sources: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict,
                                                                      repr=False)
    frame: WCS | None = field(default=None, repr=False)


def chip_key(path: Path, extver: int) -> str:
    return f"{Path(path).name}[SCI,{extver}]"


def read_chip_wcs(path: Path, extver: int) -> WCS:
    """The full WCS (SIP and lookup tables) of one SCI extension, ``pixel_shape`` set."""
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # e.g. MJD-OBS from DATE-OBS
        hdr = hdul["SCI", extver].header
        wcs = WCS(hdr, hdul)
        wcs.pixel_shape = (int(hdr["NAXIS1"]), int(hdr["NAXIS2"]))
    return wcs


def _read_frame(path: Path) -> WCS:
    """The celestial WCS of a drizzled image (header only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdr = fits.getheader(path, 0)
        wcs = WCS(hdr)
        wcs.pixel_shape = (int(hdr["NAXIS1"]), int(hdr["NAXIS2"]))
    return wcs


def visit_catalog(sci: Path, wht: Path, *,
                  detection_nsigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Right ascensions and declinations (deg) of the point sources of a visit image.

    The image is read in single precision and the weight only as a coverage mask, so
    a full-frame visit image needs well under 1 GB.
    """
    with fits.open(sci) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
    with fits.open(wht, memmap=True) as hdul:
        covered = np.asarray(hdul[0].data > 0)
    cat = detect_point_sources(data, weight=covered, nsigma=detection_nsigma)
    del data, covered
    ra, dec = _read_frame(sci).all_pix2world(cat["x"], cat["y"], 0)
    return np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)


def align_visits(
    visits: Sequence[VisitImage],
    *,
    fit_geometry: str,
    searchrad_px: float,
    tolerance_px: float,
    refine_tolerance_px: float,
    min_matches: int,
    max_rms_arcsec: float,
    detection_nsigma: float,
    catalogs: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> AlignmentOutcome:
    """Choose the reference group from the data and align every other group to it and to
    the groups aligned before it.

    ``catalogs`` may hold the :func:`visit_catalog` of some visits (by name), made
    elsewhere (e.g. in the worker that drizzled the visit); the others are made here.

    The reference is the group with most sources inside the other groups' footprints
    (ties: more sources, then earlier). The others follow one at a time, the one with most
    sources inside the footprints already aligned first (ties as above), each fitted to
    the reference catalog as it has grown: the reference's sources and those of every group
    aligned so far that no earlier source lies within :data:`MERGE_RADIUS_ARCSEC` of. A
    mosaic is so aligned pointing by pointing through its overlaps, as tweakwcs's own
    expanding reference catalog does, though most pointings never overlap the reference.
    A group that fails the gates adds nothing. The alignment frame is the reference visit's
    drizzled image (north up, 0.05"/pixel): search radius and tolerances are in its pixels.
    """
    if not visits:
        raise StageError("no visit images to align")
    sources, chips_of, frames = {}, {}, {}
    catalogs = catalogs or {}
    for v in visits:
        if v.name in catalogs:
            sources[v.name] = catalogs[v.name]
        else:
            sources[v.name] = visit_catalog(v.sci, v.wht, detection_nsigma=detection_nsigma)
        chips_of[v.name] = [(chip_key(p, e), read_chip_wcs(p, e)) for p, e in v.chips]
        frames[v.name] = _read_frame(v.sci)
        log.info("visit %s: %d sources", v.name, len(sources[v.name][0]))
    # Overlap scores in one common plane (the first visit image's pixels).
    common = frames[visits[0].name]
    plane_sources, footprints = {}, {}
    for v in visits:
        ra, dec = sources[v.name]
        x, y = common.all_world2pix(ra, dec, 0)
        plane_sources[v.name] = (x, y)
        footprints[v.name] = [chip_outline(w, common) for _, w in chips_of[v.name]]
    overlap = overlap_scores(plane_sources, footprints)
    reference = choose_reference(plane_sources, footprints)
    frame = frames[reference]
    ref_ra, ref_dec = sources[reference]
    log.info("reference visit group %s (%d sources, %d in overlap)", reference,
             len(ref_ra), overlap[reference])
    results: dict[str, GroupAlignment] = {}
    failures: dict[str, str] = {}
    aligned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    chips = {v.name: assign_sources_to_chips(*sources[v.name], chips_of[v.name])
             for v in visits}
    results[reference] = reference_alignment(chips[reference], name=reference,
                                             n_sources=len(ref_ra))
    aligned[reference] = _through(chips[reference], results[reference])
    catalog = _MergedCatalog(ref_ra, ref_dec)
    order = [v.name for v in visits]
    remaining = [name for name in order if name != reference]
    covered = [reference]
    # sources of each group inside each other group's footprint, counted once
    pairs = {(name, other): int(points_in_footprint(*plane_sources[name],
                                                    footprints[other]).sum())
             for name in remaining for other in order if other != name}
    while remaining:
        inside = {name: sum(pairs[name, other] for other in covered) for name in remaining}
        name = max(remaining, key=lambda n: (inside[n], len(sources[n][0]), -order.index(n)))
        remaining.remove(name)
        res = align_group(chips[name], catalog.ra, catalog.dec, frame, name=name,
                          fit_geometry=fit_geometry, searchrad_px=searchrad_px,
                          tolerance_px=tolerance_px, refine_tolerance_px=refine_tolerance_px)
        results[name] = res
        aligned[name] = _through(chips[name], res)
        reason = gate_alignment(res, min_matches=min_matches, max_rms_arcsec=max_rms_arcsec)
        if reason is not None:
            failures[name] = reason
        else:
            catalog.add(*aligned[name])
            covered.append(name)
        log.info("visit group %s: %s, %d matches, rms %.4f\" (against %s)", name,
                 res.status, res.n_matches, res.rms_arcsec,
                 " + ".join(covered[:-1] if reason is None else covered))
    results = {v.name: results[v.name] for v in visits}
    aligned = {v.name: aligned[v.name] for v in visits}
    return AlignmentOutcome(reference=reference, fits=results, failures=failures,
                            n_sources={k: len(s[0]) for k, s in sources.items()},
                            overlap=overlap, aligned_sources=aligned, frame=frame)


def _through(chips, fit: GroupAlignment) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions of a group's sources through its (corrected) chip WCSs."""
    pos = [fit.wcs[c.key].all_pix2world(c.x, c.y, 0) for c in chips]
    if not pos:
        return np.zeros(0), np.zeros(0)
    return (np.concatenate([np.asarray(p[0], float) for p in pos]),
            np.concatenate([np.asarray(p[1], float) for p in pos]))
