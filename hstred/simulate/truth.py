"""The truth written beside a simulated program (see :mod:`hstred.simulate.program`).

``truth/detector.fits`` (per chip: BADPIX, PAM, and per visit HOTPIX), the
optional per-exposure truth images, ``truth.ecsv`` and the ``truth.json``
document whose schema the program module describes.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from hstred import __version__
from hstred.acs import CHIPS
from hstred.simulate import detector as det
from hstred.simulate.catalog import REF_EPOCH_JYEAR
from hstred.simulate.plan import ExposurePlan, ProgramPlan, VisitPlan, catalog_radius_arcsec
from hstred.simulate.rawfile import mjd_to_datetime

__all__ = [
    "CTE_EXPRESS",
    "detector_truth_hdul",
    "truth_image_hdul",
    "visit_record",
    "ecsv_text",
    "truth_document",
    "jsonable",
]

CTE_EXPRESS = 5


def jsonable(value):
    """Plain JSON types (numpy scalars and arrays converted, keys as text)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


def detector_truth_hdul(state, plan: ProgramPlan) -> fits.HDUList:
    """truth/detector.fits from the program's detector state (defects, PAM, hot masks)."""
    hdus: list = [fits.PrimaryHDU()]
    hdus[0].header["HOTTHRSH"] = (state.params.hot_threshold_e_per_s,
                                  "HOTPIX: dark rate >= this (e-/s)")
    hdus[0].header["BADDQ"] = (det.BAD_PIXEL_DQ, "DQ value of BADPIX pixels in BPIXTAB")
    for lay in CHIPS:
        hdu = fits.ImageHDU(det.defect_mask(state.defects, lay.chip), name="BADPIX")
        hdu.header["EXTVER"] = lay.imset
        hdu.header["CCDCHIP"] = lay.chip
        hdus.append(hdu)
    for lay in CHIPS:
        hdu = fits.ImageHDU(state.pam[lay.chip].astype(np.float32), name="PAM")
        hdu.header["EXTVER"] = lay.imset
        hdu.header["CCDCHIP"] = lay.chip
        hdu.header["BUNIT"] = ("", "pixel solid angle / (0.05 arcsec)^2")
        hdus.append(hdu)
    for epoch in sorted({visit.epoch for visit in plan.visits}):
        for lay in CHIPS:
            hdu = fits.ImageHDU(state.hot[(lay.chip, epoch)], name="HOTPIX")
            hdu.header["EXTVER"] = (2 * (epoch - 1) + lay.imset, "2 x (epoch - 1) + imset")
            hdu.header["EPOCH"] = (epoch, "visit, or a mosaic's epoch (one dark)")
            hdu.header["CCDCHIP"] = lay.chip
            hdus.append(hdu)
    return fits.HDUList(hdus)


def truth_image_hdul(exp: ExposurePlan, images: dict) -> fits.HDUList:
    """Per-exposure noiseless FLT-like truth (EXTNAME TRUTH, EXTVER = imset) and the
    cosmic rays' charge in the same units (COSMIC); ``images``: chip -> (truth, cosmic)."""
    prim = fits.PrimaryHDU()
    prim.header["ROOTNAME"] = exp.rootname
    prim.header["FILTER"] = exp.filter_name
    prim.header["EXPTIME"] = exp.exptime_s
    prim.header["COMMENT"] = ("TRUTH: noiseless (sky + sources) x EXPTIME / pixel area in "
                              "e-: an ideally calibrated FLT before CTE, dark, CRs, flat, bias")
    prim.header["COMMENT"] = ("COSMIC: the cosmic rays' charge / flat in e-: what they add to "
                              "an ideally calibrated FLT (before CTE)")
    hdus: list = [prim]
    for index, name in enumerate(("TRUTH", "COSMIC")):
        for lay in CHIPS:
            hdu = fits.ImageHDU(images[lay.chip][index], name=name)
            hdu.header["EXTVER"] = lay.imset
            hdu.header["CCDCHIP"] = lay.chip
            hdu.header["BUNIT"] = "ELECTRONS"
            hdus.append(hdu)
    return fits.HDUList(hdus)


def visit_record(visit: VisitPlan, names: dict, exposures: list) -> dict:
    """The truth.json entry of one visit."""
    return {
        "visit": visit.number,
        "visit_id": visit.visit_id,
        "start_mjd": visit.start_mjd,
        "date_obs": mjd_to_datetime(visit.start_mjd).strftime("%Y-%m-%d"),
        "pa_v3_deg": visit.pa_v3_deg,
        "pointing_offset_arcsec": list(visit.offset_arcsec),
        "pointing_ra_deg": visit.pointing[0],
        "pointing_dec_deg": visit.pointing[1],
        "wcs_error": visit.wcs_error.to_dict(),
        "sky_e_per_s": visit.sky_e_per_s,
        "epoch": visit.epoch,
        "mosaic_cell": list(visit.cell),
        "darkfile": names["DARKFILE"][visit.epoch],
        "drkcfile": names["DRKCFILE"][visit.epoch],
        "exposures": exposures,
    }


def ecsv_text(catalog) -> str:
    """The catalog as ECSV text (deterministic: no timestamps)."""
    buffer = io.StringIO()
    catalog.write(buffer, format="ascii.ecsv")
    return buffer.getvalue()


def truth_document(plan, names, catalog, gaia, state, visits, raw_files, truth_files) -> dict:
    """The whole truth.json document (schema in :mod:`hstred.simulate.program`)."""
    config = plan.config
    return {
        "schema": "hstred-simulation-truth/1",
        "hstred_version": __version__,
        "seed": config.seed,
        "config": config.to_dict(),
        "target": {"name": config.target, "ra_deg": plan.target_ra_deg,
                   "dec_deg": plan.target_dec_deg},
        "catalog": {"file": "truth.ecsv", "n_sources": len(catalog),
                    "n_stars": int(np.sum(np.asarray(catalog["kind"]) == "star")),
                    "center_ra_deg": plan.catalog_center[0],
                    "center_dec_deg": plan.catalog_center[1],
                    "radius_arcsec": catalog_radius_arcsec(config),
                    "ref_epoch_jyear": REF_EPOCH_JYEAR,
                    "epoch_convention": catalog.meta["epoch_convention"]},
        "gaia": {"file": "gaia.ecsv", "n_stars": len(gaia), "g_limit": gaia.meta["g_limit"],
                 "ref_epoch_jyear": REF_EPOCH_JYEAR,
                 "errors": "ra/dec at ref_epoch, pmra/pmdec and parallax scattered about the "
                           "truth by ra_error/dec_error, pmra_error/pmdec_error and "
                           "parallax_error"},
        "wcs_error_convention": (
            "header sky = R(rotation_deg) (xi, eta) + (dx_arcsec, dy_arcsec) in the tangent "
            "plane at (center_ra_deg, center_dec_deg), xi east and eta north in arcsec, "
            "R increasing position angles (north through east) by rotation_deg; "
            "same for all exposures and filters of a visit"),
        "pixel_area_convention": (
            "charge = photons x QE with sky photons proportional to the pixel area; "
            "PFLTFILE = QE x pixel area / (0.05 arcsec)^2, so calibrated FLTs are flat in sky"),
        "pixel_convention": "wcs crpix_flt is 1-indexed in trimmed (FLT) pixels; "
                            "raw CRPIX = crpix_flt + (LTV1, LTV2)",
        "visits": visits,
        "cte": {"enabled": config.cte, "express": CTE_EXPRESS,
                "model": "arCTIc HST/ACS (Massey et al. 2014), parallel CTE per quadrant"},
        "detector": state.params.to_dict(),
        "defects": [d.to_dict() for d in state.defects],
        "references": {key: value for key, value in names.items()},
        "files": {"raw": [p.name for p in raw_files],
                  "truth_images": [p.name for p in truth_files],
                  "detector": "truth/detector.fits"},
    }
