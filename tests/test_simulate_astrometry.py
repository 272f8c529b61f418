"""Stars land where the header WCS, with the camera's distortion applied by stwcs and
corrected by the visit's recorded error, says they do."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from photutils.centroids import centroid_2dg

from hstred.acs import chip_layout
from hstred.distortion import DISTORTION_KEYWORDS, apply_distortion
from hstred.refs import resolve_references
from hstred.simulate.catalog import positions_at
from hstred.simulate.references import CRDS_SUBDIR
from hstred.simulate.wcs import WcsError, perturb_sky, tangent_plane

pytestmark = pytest.mark.slow

_PEAK_FRACTION = 0.22  # upper bound of the ePSF's central-pixel light fraction


def _isolated_unsaturated_stars(cat: Table, filter_name: str, exptime: float) -> Table:
    flux = np.asarray(cat[f"flux_{filter_name}"])
    ok = ((cat["kind"] == "star") & (flux * exptime * _PEAK_FRACTION < 50000.0)
          & (flux > 100.0))
    xi, eta = tangent_plane(cat["ra"], cat["dec"], ra0_deg=float(np.mean(cat["ra"])),
                            dec0_deg=float(np.mean(cat["dec"])))
    keep = []
    for k in np.flatnonzero(ok):
        dist = np.hypot(xi - xi[k], eta - eta[k]) * 3600.0
        near = (dist > 0) & (dist < 3.0) & (flux > 0.005 * flux[k])
        if not near.any():
            keep.append(k)
    return cat[keep]


def _with_distortion(raw_path: Path, out: Path, dest: Path) -> Path:
    """A copy of the raw file, its WCS moved to the trimmed (FLT) frame as calibration
    does, with stwcs's distortion solution from its references.

    stwcs is meant for trimmed files: on a raw file, whose chips differ in LTV2, it
    places WFC1 20 rows off.
    """
    copy = dest / raw_path.name
    shutil.copyfile(raw_path, copy)
    with fits.open(copy, mode="update") as hdul:
        for ext in (1, 4):
            h = hdul[ext].header
            h["CRPIX1"] -= h["LTV1"]
            h["CRPIX2"] -= h["LTV2"]
            h["LTV1"] = h["LTV2"] = 0.0
    (refs,) = resolve_references([raw_path], out, fetch=False)
    apply_distortion(copy, {k: refs.paths[k] for k in DISTORTION_KEYWORDS})
    return copy


def _measure(raw_path: Path, out: Path, cat: Table, filter_name: str, error: dict):
    """(true-corrected offsets, uncorrected offsets) in pixels for each usable star."""
    err = WcsError(**error)
    corrected, uncorrected = [], []
    with tempfile.TemporaryDirectory() as tmp, \
            fits.open(_with_distortion(raw_path, out, Path(tmp))) as raw:
        h0 = raw[0].header
        bias = fits.open(out / CRDS_SUBDIR / h0["BIASFILE"].split("$")[1])
        dark = fits.open(out / CRDS_SUBDIR / h0["DARKFILE"].split("$")[1])
        stars = _isolated_unsaturated_stars(cat, filter_name, h0["EXPTIME"])
        ra_h, dec_h = perturb_sky(np.asarray(stars["ra"]), np.asarray(stars["dec"]), err)
        for ext in (1, 4):
            sci = raw[ext]
            chip = sci.header["CCDCHIP"]
            lay = chip_layout(chip)
            image = sci.data.astype(float) - bias[ext].data
            image[lay.science_rows, lay.science_cols] -= (
                dark[ext].data * h0["DARKTIME"] / 2.0)
            wcs = WCS(sci.header, raw)
            # The WCS is in FLT pixels; raw pixel = FLT pixel + LTV.
            ltv = np.array([lay.ltv1, lay.ltv2], dtype=float)
            # Header WCS with the visit's error undone (1-indexed raw pixels).
            xs, ys = np.array(wcs.all_world2pix(ra_h, dec_h, 1)) + ltv[:, None]
            # Header WCS taken at face value.
            xu, yu = np.array(wcs.all_world2pix(np.asarray(stars["ra"]),
                                                np.asarray(stars["dec"]), 1)) + ltv[:, None]
            for x, y, x_u, y_u in zip(xs, ys, xu, yu, strict=True):
                x0, y0 = x - 1.0, y - 1.0  # 0-indexed array coordinates
                rows, cols = lay.science_rows, lay.science_cols
                if not (cols.start + 20 < x0 < cols.stop - 20 and rows.start + 20 < y0
                        < rows.stop - 20):
                    continue
                ix, iy = int(round(x0)), int(round(y0))
                cut = image[iy - 5:iy + 6, ix - 5:ix + 6]
                ring = image[iy - 12:iy + 13, ix - 12:ix + 13].copy()
                ring[7:18, 7:18] = np.nan
                cx, cy = centroid_2dg(cut - np.nanmedian(ring))
                mx, my = ix - 5 + cx, iy - 5 + cy
                corrected.append(np.hypot(mx - x0, my - y0))
                uncorrected.append(np.hypot(mx - (x_u - 1), my - (y_u - 1)))
    return np.array(corrected), np.array(uncorrected)


def _check_visit(out: Path, raw_path: Path, visit: dict, filter_name: str):
    cat = Table.read(out / "truth.ecsv")
    # Stars as the exposure shows them: at its mid-time.
    epoch = next(e["epoch_mjd"] for e in visit["exposures"] if raw_path.name.startswith(
        e["rootname"]))
    cat["ra"], cat["dec"] = positions_at(cat, epoch)
    corrected, uncorrected = _measure(raw_path, out, cat, filter_name, visit["wcs_error"])
    assert corrected.size >= 3
    # A cosmic ray on a star may spoil one measurement; the rest sit within 0.1 px.
    assert np.mean(corrected <= 0.1) >= 0.8, corrected
    assert np.median(corrected) < 0.05, corrected
    shift_px = np.hypot(visit["wcs_error"]["dx_arcsec"], visit["wcs_error"]["dy_arcsec"]) / 0.05
    assert np.median(uncorrected) > 0.5 * shift_px  # the header really is wrong


def test_star_centroids_follow_the_corrected_header_wcs(sim_program_small):
    out, _, result = sim_program_small
    truth = json.loads(result.truth_json.read_text())
    _check_visit(out, result.raw_files[0], truth["visits"][0], "F606W")


def test_two_visits_differ_in_date_roll_pointing_and_error(sim_program_two_visits):
    out, config, result = sim_program_two_visits
    truth = json.loads(result.truth_json.read_text())
    v1, v2 = truth["visits"]
    assert 10 <= v2["start_mjd"] - v1["start_mjd"] <= 41
    dpa = (v2["pa_v3_deg"] - v1["pa_v3_deg"] + 180) % 360 - 180
    assert 3.0 <= abs(dpa) <= 8.0
    assert v1["wcs_error"] != v2["wcs_error"]
    assert v1["darkfile"] != v2["darkfile"]
    headers = [fits.getheader(p, 0) for p in result.raw_files]
    assert [h["ROOTNAME"][:6] for h in headers] == [v1["visit_id"], v2["visit_id"]]
    assert headers[0]["DATE-OBS"] != headers[1]["DATE-OBS"]
    assert headers[0]["DARKFILE"] != headers[1]["DARKFILE"]
    assert (headers[0]["FILTER1"], headers[0]["FILTER2"]) == ("CLEAR1L", "F814W")
    # The visits overlap heavily: chip centres within ~40" of each other.
    centres = []
    for path in result.raw_files:
        w = WCS(fits.getheader(path, ("SCI", 2)))
        centres.append(w.all_pix2world([[2072.0, 1044.0]], 1)[0])
    sep = np.hypot((centres[0][0] - centres[1][0]) * np.cos(np.radians(centres[0][1])),
                   centres[0][1] - centres[1][1]) * 3600
    assert 2.0 < sep < 45.0
    for visit, path in zip(truth["visits"], result.raw_files, strict=True):
        _check_visit(out, path, visit, "F814W")
