"""Satellite trails in the simulator: which exposures, the line on the sky, profile, truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scratch import fixture_dir

from hstred.acs import CHIP_NX, CHIP_NY, raw_to_trimmed
from hstred.simulate import SimulationConfig, simulate_program
from hstred.simulate.distortion import DistortedWcs, stwcs_chip_wcs
from hstred.simulate.rng import rng_for
from hstred.simulate.trails import (
    MAX_FWHM_PX,
    MIN_FWHM_PX,
    Trail,
    draw_trail,
    trail_image,
    trailed_exposures,
)
from hstred.simulate.wcs import tangent_plane


def test_the_fraction_of_exposures_crossed():
    roots = [f"jd71{i:02d}a0q" for i in range(8)]
    chosen = trailed_exposures(rng_for(1, "satellites"), roots, 0.5)
    assert len(chosen) == 4 and chosen <= set(roots)
    assert chosen == trailed_exposures(rng_for(1, "satellites"), roots, 0.5)  # seeded
    assert trailed_exposures(rng_for(1, "satellites"), roots, 0.0) == set()
    assert trailed_exposures(rng_for(1, "satellites"), roots, 1.0) == set(roots)


def test_trail_parameters_span_the_documented_ranges():
    rng = np.random.default_rng(7)
    trails = [draw_trail(rng, center_ra_deg=150.0, center_dec_deg=2.0, sky_sigma_e=10.0,
                         full_well_e=80000.0) for _ in range(400)]
    fwhm = np.array([t.fwhm_px for t in trails])
    peak = np.array([t.peak_e for t in trails])
    assert MIN_FWHM_PX <= fwhm.min() < 4.0 and 14.0 < fwhm.max() <= MAX_FWHM_PX
    assert peak.min() >= 10.0 and (peak < 30.0).any()  # barely above the sky noise
    assert (peak > 80000.0).mean() > 0.05  # and saturating (log-uniform: 11 %)
    for t in trails:  # every trail passes within 120" of the centre
        xi, eta = tangent_plane(t.ra_deg, t.dec_deg, ra0_deg=150.0, dec0_deg=2.0)
        assert math.hypot(xi, eta) * 3600.0 <= 120.0 + 1e-6


def _linear_chip_wcs(rotation_deg: float) -> DistortedWcs:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [CHIP_NX / 2.0, CHIP_NY / 2.0]
    scale = 0.05 / 3600.0
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    w.wcs.cd = [[-scale * c, scale * s], [scale * s, scale * c]]
    return DistortedWcs(w)


@pytest.mark.parametrize("pa_deg", [20.0, 75.0, 130.0])
def test_profile_across_the_trail(pa_deg):
    """Peak on the centre line, Gaussian cross-profile of the drawn FWHM."""
    wcs = _linear_chip_wcs(rotation_deg=0.0)
    trail = Trail(ra_deg=150.0, dec_deg=2.0, pa_deg=pa_deg, fwhm_px=8.0, peak_e=1000.0)
    image, ends = trail_image(trail, wcs)
    assert image is not None
    # on this north-up chip the line runs at pa_deg from +y toward -x (east is left)
    direction = np.array([-math.sin(math.radians(pa_deg)), math.cos(math.radians(pa_deg))])
    assert abs(abs(np.dot(direction, [ends["x1"] - ends["x0"], ends["y1"] - ends["y0"]]))
               / math.hypot(ends["x1"] - ends["x0"], ends["y1"] - ends["y0"]) - 1.0) < 1e-4
    # flux across the line, per unit length along it: peak * sigma * sqrt(2 pi)
    sigma = 8.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    if abs(direction[0]) > abs(direction[1]):  # runs along x: sum each column
        per_cut = image[:, CHIP_NX // 2 - 200:CHIP_NX // 2 + 200].sum(axis=0)
        cos = abs(direction[0])
    else:
        per_cut = image[CHIP_NY // 2 - 200:CHIP_NY // 2 + 200, :].sum(axis=1)
        cos = abs(direction[1])
    np.testing.assert_allclose(per_cut * cos, 1000.0 * sigma * math.sqrt(2 * math.pi),
                               rtol=1e-3)
    assert 0.97 * 1000.0 < image.max() <= 1000.0


def test_a_trail_missing_the_chip_adds_nothing():
    wcs = _linear_chip_wcs(rotation_deg=0.0)
    far = Trail(ra_deg=150.0, dec_deg=2.2, pa_deg=90.0, fwhm_px=5.0, peak_e=100.0)
    assert trail_image(far, wcs) == (None, None)


@pytest.fixture(scope="module")
def trailed_program(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "sim_trails") as out:
        config = SimulationConfig(visits=1, exposures=2, filters=("F606W",), seed=3, cte=False,
                                  sources=60, satellites=0.5)
        result = simulate_program(out, config)
        yield out, result


def test_simulated_trail_truth_and_pixels(trailed_program):
    out, result = trailed_program
    truth = json.loads(result.truth_json.read_text())
    exposures = [e for v in truth["visits"] for e in v["exposures"]]
    trailed = [e for e in exposures if e["satellite_trail"] is not None]
    assert len(trailed) == 1 and len(exposures) == 2
    clean = next(e for e in exposures if e["satellite_trail"] is None)
    assert not (out / "truth" / f"{clean['rootname']}_trails.fits").exists()
    exp = trailed[0]
    trail = exp["satellite_trail"]
    assert MIN_FWHM_PX <= trail["fwhm_px"] <= MAX_FWHM_PX and trail["chips"]
    raw_path = out / f"{exp['rootname']}_raw.fits"
    with fits.open(out / trail["mask_file"]) as masks, fits.open(raw_path) as raw:
        primary = raw[0].header
        headers = {raw["SCI", v].header["CCDCHIP"]: raw["SCI", v].header for v in (1, 2)}
        wcs = stwcs_chip_wcs(primary, headers, out / "crds" / "references" / "hst" / "acs")
        for chip, info in trail["chips"].items():
            extver = 1 if chip == "2" else 2
            mask = masks["TRAIL", extver].data.astype(bool)
            assert masks["TRAIL", extver].header["CCDCHIP"] == int(chip)
            assert np.count_nonzero(mask) == info["mask_pixels"] > 0
            # the trail's charge is in the raw pixels
            sci = raw_to_trimmed(raw["SCI", extver].data.astype(np.float64), int(chip))
            inside = np.median(sci[mask])
            outside = np.median(sci[~mask][::97])
            assert inside - outside > 0.4 * trail["sky_sigma_e"] / 2.0  # gain 2 e-/DN
            # straight on the sky: the ridge lies on one great circle, as stwcs maps it
            ys, xs = np.nonzero(mask)
            along_x = abs(info["x1"] - info["x0"]) >= abs(info["y1"] - info["y0"])
            key = xs if along_x else ys
            cols = np.unique(key)[::64]
            ridge = np.array([[c, np.mean((ys if along_x else xs)[key == c])] for c in cols])
            if not along_x:
                ridge = ridge[:, ::-1]
            edge = 60  # the widest, brightest masks are cut by the chip's edges nearer
            inner = ((ridge[:, 0] > edge) & (ridge[:, 0] < CHIP_NX - edge)
                     & (ridge[:, 1] > edge) & (ridge[:, 1] < CHIP_NY - edge))
            ridge = ridge[inner]
            if len(ridge) < 4:
                continue
            ra, dec = wcs[int(chip)].pix2world(ridge[:, 0] + 1.0, ridge[:, 1] + 1.0)
            vec = np.column_stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                                   np.cos(np.radians(dec)) * np.sin(np.radians(ra)),
                                   np.sin(np.radians(dec))])
            normal = np.linalg.svd(vec)[2][-1]  # the plane through the origin
            off_arcsec = np.degrees(np.abs(vec @ normal)) * 3600.0
            assert off_arcsec.max() < 0.05, off_arcsec.max()  # within 1 px of one circle
