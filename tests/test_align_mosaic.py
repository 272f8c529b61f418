"""Visit alignment across a mosaic: pointings that never overlap the reference visit are
aligned through their neighbours (hstred.align.stage.align_visits)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import wcs as fitswcs
from astropy.io import fits

from hstred.align.stage import MERGE_RADIUS_ARCSEC, VisitImage, _MergedCatalog, align_visits

RA0, DEC0 = 210.3, -12.5
CHIP_PX, CHIP_SCALE = 1000, 0.1  # a 100" chip
STEP_ARCSEC = 90.0  # 10 % overlap


def _tan(ra, dec, scale_arcsec, n, rotation_deg=0.0):
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    w.wcs.cd = scale_arcsec / 3600.0 * np.array([[-c, s], [s, c]])
    w.pixel_shape = (n, n)
    w.wcs.set()
    return w


def _offset(ra_arcsec, dec_arcsec):
    return (RA0 + ra_arcsec / 3600.0 / np.cos(np.radians(DEC0)), DEC0 + dec_arcsec / 3600.0)


def _mosaic(tmp_path, n_pointings=4, seed=3):
    """A row of pointings with random header-WCS errors, and their source catalogs."""
    rng = np.random.default_rng(seed)
    width = STEP_ARCSEC * (n_pointings - 1) + 120.0
    n_stars = int(0.04 * width * 120.0)
    stars = _offset(rng.uniform(-60.0, width - 60.0, n_stars), rng.uniform(-60, 60, n_stars))
    visits, catalogs, truth = [], {}, {}
    for k in range(n_pointings):
        center = _offset(k * STEP_ARCSEC, 0.0)
        true = _tan(*center, CHIP_SCALE, CHIP_PX)
        error = rng.uniform(-0.6, 0.6, 2)  # arcsec
        header = _tan(*_offset(k * STEP_ARCSEC + error[0], error[1]), CHIP_SCALE, CHIP_PX,
                      rotation_deg=float(rng.uniform(-0.01, 0.01)))
        x, y = true.all_world2pix(*stars, 0)
        inside = (x > 5) & (x < CHIP_PX - 6) & (y > 5) & (y < CHIP_PX - 6)
        x = x[inside] + rng.normal(0, 0.05, inside.sum())
        y = y[inside] + rng.normal(0, 0.05, inside.sum())
        name = f"jd71{k + 1:02d}_F606W"
        catalogs[name] = tuple(np.asarray(v) for v in header.all_pix2world(x, y, 0))
        chip = tmp_path / f"jd71{k + 1:02d}a0q_flc.fits"
        hdu = fits.ImageHDU(np.zeros((CHIP_PX, CHIP_PX), np.int8), header.to_header(),
                            name="SCI")
        hdu.header["EXTVER"] = 1
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(chip)
        frame = _tan(*center, 0.05, 2 * CHIP_PX + 200)
        sci = tmp_path / f"{name}_sci.fits"
        fits.PrimaryHDU(np.zeros(frame.pixel_shape[::-1], np.int8),
                        frame.to_header()).writeto(sci)
        visits.append(VisitImage(name=name, sci=sci, wht=sci, chips=((chip, 1),)))
        truth[name] = true
    return visits, catalogs, truth


def test_pointings_align_through_their_neighbours(tmp_path):
    visits, catalogs, truth = _mosaic(tmp_path)
    outcome = align_visits(visits, fit_geometry="rshift", searchrad_px=60.0, tolerance_px=3.0,
                           refine_tolerance_px=1.0, min_matches=10, max_rms_arcsec=0.05,
                           detection_nsigma=5.0, catalogs=catalogs)
    assert outcome.reference in (visits[1].name, visits[2].name)
    assert outcome.failures == {}
    # the end of the row never overlaps the reference, yet is aligned
    far = visits[0].name if outcome.reference == visits[2].name else visits[3].name
    assert outcome.fits[far].status == "ALIGNED" and outcome.fits[far].n_matches >= 10
    assert list(outcome.fits) == [v.name for v in visits]
    # every pointing lands where the reference's frame puts it: the same sky offset from
    # the truth as the reference's own header error, to a few milliarcseconds
    center = np.array([[CHIP_PX / 2, CHIP_PX / 2]])

    def error_arcsec(name):
        (key, corrected), = outcome.fits[name].wcs.items()
        ra, dec = corrected.all_pix2world(center, 0)[0]
        ra_t, dec_t = truth[name].all_pix2world(center, 0)[0]
        return np.array([(ra - ra_t) * np.cos(np.radians(DEC0)), dec - dec_t]) * 3600.0

    common = error_arcsec(outcome.reference)
    for v in visits:
        assert np.hypot(*(error_arcsec(v.name) - common)) < 0.01, v.name


def test_a_star_seen_twice_is_one_reference_source():
    ra, dec = np.array([RA0, RA0 + 0.01]), np.array([DEC0, DEC0])
    catalog = _MergedCatalog(ra, dec)
    near = 0.5 * MERGE_RADIUS_ARCSEC / 3600.0
    catalog.add(np.array([RA0, RA0 + 0.02]), np.array([DEC0 + near, DEC0]))
    assert catalog.ra.tolist() == pytest.approx([RA0, RA0 + 0.01, RA0 + 0.02])
