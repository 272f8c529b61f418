"""The alignment + drizzle stage: calibrated exposures -> aligned, drizzled products.

Steps (all on working copies; the inputs are only read):

1. plan: exposures grouped by filter, then visit; the camera's distortion references
   (IDCTAB, NPOLFILE, D2IMFILE) of every exposure without a distortion solution
   resolved before any work, and applied to its working copy with stwcs;
2. satellite trails (unless ``satellites="off"``): found in every working copy and
   their pixels flagged (DQ 16384) before the first drizzle (:mod:`hstred.satellites`);
   then the visit images: AstroDrizzle per visit group (sky, cosmic rays) at 0.05"/pixel;
3. alignment: catalogs of the visit images, a reference group chosen from the data,
   every other group fitted to it with tweakwcs; quality gates;
4. the aligned WCSs are written into the working copies (originals kept as alternates);
   with a reference catalog, the aligned groups are then fitted together to it, each
   at its own epoch (:mod:`hstred.align.absolute`), and the one correction written
   into every working copy (WCSNAME ``tie_wcsname``; the relative WCS kept as an
   alternate);
5. one output grid covering every exposure of every filter;
6. final AstroDrizzle per filter on that grid (and per exposure with ``singles``); with
   the default per-exposure sky method (localmin) the sky each exposure's visit drizzle
   measured is subtracted, not measured again;
7. provenance keywords; products moved into place only when all are complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from hstred.align.absolute import TieGroup, apply_tie, gate_tie, tie_to_catalog
from hstred.align.apply import write_aligned_wcs
from hstred.align.refcat import (
    ReferenceCatalog,
    fetch_gaia_cone,
    footprint_cone,
    read_reference_catalog,
)
from hstred.align.reference import chip_edge_pixels
from hstred.align.stage import VisitImage, align_visits, chip_key, read_chip_wcs, visit_catalog
from hstred.distortion import (
    DistortionInfo,
    apply_distortion,
    describe_distortion,
    has_distortion_solution,
)
from hstred.drizzle.config import DrizzleConfig
from hstred.drizzle.grid import (
    compute_output_grid,
    grid_from_numbers,
    grid_numbers,
    orientation_deg,
    same_grid,
)
from hstred.drizzle.noise import (
    CHECK_WINDOW_PX,
    ChipInput,
    NoiseImages,
    check_mismatch,
    drizzle_noise,
    histogram_quantile,
    noise_summary,
    rms_header,
    rms_image,
    window_around,
    write_rms,
)
from hstred.drizzle.plan import (
    CalibratedExposure,
    DrizzlePlan,
    VisitGroup,
    build_plan,
    read_exposure,
)
from hstred.drizzle.provenance import provenance_cards, write_provenance
from hstred.drizzle.result import (
    AbsoluteTie,
    AlignmentSolution,
    DrizzleProduct,
    DrizzleResult,
    GridInfo,
    SingleProduct,
)
from hstred.drizzle.runner import (
    DrizzleImages,
    chip_file,
    files_in,
    final_parameters,
    run_astrodrizzle,
    run_astrodrizzle_median,
    single_parameters,
    visit_parameters,
)
from hstred.drizzle.tiled import (
    BLOT_MARGIN_PX,
    MEDIAN_MARGIN_PX,
    CosmicRayTask,
    FactorTask,
    FlagTask,
    MedianTileTask,
    TiledImage,
    TileNoise,
    TileTask,
    box_tile,
    cut_grid,
    drizzle_tile,
    flag_exposure,
    grown,
    in_order,
    in_tiles,
    indexed,
    later_step_parameters,
    median_tile,
    merge_headers,
    noise_bands,
    overlapping,
    prepare_cosmic_rays,
    separate_tile,
    tile_grid_numbers,
    tiled_noise_factors,
)
from hstred.drizzle.tileset import image_header, is_tiled
from hstred.drizzle.weights import write_background_errors
from hstred.errors import InputError, QualityGateError, StageError
from hstred.execution import Backend, LocalBackend, run_in_child
from hstred.fileio import check_destinations, publish_all
from hstred.inputs import find_calibrated_files
from hstred.naming import (
    PRODUCT_KINDS,
    TILE_INDEX_SUFFIX,
    check_outname,
    drizzle_destinations,
    image_parts,
    product_paths,
    single_paths,
)
from hstred.record import cosmic_ray_fraction
from hstred.refs.resolve import ReferenceSet, resolve_distortion_references
from hstred.satellites import TrailSearch, mask_exposure
from hstred.workspace import STAGING_PREFIX

__all__ = ["run_drizzle", "plan_drizzle", "product_paths", "distortion_references"]

log = logging.getLogger(__name__)


def plan_drizzle(data_dir: Path, inputs: Sequence[Path] | None = None) -> DrizzlePlan:
    """Read and group the calibrated exposures (``inputs``, or those in ``data_dir``)."""
    paths = list(inputs) if inputs is not None else find_calibrated_files(data_dir)
    if not paths:
        raise InputError(f"{data_dir}: no *_flc.fits or *_flt.fits files; calibrate the raw "
                         "files first or point to the directory of calibrated exposures")
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file; pass existing _flc/_flt files")
    return build_plan([read_exposure(Path(p)) for p in paths])


def distortion_references(paths: Sequence[Path], data_dir: Path, *,
                          fetch: bool = True) -> dict[str, ReferenceSet]:
    """Distortion references of the files that carry no distortion solution, by file name.

    Files with a solution (archive FLT/FLC files, or ones already processed by stwcs)
    are used as they are and get no entry. Raises :class:`ReferenceFileError` (before
    any work) naming every reference that can be neither found nor fetched, or a file
    that names no IDCTAB.
    """
    need = []
    for p in paths:
        with fits.open(p) as hdul:
            if not has_distortion_solution(hdul):
                need.append(Path(p))
    refs = resolve_distortion_references(need, data_dir, fetch=fetch) if need else []
    return {r.exposure.name: r for r in refs}


def _copy_inputs(plan: DrizzlePlan, dest: Path,
                 distortion: dict[str, ReferenceSet]) -> tuple[dict[str, Path],
                                                              list[DistortionInfo]]:
    """Working copies of the exposures, each with its distortion solution in place."""
    dest.mkdir(parents=True, exist_ok=True)
    copies, infos = {}, []
    for e in plan.exposures:
        target = dest / e.path.name
        shutil.copyfile(e.path, target)  # plain copy: the working copy is writable
        copies[e.rootname] = target
        refs = distortion.get(e.path.name)
        if refs is None:
            info = describe_distortion(target, applied=False)
        else:
            info = apply_distortion(target, refs.paths)
            log.info("%s: distortion %s applied (%s)", e.rootname, info.wcsname,
                     ", ".join(f"{k}={v}" for k, v in info.files.items()))
        infos.append(dataclasses.replace(info, rootname=e.rootname))
    return copies, infos


def _mask_trails(plan: DrizzlePlan, copies: dict[str, Path], backend: Backend,
                 progress: ProgressCallback, messages: list[str]) -> tuple[TrailSearch, ...]:
    """Find the satellite trails of every full-frame working copy (several at once on
    ``backend``) and flag their pixels (DQ ``TRAIL_DQ``) before any drizzle sees them;
    the others (subarrays, cut-outs: acstools needs whole chips) are not searched, and a
    warning says so."""
    full = [e for e in plan.exposures if e.full_frame]
    skipped = [e.rootname for e in plan.exposures if not e.full_frame]
    if skipped:
        messages.append(f"satellite trails not searched in {', '.join(skipped)}: not "
                        "full-frame exposures (the search needs whole chips)")
    paths = [copies[e.rootname] for e in full]
    runner = _runner(backend, len(paths))
    found: dict[Path, TrailSearch] = {}
    progress("satellite trails", 0, len(paths))
    for search in runner.imap_unordered(mask_exposure, paths):
        found[search.path] = search
        progress("satellite trails", len(found), len(paths))
    out = []
    for e in plan.exposures:
        if not e.full_frame:
            out.append(TrailSearch(rootname=e.rootname, path=e.path, searched=False))
            continue
        search = dataclasses.replace(found[copies[e.rootname]], path=e.path)  # the input
        log.info("%s: %d satellite trail(s), %.2f%% of pixels masked (%.1f s)", e.rootname,
                 len(search.trails), 100 * search.masked_fraction, search.seconds)
        out.append(search)
    return tuple(out)


def _runner(backend: Backend, tasks: int) -> Backend:
    """Where per-exposure or per-visit tasks run: the run's backend when several run at
    once or it is local (its worker processes), else one local worker (a Dask cluster is
    not worth one task at a time)."""
    if isinstance(backend, LocalBackend) or (backend.slots > 1 and tasks > 1):
        return backend
    return LocalBackend(workers=1)


def _chips(exposures: Sequence[CalibratedExposure], copies: dict[str, Path]):
    return tuple((copies[e.rootname], extver) for e in exposures for extver in e.extvers)


@dataclass(frozen=True)
class _VisitTask:
    """One visit group's drizzle and catalog: runs in a worker process."""

    name: str
    inputs: tuple[Path, ...]
    run_dir: Path
    parameters: dict
    expected_chips: int
    detection_nsigma: float
    background_errors: tuple[tuple[Path, tuple[int, ...]], ...] = ()


def _drizzle_visit(task: _VisitTask):
    if len(task.inputs) >= 2:
        out = run_astrodrizzle_median(task.inputs, f"visit_{task.name}", run_dir=task.run_dir,
                                      parameters=task.parameters)
    else:
        out = run_astrodrizzle(task.inputs, f"visit_{task.name}", run_dir=task.run_dir,
                               parameters=task.parameters, expected_chips=task.expected_chips)
    catalog = visit_catalog(out.sci, out.wht, detection_nsigma=task.detection_nsigma)
    # The final drizzle's ERR weights; the visit image does not use the ERR arrays.
    for path, extvers in task.background_errors:
        write_background_errors(path, extvers)
    return task.name, out, catalog


#: ``progress(step, done, total)``: the drizzle stage's sub-steps as they advance.
ProgressCallback = Callable[[str, int, int], None]


def _no_progress(step: str, done: int, total: int) -> None:
    return None


def _drizzle_visits(plan, copies, work: Path, config: DrizzleConfig,
                    backend: Backend, progress: ProgressCallback = _no_progress
                    ) -> tuple[list[VisitImage], dict]:
    """Drizzle every visit group (several at once on ``backend``) and catalog it; with
    ERR weights, also write the background errors of its working copies.

    Each group has its own working copies and run directory, so groups are independent.
    Returns the visit images in plan order and their catalogs by group name.
    """
    parallel = backend.slots > 1 and len(plan.groups) > 1
    tasks = []
    for g in plan.groups:
        inputs = tuple(copies[e.rootname] for e in g.exposures)
        errors = (tuple((copies[e.rootname], tuple(e.extvers)) for e in g.exposures)
                  if config.weight_type == "ERR" else ())
        pars = visit_parameters(len(inputs), num_cores=1 if parallel else backend.local_cores,
                                good_bits=config.good_bits, sky_method=config.sky_method)
        tasks.append(_VisitTask(name=g.name, inputs=inputs, run_dir=work / "visits" / g.name,
                                parameters=pars,
                                expected_chips=sum(len(e.extvers) for e in g.exposures),
                                detection_nsigma=config.detection_nsigma,
                                background_errors=errors))
    runner = _runner(backend, len(tasks))
    done = {}
    progress("visits", 0, len(tasks))
    for name, out, catalog in runner.imap_unordered(_drizzle_visit, tasks):
        done[name] = (out, catalog)
        progress("visits", len(done), len(tasks))
    images = [VisitImage(name=g.name, sci=done[g.name][0].sci, wht=done[g.name][0].wht,
                         chips=_chips(g.exposures, copies)) for g in plan.groups]
    return images, {name: catalog for name, (_out, catalog) in done.items()}


def _solution(g: VisitGroup, fit, *, status: str, reference: str, n_sources: int,
              message: str = "") -> AlignmentSolution:
    return AlignmentSolution(
        visit=g.visit, filter=g.filter, status=status, reference=reference,
        shift_x_arcsec=fit.shift_x_arcsec, shift_y_arcsec=fit.shift_y_arcsec,
        rotation_deg=fit.rotation_deg, scale=fit.scale, n_matches=fit.n_matches,
        rms_arcsec=fit.rms_arcsec, n_sources=n_sources, message=message,
        residuals=dict(fit.residuals),
    )


def _align(plan, visit_images, catalogs, copies, config: DrizzleConfig, messages: list[str]):
    """Align every group; apply the solutions; return (solutions, outcome, kept groups)."""
    if len(plan.groups) == 1:
        g = plan.groups[0]
        messages.append(f"only one visit group ({g.name}): nothing to align, header WCS kept "
                        "as the frame")
    outcome = align_visits(
        visit_images, fit_geometry=config.fit_geometry, searchrad_px=config.searchrad_px,
        tolerance_px=config.tolerance_px, refine_tolerance_px=config.refine_tolerance_px,
        min_matches=config.min_matches, max_rms_arcsec=config.max_rms_arcsec,
        detection_nsigma=config.detection_nsigma, catalogs=catalogs,
    )
    if outcome.failures and not config.drop_unaligned:
        details = "; ".join(
            f"visit {plan.group(n).visit} ({plan.group(n).filter}): {reason}, "
            f"{outcome.fits[n].n_matches} matches, rms {outcome.fits[n].rms_arcsec:.4f}\""
            for n, reason in outcome.failures.items()
        )
        raise QualityGateError(f"alignment to {outcome.reference} failed for {details}; "
                               "check that the visits overlap, loosen the gates with "
                               "--min-matches/--max-rms, or pass --drop-unaligned to drop "
                               "such visits")
    solutions, kept = _apply_alignment(plan, outcome, copies, config, messages)
    return solutions, outcome, kept


def _apply_alignment(plan, outcome, copies, config: DrizzleConfig, messages: list[str]):
    """Write each kept group's solution into its working copies; record dropped groups."""
    solutions, kept = [], []
    for g in plan.groups:
        fit = outcome.fits[g.name]
        n_src = outcome.n_sources[g.name]
        if g.name in outcome.failures:
            reason = outcome.failures[g.name]
            messages.append(f"visit {g.visit} ({g.filter}) dropped: {reason}, "
                            f"{fit.n_matches} matches, rms {fit.rms_arcsec:.4f}\"")
            solutions.append(_solution(g, fit, status="DROPPED", reference=outcome.reference,
                                       n_sources=n_src, message=reason))
            continue
        status = "REFERENCE" if g.name == outcome.reference else "ALIGNED"
        solutions.append(_solution(g, fit, status=status, reference=outcome.reference,
                                   n_sources=n_src))
        kept.append(g)
        for e in g.exposures:
            path = copies[e.rootname]
            corrected = {x: fit.wcs[chip_key(path, x)] for x in e.extvers}
            write_aligned_wcs(path, corrected, wcsname=config.wcsname)
    return solutions, kept


def _chip_outlines(exposures, copies) -> list[tuple]:
    """Sky outlines (RA, Dec arrays, deg) of the exposures' chips through their WCSs."""
    outlines = []
    for e in exposures:
        for x in e.extvers:
            w = read_chip_wcs(copies[e.rootname], x)
            edge = chip_edge_pixels(*w.pixel_shape)
            ra, dec = w.all_pix2world(edge[:, 0], edge[:, 1], 0)
            outlines.append((ra, dec))
    return outlines


def _reference_catalog(config: DrizzleConfig, plan, copies,
                       catalog_dir: Path) -> tuple[ReferenceCatalog, str] | None:
    """The absolute reference catalog asked for, and where it came from ("file"/"gaia")."""
    if not config.reference_catalog:
        return None
    if config.reference_catalog.strip().lower() == "gaia":
        outlines = _chip_outlines(plan.exposures, copies)
        ra = np.concatenate([o[0] for o in outlines])
        dec = np.concatenate([o[1] for o in outlines])
        # The header WCSs may be off by a few arcsec: the cone has a 0.5' margin.
        path = fetch_gaia_cone(*footprint_cone(ra, dec), directory=catalog_dir)
        return read_reference_catalog(path), "gaia"
    return read_reference_catalog(Path(config.reference_catalog)), "file"


def _epoch_mjd(g: VisitGroup) -> float:
    """A visit group's epoch: the mean mid-time of its exposures (MJD)."""
    return float(np.mean([e.expstart_mjd + 0.5 * e.exptime_s / 86400.0 for e in g.exposures]))


def _tie(kept, outcome, copies, config: DrizzleConfig, catalog: ReferenceCatalog, source: str,
         messages: list[str]) -> AbsoluteTie:
    """Fit the aligned groups together to the catalog; apply the correction or fall back."""
    groups = [TieGroup(name=g.name, epoch_mjd=_epoch_mjd(g),
                       ra=outcome.aligned_sources[g.name][0],
                       dec=outcome.aligned_sources[g.name][1]) for g in kept]
    fit = tie_to_catalog(groups, catalog, outcome.frame, fit_geometry=config.fit_geometry,
                         searchrad_px=config.searchrad_px, tolerance_px=config.tolerance_px,
                         refine_tolerance_px=config.refine_tolerance_px)
    reason = gate_tie(fit, min_matches=config.tie_min_matches,
                      max_rms_arcsec=config.tie_max_rms_arcsec)
    record = dict(
        catalog=str(catalog.path), source=source, epoch_handling=catalog.epoch_handling(),
        epochs_jyear={k: round(v, 5) for k, v in fit.epochs_jyear.items()},
        n_catalog=fit.n_catalog, n_matches=fit.n_matches, n_pairs=fit.n_pairs,
        rms_arcsec=fit.rms_arcsec, min_matches=config.tie_min_matches,
        max_rms_arcsec=config.tie_max_rms_arcsec, residuals=fit.residuals)
    if fit.uncertainty is not None:
        u = fit.uncertainty
        record.update(shift_x_error_arcsec=u.shift_x_arcsec, shift_y_error_arcsec=u.shift_y_arcsec,
                      rotation_error_deg=u.rotation_deg, scale_error=u.scale,
                      chi2_dof=u.chi2_dof)
    if reason is not None:
        what = (f"tie to the reference catalog {catalog.path.name} failed: {reason} "
                f"({fit.n_matches} stars, rms {fit.rms_arcsec:.4f}\")")
        if not config.allow_relative:
            raise QualityGateError(f"{what}; supply a deeper catalog, or pass --allow-relative "
                                   "to keep the relative alignment")
        messages.append(f"{what}; products keep the relative alignment "
                        f"(WCSNAME {config.wcsname})")
        return AbsoluteTie(status="RELATIVE", shift_x_arcsec=0.0, shift_y_arcsec=0.0,
                           rotation_deg=0.0, scale=1.0, wcsname=config.wcsname, message=reason,
                           **record)
    for g in kept:
        for e in g.exposures:
            path = copies[e.rootname]
            chips = {x: read_chip_wcs(path, x) for x in e.extvers}
            write_aligned_wcs(path, apply_tie(chips, fit), wcsname=config.tie_wcsname)
    log.info("tied to %s: %d stars, rms %.4f\", shift %+.4f\" %+.4f\" (+-%.4f\" %.4f\"), "
             "rotation %+.2f\" (+-%.2f\")", catalog.path.name, fit.n_matches, fit.rms_arcsec,
             fit.shift_x_arcsec, fit.shift_y_arcsec, record.get("shift_x_error_arcsec", np.nan),
             record.get("shift_y_error_arcsec", np.nan), fit.rotation_deg * 3600.0,
             record.get("rotation_error_deg", np.nan) * 3600.0)
    return AbsoluteTie(status="TIED", shift_x_arcsec=fit.shift_x_arcsec,
                       shift_y_arcsec=fit.shift_y_arcsec, rotation_deg=fit.rotation_deg,
                       scale=fit.scale, wcsname=config.tie_wcsname, **record)


def _output_grid(kept, copies, plan, reference: str, config: DrizzleConfig) -> WCS:
    outlines = _chip_outlines([e for g in kept for e in g.exposures], copies)
    if config.north_up:
        orient = 0.0
    else:
        ref = plan.group(reference).exposures[0]
        ext = max(ref.extvers)  # WFC1 when present
        orient = orientation_deg(read_chip_wcs(copies[ref.rootname], ext))
    return compute_output_grid(outlines, scale_arcsec=config.pixel_scale_arcsec,
                               orientation=orient)


def _check_on_grid(path: Path, grid: WCS) -> None:
    header = image_header(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header)
        w.pixel_shape = (header["NAXIS1"], header["NAXIS2"])
    if not same_grid(w, grid):
        raise StageError(f"{path.name}: AstroDrizzle did not write the requested output grid")


@dataclass
class _FinalContext:
    """What the final drizzles share; ``moves`` collects (staged, destination) pairs."""

    data_dir: Path
    outname: str
    config: DrizzleConfig
    work: Path
    staging: Path
    grid: WCS
    copies: dict[str, Path]
    solutions: list[AlignmentSolution]
    reference: str
    distortion: dict[str, DistortionInfo]  # by rootname
    absolute: AbsoluteTie | None = None
    num_cores: int = 1  # processes for AstroDrizzle's parallel steps
    backend: Backend | None = None  # where the tiles of a tiled drizzle run
    moves: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def tiled(self) -> bool:
        """Whether the final drizzles go in tiles (:func:`~hstred.drizzle.tiled.in_tiles`)."""
        return in_tiles(self.config.tile_size)

    def stage(self, images, destinations: Sequence[Path], *, kind: str,
              rootnames: Sequence[str]) -> None:
        """Add provenance to a checked product (science, weight and RMS images, in
        :data:`PRODUCT_KINDS` order like ``destinations``) and move it into the staging
        directory; the same images in the other layout (FITS or tiled) are removed with
        the publication."""
        with _GRID_LOCK:
            _check_on_grid(images.sci, self.grid)
        cards, history = provenance_cards(
            config=self.config, product_kind=kind, n_images=len(rootnames),
            orientation_deg=orientation_deg(self.grid), solutions=self.solutions,
            reference=self.reference,
            distortion=[self.distortion[r] for r in rootnames], absolute=self.absolute)
        sources = [getattr(images, k) for k in PRODUCT_KINDS]
        for src, dst in zip(sources, destinations, strict=True):
            other = dst.with_suffix(".fits" if is_tiled(dst) else TILE_INDEX_SUFFIX)
            self.moves += [(None, part) for part in image_parts(other)]
            if src is None:  # not made this time (--no-rms): an earlier one goes
                self.moves += [(None, part) for part in image_parts(dst)]
                continue
            write_provenance(src, cards, history)
            for part, dst_part in zip(image_parts(src), image_parts(dst), strict=True):
                staged = self.staging / dst_part.relative_to(self.data_dir)
                staged.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(part, staged)
                self.moves.append((staged, dst_part))


#: The final drizzles of several filters run in threads (tiled, on several workers):
#: the common grid's WCS object is used by one at a time.
_GRID_LOCK = threading.Lock()


@dataclass(frozen=True)
class _FinalTask:
    """One AstroDrizzle call onto the common grid, run in a child process
    (:func:`run_in_child`): the grid travels as its exact numbers."""

    inputs: tuple[Path, ...]
    sources: tuple[Path, ...]  # the calibrated exposures of the inputs (their full ERR)
    extvers: tuple[tuple[int, ...], ...]
    output: str
    run_dir: Path
    grid: dict  # ctype, crval, crpix, cd, radesys, pixel_shape
    config: DrizzleConfig
    single: bool
    expected_chips: int
    num_cores: int




def _rms_image(task: _FinalTask, images: DrizzleImages, grid: WCS) -> Path:
    """The product's per-pixel noise (:mod:`hstred.drizzle.noise`), beside its science."""
    chips = []
    for copy, source, extvers in zip(task.inputs, task.sources, task.extvers, strict=True):
        for extver in extvers:
            weight = chip_file(copy, extver, "final_mask.fits", output=task.output,
                               log_path=task.run_dir / f"{task.output}.log")
            chips.append(ChipInput(copy=copy, source=source, extver=extver, weight=weight))
    with fits.open(images.sci) as hdul:
        header = hdul[0].header.copy()
        sci = hdul[0].data
        noise = drizzle_noise(chips, grid, pixfrac=task.config.pixfrac,
                              kernel=task.config.kernel, product_sci=sci)
        rms = rms_image(noise, sci, fits.getdata(images.wht))
    path = images.sci.with_name(images.sci.name.replace("_sci.fits", "_rms.fits"))
    return write_rms(path, rms, noise, header, pixfrac=task.config.pixfrac)


def _final_parameters(c: DrizzleConfig, grid: WCS, n_images: int, *, single: bool,
                      num_cores: int, weight_maps: bool) -> dict:
    """AstroDrizzle parameters of a filter's image (or, ``single``, of one exposure's) on
    the common grid, the sky that of the visit drizzle."""
    if single:
        return single_parameters(grid, kernel=c.kernel, pixfrac=c.pixfrac,
                                 weight_type=c.weight_type, good_bits=c.good_bits,
                                 sky_method=c.sky_method, sky_measured=True,
                                 weight_maps=weight_maps)
    return final_parameters(n_images, grid, kernel=c.kernel, pixfrac=c.pixfrac,
                            weight_type=c.weight_type, num_cores=num_cores,
                            good_bits=c.good_bits, sky_method=c.sky_method,
                            sky_measured=True, weight_maps=weight_maps)


def _run_final(task: _FinalTask):
    c, grid = task.config, grid_from_numbers(task.grid)
    pars = _final_parameters(c, grid, len(task.inputs), single=task.single,
                             num_cores=task.num_cores, weight_maps=c.rms)
    # With the RMS image, AstroDrizzle keeps its intermediate files (the final weight maps
    # are read); whatever it added, but for the products and logs, goes afterwards.
    directories = {Path(task.run_dir), *(p.parent for p in task.inputs)}
    before = files_in(directories)
    keep: set[Path] = set()
    try:
        images = run_astrodrizzle(list(task.inputs), task.output, run_dir=task.run_dir,
                                  parameters=pars, expected_chips=task.expected_chips)
        if c.rms:
            t0 = time.perf_counter()
            rms = _rms_image(task, images, grid)
            images = dataclasses.replace(images, rms=rms, rms_seconds=time.perf_counter() - t0)
            log.info("%s: RMS image in %.1f s", task.output, images.rms_seconds)
        keep = {p.resolve() for p in (images.sci, images.wht, images.rms) if p is not None}
        return images
    finally:
        for path in files_in(directories) - before - keep:
            if path.suffix != ".log" and path.is_file():
                path.unlink(missing_ok=True)


def _final_drizzle(ctx: _FinalContext, exposures: Sequence[CalibratedExposure], output: str,
                   run_dir: Path, *, single: bool):
    # In a child process: the final drizzle holds the whole grid and long stretches of
    # AstroDrizzle's C code hold the GIL, which would freeze this process's display.
    return run_in_child(_run_final, _FinalTask(
        inputs=tuple(ctx.copies[e.rootname] for e in exposures),
        sources=tuple(e.path for e in exposures), extvers=tuple(e.extvers for e in exposures),
        output=output,
        run_dir=run_dir, grid=grid_numbers(ctx.grid), config=ctx.config, single=single,
        expected_chips=sum(len(e.extvers) for e in exposures), num_cores=ctx.num_cores))


def _exposure_boxes(ctx: _FinalContext, exposures,
                    grid: WCS | None = None) -> list[tuple[float, float, float, float]]:
    """Each exposure's footprint on the grid (by default the common grid): (xmin, xmax,
    ymin, ymax), 0-based pixels."""
    grid = ctx.grid if grid is None else grid
    boxes = []
    for e in exposures:
        ra, dec = (np.concatenate(v) for v in zip(*_chip_outlines([e], ctx.copies),
                                                   strict=True))
        with _GRID_LOCK:
            x, y = grid.all_world2pix(ra, dec, 0)
        boxes.append((float(x.min()), float(x.max()), float(y.min()), float(y.max())))
    return boxes


def _tiled_drizzle(ctx: _FinalContext, exposures: Sequence[CalibratedExposure], output: str,
                   run_dir: Path, *, single: bool) -> DrizzleImages:
    """A final drizzle in tiles (:mod:`hstred.drizzle.tiled`): the filter's cosmic rays
    (or, for a single exposure's image, its static mask alone) once, in a child process;
    then every tile as a task on the run's backend, writing into the product images in
    place; then the headers merged here."""
    c = ctx.config
    inputs = tuple(ctx.copies[e.rootname] for e in exposures)
    grid = grid_numbers(ctx.grid)
    pars = _final_parameters(c, ctx.grid, len(inputs), single=single,
                             num_cores=ctx.num_cores, weight_maps=False)
    pars.pop("final_refimage")  # the grid travels as its numbers
    masks = _tiled_cosmic_rays(ctx, exposures, output, run_dir / "cosmic_rays", pars)
    # The tiles: the final step alone, the flags already in the DQ, the sky recorded.
    # With the RMS image, AstroDrizzle keeps each chip's final weight map (clean off).
    tile_pars = {**later_step_parameters(pars), "driz_separate": False, "median": False,
                 "blot": False, "driz_cr": False, "clean": not c.rms}
    nx, ny = ctx.grid.pixel_shape
    sci, wht, rms = (TiledImage(run_dir / f"{output}_drz_{kind}.fits", (ny, nx))
                     for kind in ("sci", "wht", "rms"))
    for image in (sci, wht, rms) if c.rms else (sci, wht):
        image.allocate()
    boxes = _exposure_boxes(ctx, exposures)
    tasks = []
    for tile in cut_grid((nx, ny), c.tile_size):
        on = [e for e, box in zip(exposures, boxes, strict=True) if overlapping(tile, box)]
        noise = (TileNoise(rms=rms, sources=tuple(e.path for e in on),
                           extvers=tuple(e.extvers for e in on),
                           weights_dir=run_dir / "weights", kernel=c.kernel,
                           pixfrac=c.pixfrac, bands=tuple(noise_bands(tile)))
                 if c.rms else None)
        tasks.append(TileTask(
            tile=tile, inputs=tuple(ctx.copies[e.rootname] for e in on),
            expected_chips=sum(len(e.extvers) for e in on), output=f"{output}_{tile.name}",
            run_dir=run_dir / tile.name, parameters=tile_pars,
            grid=tile_grid_numbers(grid, tile), static_masks=masks, sci=sci, wht=wht,
            noise=noise))
    results = _on_backend(ctx, drizzle_tile, tasks)
    log.info("%s: %d tiles of at most %d pixels drizzled (%.1f s of tile time)", output,
             len(results), c.tile_size, sum(r.seconds for r in results))
    totals = dict(
        inputs=[p.name for p in inputs], expected_chips=sum(len(e.extvers) for e in exposures),
        grid=grid, exptime=float(sum(e.exptime_s for e in exposures)),
        expstart=float(min(fits.getval(p, "EXPSTART") for p in inputs)),
        expend=float(max(fits.getval(p, "EXPEND") for p in inputs)), output=output)
    headers = {"sci": merge_headers([r.header for r in results], **totals),
               "wht": merge_headers([r.wht_header for r in results], **totals)}
    seconds = 0.0
    if c.rms:
        t0 = time.perf_counter()
        headers["rms"] = _tiled_rms(ctx, exposures, results, headers["sci"], sci=sci, wht=wht,
                                    rms=rms, weights=run_dir / "weights")
        seconds = time.perf_counter() - t0 + sum(r.noise_seconds for r in results)
        log.info("%s: RMS image in %.1f s", output, seconds)
    # With --tiled-products, the tiles an exposure reaches are kept as files of their own.
    kept = [r.tile for r in results if r.header] if c.tiled_products else None
    paths = {kind: image.finish(headers[kind], tiles=kept, kind=kind, size=c.tile_size)
             for kind, image in (("sci", sci), ("wht", wht), ("rms", rms)) if kind in headers}
    return DrizzleImages(sci=paths["sci"], wht=paths["wht"], rms=paths.get("rms"),
                         rms_seconds=seconds)


def _backend(ctx: _FinalContext) -> Backend:
    return ctx.backend or LocalBackend(workers=1)


def _on_backend(ctx: _FinalContext, func, tasks: Sequence) -> list:
    """``func`` over the tasks on the run's backend, the results in task order; with one
    worker all in one child process (AstroDrizzle holds the GIL)."""
    backend = _backend(ctx)
    if backend.slots > 1 and len(tasks) > 1:
        results = [None] * len(tasks)
        for i, result in backend.imap_unordered(
                indexed, [(i, func, task) for i, task in enumerate(tasks)]):
            results[i] = result
        return results
    return backend.call(in_order, func, list(tasks))


def _tiled_cosmic_rays(ctx: _FinalContext, exposures, output: str, run_dir: Path,
                       pars: dict) -> dict:
    """The cosmic-ray step of a tiled drizzle, with the flags of AstroDrizzle's whole-grid
    step (:mod:`hstred.drizzle.tiled`): what needs all exposures at once (DQ reset, static
    masks, sky, the separate drizzles' grid) in a child process; the median image of the
    separate drizzles in tiles of that grid (each input's mean weight summed over the
    tiles between the drizzles and the combination); then each exposure's blot and
    flags against the median cut to its footprint. Returns the static masks."""
    inputs = tuple(ctx.copies[e.rootname] for e in exposures)
    t0 = time.perf_counter()
    masks, sgrid = _backend(ctx).call(prepare_cosmic_rays, CosmicRayTask(
        inputs=inputs, output=output, run_dir=run_dir, parameters=pars))
    if not pars.get("driz_cr"):
        return masks
    seconds = {"set-up": time.perf_counter() - t0}
    later = later_step_parameters(pars)
    shape = tuple(int(v) for v in sgrid["pixel_shape"])
    boxes = _exposure_boxes(ctx, exposures, grid_from_numbers(sgrid))
    median = TiledImage(run_dir / f"{output}_med.fits", (shape[1], shape[0]))
    median.allocate()  # zero where no exposure comes near: no blot reads there
    tiles = []
    size = ctx.config.tile_size  # the final tiles' side (tiled.py: why)
    for tile in cut_grid(shape, size):
        area = grown(tile, MEDIAN_MARGIN_PX, shape)
        on = tuple(copy for copy, box in zip(inputs, boxes, strict=True)
                   if overlapping(area, box))
        if on:
            tiles.append(MedianTileTask(
                tile=tile, area=area, inputs=on, output=f"{output}_{tile.name}",
                run_dir=run_dir / tile.name, parameters=later,
                grid=tile_grid_numbers(sgrid, area), static_masks=masks, median=median))
    totals = {copy: [0.0, 0] for copy in inputs}
    t0 = time.perf_counter()
    separated = _on_backend(ctx, separate_tile, tiles)
    seconds["separate drizzles"] = time.perf_counter() - t0
    for task, sums in zip(tiles, separated, strict=True):
        for copy, (total, count) in zip(task.inputs, sums, strict=True):
            totals[copy][0] += total
            totals[copy][1] += count
    means = {copy: (total / count if count else None) for copy, (total, count) in totals.items()}
    t0 = time.perf_counter()
    _on_backend(ctx, median_tile, [
        dataclasses.replace(t, means=tuple(means[c] for c in t.inputs), totals=sums)
        for t, sums in zip(tiles, separated, strict=True)])
    seconds["median"] = time.perf_counter() - t0
    flags = []
    for e, copy, box in zip(exposures, inputs, boxes, strict=True):
        cutout = box_tile(box, BLOT_MARGIN_PX, shape)
        flags.append(FlagTask(input=copy, extvers=tuple(e.extvers), output=f"{output}_{e.rootname}",
                              run_dir=run_dir / f"flag_{e.rootname}", parameters=later,
                              cutout=cutout, grid=tile_grid_numbers(sgrid, cutout),
                              static_masks=masks, median=median))
    t0 = time.perf_counter()
    _on_backend(ctx, flag_exposure, flags)
    seconds["blot and flags"] = time.perf_counter() - t0
    median.raw.unlink()
    log.info("%s: cosmic rays in %d median tiles of at most %d pixels (median grid %d x %d; "
             "%s)", output, len(tiles), size, *shape,
             ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return masks


def _tiled_rms(ctx: _FinalContext, exposures, results, header: fits.Header, *,
               sci: TiledImage, wht: TiledImage, rms: TiledImage,
               weights: Path) -> fits.Header:
    """The header of a tiled product's RMS image: its pixels are in place (the tiles wrote
    them); the correlation factors (over the whole grid) and the blank-sky check (one
    window of the product) are measured in a child process."""
    c = ctx.config
    chips = tuple(ChipInput(copy=ctx.copies[e.rootname], source=e.path, extver=x,
                            weight=chip_file(weights / ctx.copies[e.rootname].name, x,
                                             "final_mask.fits", output=sci.path.name,
                                             log_path=weights.parent))
                  for e in exposures for x in e.extvers)
    # the blank-sky check's window: around the median position of the covered pixels
    ny, nx = sci.shape
    columns, rows = np.zeros(nx, dtype=np.int64), np.zeros(ny, dtype=np.int64)
    for r in results:
        if r.columns is not None:
            columns[r.tile.x0:r.tile.x0 + r.tile.nx] += r.columns
            rows[r.tile.y0:r.tile.y0 + r.tile.ny] += r.rows
    centre = tuple(float(np.searchsorted(np.cumsum(n), n.sum() / 2)) for n in (columns, rows))
    factors, ratio, blank = _backend(ctx).call(tiled_noise_factors, FactorTask(
        chips=chips, grid=grid_numbers(ctx.grid), pixfrac=c.pixfrac, kernel=c.kernel,
        sci=sci, wht=wht, rms=rms,
        check_window=window_around(centre, (ny, nx), CHECK_WINDOW_PX)))
    counts = np.sum([r.mismatch_counts for r in results if r.mismatch_counts is not None],
                    axis=0)
    noise = NoiseImages(sci=None, wht=None, var=None, factors=factors, scale_ratio=ratio,
                        blank_sky=blank, missing=sum(r.missing for r in results),
                        mismatch_median=histogram_quantile(counts, 0.5),
                        mismatch_p99=histogram_quantile(counts, 0.99))
    check_mismatch(noise.mismatch_median)
    return rms_header(noise, header, pixfrac=c.pixfrac)


def _drizzled(ctx: _FinalContext, exposures, output: str, run_dir: Path, *,
              single: bool) -> DrizzleImages:
    """A final drizzle, whole or in tiles (:attr:`_FinalContext.tiled`; ``tiled_products``
    needs tiles, :func:`~hstred.drizzle.config.validate_config`)."""
    if ctx.tiled:
        return _tiled_drizzle(ctx, exposures, output, run_dir, single=single)
    return _final_drizzle(ctx, exposures, output, run_dir, single=single)


def _noise(out: DrizzleImages) -> dict:
    """What the run record keeps of a product's RMS image (empty without one)."""
    if out.rms is None:
        return {}
    return {**noise_summary(image_header(out.rms)), "seconds": round(out.rms_seconds, 2)}


def _drizzle_filter(ctx: _FinalContext, filt: str,
                    exposures: Sequence[CalibratedExposure]) -> DrizzleProduct:
    """Final drizzle of one filter on the common grid (cosmic rays re-found over all of
    its aligned exposures), whole or in tiles (:func:`_drizzled`)."""
    output, run_dir = f"{ctx.outname}_{filt}", ctx.work / "final" / filt
    out = _drizzled(ctx, exposures, output, run_dir, single=False)
    exptime = float(image_header(out.sci)["EXPTIME"])
    noise = _noise(out)
    sci_dst, wht_dst, rms_dst = destinations = product_paths(
        ctx.data_dir, ctx.outname, filt, tiled=ctx.config.tiled_products)
    ctx.stage(out, destinations, kind="FILTER", rootnames=[e.rootname for e in exposures])
    return DrizzleProduct(filter=filt, sci=sci_dst, wht=wht_dst,
                          rms=rms_dst if out.rms is not None else None,
                          exposures=tuple(e.rootname for e in exposures), exptime_s=exptime,
                          noise=noise)


def _drizzle_single(ctx: _FinalContext, filt: str, e: CalibratedExposure) -> SingleProduct:
    """One exposure alone on the common grid, with the cosmic-ray flags of its filter."""
    run_dir = ctx.work / "singles" / e.rootname
    out = _drizzled(ctx, [e], e.rootname, run_dir, single=True)
    exptime = float(image_header(out.sci)["EXPTIME"])
    if abs(exptime - e.exptime_s) > 1e-6 * e.exptime_s:
        raise StageError(f"{out.sci.name}: EXPTIME {exptime} differs from the exposure's "
                         f"{e.exptime_s}; the single image would mislead PSF modelling")
    noise = _noise(out)
    sci_dst, wht_dst, rms_dst = destinations = single_paths(
        ctx.data_dir, e.rootname, tiled=ctx.config.tiled_products)
    ctx.stage(out, destinations, kind="SINGLE", rootnames=[e.rootname])
    return SingleProduct(rootname=e.rootname, filter=filt, sci=sci_dst, wht=wht_dst,
                         rms=rms_dst if out.rms is not None else None, exptime_s=exptime,
                         noise=noise)


def run_drizzle(
    data_dir: Path,
    outname: str,
    config: DrizzleConfig,
    *,
    work_dir: Path | None = None,
    inputs: Sequence[Path] | None = None,
    backend: Backend | None = None,
    distortion: dict[str, ReferenceSet] | None = None,
    fetch_references: bool = True,
    progress: ProgressCallback | None = None,
    catalog_dir: Path | None = None,
) -> DrizzleResult:
    """Align and drizzle the calibrated ACS/WFC exposures of a program.

    Parameters
    ----------
    data_dir : Path
        Directory of ``*_flc.fits``/``*_flt.fits`` files (read only) and of the products:
        ``OUTNAME_FILTER_drz_sci.fits``/``_wht.fits`` and, with ``config.singles``,
        ``singles/ROOTNAME_drz_sci.fits``/``_wht.fits``.
    outname : str
        Product name stem.
    config : DrizzleConfig
        Options (kernel, scale, pixfrac, weights, alignment gates...).
    work_dir : Path, optional
        Where working copies and intermediate files go (kept afterwards). By default a
        temporary directory inside ``data_dir``, removed at the end.
    inputs : sequence of Path, optional
        Exposures to use instead of every calibrated file in ``data_dir``.
    backend : hstred.execution.Backend, optional
        Where the visit drizzles and catalogs run, several at once when it has more
        than one slot (default: one local worker process), and the final drizzles' tiles
        (``config.tile_size``; a grid that :func:`~hstred.drizzle.tiled.in_tiles` leaves
        whole is drizzled in one worker process). This process runs none of them.
    distortion : dict of file name to ReferenceSet, optional
        The distortion references of the inputs without a distortion solution, as
        :func:`distortion_references` returns them (resolved here when not given,
        fetching through CRDS when ``fetch_references`` and a server answers).
    progress : callable, optional
        ``progress(step, done, total)`` as the sub-steps advance: "working copies",
        "satellite trails" (unless off),
        "visits", "alignment", then "filter F606W" (and "singles F606W") for each filter.
    catalog_dir : Path, optional
        Where ``config.reference_catalog = "gaia"`` saves (and finds again) the Gaia
        cone; default ``data_dir/hstred_work/catalogs``.

    Returns
    -------
    DrizzleResult

    Raises
    ------
    InputError
        Unusable inputs or options.
    ReferenceFileError
        An input without a distortion solution whose references cannot be had.
    QualityGateError
        A visit failed the alignment gates (unless ``config.drop_unaligned``), or the
        tie to the reference catalog failed its gates (unless ``config.allow_relative``).
    StageError
        AstroDrizzle failed or wrote an incomplete product.

    Notes
    -----
    Products appear only when every one of them is complete: their destinations are
    checked before any work, they are written in a staging directory inside ``data_dir``
    and renamed into place at the end, all or nothing (a failure part-way restores the
    previous products). Science
    images are in electrons per second (BUNIT ELECTRONS/S), sky-subtracted, NaN where no
    input pixel landed; weights are inverse variance (``ERR``) or exposure time (``EXP``).
    """
    data_dir = Path(data_dir)
    check_outname(outname)
    if not isinstance(config, DrizzleConfig):
        raise InputError("config must be a hstred.drizzle.DrizzleConfig")
    plan = plan_drizzle(data_dir, inputs)
    files, directories = drizzle_destinations(
        data_dir, outname, plan.filters,
        [e.rootname for e in plan.exposures] if config.singles else ())
    check_destinations(files, directories=directories)
    if distortion is None:
        distortion = distortion_references([e.path for e in plan.exposures], data_dir,
                                           fetch=fetch_references)
    messages: list[str] = []
    keep_work = work_dir is not None
    if keep_work:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}drizzle-", dir=data_dir))
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{outname}-staging-", dir=data_dir))
    step = progress or _no_progress
    backend = backend or LocalBackend(workers=1)
    # Local worker processes are started once for the stage (each start imports the
    # drizzle libraries again, seconds each time).
    pool = contextlib.ExitStack()
    try:
        pool.enter_context(backend.shared_pool())
        step("working copies", 0, len(plan.exposures))
        copies, distortion_infos = _copy_inputs(plan, work / "exposures", distortion)
        step("working copies", len(plan.exposures), len(plan.exposures))
        trails = (_mask_trails(plan, copies, backend, step, messages)
                  if config.satellites == "mask" else ())
        # The reference catalog is read (or fetched) before the costly work.
        refcat = _reference_catalog(config, plan, copies, Path(catalog_dir) if catalog_dir
                                    else data_dir / "hstred_work" / "catalogs")
        visit_images, catalogs = _drizzle_visits(plan, copies, work, config,
                                                 backend, step)
        step("alignment", 0, 1)
        solutions, outcome, kept = _align(plan, visit_images, catalogs, copies, config,
                                          messages)
        reference = outcome.reference
        step("alignment", 1, 1)
        if refcat is not None:
            step("absolute tie", 0, 1)
        absolute = (_tie(kept, outcome, copies, config, *refcat, messages)
                    if refcat is not None else None)
        if refcat is not None:
            step("absolute tie", 1, 1)
        grid = _output_grid(kept, copies, plan, reference, config)
        nx, ny = grid.pixel_shape
        log.info("output grid %d x %d at %.4f\"/pixel", nx, ny, config.pixel_scale_arcsec)
        ctx = _FinalContext(data_dir=data_dir, outname=outname, config=config, work=work,
                            staging=staging, grid=grid, copies=copies, solutions=solutions,
                            reference=reference,
                            distortion={d.rootname: d for d in distortion_infos},
                            absolute=absolute, num_cores=backend.local_cores,
                            backend=backend)
        work_items = []
        for filt in plan.filters:
            exposures = [e for g in kept if g.filter == filt for e in g.exposures]
            if not exposures:
                messages.append(f"filter {filt}: every visit was dropped; no product")
                continue
            if len(exposures) < 2:
                messages.append(f"filter {filt}: a single exposure; cosmic rays cannot be "
                                "rejected")
            work_items.append((filt, exposures))

        def one_filter(item):
            filt, exposures = item
            step(f"filter {filt}", 0, 1)
            product = _drizzle_filter(ctx, filt, exposures)
            step(f"filter {filt}", 1, 1)
            done = []
            if config.singles:
                for i, e in enumerate(exposures):
                    step(f"singles {filt}", i, len(exposures))
                    done.append(_drizzle_single(ctx, filt, e))
                step(f"singles {filt}", len(exposures), len(exposures))
            return product, done

        if ctx.tiled and backend.slots > 1 and len(work_items) > 1:
            # The filters at once, their tasks sharing the backend's slots: one filter's
            # serial parts (set-up, correlation factors) overlap the other's tiles.
            with ThreadPoolExecutor(len(work_items)) as threads:  # in the stage's pool
                outcomes = list(threads.map(one_filter, work_items))
        else:
            outcomes = [one_filter(item) for item in work_items]
        products: list[DrizzleProduct] = [product for product, _ in outcomes]
        singles: list[SingleProduct] = [single for _, done in outcomes for single in done]
        if not products:
            raise QualityGateError("no filter has an aligned visit left; nothing was drizzled")
        cr_fractions = {root: cosmic_ray_fraction(path) for root, path in sorted(copies.items())}
        publish_all(ctx.moves)
    finally:
        pool.close()
        shutil.rmtree(staging, ignore_errors=True)
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    orient = orientation_deg(grid)
    crval = (float(grid.wcs.crval[0]), float(grid.wcs.crval[1]))
    crpix = (float(grid.wcs.crpix[0]), float(grid.wcs.crpix[1]))
    for m in messages:
        log.warning(m)
    return DrizzleResult(
        products=tuple(products),
        singles=tuple(singles),
        solutions=tuple(solutions),
        reference=reference,
        grid=GridInfo(shape=(ny, nx), crval_deg=crval, crpix=crpix,
                      scale_arcsec=config.pixel_scale_arcsec, orientation_deg=orient),
        dropped=tuple(s.group for s in solutions if s.status == "DROPPED"),
        warnings=tuple(messages),
        distortion=tuple(distortion_infos),
        absolute=absolute,
        cr_fractions=cr_fractions,
        satellites=trails,
    )
