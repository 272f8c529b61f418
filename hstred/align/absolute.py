"""The absolute tie: visits already aligned to each other, fitted together to a catalog.

Each visit group's sources (their sky positions after the relative alignment) are
placed in one tangent-plane frame (an undistorted celestial WCS, normally the
reference visit's image). The catalog is moved to each group's epoch (proper motion,
parallax; :mod:`hstred.align.epoch`), so a star is compared with where it was when
the group was observed. Then:

1. coarse: the groups' sources (duplicates merged) against the catalog at the mean
   epoch, tweakwcs ``XYXYMatch`` with a 2-D offset histogram within ``searchrad_px``;
2. fine (three passes): each group's sources, corrected by the current solution,
   matched one to one to the catalog at the group's own epoch within
   ``refine_tolerance_px``; all pairs of all groups fitted together with tweakwcs
   ``fit_wcs`` (one linear correction, clipped at ``sigma``). Each pair is weighted
   by inverse variance: the catalog side by the star's position error propagated to
   the group's epoch (the ``weight`` column of the reference table), the image side
   by ``image_error_mas`` (the ``weight`` column of the source table); tweakwcs
   combines them as ``1/w = 1/w_image + 1/w_catalog``.

The tie's formal 1-sigma uncertainties (shift at the frame's centre, rotation, scale)
come from the weighted least squares (:func:`tie_uncertainty`): the covariance of the
weighted estimate, with the catalog error of a star shared by all its pairs (a star
matched in several groups carries one catalog error, not independent ones).

The result is checked independently: corrected positions against the catalog, which
gives the matched stars, the RMS and each match's residual. The one correction is
applied to every chip with tweakwcs ``FITSWCSCorrector.set_correction``.

Conventions as in :mod:`hstred.align.fit` (shifts in arcsec east/north, rotation as a
change of position angle in degrees, scale as a ratio); lengths in ``_px`` are pixels
of the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree
from tweakwcs import align_wcs, fit_wcs
from tweakwcs.correctors import FITSWCSCorrector
from tweakwcs.matchutils import MatchSourceConfusionError, XYXYMatch

from hstred.align.epoch import mjd_to_jyear
from hstred.align.fit import (
    _frame_pixel_scale_arcsec,
    _quiet_tweakwcs,
    measure_wcs_change,
)
from hstred.align.refcat import ReferenceCatalog

__all__ = ["TieGroup", "CatalogTie", "TieUncertainty", "tie_to_catalog", "tie_uncertainty",
           "apply_tie", "gate_tie"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TieGroup:
    """A visit group's sources in the relatively aligned frame and its epoch (MJD)."""

    name: str
    epoch_mjd: float
    ra: np.ndarray
    dec: np.ndarray


@dataclass(frozen=True)
class CatalogTie:
    """The fit of all groups to the catalog.

    ``status`` is ``"TIED"`` (a fit was made; it still has to pass :func:`gate_tie`) or
    ``"FAILED"`` (``message`` says why). ``matrix`` and ``shift`` are the tweakwcs
    correction in the tangent plane of ``frame`` (pixels). ``n_matches`` counts
    distinct catalog stars kept in the fit, ``n_pairs`` their pairings with the groups'
    sources; ``rms_arcsec`` is the RMS of the pairs' residuals after correction.
    ``uncertainty`` holds the formal 1-sigma errors of the fit (:class:`TieUncertainty`).
    ``residuals`` holds, per kept pair, the group, the star's catalog position at the
    group's epoch (deg) and the corrected source minus that position (mas, east and
    north).
    """

    status: str
    frame: WCS = field(repr=False)
    matrix: np.ndarray = field(default_factory=lambda: np.eye(2), repr=False)
    shift: np.ndarray = field(default_factory=lambda: np.zeros(2), repr=False)
    n_catalog: int = 0
    n_matches: int = 0
    n_pairs: int = 0
    rms_arcsec: float = float("nan")
    shift_x_arcsec: float = 0.0
    shift_y_arcsec: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    epochs_jyear: dict[str, float] = field(default_factory=dict)
    residuals: dict[str, list] = field(default_factory=dict, repr=False)
    uncertainty: TieUncertainty | None = None
    message: str = ""


@dataclass(frozen=True)
class TieUncertainty:
    """Formal 1-sigma errors of a catalog tie, from the covariance of its weighted fit.

    ``shift_x_arcsec``/``shift_y_arcsec``: the shift east/north at the frame's centre
    (where the tie's shift is measured); ``rotation_deg``: the rotation; ``scale``: the
    scale ratio (0 when the fit geometry fixes it). ``chi2_dof`` is the residuals' chi^2
    per degree of freedom against the same errors (about 1 when the errors describe the
    scatter).
    """

    shift_x_arcsec: float
    shift_y_arcsec: float
    rotation_deg: float
    scale: float
    chi2_dof: float


def _unique_points(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Indices of points keeping one of each cluster within ``radius`` (first wins)."""
    if x.size == 0:
        return np.zeros(0, dtype=int)
    tree = cKDTree(np.column_stack([x, y]))
    taken = np.zeros(x.size, dtype=bool)
    keep = []
    for i in range(x.size):
        if taken[i]:
            continue
        keep.append(i)
        taken[tree.query_ball_point([x[i], y[i]], radius)] = True
    return np.asarray(keep, dtype=int)


def _match_one_to_one(x, y, rx, ry, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (source index, reference index) of mutual nearest neighbours within radius."""
    if x.size == 0 or rx.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    d, j = cKDTree(np.column_stack([rx, ry])).query(np.column_stack([x, y]))
    _, back = cKDTree(np.column_stack([x, y])).query(np.column_stack([rx, ry]))
    i = np.arange(x.size)
    ok = (d <= radius) & (back[np.minimum(j, rx.size - 1)] == i)
    return i[ok], j[ok]


def _correct(frame: WCS, matrix, shift) -> WCS:
    corrector = FITSWCSCorrector(frame.deepcopy())
    corrector.set_correction(matrix, shift, ref_tpwcs=FITSWCSCorrector(frame))
    return corrector.wcs


def tie_to_catalog(
    groups: Sequence[TieGroup],
    catalog: ReferenceCatalog,
    frame: WCS,
    *,
    fit_geometry: str = "rscale",
    searchrad_px: float = 60.0,
    tolerance_px: float = 3.0,
    refine_tolerance_px: float = 1.0,
    image_error_mas: float = 2.0,
    nclip: int = 3,
    sigma: float = 3.0,
) -> CatalogTie:
    """Fit every group together to ``catalog`` (see the module docstring).

    ``frame`` is an undistorted celestial WCS (``pixel_shape`` set) in whose tangent
    plane the fit is made; the groups' source positions must already be aligned to
    each other.
    """
    epochs = {g.name: mjd_to_jyear(g.epoch_mjd) for g in groups}
    base = {"frame": frame, "n_catalog": len(catalog), "epochs_jyear": epochs}
    xs = [np.asarray(frame.all_world2pix(g.ra, g.dec, 0)) for g in groups]
    n_src = sum(p.shape[1] for p in xs)
    if n_src == 0 or len(catalog) == 0:
        return CatalogTie(status="FAILED", **base,
                          message=f"no sources to match ({n_src} in the visits, "
                                  f"{len(catalog)} in the catalog)")
    # 1. Coarse: one offset search for the whole frame at the mean epoch.
    mean_mjd = float(np.mean([g.epoch_mjd for g in groups]))
    cra, cdec, _ = catalog.at_epoch(mean_mjd)
    allx = np.concatenate([p[0] for p in xs])
    ally = np.concatenate([p[1] for p in xs])
    keep = _unique_points(allx, ally, 1.0)
    imcat = Table({"x": allx[keep], "y": ally[keep]})
    corrector = FITSWCSCorrector(frame.deepcopy(), meta={"catalog": imcat, "group_id": "all",
                                                         "name": "all visits"})
    match = XYXYMatch(searchrad=searchrad_px, separation=0.5, use2dhist=True,
                      tolerance=tolerance_px)
    try:
        with _quiet_tweakwcs():
            align_wcs([corrector], refcat=Table({"RA": cra, "DEC": cdec}),
                      ref_tpwcs=FITSWCSCorrector(frame), match=match, fitgeom=fit_geometry,
                      nclip=nclip, sigma=(sigma, "rmse"), minobj=None)
    except (MatchSourceConfusionError, ValueError, np.linalg.LinAlgError) as err:
        return CatalogTie(status="FAILED", **base, message=f"tweakwcs offset search failed: {err}")
    info = corrector.meta.get("fit_info", {})
    if str(info.get("status", "FAILED")) != "SUCCESS":
        return CatalogTie(status="FAILED", **base,
                          n_matches=int(info.get("nmatches", 0) or 0),
                          message=f"tweakwcs offset search: "
                                  f"{str(info.get('status', 'failed')).lower()}")
    matrix, shift = np.asarray(info["matrix"], float), np.asarray(info["shift"], float)
    # 2. Fine: every group at its own epoch, one fit for all.
    at_epoch = {g.name: catalog.at_epoch(g.epoch_mjd) for g in groups}
    for _ in range(3):
        pairs = _pairs(groups, xs, at_epoch, _correct(frame, matrix, shift), frame,
                       refine_tolerance_px)
        if pairs is None or len(pairs["x"]) < 2:
            return CatalogTie(status="FAILED", **base, matrix=matrix, shift=shift,
                              message="no catalog star matched after the offset search")
        fitter = FITSWCSCorrector(frame.deepcopy())
        try:
            with _quiet_tweakwcs():
                fit_wcs(Table({"RA": pairs["ra"], "DEC": pairs["dec"],
                               "weight": 1.0 / np.maximum(pairs["cat_err_mas"], 1e-3) ** 2}),
                        Table({"x": pairs["x"], "y": pairs["y"],
                               "weight": np.full(len(pairs["x"]), 1.0 / image_error_mas**2)}),
                        fitter,
                        ref_tpwcs=FITSWCSCorrector(frame), fitgeom=fit_geometry,
                        nclip=nclip, sigma=(sigma, "rmse"))
        except (ValueError, np.linalg.LinAlgError) as err:
            return CatalogTie(status="FAILED", **base, message=f"tweakwcs fit failed: {err}")
        info = fitter.meta.get("fit_info", {})
        if str(info.get("status", "FAILED")) != "SUCCESS":
            return CatalogTie(status="FAILED", **base,
                              message=f"tweakwcs fit: {str(info.get('status')).lower()}")
        matrix, shift = np.asarray(info["matrix"], float), np.asarray(info["shift"], float)
    # 3. Independent check with the final correction.
    corrected = _correct(frame, matrix, shift)
    pairs = _pairs(groups, xs, at_epoch, corrected, frame, refine_tolerance_px)
    kept = np.asarray(info.get("fitmask", np.ones(len(pairs["x"]), bool)), dtype=bool)
    if kept.size != len(pairs["x"]):
        kept = np.ones(len(pairs["x"]), dtype=bool)
    ra, dec = corrected.all_pix2world(pairs["x"], pairs["y"], 0)
    dra = (ra - pairs["ra"] + 180.0) % 360.0 - 180.0
    dx_mas = dra * np.cos(np.radians(pairs["dec"])) * 3.6e6
    dy_mas = (dec - pairs["dec"]) * 3.6e6
    rms = float(np.sqrt(np.mean(dx_mas[kept] ** 2 + dy_mas[kept] ** 2))) / 1000.0
    sx, sy, rot, scale = measure_wcs_change([frame], [corrected])
    uncertainty = tie_uncertainty(
        frame, pairs["x"][kept], pairs["y"][kept], pairs["cat_err_mas"][kept],
        pairs["star"][kept], image_error_mas=image_error_mas, fit_geometry=fit_geometry,
        dx_mas=dx_mas[kept], dy_mas=dy_mas[kept])
    residuals = {"group": [str(v) for v in pairs["group"][kept]],
                 "ra_deg": pairs["ra"][kept].tolist(), "dec_deg": pairs["dec"][kept].tolist(),
                 "dx_mas": dx_mas[kept].round(3).tolist(),
                 "dy_mas": dy_mas[kept].round(3).tolist()}
    return CatalogTie(status="TIED", **base, matrix=matrix, shift=shift,
                      n_matches=int(np.unique(pairs["star"][kept]).size),
                      n_pairs=int(kept.sum()), rms_arcsec=rms, shift_x_arcsec=sx,
                      shift_y_arcsec=sy, rotation_deg=rot, scale=scale, residuals=residuals,
                      uncertainty=uncertainty)


def _pairs(groups, xs, at_epoch, corrected: WCS, frame: WCS, radius_px: float):
    """Matched (source, catalog star at the group's epoch) pairs of every group, with
    the star's catalog error at that epoch (mas)."""
    out = {k: [] for k in ("x", "y", "ra", "dec", "cat_err_mas", "group", "star")}
    for g, p in zip(groups, xs, strict=True):
        ra, dec, err_mas = at_epoch[g.name]
        # Sources through the current correction, catalog at the group's epoch: both
        # in the (uncorrected) frame's pixels, where the tolerance is defined.
        sra, sdec = corrected.all_pix2world(p[0], p[1], 0)
        sx, sy = frame.all_world2pix(sra, sdec, 0)
        rx, ry = frame.all_world2pix(ra, dec, 0)
        i, j = _match_one_to_one(sx, sy, rx, ry, radius_px)
        out["x"].append(p[0][i])
        out["y"].append(p[1][i])
        out["ra"].append(ra[j])
        out["dec"].append(dec[j])
        out["cat_err_mas"].append(err_mas[j])
        out["group"].append(np.full(i.size, g.name, dtype=object))
        out["star"].append(j)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


#: Parameters of each fit geometry's linearised correction about the frame's centre
#: (u, v): dX = tx + m11 u + m12 v, dY = ty + m21 u + m22 v, with m11 = m22 = da and
#: m21 = -m12 = b for a similarity ("rscale"), da = 0 for "rshift", m = 0 for "shift".
_GEOMETRY_PARAMETERS = {"shift": 2, "rshift": 3, "rscale": 4, "general": 6}


def _design(u: np.ndarray, v: np.ndarray, fit_geometry: str) -> np.ndarray:
    """Rows (x rows, then y rows) of the linearised correction's design matrix; columns
    tx, ty, then b (rotation, rad), da (scale - 1) or m11, m12, m21, m22."""
    n = u.size
    one, zero = np.ones(n), np.zeros(n)
    cols = [(one, zero), (zero, one)]
    if fit_geometry in ("rshift", "rscale"):
        cols.append((-v, u))
    if fit_geometry == "rscale":
        cols.append((u, v))
    if fit_geometry == "general":
        cols += [(u, zero), (v, zero), (zero, u), (zero, v)]
    return np.column_stack([np.concatenate(c) for c in cols])


def tie_uncertainty(frame: WCS, x: np.ndarray, y: np.ndarray, cat_err_mas: np.ndarray,
                    star: np.ndarray, *, image_error_mas: float, fit_geometry: str,
                    dx_mas: np.ndarray | None = None,
                    dy_mas: np.ndarray | None = None) -> TieUncertainty:
    """Formal 1-sigma errors of a tie fitted to pairs at frame pixels ``x``, ``y``.

    The fit weights each pair by ``1 / (cat_err^2 + image_error^2)`` (as tweakwcs does
    with the two weight columns). The errors of the pairs are not independent: the
    pairs of one catalog star (``star``, one per group that matched it) share that
    star's catalog error, taken as fully correlated between the groups' epochs. The
    covariance of the weighted estimate is then ``N^-1 A^T W C W A N^-1`` with
    ``N = A^T W A``, ``C`` the pairs' error covariance. ``dx_mas``/``dy_mas`` (the
    residuals east/north) give the chi^2 per degree of freedom against ``C``.
    """
    geometry = fit_geometry.lower()
    n = int(np.size(x))
    k = _GEOMETRY_PARAMETERS.get(geometry, 6)
    nan = float("nan")
    if n == 0 or 2 * n <= k:
        return TieUncertainty(nan, nan, nan, nan, nan)
    scale_mas = _frame_pixel_scale_arcsec(frame) * 1000.0
    nx, ny = frame.pixel_shape
    u = np.asarray(x, float) - 0.5 * (nx - 1)
    v = np.asarray(y, float) - 0.5 * (ny - 1)
    ce = np.nan_to_num(np.asarray(cat_err_mas, float), nan=0.0) / scale_mas
    ie = float(image_error_mas) / scale_mas
    star = np.asarray(star)
    one = np.diag(np.full(n, ie**2)) + np.outer(ce, ce) * (star[:, None] == star[None, :])
    c = np.block([[one, np.zeros((n, n))], [np.zeros((n, n)), one]])
    w = np.tile(1.0 / (ce**2 + ie**2), 2)
    a = _design(u, v, geometry)
    aw = a * w[:, None]
    n_inv = np.linalg.pinv(a.T @ aw)
    cov = n_inv @ (aw.T @ c @ aw) @ n_inv
    # Shift: pixels of the frame to arcsec east/north through its linear part.
    jac = frame.pixel_scale_matrix * 3600.0
    cov_sky = jac @ cov[:2, :2] @ jac.T
    rot_var = scl_var = 0.0
    if geometry in ("rshift", "rscale"):
        rot_var = cov[2, 2]
        scl_var = cov[3, 3] if geometry == "rscale" else 0.0
    elif geometry == "general":
        lr = np.array([0, 0, 0, -0.5, 0.5, 0])
        ls = np.array([0, 0, 0.5, 0, 0, 0.5])
        rot_var, scl_var = lr @ cov @ lr, ls @ cov @ ls
    chi2 = nan
    if dx_mas is not None and dy_mas is not None:
        r = np.concatenate([np.asarray(dx_mas, float), np.asarray(dy_mas, float)]) / scale_mas
        chi2 = float(r @ np.linalg.solve(c, r)) / (2 * n - k)
    return TieUncertainty(shift_x_arcsec=float(np.sqrt(cov_sky[0, 0])),
                          shift_y_arcsec=float(np.sqrt(cov_sky[1, 1])),
                          rotation_deg=float(np.degrees(np.sqrt(rot_var))),
                          scale=float(np.sqrt(scl_var)), chi2_dof=chi2)


def gate_tie(tie: CatalogTie, *, min_matches: int, max_rms_arcsec: float) -> str | None:
    """Why the tie fails its gates, or ``None`` when it passes."""
    if tie.status != "TIED":
        return tie.message or "the fit to the catalog failed"
    if tie.n_matches < min_matches:
        return f"{tie.n_matches} catalog stars matched < {min_matches} required"
    if not np.isfinite(tie.rms_arcsec) or tie.rms_arcsec > max_rms_arcsec:
        return f"fit RMS {tie.rms_arcsec:.4f}\" > {max_rms_arcsec:.4f}\" allowed"
    return None


def apply_tie(wcs_by_key: Mapping[str, WCS], tie: CatalogTie) -> dict[str, WCS]:
    """Each chip WCS with the tie's correction (defined in ``tie.frame``'s plane)."""
    out = {}
    for key, wcs in wcs_by_key.items():
        corrector = FITSWCSCorrector(wcs.deepcopy())
        corrector.set_correction(tie.matrix, tie.shift, ref_tpwcs=FITSWCSCorrector(tie.frame))
        out[key] = corrector.wcs
    return out


def frame_scale_arcsec(frame: WCS) -> float:
    """Pixel scale of the tie's frame, arcsec."""
    return _frame_pixel_scale_arcsec(frame)
