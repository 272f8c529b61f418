"""Satellite trails: found, masked before drizzling, gone from the products (hstred.satellites).

A program in which half the exposures carry a trail (the simulator's ``--satellites``),
calibrated without CTE to keep it short, against the truth masks the simulator wrote.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_com, centroid_sources
from photutils.detection import find_peaks
from scratch import fixture_dir
from stwcs.wcsutil import HSTWCS

from hstred.calibrate import CalibrateConfig
from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.errors import InputError
from hstred.pipeline import PipelineConfig, run_pipeline
from hstred.satellites import TRAIL_DQ, mask_exposure, search_exposure
from hstred.simulate import SimulationConfig, simulate_program

CONFIG = SimulationConfig(visits=2, exposures=2, filters=("F606W",), seed=2, cte=False,
                          satellites=0.5)


def _simulate_and_calibrate(d, config):
    simulate_program(d, config)
    result = run_pipeline(d, None, PipelineConfig(calibrate=CalibrateConfig(cte="none")),
                          command="calibrate")
    return sorted(result.calibrated)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "satellites") as d:
        calibrated = _simulate_and_calibrate(d, CONFIG)
        truth = json.loads((d / "truth.json").read_text())
        trails = {e["rootname"]: e.get("satellite_trail") for v in truth["visits"]
                  for e in v["exposures"]}
        yield {"dir": d, "calibrated": calibrated, "trails": trails}


def _truth_masks(program, root):
    trail = program["trails"][root]
    masks = {}
    if trail:
        with fits.open(program["dir"] / trail["mask_file"]) as hdul:
            masks = {h.header["EXTVER"]: h.data.astype(bool) for h in hdul if h.name == "TRAIL"}
    return masks


def test_half_the_exposures_carry_a_trail(program):
    crossed = [r for r, t in program["trails"].items() if t]
    assert len(crossed) == 2 and len(program["trails"]) == 4


def test_trails_found_and_trail_free_exposures_left_alone(program):
    """>= 90 % of the injected trail pixels above the sky's 1 sigma flagged; <= 0.2 % of the
    pixels of a trail-free exposure flagged (its bright stars' diffraction spikes and bleed
    columns are not trails; each chip is searched alone, so the gap between them is never
    in an image)."""
    truth_px = hit_px = 0
    for path in program["calibrated"]:
        root = path.name[:9]
        search, masks = search_exposure(path)
        truth = _truth_masks(program, root)
        if not program["trails"][root]:
            assert search.trails == () and search.masked_fraction <= 0.002, search
            continue
        if sum(int(t.sum()) for t in truth.values()) > 5000:  # more than a corner clipped
            assert search.trails, f"{root}: trail not found"
        for extver, mask in masks.items():
            t = truth.get(extver, np.zeros_like(mask))
            truth_px += int(t.sum())
            hit_px += int((mask & t).sum())
            # the mask follows the trail: what it flags outside the truth stays near it
            assert (mask & ~t).sum() <= 3 * max(t.sum(), 20000), (root, extver)
        for trail in search.trails:
            assert trail.persistence >= 0.5 and trail.masked_pixels > 0
            assert trail.snr is None or trail.snr >= 5.0
    assert truth_px > 50000
    assert hit_px / truth_px >= 0.90, (hit_px, truth_px)


def test_mask_sets_the_trail_bit_in_place(program, tmp_path):
    root = next(r for r, t in program["trails"].items() if t)
    src = next(p for p in program["calibrated"] if p.name.startswith(root))
    copy = tmp_path / src.name
    copy.write_bytes(src.read_bytes())
    search = mask_exposure(copy)
    with fits.open(copy) as after, fits.open(src) as before:
        for extver in (1, 2):
            flagged = (after["DQ", extver].data & TRAIL_DQ) != 0
            assert flagged.sum() == sum(t.masked_pixels for t in search.trails
                                        if t.extver == extver)
            # nothing else changed
            assert np.array_equal(after["DQ", extver].data & ~TRAIL_DQ,
                                  before["DQ", extver].data)
            assert np.array_equal(after["SCI", extver].data, before["SCI", extver].data)


def test_a_subarray_is_not_searched_and_a_warning_says_so(program):
    """acstools needs whole chips: an exposure that is not full frame is left as it is."""
    from hstred.drizzle.plan import read_exposure
    from hstred.drizzle.stage import _mask_trails
    from hstred.execution import LocalBackend

    src = program["calibrated"][0]
    exposure = replace(read_exposure(src), full_frame=False)
    plan = type("Plan", (), {"exposures": (exposure,)})()
    messages = []
    (search,) = _mask_trails(plan, {exposure.rootname: src}, LocalBackend(workers=1),
                             lambda *a: None, messages)
    assert not search.searched and search.trails == ()
    assert len(messages) == 1 and exposure.rootname in messages[0] and "full-frame" in messages[0]
    with fits.open(src) as hdul:
        assert hdul[0].header["SUBARRAY"] is False
    assert read_exposure(src).full_frame


def test_options_checked():
    with pytest.raises(InputError, match="--satellites"):
        DrizzleConfig(satellites="maybe")
    with pytest.raises(InputError, match="16384"):
        DrizzleConfig(good_bits=336 + TRAIL_DQ)


@pytest.fixture(scope="module")
def products(program, tmp_path_factory):
    """The trailed program drizzled with its trails masked, and the same program simulated
    without the satellites (every pixel off the trails the same), drizzled alike."""
    with fixture_dir(tmp_path_factory, "no_satellites") as twin:
        runs = {"mask": (program["dir"], program["calibrated"]),
                "twin": (twin, _simulate_and_calibrate(twin, replace(CONFIG, satellites=0.0)))}
        out = {}
        for name, (d, calibrated) in runs.items():
            # (the RMS image is not about trails: tests/test_drizzle_simulated.py)
            result = run_drizzle(d, name.upper(), DrizzleConfig(rms=False), inputs=calibrated,
                                 work_dir=d / f"work_{name}")
            with fits.open(result.product("F606W").sci) as hdul:
                out[name] = (np.asarray(hdul[0].data, dtype=float), WCS(hdul[0].header),
                             result)
        yield out


def _trail_lines(program, wcs):
    """Each injected trail's centre line in the product's pixels: (root, peak/sigma, x, y),
    through the aligned WCS of its exposure's working copy."""
    d = program["dir"]
    lines = []
    for root, trail in program["trails"].items():
        if not trail:
            continue
        copy = next((d / "work_mask" / "exposures").glob(f"{root}_*.fits"))
        with fits.open(copy) as hdul:
            for chip, ends in trail["chips"].items():
                extver = 1 if chip == "2" else 2
                n = int(max(abs(ends["x1"] - ends["x0"]), abs(ends["y1"] - ends["y0"]))) // 2
                if n < 50:
                    continue
                x = np.linspace(ends["x0"], ends["x1"], n)
                y = np.linspace(ends["y0"], ends["y1"], n)
                ra, dec = HSTWCS(hdul, ext=("SCI", extver)).all_pix2world(x, y, 0)
                px, py = wcs.all_world2pix(ra, dec, 0)
                lines.append((root, trail["peak_e"] / trail["sky_sigma_e"], px, py))
    return lines


def _sample(image, x, y):
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    ok = (xi >= 0) & (yi >= 0) & (xi < image.shape[1]) & (yi < image.shape[0])
    v = image[yi[ok], xi[ok]]
    return v[np.isfinite(v)]


def test_no_trail_left_in_the_product(program, products):
    """Along each injected trail the masked product's mean is within 1 sigma of the local
    sky (measured on parallel lines 1.5" to either side)."""
    sci, wcs, _ = products["mask"]
    lines = _trail_lines(program, wcs)
    assert lines
    for root, _peak, px, py in lines:
        dx, dy = np.gradient(px), np.gradient(py)
        norm = np.hypot(dx, dy)
        nx, ny = -dy / norm, dx / norm
        on = np.concatenate([_sample(sci, px + k * nx, py + k * ny) for k in (-2, 0, 2)])
        sky = np.concatenate([_sample(sci, px + s * nx, py + s * ny)
                              for s in (-60, -50, 50, 60)])
        sigma = mad_std(sky)
        assert on.size > 100 and sky.size > 100
        assert abs(np.median(on) - np.median(sky)) < sigma, (root, np.median(on),
                                                             np.median(sky), sigma)


def _bright_stars(program, image, wht, wcs):
    """Centroids and aperture fluxes (e-/s) of bright, fully covered stars more than 3"
    from every trail."""
    image = np.nan_to_num(image)
    sigma = mad_std(image[image != 0])
    peaks = find_peaks(image, threshold=200 * sigma, box_size=21, border_width=60)
    x, y = np.asarray(peaks["x_peak"], float), np.asarray(peaks["y_peak"], float)
    keep = np.array([np.all(wht[int(b) - 30:int(b) + 31, int(a) - 30:int(a) + 31] > 0)
                     for a, b in zip(x, y, strict=True)], bool)
    for _root, _peak, px, py in _trail_lines(program, wcs):
        keep &= np.min(np.hypot(x[:, None] - px[None, :], y[:, None] - py[None, :]),
                       axis=1) > 100
    x, y = centroid_sources(image, x[keep], y[keep], box_size=11, centroid_func=centroid_com)
    xy = np.column_stack([x, y])
    ap, ann = CircularAperture(xy, r=16), CircularAnnulus(xy, r_in=25, r_out=40)
    phot = aperture_photometry(image, [ap, ann])
    flux = np.asarray(phot["aperture_sum_0"] - phot["aperture_sum_1"] / ann.area * ap.area)
    bright = flux > 30.0  # stars, not the odd cosmic-ray residual
    return xy[bright], flux[bright]


def test_star_fluxes_elsewhere_unchanged(program, products):
    """Stars away from the trails have, within 0.5 %, the fluxes they have in the same
    program without the satellites: masking takes nothing else away."""
    assert sum(len(s.trails) for s in products["mask"][2].satellites) >= 2
    assert products["twin"][2].satellites and not any(
        s.trails for s in products["twin"][2].satellites)
    stars = {}
    for name in ("mask", "twin"):
        sci, wcs, result = products[name]
        wht = fits.getdata(result.product("F606W").wht)
        stars[name] = _bright_stars(program, sci, wht, wcs)
    (xy_m, f_m), (xy_t, f_t) = stars["mask"], stars["twin"]
    d = xy_m[None, :, :] - xy_t[:, None, :]
    nearest = np.argmin(np.hypot(d[..., 0], d[..., 1]), axis=1)
    matched = np.hypot(*(xy_m[nearest] - xy_t).T) < 0.5
    assert matched.sum() >= 10, matched.sum()
    ratio = f_m[nearest[matched]] / f_t[matched]
    assert np.all(np.abs(ratio - 1) <= 0.005), ratio
