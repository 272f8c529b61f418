"""Simulate an ACS/WFC observing program: raw files, reference files and the truth.

Outputs under ``out_dir``
-------------------------
* ``<rootname>_raw.fits``: full-frame raw files (see :mod:`hstred.simulate.rawfile`).
  Rootname = ``j`` + program (3) + visit (2 digits) + exposure id (2) + ``q``.
* ``crds/references/hst/acs/``: the matching reference files
  (see :mod:`hstred.simulate.references`).
* ``truth.ecsv``: the truth catalog (see :mod:`hstred.simulate.catalog`): positions at
  J2016.0 with the stars' proper motions and parallaxes; every exposure shows each star
  at its position at the exposure's mid-time (``positions_at``).
* ``gaia.ecsv``: a Gaia DR3-like catalog of the field's stars brighter than G = 21
  (Gaia column names, reference epoch 2016.0, errors growing with magnitude; see
  :func:`hstred.simulate.catalog.draw_gaia_catalog`).
* ``truth.json``: seed, configuration, per-visit dates, roll, pointing,
  header-WCS errors, per-exposure dithers and CTE model, detector parameters and
  injected defects (schema below).
* ``truth/detector.fits``: per chip, the injected bad-pixel mask (BADPIX), each
  epoch's hot-pixel mask (HOTPIX, dark rate >= the DQ threshold; an epoch is a visit
  unless the program is a mosaic) and the pixel area map (PAM), trimmed.
* ``truth/<rootname>_truth.fits`` (only with ``truth_images``): per chip
  (EXTNAME 'TRUTH', EXTVER 1 = WFC2, 2 = WFC1, CCDCHIP) the noiseless image an
  ideally calibrated FLT shows: (sky + sources) x EXPTIME / pixel area, in e-,
  float32 -- before CTE, dark, cosmic rays, flat and bias; then per chip (EXTNAME
  'COSMIC') the cosmic rays' charge / flat, e-: what they add to that FLT (before CTE).

Pixel-area and flat-field convention
------------------------------------
The charge collected by a pixel is (photons arriving on it) x QE: the sky
delivers ``sky x PAM`` per second (PAM = pixel solid angle / (0.05")^2 from the
true SIP Jacobian, 0.87-1.06 over the field), a star delivers all its photons
wherever they land.  The PFLTFILE written is ``QE x PAM``, so dividing by it
(after bias and dark) leaves an FLT that is flat in sky surface brightness, as
real ACS FLTs are; point-source counts in such an FLT are divided by the local
PAM, which drizzling (or a PAM correction) undoes.

Header-WCS error convention
---------------------------
Each visit draws an error (shift up to ~1", rotation up to ~0.05 deg) about
the target position: header sky position = ``R(rot) (xi, eta) + (dx, dy)`` in
the tangent plane at the target (xi east, eta north, arcsec; ``R`` increases
position angles by ``rot``), see :class:`hstred.simulate.wcs.WcsError`.  All
exposures and filters of a visit share it.  The truth is recovered by undoing
it: true = ``R(-rot) ((xi', eta') - (dx, dy))``.

truth.json schema (``schema = "hstred-simulation-truth/1"``)
------------------------------------------------------------
``seed``, ``config`` (the SimulationConfig), ``hstred_version``, ``target``
{name, ra_deg, dec_deg}, ``catalog`` {file, n_sources, n_stars, center_ra_deg,
center_dec_deg, radius_arcsec, ref_epoch_jyear, epoch_convention}, ``gaia`` {file,
n_stars, g_limit, ref_epoch_jyear}, ``wcs_error_convention`` (text),
``pixel_area_convention`` (text), ``pixel_convention`` (text), ``visits``: list
of {visit, visit_id, start_mjd, date_obs, pa_v3_deg, pointing_offset_arcsec
[x, y] (POS TARG frame of aperture WFC), pointing_ra_deg, pointing_dec_deg (true
sky position of aperture WFC's reference point at the first dither position),
wcs_error {dx_arcsec, dy_arcsec, rotation_deg, center_ra_deg, center_dec_deg},
sky_e_per_s {filter: rate per (0.05")^2}, epoch, mosaic_cell [column, row], darkfile,
drkcfile, exposures: list of
{rootname, filter, expstart_mjd, epoch_mjd (mid-time: the stars' epoch),
epoch_jyear, exptime_s, darktime_s, dither_step, dither_px
[x, y], postarg_arcsec [x, y], bias_offsets_dn {amp}, chips {"1"/"2":
{cosmic_rays, sources_rendered, true_wcs {crpix_flt, crval, cd, sip_a, sip_b},
header_wcs {...}, sip_fit_residual_px}}, cte_model (CTEModel.to_dict() or
null), satellite_trail (null, or {ra_deg, dec_deg, pa_deg, fwhm_px, peak_e, sky_sigma_e,
mask_file, chips {"1"/"2": {x0, y0, x1, y1 (0-indexed FLT end points), mask_pixels}}};
see :mod:`hstred.simulate.trails`)}}, ``cte`` {enabled, express, model}, ``detector``
(DetectorParams),
``defects`` (list of {chip, x, y, length, axis, response, dq}; x, y 0-indexed
FLT), ``references`` {keyword: file name, or per-epoch / per-filter mapping},
``files``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.acs import CHIP_NX, CHIP_NY, CHIPS, raw_to_trimmed
from hstred.align.epoch import mjd_to_jyear
from hstred.cte.model import add_cte_to_chip, cte_model_for_date
from hstred.errors import InputError
from hstred.fileio import atomic_path
from hstred.simulate import detector as det
from hstred.simulate.catalog import (
    draw_gaia_catalog,
    draw_space_motion,
    draw_truth_catalog,
    positions_at,
)
from hstred.simulate.config import SimulationConfig, SimulationResult, validate_config
from hstred.simulate.distortion import (
    DistortedWcs,
    d2imfile_hdul,
    idc_model,
    idctab_hdul,
    npolfile_hdul,
    reference_point_headers,
    stwcs_chip_wcs,
)
from hstred.simulate.plan import (
    ExposurePlan,
    ProgramPlan,
    VisitPlan,
    catalog_radius_arcsec,
    catalog_sources,
    plan_program,
)
from hstred.simulate.rawfile import (
    RawHeaderInfo,
    mjd_to_datetime,
    primary_header,
    raw_hdul,
    write_fits_atomic,
)
from hstred.simulate.references import (
    CRDS_SUBDIR,
    ReferenceSet,
    bias_hdul,
    bpixtab_hdul,
    ccdtab_hdul,
    dark_hdul,
    flat_hdul,
    imphttab_hdul,
    oscntab_hdul,
    reference_name,
    saturation_hdul,
)
from hstred.simulate.rng import rng_for
from hstred.simulate.scene import photon_rate_image
from hstred.simulate.trails import draw_trail, trail_image, trail_mask_hdul, trailed_exposures
from hstred.simulate.truth import (
    CTE_EXPRESS,
    detector_truth_hdul,
    ecsv_text,
    jsonable,
    truth_document,
    truth_image_hdul,
    visit_record,
)
from hstred.simulate.wcs import (
    WcsError,
    aperture_reference_sky,
    dither_tel_point,
    hst_attitude,
    perturb_sky,
    tangent_plane,
    tel_to_sky,
    velocity_aberration_factor,
)

__all__ = [
    "simulate_program",
]


def _reference_names(plan: ProgramPlan) -> dict:
    seed = plan.config.seed
    return {
        "BIASFILE": reference_name(seed, "BIASFILE"),
        "SATUFILE": reference_name(seed, "SATUFILE"),
        "BPIXTAB": reference_name(seed, "BPIXTAB"),
        "CCDTAB": reference_name(seed, "CCDTAB"),
        "OSCNTAB": reference_name(seed, "OSCNTAB"),
        "IMPHTTAB": reference_name(seed, "IMPHTTAB"),
        "IDCTAB": reference_name(seed, "IDCTAB"),
        "D2IMFILE": reference_name(seed, "D2IMFILE"),
        "PFLTFILE": {f: reference_name(seed, "PFLTFILE", f) for f in plan.config.filters},
        "NPOLFILE": {f: reference_name(seed, "NPOLFILE", f) for f in plan.config.filters},
        # one dark pair per epoch (a mosaic's visits of one day share it)
        "DARKFILE": {v.epoch: reference_name(seed, "DARKFILE", v.epoch) for v in plan.visits},
        "DRKCFILE": {v.epoch: reference_name(seed, "DRKCFILE", v.epoch) for v in plan.visits},
    }


def _reference_set(names: dict, visit: VisitPlan, exp: ExposurePlan) -> ReferenceSet:
    return ReferenceSet(
        biasfile=names["BIASFILE"], satufile=names["SATUFILE"],
        darkfile=names["DARKFILE"][visit.epoch], drkcfile=names["DRKCFILE"][visit.epoch],
        pfltfile=names["PFLTFILE"][exp.filter_name], bpixtab=names["BPIXTAB"],
        ccdtab=names["CCDTAB"], oscntab=names["OSCNTAB"], imphttab=names["IMPHTTAB"],
        idctab=names["IDCTAB"], npolfile=names["NPOLFILE"][exp.filter_name],
        d2imfile=names["D2IMFILE"])


def _exposure_wcs(attitude: np.ndarray, primary: fits.Header, error: WcsError,
                  vafactor: float, ref_dir: Path) -> tuple[dict, dict]:
    """True and header distortion WCS of each chip, both as stwcs reads them.

    The true WCS is what stwcs derives from the telescope's true pointing; the
    header one from the pointing the ground system believed (the visit's error
    applied to the reference point and to PA_V3).  Pixels are rendered through
    the first; the raw headers carry the second's linear part.
    """
    idc = idc_model()
    true_crval = {lay.chip: tel_to_sky(attitude, idc[lay.chip].v2ref_arcsec,
                                       idc[lay.chip].v3ref_arcsec) for lay in CHIPS}
    header_crval = {chip: tuple(float(v[0]) for v in perturb_sky(
        np.array([ra]), np.array([dec]), error)) for chip, (ra, dec) in true_crval.items()}
    true_primary = primary.copy()
    true_primary["PA_V3"] = primary["PA_V3"] - error.rotation_deg
    true_wcs = stwcs_chip_wcs(true_primary, reference_point_headers(true_crval, vafactor), ref_dir)
    header_wcs = stwcs_chip_wcs(primary, reference_point_headers(header_crval, vafactor), ref_dir)
    return true_wcs, header_wcs


def _aperture_sky(attitude: np.ndarray, error: WcsError) -> tuple[float, float, float]:
    """Header (perturbed) RA, Dec of aperture WFC's reference point and its PA_APER."""
    ra0, dec0 = aperture_reference_sky(attitude)
    ra1, dec1 = aperture_reference_sky(attitude, yidl_arcsec=10.0)
    pra, pdec = perturb_sky(np.array([ra0, ra1]), np.array([dec0, dec1]), error)
    xi, eta = tangent_plane(pra[1], pdec[1], ra0_deg=pra[0], dec0_deg=pdec[0])
    pa_aper = float(np.degrees(np.arctan2(xi, eta)) % 360.0)
    return float(pra[0]), float(pdec[0]), pa_aper


class _Writer:
    """Writes files atomically and remembers them, to remove them if the run fails."""

    def __init__(self) -> None:
        self.written: list[Path] = []

    def fits(self, hdul: fits.HDUList, path: Path) -> Path:
        write_fits_atomic(hdul, path)
        self.written.append(path)
        return path

    def text(self, text: str, path: Path) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self.written.append(path)
        return path

    def remove_all(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def _planned_outputs(out_dir: Path, plan: ProgramPlan, names: dict) -> list[Path]:
    ref_dir = out_dir / CRDS_SUBDIR
    paths = [out_dir / f"{e.rootname}_raw.fits" for e in plan.exposures()]
    for value in names.values():
        items = value.values() if isinstance(value, dict) else [value]
        paths += [ref_dir / name for name in items]
    paths += [out_dir / "truth.ecsv", out_dir / "gaia.ecsv", out_dir / "truth.json",
              out_dir / "truth" / "detector.fits"]
    if plan.config.truth_images:
        paths += [out_dir / "truth" / f"{e.rootname}_truth.fits" for e in plan.exposures()]
    paths += [_trail_mask_path(out_dir, root) for root in sorted(_trailed(plan))]
    return paths


def _trailed(plan: ProgramPlan) -> set[str]:
    """Rootnames of the exposures a satellite crosses."""
    return trailed_exposures(rng_for(plan.config.seed, "satellites"),
                             [e.rootname for e in plan.exposures()], plan.config.satellites)


def _trail_mask_path(out_dir: Path, rootname: str) -> Path:
    return out_dir / "truth" / f"{rootname}_trails.fits"


def _prepare_directory(out_dir: Path, outputs: list[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory; "
                         f"choose a directory")
    for path in outputs:
        if path.exists():
            raise InputError(f"{path} already exists; simulate into an empty directory "
                             f"or remove the previous simulation")
    for directory in {p.parent for p in outputs}:
        directory.mkdir(parents=True, exist_ok=True)


class _DetectorState:
    """Per-program detector truth, computed once and reused across exposures."""

    def __init__(self, seed: int, params: det.DetectorParams) -> None:
        self.seed = seed
        self.params = params
        self.defects = det.draw_defects(seed)
        self.bias = {lay.chip: det.bias_frame(seed, lay.chip, params) for lay in CHIPS}
        self.saturation = {lay.chip: det.saturation_map(seed, lay.chip, params) for lay in CHIPS}
        self._qe: dict = {}
        self.pam: dict = {}
        self.hot: dict = {}

    def qe(self, chip: int, filter_name: str) -> np.ndarray:
        key = (chip, filter_name)
        if key not in self._qe:
            self._qe[key] = det.qe_map(self.seed, chip, filter_name, self.defects)
        return self._qe[key]

    def dark(self, chip: int, visit: VisitPlan) -> np.ndarray:
        """The dark rate map of the visit's epoch (drawn at its first visit); its hot-pixel
        mask is kept for the truth file."""
        rate = det.dark_rate_map(self.seed, chip, visit=visit.epoch, mjd=visit.start_mjd,
                                 params=self.params)
        self.hot[(chip, visit.epoch)] = (rate >= self.params.hot_threshold_e_per_s).astype(
            np.uint8)
        return rate


def _simulate_chip(*, chip: int, exp: ExposurePlan, visit: VisitPlan, wcs: DistortedWcs,
                   catalog, state: _DetectorState, dark: np.ndarray, cte: bool,
                   stripes: np.ndarray, offsets: dict, seed: int, want_truth: bool,
                   drift: np.ndarray | None = None, trail_e: np.ndarray | None = None):
    params = state.params
    rate, n_sources = photon_rate_image(catalog, wcs, exp.filter_name,
                                        sky_e_per_s=visit.sky_e_per_s[exp.filter_name],
                                        pixel_area=state.pam[chip])
    truth = (rate * (exp.exptime_s / state.pam[chip])).astype(np.float32) if want_truth else None
    expected = rate * exp.exptime_s
    expected *= state.qe(chip, exp.filter_name)
    expected += dark * (exp.darktime_s + params.ovrhufls_s)
    del rate
    charge = rng_for(seed, "photons", exp.rootname, chip).poisson(expected).astype(np.float64)
    del expected
    if trail_e is not None:
        # reflected sunlight, with its own shot noise: a sum of Poisson draws is the draw
        # of the sum, and with its own stream every pixel off the trail holds what the
        # same program without the satellite holds
        charge += rng_for(seed, "trail photons", exp.rootname, chip).poisson(trail_e)
    cosmic, n_cr = det.cosmic_ray_image(rng_for(seed, "cosmic", exp.rootname, chip),
                                        exptime_s=exp.exptime_s, params=params)
    charge += cosmic
    if want_truth:
        # the cosmic rays as an ideally calibrated FLT shows them (charge / flat)
        truth = (truth, (cosmic / (state.qe(chip, exp.filter_name) * state.pam[chip]))
                 .astype(np.float32))
    del cosmic
    # Pixels hold a little more than the SATUFILE level before charge spills (the
    # reference map marks where the response stops being linear).
    well = raw_to_trimmed(state.saturation[chip], chip) * params.full_well_over_satufile
    charge = det.bleed_saturated(charge, well)
    if cte:
        charge = add_cte_to_chip(charge, chip, exp.expstart_mjd, express=CTE_EXPRESS)
    raw = det.read_out_chip(charge, chip, bias_dn=state.bias[chip], stripes_e=stripes,
                            offsets_dn=offsets, rng=rng_for(seed, "readout", exp.rootname, chip),
                            params=params, dsi=params.dual_slope_integrator, drift_e=drift)
    return raw, truth, {"cosmic_rays": n_cr, "sources_rendered": n_sources}


def simulate_program(out_dir: Path, config: SimulationConfig, *,
                     progress: Callable[[str], None] | None = None) -> SimulationResult:
    """Simulate an ACS/WFC observing program into ``out_dir`` (see module docstring).

    Raises InputError for an invalid configuration or when an output file
    already exists; every file is written under a temporary name and renamed,
    and a failed run removes the files it wrote.
    """
    say = progress or (lambda message: None)
    config = validate_config(config)
    out_dir = Path(out_dir)
    plan = plan_program(config)
    names = _reference_names(plan)
    outputs = _planned_outputs(out_dir, plan, names)
    _prepare_directory(out_dir, outputs)
    writer = _Writer()
    try:
        result = _run(out_dir, plan, names, writer, say)
    except BaseException:
        writer.remove_all()
        raise
    return result


def _run(out_dir: Path, plan: ProgramPlan, names: dict, writer: _Writer,
         say: Callable[[str], None]) -> SimulationResult:
    config = plan.config
    seed = config.seed
    params = det.detector_for_date(plan.visits[0].start_mjd)
    ref_dir = out_dir / CRDS_SUBDIR
    first_date = mjd_to_datetime(plan.visits[0].start_mjd).date()
    say(f"planning {len(plan.exposures())} exposures in {len(plan.visits)} visit(s)")

    catalog = draw_truth_catalog(rng_for(seed, "catalog"), n_sources=catalog_sources(config),
                                 center_ra_deg=plan.catalog_center[0],
                                 center_dec_deg=plan.catalog_center[1],
                                 radius_arcsec=catalog_radius_arcsec(config),
                                 filters=config.filters)
    catalog = draw_space_motion(rng_for(seed, "space-motion"), catalog)
    gaia = draw_gaia_catalog(rng_for(seed, "gaia"), catalog)
    state = _DetectorState(seed, params)

    say("writing reference files")
    writer.fits(idctab_hdul(names["IDCTAB"], date=first_date), ref_dir / names["IDCTAB"])
    writer.fits(d2imfile_hdul(names["D2IMFILE"], seed=seed, date=first_date),
                ref_dir / names["D2IMFILE"])
    for f in config.filters:
        writer.fits(npolfile_hdul(names["NPOLFILE"][f], seed=seed, filter_name=f,
                                  date=first_date), ref_dir / names["NPOLFILE"][f])
    # The pixel-area map (sky collected per pixel, and the flat's geometric part)
    # comes from the first exposure's distortion as stwcs reads it.
    first_visit = plan.visits[0]
    first = first_visit.exposures[0]
    geometry = _exposure_geometry(plan, first_visit, first, names, params, ref_dir)
    for lay in CHIPS:
        state.pam[lay.chip] = geometry.true_wcs[lay.chip].pixel_area_map()

    superbias = {chip: det.superbias(frame, chip, params=params)
                 for chip, frame in state.bias.items()}
    writer.fits(bias_hdul(names["BIASFILE"], superbias, date=first_date),
                ref_dir / names["BIASFILE"])
    writer.fits(saturation_hdul(names["SATUFILE"], state.saturation, date=first_date),
                ref_dir / names["SATUFILE"])
    writer.fits(bpixtab_hdul(names["BPIXTAB"], state.defects, date=first_date),
                ref_dir / names["BPIXTAB"])
    writer.fits(ccdtab_hdul(names["CCDTAB"], date=first_date),
                ref_dir / names["CCDTAB"])
    writer.fits(oscntab_hdul(names["OSCNTAB"], date=first_date), ref_dir / names["OSCNTAB"])
    writer.fits(imphttab_hdul(names["IMPHTTAB"], date=first_date), ref_dir / names["IMPHTTAB"])
    for f in config.filters:
        flats = {lay.chip: state.qe(lay.chip, f) * state.pam[lay.chip] for lay in CHIPS}
        writer.fits(flat_hdul(names["PFLTFILE"][f], flats, filter_name=f, date=first_date),
                    ref_dir / names["PFLTFILE"][f])

    raw_files: list[Path] = []
    truth_files: list[Path] = []
    visits_truth = []
    darks: dict = {}  # the epoch's dark rates (about 67 MB), replaced at the next epoch
    for visit in plan.visits:
        visit_date = mjd_to_datetime(visit.start_mjd).date()
        if visit.cell == plan.visits[0].cell:  # an epoch's first visit
            darks = {lay.chip: state.dark(lay.chip, visit) for lay in CHIPS}
            for keyword, corrected in (("DARKFILE", False), ("DRKCFILE", True)):
                name = names[keyword][visit.epoch]
                writer.fits(dark_hdul(name, darks, date=visit_date, cte_corrected=corrected,
                                      hot_threshold_e_per_s=params.hot_threshold_e_per_s),
                            ref_dir / name)
        exposures_truth = []
        for exp in visit.exposures:
            say(f"visit {visit.number}/{len(plan.visits)}: {exp.rootname} {exp.filter_name}")
            record, raw_path, truth_path = _simulate_exposure(
                out_dir, plan, visit, exp, names, catalog, state, darks, writer, ref_dir)
            exposures_truth.append(record)
            raw_files.append(raw_path)
            if truth_path is not None:
                truth_files.append(truth_path)
        visits_truth.append(visit_record(visit, names, exposures_truth))

    say("writing truth")
    catalog_path = out_dir / "truth.ecsv"
    writer.text(ecsv_text(catalog), catalog_path)
    gaia_path = writer.text(ecsv_text(gaia), out_dir / "gaia.ecsv")
    writer.fits(detector_truth_hdul(state, plan), out_dir / "truth" / "detector.fits")
    truth = truth_document(plan, names, catalog, gaia, state, visits_truth, raw_files,
                           truth_files)
    json_path = writer.text(json.dumps(jsonable(truth), indent=2) + "\n", out_dir / "truth.json")
    return SimulationResult(raw_files=tuple(raw_files), reference_dir=ref_dir,
                            truth_catalog=catalog_path, truth_json=json_path,
                            truth_images=tuple(truth_files), gaia_catalog=gaia_path)


def _tel_kwargs(postarg: tuple[float, float]) -> dict:
    v2, v3 = dither_tel_point(*postarg)
    return {"v2_arcsec": v2, "v3_arcsec": v3}


@dataclass(frozen=True)
class _Geometry:
    """Where an exposure points: attitude, raw primary header and both WCS sets."""

    attitude: np.ndarray
    primary: fits.Header
    vafactor: float
    true_wcs: dict
    header_wcs: dict


def _exposure_geometry(plan: ProgramPlan, visit: VisitPlan, exp: ExposurePlan, names: dict,
                       params: det.DetectorParams, ref_dir: Path) -> _Geometry:
    config = plan.config
    attitude = hst_attitude(ra_deg=plan.target_ra_deg, dec_deg=plan.target_dec_deg,
                            pa_v3_deg=visit.pa_v3_deg, **_tel_kwargs(exp.postarg_arcsec))
    # PA_V3 as the ground system knew it: the visit's roll error included.
    info = RawHeaderInfo(
        rootname=exp.rootname, filter_name=exp.filter_name, expstart_mjd=exp.expstart_mjd,
        exptime_s=exp.exptime_s, darktime_s=exp.darktime_s, target=config.target,
        ra_targ_deg=plan.target_ra_deg, dec_targ_deg=plan.target_dec_deg,
        pa_v3_deg=visit.pa_v3_deg + visit.wcs_error.rotation_deg,
        postarg_arcsec=exp.postarg_arcsec, proposid=plan.proposid,
        linenum=f"{visit.number:02d}.{exp.index + 1:03d}", pattern_points=config.exposures,
        pattern_step=exp.dither_step + 1, shutter=exp.shutter)
    primary = primary_header(info, _reference_set(names, visit, exp), params=params)
    vafactor = velocity_aberration_factor(plan.target_ra_deg, plan.target_dec_deg,
                                          exp.expstart_mjd + 0.5 * exp.exptime_s / 86400.0)
    true_wcs, header_wcs = _exposure_wcs(attitude, primary, visit.wcs_error, vafactor, ref_dir)
    return _Geometry(attitude=attitude, primary=primary, vafactor=vafactor,
                     true_wcs=true_wcs, header_wcs=header_wcs)


def _simulate_exposure(out_dir, plan, visit, exp, names, catalog, state, darks, writer,
                       ref_dir):
    config = plan.config
    seed = config.seed
    params = state.params
    geometry = _exposure_geometry(plan, visit, exp, names, params, ref_dir)
    # Stars where they are at the exposure's mid-time (galaxies do not move).
    epoch_mjd = exp.expstart_mjd + 0.5 * exp.exptime_s / 86400.0
    scene = catalog.copy(copy_data=False)
    scene["ra"], scene["dec"] = positions_at(catalog, epoch_mjd)
    stripes = det.stripe_pattern(rng_for(seed, "stripes", exp.rootname), params=params)
    offset_rng = rng_for(seed, "bias-offset", exp.rootname)
    offsets = {amp: float(offset_rng.normal(0.0, params.bias_offset_rms_dn)) for amp in "ABCD"}
    drifts = {}
    if params.bias_offset_e or params.bias_row_drift_e or params.bias_column_drift_e:
        drift_rng = rng_for(seed, "bias-drift", exp.rootname)
        drifts = {lay.chip: det.bias_drift(drift_rng, params=params) for lay in CHIPS}
    sci, header_cards, chips_truth, truth_images = {}, {}, {}, {}
    trail, trail_truth, trail_masks = None, None, {}
    if exp.rootname in _trailed(plan):
        trail, sky_sigma = _draw_trail(plan, visit, exp, geometry, params)
        trail_truth = {**trail.to_dict(), "sky_sigma_e": sky_sigma, "chips": {},
                       "mask_file": f"truth/{exp.rootname}_trails.fits"}
    for lay in CHIPS:
        true_wcs = geometry.true_wcs[lay.chip]
        head_wcs = geometry.header_wcs[lay.chip]
        trail_e = None
        if trail is not None:
            trail_e, ends = trail_image(trail, true_wcs)
            mask = trail_e > sky_sigma if trail_e is not None else None
            if mask is not None and mask.any():  # a chip the trail only grazes is not crossed
                trail_masks[lay.chip] = mask
                trail_truth["chips"][str(lay.chip)] = {
                    **ends, "mask_pixels": int(np.count_nonzero(mask))}
        raw, truth, info = _simulate_chip(
            chip=lay.chip, exp=exp, visit=visit, wcs=true_wcs, catalog=scene, state=state,
            dark=darks[lay.chip], cte=config.cte, stripes=stripes, offsets=offsets, seed=seed,
            want_truth=config.truth_images, drift=drifts.get(lay.chip), trail_e=trail_e)
        del trail_e
        sci[lay.chip] = raw
        header_cards[lay.chip] = head_wcs.linear_header_cards()
        truth_images[lay.chip] = truth
        header_dict = head_wcs.to_dict()
        chips_truth[str(lay.chip)] = dict(
            info, true_wcs=true_wcs.to_dict(),
            header_wcs={k: header_dict[k] for k in ("crpix_flt", "crval", "cd")})
    hdul = raw_hdul(geometry.primary, sci, header_cards,
                    _aperture_sky(geometry.attitude, visit.wcs_error),
                    vafactor=geometry.vafactor)
    raw_path = writer.fits(hdul, out_dir / f"{exp.rootname}_raw.fits")
    if trail is not None:
        writer.fits(trail_mask_hdul(exp.rootname, trail_masks, sky_sigma_e=sky_sigma,
                                    trail=trail), _trail_mask_path(out_dir, exp.rootname))
    truth_path = None
    if config.truth_images:
        truth_path = writer.fits(truth_image_hdul(exp, truth_images),
                                 out_dir / "truth" / f"{exp.rootname}_truth.fits")
    record = {
        "rootname": exp.rootname,
        "filter": exp.filter_name,
        "expstart_mjd": exp.expstart_mjd,
        "epoch_mjd": epoch_mjd,
        "epoch_jyear": mjd_to_jyear(epoch_mjd),
        "exptime_s": exp.exptime_s,
        "darktime_s": exp.darktime_s,
        "dither_step": exp.dither_step,
        "dither_px": list(exp.dither_px),
        "postarg_arcsec": list(exp.postarg_arcsec),
        "bias_offsets_dn": offsets,
        "vafactor": geometry.vafactor,
        "pa_v3_header_deg": float(geometry.primary["PA_V3"]),
        "chips": chips_truth,
        "cte_model": cte_model_for_date(exp.expstart_mjd).to_dict() if config.cte else None,
        "satellite_trail": trail_truth,
    }
    return record, raw_path, truth_path


def _draw_trail(plan: ProgramPlan, visit: VisitPlan, exp: ExposurePlan, geometry, params):
    """The exposure's trail, about its true field centre (the middle of the two chips'
    centres), and the sky's 1-sigma noise in electrons (the truth mask's threshold)."""
    centres = [geometry.true_wcs[lay.chip].pix2world(CHIP_NX / 2.0 + 0.5, CHIP_NY / 2.0 + 0.5)
               for lay in CHIPS]
    ra = float(np.mean([c[0] for c in centres]))
    dec = float(np.mean([c[1] for c in centres]))
    read_noise = float(np.mean(list(params.read_noise_e.values())))
    sky_sigma = float(np.sqrt(visit.sky_e_per_s[exp.filter_name] * exp.exptime_s
                              + read_noise ** 2))
    trail = draw_trail(rng_for(plan.config.seed, "satellite", exp.rootname), center_ra_deg=ra,
                       center_dec_deg=dec, sky_sigma_e=sky_sigma,
                       full_well_e=params.saturation_mean_e * params.full_well_over_satufile)
    return trail, sky_sigma
