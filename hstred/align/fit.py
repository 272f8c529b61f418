"""Relative alignment of visit groups with tweakwcs, checked independently.

A visit group's sources (measured once, on its drizzled image) are handed to the
chips of its exposures: each source goes to the first chip that sees it, at the chip
pixel position the chip's header WCS gives. tweakwcs then fits one linear correction
per group (``XYXYMatch``, fit geometry ``rscale`` by default) in the tangent plane of
the alignment frame and applies it to every chip's WCS through ``FITSWCSCorrector``
(CD and CRVAL change; SIP and lookup-table distortions stay as they are).

Conventions
-----------
* Chip pixel coordinates are 0-indexed (``x`` = column, ``y`` = row).
* Shifts are in arcsec on the sky along standard coordinates about the group's
  centre: ``x`` toward east, ``y`` toward north.
* Rotations are changes of position angle, degrees, positive north through east.
* The scale is the ratio of corrected to original angular sizes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree
from tweakwcs import align_wcs
from tweakwcs.correctors import FITSWCSCorrector
from tweakwcs.matchutils import MatchSourceConfusionError, XYXYMatch

__all__ = [
    "ChipSources",
    "GroupAlignment",
    "assign_sources_to_chips",
    "standard_coordinates",
    "fit_similarity",
    "measure_wcs_change",
    "match_residuals",
    "residual_vectors",
    "mean_direction",
    "align_group",
    "reference_alignment",
    "gate_alignment",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChipSources:
    """Sources of a visit placed on one chip of one exposure (0-indexed chip pixels)."""

    key: str
    wcs: WCS
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class GroupAlignment:
    """The alignment of one visit group to the reference catalog.

    ``status`` is ``"REFERENCE"`` (the group defining the frame; WCS unchanged),
    ``"ALIGNED"`` (a fit was made; it still has to pass :func:`gate_alignment`) or
    ``"FAILED"`` (no fit; ``message`` says why). ``wcs`` maps chip keys to the
    corrected WCS (the original for the reference and for failures).
    """

    name: str
    status: str
    wcs: dict[str, WCS] = field(repr=False)
    n_matches: int = 0
    rms_arcsec: float = float("nan")
    shift_x_arcsec: float = 0.0
    shift_y_arcsec: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    message: str = ""
    #: the matched sources after correction: ``ra_deg``, ``dec_deg`` and their offsets
    #: from the reference sources, ``dx_mas`` east and ``dy_mas`` north
    residuals: dict = field(default_factory=dict, repr=False)


def assign_sources_to_chips(
    ra: np.ndarray,
    dec: np.ndarray,
    chips: Sequence[tuple[str, WCS]],
    *,
    margin_px: float = 3.0,
) -> list[ChipSources]:
    """Give each sky source to the first chip (in the given order) that contains it.

    Parameters
    ----------
    ra, dec : arrays
        Source positions, degrees (from the visit's drizzled image and its WCS).
    chips : sequence of (key, WCS)
        Chip WCSs (``pixel_shape`` set) of the visit's exposures.
    margin_px : float
        Sources closer than this to a chip edge are not given to that chip.

    Returns
    -------
    list of ChipSources
        One per chip, in the input order (possibly with no sources).
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    free = np.ones(ra.shape, dtype=bool)
    out = []
    for key, wcs in chips:
        nx, ny = wcs.pixel_shape
        x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6, maxiter=50, quiet=True)
        inside = (free & np.isfinite(x) & np.isfinite(y)
                  & (x >= margin_px - 0.5) & (x <= nx - 0.5 - margin_px)
                  & (y >= margin_px - 0.5) & (y <= ny - 0.5 - margin_px))
        free &= ~inside
        out.append(ChipSources(key=key, wcs=wcs, x=x[inside], y=y[inside]))
    return out


def standard_coordinates(ra, dec, *, ra0_deg: float, dec0_deg: float):
    """Gnomonic standard coordinates (xi east, eta north) in arcsec about (ra0, dec0)."""
    ra = np.radians(np.asarray(ra, dtype=float))
    dec = np.radians(np.asarray(dec, dtype=float))
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    dra = ra - ra0
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(dra)
    xi = np.cos(dec) * np.sin(dra) / cos_c
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(dra)) / cos_c
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def fit_similarity(xi, eta, xi2, eta2) -> tuple[float, float, float, float]:
    """Least-squares similarity transform taking (xi, eta) to (xi2, eta2) (east/north).

    Returns ``(shift_x, shift_y, rotation_deg, scale)``: the shift is that of the
    centroid of the first point set (same units as the input), the rotation is the
    change of position angle (north through east, degrees).
    """
    xi, eta, xi2, eta2 = (np.asarray(a, dtype=float) for a in (xi, eta, xi2, eta2))
    cx, cy = xi.mean(), eta.mean()
    u, v = xi - cx, eta - cy
    u2, v2 = xi2 - xi2.mean(), eta2 - eta2.mean()
    # (u2, v2) = s [[cos t, sin t], [-sin t, cos t]] (u, v): a position-angle increase of t.
    denom = float(np.sum(u * u + v * v))
    a = float(np.sum(u * u2 + v * v2)) / denom  # s cos t
    b = float(np.sum(v * u2 - u * v2)) / denom  # s sin t
    return (float(xi2.mean() - cx), float(eta2.mean() - cy),
            float(np.degrees(np.arctan2(b, a))), float(np.hypot(a, b)))


def _sample_grid(wcs: WCS, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    nx, ny = wcs.pixel_shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    return gx.ravel(), gy.ravel()


def measure_wcs_change(
    originals: Sequence[WCS], corrected: Sequence[WCS]
) -> tuple[float, float, float, float]:
    """Shift (arcsec east, north), rotation (deg) and scale between two sets of chip WCSs.

    Pixel grids of all chips are taken to the sky through both WCSs and a similarity
    transform is fitted in standard coordinates about their centre.
    """
    ra_o, dec_o, ra_c, dec_c = [], [], [], []
    for w0, w1 in zip(originals, corrected, strict=True):
        x, y = _sample_grid(w0)
        r, d = w0.all_pix2world(x, y, 0)
        ra_o.append(r)
        dec_o.append(d)
        r, d = w1.all_pix2world(x, y, 0)
        ra_c.append(r)
        dec_c.append(d)
    ra_o, dec_o = np.concatenate(ra_o), np.concatenate(dec_o)
    ra_c, dec_c = np.concatenate(ra_c), np.concatenate(dec_c)
    ra0, dec0 = mean_direction(ra_o, dec_o)
    xi, eta = standard_coordinates(ra_o, dec_o, ra0_deg=ra0, dec0_deg=dec0)
    xi2, eta2 = standard_coordinates(ra_c, dec_c, ra0_deg=ra0, dec0_deg=dec0)
    return fit_similarity(xi, eta, xi2, eta2)


def mean_direction(ra, dec) -> tuple[float, float]:
    """(RA, Dec) in degrees of the mean unit vector of sky positions given in degrees."""
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.sum(np.cos(d) * np.cos(r)), np.sum(np.cos(d) * np.sin(r)), np.sum(np.sin(d))])
    v /= np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arcsin(v[2])))


def match_residuals(
    ra, dec, ref_ra, ref_dec, *, radius_arcsec: float, nsigma: float = 3.0, iterations: int = 5
) -> tuple[int, float, np.ndarray]:
    """Nearest-neighbour matches within ``radius_arcsec`` and their clipped RMS.

    Each source is paired with its nearest reference source; pairs farther than
    ``radius_arcsec`` are discarded, then pairs beyond ``nsigma`` times the RMS are
    clipped iteratively.

    Returns
    -------
    (n_matches, rms_arcsec, kept)
        ``kept`` is a boolean mask over the sources.
    """
    ra = np.asarray(ra, dtype=float)
    kept = np.zeros(ra.shape, dtype=bool)
    if ra.size == 0 or np.size(ref_ra) == 0:
        return 0, float("nan"), kept
    ra0, dec0 = mean_direction(np.concatenate([ra, np.asarray(ref_ra, float)]),
                                np.concatenate([np.asarray(dec, float),
                                                np.asarray(ref_dec, float)]))
    xi, eta = standard_coordinates(ra, dec, ra0_deg=ra0, dec0_deg=dec0)
    rxi, reta = standard_coordinates(ref_ra, ref_dec, ra0_deg=ra0, dec0_deg=dec0)
    dist, _ = cKDTree(np.column_stack([rxi, reta])).query(np.column_stack([xi, eta]))
    kept = dist <= radius_arcsec
    for _ in range(iterations):
        if kept.sum() < 2:
            break
        rms = float(np.sqrt(np.mean(dist[kept] ** 2)))
        new = kept & (dist <= nsigma * rms)
        if new.sum() == kept.sum():
            break
        kept = new
    n = int(kept.sum())
    rms = float(np.sqrt(np.mean(dist[kept] ** 2))) if n else float("nan")
    return n, rms, kept


def residual_vectors(ra, dec, ref_ra, ref_dec, kept) -> dict[str, list[float]]:
    """The offsets of the ``kept`` sources (a mask from :func:`match_residuals`) from
    their nearest reference sources: ``ra_deg``, ``dec_deg`` of each source and
    ``dx_mas`` (east), ``dy_mas`` (north), source minus reference."""
    ra, dec = np.asarray(ra, float)[kept], np.asarray(dec, float)[kept]
    if ra.size == 0:
        return {"ra_deg": [], "dec_deg": [], "dx_mas": [], "dy_mas": []}
    ref_ra, ref_dec = np.asarray(ref_ra, float), np.asarray(ref_dec, float)
    ra0, dec0 = mean_direction(np.concatenate([ra, ref_ra]), np.concatenate([dec, ref_dec]))
    xi, eta = standard_coordinates(ra, dec, ra0_deg=ra0, dec0_deg=dec0)
    rxi, reta = standard_coordinates(ref_ra, ref_dec, ra0_deg=ra0, dec0_deg=dec0)
    _, nearest = cKDTree(np.column_stack([rxi, reta])).query(np.column_stack([xi, eta]))
    return {"ra_deg": ra.tolist(), "dec_deg": dec.tolist(),
            "dx_mas": ((xi - rxi[nearest]) * 1000.0).tolist(),
            "dy_mas": ((eta - reta[nearest]) * 1000.0).tolist()}


def _frame_pixel_scale_arcsec(frame: WCS) -> float:
    return float(np.sqrt(abs(np.linalg.det(frame.wcs.cd if frame.wcs.has_cd()
                                           else frame.pixel_scale_matrix))) * 3600.0)


@contextlib.contextmanager
def _quiet_tweakwcs():
    """tweakwcs sets its module loggers to DEBUG; keep them to warnings during a fit."""
    loggers = [lg for name, lg in logging.Logger.manager.loggerDict.items()
               if name.startswith("tweakwcs") and isinstance(lg, logging.Logger)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _run_tweakwcs(chips, ref_table, frame_corrector, *, name, match, fit_geometry,
                  nclip, sigma):
    """One tweakwcs pass; returns (fit_info of the first chip, corrected WCS per key)."""
    correctors = []
    for c in chips:
        cat = Table({"x": np.asarray(c.x, float), "y": np.asarray(c.y, float)})
        correctors.append(FITSWCSCorrector(
            c.wcs.deepcopy(), meta={"catalog": cat, "group_id": name, "name": c.key}))
    with _quiet_tweakwcs():
        # The group's outline only trims the reference catalog to the sky the group
        # covers. Its convex hull (group_bb_policy=0) differs from the exact union of
        # the chip outlines by the chip gap, where the group has no sources to match;
        # the union costs about a second per pass on spherical polygons.
        align_wcs(correctors, refcat=ref_table, ref_tpwcs=frame_corrector, match=match,
                  fitgeom=fit_geometry, nclip=nclip, sigma=(sigma, "rmse"), minobj=None,
                  group_bb_policy=0)
    info = correctors[0].meta.get("fit_info", {"status": "FAILED: no fit information"})
    return info, {c.key: corr.wcs for c, corr in zip(chips, correctors, strict=True)}


def align_group(
    chips: Sequence[ChipSources],
    ref_ra: np.ndarray,
    ref_dec: np.ndarray,
    frame: WCS,
    *,
    name: str,
    fit_geometry: str = "rscale",
    searchrad_px: float = 60.0,
    tolerance_px: float = 3.0,
    refine_tolerance_px: float = 1.0,
    nclip: int = 3,
    sigma: float = 3.0,
) -> GroupAlignment:
    """Fit one visit group to the reference catalog and correct all its chip WCSs.

    Two tweakwcs passes: the first finds the offset with a 2-D histogram within
    ``searchrad_px`` and matches within ``tolerance_px``; the second starts from the
    first solution and matches within ``refine_tolerance_px``. Lengths are in pixels
    of ``frame`` (an undistorted celestial WCS: the alignment frame).

    The result is checked independently of tweakwcs: sources are re-projected through
    the corrected WCSs and matched to the reference within ``refine_tolerance_px``
    (clipped at ``sigma``), which gives ``n_matches`` and ``rms_arcsec``. The reported
    shift/rotation/scale are measured between the original and corrected WCSs.
    """
    originals = {c.key: c.wcs for c in chips}
    ref_table = Table({"RA": np.asarray(ref_ra, float), "DEC": np.asarray(ref_dec, float)})
    n_sources = int(sum(len(c.x) for c in chips))
    if n_sources == 0 or len(ref_table) == 0:
        return GroupAlignment(name=name, status="FAILED", wcs=dict(originals),
                              message=f"no sources ({n_sources} in the visit, "
                                      f"{len(ref_table)} in the reference)")
    frame_corrector = FITSWCSCorrector(frame)
    passes = (
        XYXYMatch(searchrad=searchrad_px, separation=0.5, use2dhist=True,
                  tolerance=tolerance_px),
        XYXYMatch(searchrad=max(2.0 * refine_tolerance_px, 1.0), separation=0.5,
                  use2dhist=False, tolerance=refine_tolerance_px),
    )
    current = list(chips)
    for k, match in enumerate(passes, start=1):
        try:
            info, corrected = _run_tweakwcs(current, ref_table, frame_corrector, name=name,
                                            match=match, fit_geometry=fit_geometry,
                                            nclip=nclip, sigma=sigma)
        except (MatchSourceConfusionError, ValueError, np.linalg.LinAlgError) as err:
            return GroupAlignment(name=name, status="FAILED", wcs=dict(originals),
                                  message=f"tweakwcs pass {k} failed: {err}")
        status = str(info.get("status", "FAILED"))
        if status != "SUCCESS":
            return GroupAlignment(name=name, status="FAILED", wcs=dict(originals),
                                  n_matches=int(info.get("nmatches", 0) or 0),
                                  message=f"tweakwcs pass {k}: {status.lower()}")
        current = [ChipSources(key=c.key, wcs=corrected[c.key], x=c.x, y=c.y) for c in chips]
    final = {c.key: c.wcs for c in current}
    # Independent check of the fit: corrected source positions against the reference.
    ra = np.concatenate([final[c.key].all_pix2world(c.x, c.y, 0)[0] for c in chips])
    dec = np.concatenate([final[c.key].all_pix2world(c.x, c.y, 0)[1] for c in chips])
    radius = refine_tolerance_px * _frame_pixel_scale_arcsec(frame)
    n, rms, kept = match_residuals(ra, dec, ref_ra, ref_dec, radius_arcsec=radius,
                                   nsigma=sigma)
    keys = [c.key for c in chips]
    sx, sy, rot, scale = measure_wcs_change([originals[k] for k in keys],
                                            [final[k] for k in keys])
    return GroupAlignment(name=name, status="ALIGNED", wcs=final, n_matches=n, rms_arcsec=rms,
                          shift_x_arcsec=sx, shift_y_arcsec=sy, rotation_deg=rot, scale=scale,
                          residuals=residual_vectors(ra, dec, ref_ra, ref_dec, kept))


def reference_alignment(
    chips: Sequence[ChipSources], *, name: str, n_sources: int
) -> GroupAlignment:
    """The alignment record of the reference group (its WCS defines the frame)."""
    return GroupAlignment(name=name, status="REFERENCE", wcs={c.key: c.wcs for c in chips},
                          n_matches=n_sources, rms_arcsec=0.0)


def gate_alignment(
    result: GroupAlignment, *, min_matches: int, max_rms_arcsec: float
) -> str | None:
    """Why a group fails the quality gates, or ``None`` when it passes."""
    if result.status == "REFERENCE":
        return None
    if result.status != "ALIGNED":
        return result.message or "alignment failed"
    if result.n_matches < min_matches:
        return f"{result.n_matches} matches < {min_matches} required"
    if not np.isfinite(result.rms_arcsec) or result.rms_arcsec > max_rms_arcsec:
        return f"fit RMS {result.rms_arcsec:.4f}\" > {max_rms_arcsec:.4f}\" allowed"
    return None
