"""The camera's distortion: simulated references in the archive's formats, read by stwcs.

The simulator renders pixels through the WCS stwcs derives from its IDCTAB, NPOLFILE
and D2IMFILE; here stwcs is applied to a calibrated exposure, as the pipeline does,
and star positions fitted in the noiseless truth image must agree with it everywhere
on both chips.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.optimize import least_squares
from scratch import fixture_dir

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.ccd import calibrate_exposure
from hstred.distortion import apply_distortion, has_distortion_solution
from hstred.refs import resolve_references
from hstred.simulate import SimulationConfig, simulate_program
from hstred.simulate.catalog import positions_at
from hstred.simulate.distortion import idc_model
from hstred.simulate.psf import psf_model, render_point_source
from hstred.simulate.references import CRDS_SUBDIR
from hstred.simulate.wcs import WcsError, perturb_sky

pytestmark = pytest.mark.slow

#: Enough sources that isolated stars reach every corner of both chips.
DENSE_CONFIG = SimulationConfig(visits=1, exposures=1, filters=("F814W",), seed=31,
                                cte=False, truth_images=True, sources=2500)
_CUT = 7  # half size of the fitted cutout, pixels


def test_idc_polynomials_fit_the_siaf_apertures_exactly():
    for chip, m in idc_model().items():
        assert m.max_fit_residual_px < 1e-6, chip
        # The linear terms of a real WFC IDCTAB: ~0.049"/px scale and ~0.002" skew terms.
        assert 0.048 < m.cx[1, 1] < 0.051 and 0.048 < m.cy[1, 0] < 0.051
        assert 0.001 < m.cx[1, 0] < 0.003 and 0.001 < m.cy[1, 1] < 0.003
        assert np.any(np.abs(m.cx[2:]) > 1e-8)  # a non-linear part


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A 2500-source exposure, calibrated (no CTE), and its working copy after stwcs."""
    with fixture_dir(tmp_path_factory, "sim_dense") as out:
        result = simulate_program(out, DENSE_CONFIG)
        raw = result.raw_files[0]
        (refset,) = resolve_references([raw], out, fetch=False)
        flt = calibrate_exposure(raw, dict(refset.paths), out / "calibrated")
        copy = out / "work" / flt.name
        copy.parent.mkdir()
        shutil.copyfile(flt, copy)
        info = apply_distortion(copy, {k: refset.paths[k] for k in ("IDCTAB", "NPOLFILE",
                                                                      "D2IMFILE")})
        yield {"dir": out, "result": result, "flt": flt, "copy": copy, "info": info,
               "refs": refset}


def _chip_data(dense, chip: int):
    out = dense["dir"]
    truth = json.loads(dense["result"].truth_json.read_text())
    visit = truth["visits"][0]
    exp = visit["exposures"][0]
    with fits.open(out / "truth" / f"{exp['rootname']}_truth.fits") as t, \
            fits.open(out / "truth" / "detector.fits") as det:
        image = next(h.data for h in t[1:] if h.header["CCDCHIP"] == chip).astype(float)
        pam = next(h.data for h in det[1:]
                   if h.name == "PAM" and h.header["CCDCHIP"] == chip).astype(float)
    # Photons collected per pixel from the sources alone: the truth image is divided
    # by the pixel area (as a flat-fielded FLT is) and holds the sky.
    sky = visit["sky_e_per_s"][exp["filter"]] * exp["exptime_s"]
    return (image - sky) * pam, visit, exp


def _fit_star(image, psf, x0: float, y0: float, flux: float):
    ix, iy = int(round(x0)), int(round(y0))
    cut = image[iy - _CUT:iy + _CUT + 1, ix - _CUT:ix + _CUT + 1]
    size = 2 * _CUT + 1

    def residual(p):
        model = np.zeros((size, size))
        stamp, sx, sy = render_point_source(psf, x0=p[0], y0=p[1], flux=p[2])
        ox, oy = sx - (ix - _CUT), sy - (iy - _CUT)
        ys, xs = max(0, -oy), max(0, -ox)
        ye, xe = min(stamp.shape[0], size - oy), min(stamp.shape[1], size - ox)
        model[oy + ys:oy + ye, ox + xs:ox + xe] += stamp[ys:ye, xs:xe]
        return (model - cut).ravel()

    fit = least_squares(residual, [x0, y0, flux], x_scale=[0.1, 0.1, 0.01 * flux])
    return fit.x[0], fit.x[1]


def test_stars_land_where_stwcs_puts_them_on_both_chips_corners_included(dense):
    """Positions fitted in the truth image vs stwcs applied to the calibrated exposure."""
    cat = Table.read(dense["result"].truth_catalog)
    flux = np.asarray(cat["flux_F814W"])
    stars = np.asarray(cat["kind"]) == "star"
    psf = psf_model("F814W")
    with fits.open(dense["copy"]) as hdul:
        wcs = {hdul[i].header["CCDCHIP"]: WCS(hdul[i].header, hdul)
               for i in range(1, len(hdul)) if hdul[i].name == "SCI"}
    for chip in (1, 2):
        image, visit, exp = _chip_data(dense, chip)
        # The header (and so stwcs's) WCS carries the visit's pointing error.
        ra, dec = perturb_sky(*positions_at(cat, exp["epoch_mjd"]),
                              WcsError(**visit["wcs_error"]))
        x, y = wcs[chip].all_world2pix(ra, dec, 0, tolerance=1e-9, maxiter=100, quiet=True)
        offsets, corners = [], set()
        for k in np.flatnonzero(stars):
            if not (_CUT + 2 < x[k] < CHIP_NX - _CUT - 3 and _CUT + 2 < y[k] < CHIP_NY - _CUT - 3):
                continue
            near = np.hypot(x - x[k], y - y[k])
            if np.any((near > 0) & (near < 30) & (flux > 1e-3 * flux[k])):
                continue  # only isolated stars: neighbours' wings would bias the fit
            fx, fy = _fit_star(image, psf, x[k], y[k], flux[k] * exp["exptime_s"])
            offsets.append(np.hypot(fx - x[k], fy - y[k]))
            if min(x[k], CHIP_NX - x[k]) < 600 and min(y[k], CHIP_NY - y[k]) < 400:
                corners.add((x[k] < CHIP_NX / 2, y[k] < CHIP_NY / 2))
        offsets = np.array(offsets)
        print(f"\nchip {chip}: {offsets.size} stars, largest offset {offsets.max():.4f} px, "
              f"median {np.median(offsets):.4f} px")
        assert offsets.size >= 30, chip
        assert len(corners) == 4, (chip, corners)  # stars within 600 x 400 px of each corner
        assert offsets.max() < 0.01, (chip, offsets.max())


def test_linear_header_wcs_is_off_by_the_distortion(dense):
    """The raw's linear WCS misplaces the corners by the distortion's size (tens of px)."""
    with fits.open(dense["flt"]) as flt, fits.open(dense["copy"]) as full:
        assert not has_distortion_solution(flt) and has_distortion_solution(full)
        for ext in (1, 4):
            linear = WCS(flt[ext].header)
            distorted = WCS(full[ext].header, full)
            xg, yg = np.meshgrid(np.linspace(0, CHIP_NX - 1, 9), np.linspace(0, CHIP_NY - 1, 5))
            ra, dec = distorted.all_pix2world(xg.ravel(), yg.ravel(), 0)
            lx, ly = linear.all_world2pix(ra, dec, 0)
            worst = np.max(np.hypot(lx - xg.ravel(), ly - yg.ravel()))
            assert 50.0 < worst < 90.0, worst


def test_stwcs_reads_the_raw_file_and_references_as_archive_files(dense, tmp_path):
    raw = tmp_path / dense["result"].raw_files[0].name
    shutil.copyfile(dense["result"].raw_files[0], raw)
    refs = dense["refs"].paths
    info = apply_distortion(raw, {k: refs[k] for k in ("IDCTAB", "NPOLFILE", "D2IMFILE")})
    assert info.wcsname == "IDC_" + refs["IDCTAB"].name.split("_")[0]
    with fits.open(raw) as hdul:
        assert [h.name for h in hdul].count("WCSDVARR") == 4
        assert [h.name for h in hdul].count("D2IMARR") == 2
        for ext in (1, 4):
            h = hdul[ext].header
            assert h["CTYPE1"] == "RA---TAN-SIP" and h["A_ORDER"] == 4
            assert "TDD_CTB" in h and h["IDCSCALE"] == 0.05
        # The OPUS WCS is kept as the alternate 'O', as stwcs does with archive raws.
        assert hdul[1].header["WCSNAMEO"] == "OPUS"
    # stwcs is meant for trimmed files: on a raw file, whose chips have different LTV2,
    # it places WFC1 20 rows (1") off. The pipeline applies it to calibrated files only.


def test_reference_files_have_the_archive_layout(dense):
    ref_dir = dense["dir"] / CRDS_SUBDIR
    h0 = fits.getheader(dense["result"].raw_files[0], 0)
    name = {k: h0[k].split("$")[1] for k in ("IDCTAB", "NPOLFILE", "D2IMFILE")}
    with fits.open(ref_dir / name["IDCTAB"]) as idc:
        p = idc[0].header
        assert p["NORDER"] == 4 and p["DETECTOR"] == "WFC" and p["FILETYPE"].startswith("DIST")
        assert {"TDD_DATE", "TDD_CTB1", "TDD_CTB2", "TDD_CXB1", "TDD_CXB2"} <= set(p)
        t = idc[1].data
        for col in ("DETCHIP", "DIRECTION", "FILTER1", "FILTER2", "XSIZE", "YSIZE", "XREF",
                    "YREF", "V2REF", "V3REF", "SCALE", "CX10", "CX11", "CY44"):
            assert col in t.names, col
        rows = t[(t["FILTER2"] == "F814W") & (t["DIRECTION"] == "FORWARD")]
        assert sorted(rows["DETCHIP"]) == [1, 2]
    with fits.open(ref_dir / name["NPOLFILE"]) as npl:
        exts = [(h.name, h.header["CCDCHIP"], h.data.shape) for h in npl[1:]]
        assert sorted(exts) == [("DX", 1, (33, 65)), ("DX", 2, (33, 65)), ("DY", 1, (33, 65)),
                                ("DY", 2, (33, 65))]
        dx = npl[1].data
        assert 0.02 < np.std(dx) < 0.3  # residual distortion of about a tenth of a pixel
    with fits.open(ref_dir / name["D2IMFILE"]) as d2i:
        assert sorted((h.name, h.header["CCDCHIP"], h.data.shape) for h in d2i[1:]) == [
            ("DX", 1, (1, 4096)), ("DX", 2, (1, 4096))]
