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
from hstred.align.reference import chip_outline, choose_reference, overlap_scores
from hstred.errors import StageError

__all__ = ["VisitImage", "AlignmentOutcome", "read_chip_wcs", "visit_catalog", "align_visits",
           "chip_key"]

log = logging.getLogger(__name__)


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
    """Choose the reference group from the data and align every other group to it.

    ``catalogs`` may hold the :func:`visit_catalog` of some visits (by name), made
    elsewhere (e.g. in the worker that drizzled the visit); the others are made here.

    The reference is the group with most sources inside the other groups' footprints
    (ties: more sources, then earlier). The alignment frame is the reference visit's
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
    for v in visits:
        ra, dec = sources[v.name]
        chips = assign_sources_to_chips(ra, dec, chips_of[v.name])
        if v.name == reference:
            results[v.name] = reference_alignment(chips, name=v.name, n_sources=len(ra))
            aligned[v.name] = _through(chips, results[v.name])
            continue
        res = align_group(chips, ref_ra, ref_dec, frame, name=v.name,
                          fit_geometry=fit_geometry, searchrad_px=searchrad_px,
                          tolerance_px=tolerance_px, refine_tolerance_px=refine_tolerance_px)
        results[v.name] = res
        aligned[v.name] = _through(chips, res)
        reason = gate_alignment(res, min_matches=min_matches, max_rms_arcsec=max_rms_arcsec)
        if reason is not None:
            failures[v.name] = reason
        log.info("visit group %s: %s, %d matches, rms %.4f\"", v.name, res.status,
                 res.n_matches, res.rms_arcsec)
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
