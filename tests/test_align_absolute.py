"""The absolute tie on synthetic source lists with known truth (no images).

Two visit groups, observed about 8.5 years after the catalog epoch, see moving stars and
fixed galaxies through a frame that is shifted by (0.5", -0.3") and rotated by 40"
(the reference visit's pointing error). The tie must undo that, using each group's
epoch; without proper motions it cannot.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from hstred.align.absolute import TieGroup, apply_tie, gate_tie, tie_to_catalog
from hstred.align.epoch import positions_at_epoch
from hstred.align.refcat import read_reference_catalog
from hstred.simulate.wcs import WcsError, perturb_sky

RA0, DEC0 = 150.1, 2.2
EPOCHS = {"v1_F606W": 60500.0, "v2_F606W": 60530.0}
ERROR = WcsError(0.5, -0.3, 40.0 / 3600.0, RA0, DEC0)
MAS = 1.0 / 3.6e6


def _frame() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [2000.5, 2000.5]
    w.wcs.cd = np.array([[-0.05, 0.0], [0.0, 0.05]]) / 3600.0
    w.pixel_shape = (4000, 4000)
    return w


def _truth(n_stars=25, n_gal=300, seed=3):
    rng = np.random.default_rng(seed)
    cosd = np.cos(np.radians(DEC0))
    stars = Table({"ra": RA0 + rng.uniform(-90, 90, n_stars) / 3600.0 / cosd,
                   "dec": DEC0 + rng.uniform(-90, 90, n_stars) / 3600.0,
                   "pmra": rng.normal(-3.0, 5.0, n_stars), "pmdec": rng.normal(-6.0, 5.0, n_stars),
                   "parallax": rng.uniform(0.1, 1.0, n_stars),
                   "ref_epoch": np.full(n_stars, 2016.0)})
    gals = Table({"ra": RA0 + rng.uniform(-95, 95, n_gal) / 3600.0 / cosd,
                  "dec": DEC0 + rng.uniform(-95, 95, n_gal) / 3600.0})
    return stars, gals


def _groups(stars, gals, seed=4):
    """Each group's sources as the relatively aligned (but absolutely wrong) frame sees them."""
    rng = np.random.default_rng(seed)
    out = []
    for name, mjd in EPOCHS.items():
        sra, sdec = positions_at_epoch(stars["ra"], stars["dec"], ref_epoch_jyear=2016.0,
                                       mjd=mjd, pmra_mas_yr=stars["pmra"],
                                       pmdec_mas_yr=stars["pmdec"],
                                       parallax_mas=stars["parallax"])
        ra = np.concatenate([sra, gals["ra"]])
        dec = np.concatenate([sdec, gals["dec"]])
        ra, dec = perturb_sky(ra, dec, ERROR)
        noise = rng.normal(0.0, 1.5, (2, ra.size)) * MAS  # centroid errors, 1.5 mas
        out.append(TieGroup(name=name, epoch_mjd=mjd,
                            ra=ra + noise[0] / np.cos(np.radians(dec)), dec=dec + noise[1]))
    return out


def _catalog(tmp_path, stars, *, motion=True):
    t = Table({"ra": stars["ra"], "dec": stars["dec"]})
    t["ra_error"] = t["dec_error"] = np.full(len(t), 0.3)
    if motion:
        for c in ("pmra", "pmdec", "parallax", "ref_epoch"):
            t[c] = stars[c]
        t["pmra_error"] = t["pmdec_error"] = np.full(len(t), 0.2)
    path = tmp_path / ("gaia.ecsv" if motion else "gaia_no_pm.ecsv")
    t.write(path)
    return read_reference_catalog(path)


def _frame_error_mas(tie, stars, mjd):
    """Corrected frame vs truth: where the tied frame puts stars seen at their true place."""
    frame = _frame()
    tra, tdec = positions_at_epoch(stars["ra"], stars["dec"], ref_epoch_jyear=2016.0, mjd=mjd,
                                   pmra_mas_yr=stars["pmra"], pmdec_mas_yr=stars["pmdec"],
                                   parallax_mas=stars["parallax"])
    x, y = frame.all_world2pix(*perturb_sky(tra, tdec, ERROR), 0)
    corrected = apply_tie({"frame": frame}, tie)["frame"]
    ra, dec = corrected.all_pix2world(x, y, 0)
    dx = (ra - tra) * np.cos(np.radians(tdec)) / MAS
    dy = (dec - tdec) / MAS
    return float(np.hypot(dx.mean(), dy.mean())), float(np.sqrt(np.mean(dx**2 + dy**2)))


def test_tie_undoes_the_frame_error_at_each_epoch(tmp_path):
    stars, gals = _truth()
    frame = _frame()
    before = frame.wcs.crval.copy()
    groups = _groups(stars, gals)
    ra_before = groups[0].ra.copy()
    tie = tie_to_catalog(groups, _catalog(tmp_path, stars), frame)
    assert tie.status == "TIED", tie.message
    assert gate_tie(tie, min_matches=5, max_rms_arcsec=0.02) is None
    assert tie.n_matches == 25 and tie.n_pairs == 50
    assert tie.rms_arcsec < 0.004
    # The correction is the inverse of the injected error.
    assert tie.shift_x_arcsec == pytest.approx(-0.5, abs=0.003)
    assert tie.shift_y_arcsec == pytest.approx(0.3, abs=0.003)
    assert tie.rotation_deg * 3600 == pytest.approx(-40.0, abs=1.0)
    assert tie.scale == pytest.approx(1.0, abs=1e-5)
    assert set(tie.epochs_jyear) == set(EPOCHS)
    assert len(tie.residuals["dx_mas"]) == 50
    for mjd in EPOCHS.values():
        mean, rms = _frame_error_mas(tie, stars, mjd)
        assert mean < 1.0 and rms < 2.0
    # Inputs untouched.
    assert np.array_equal(frame.wcs.crval, before) and np.array_equal(groups[0].ra, ra_before)


def test_ignoring_proper_motions_leaves_the_frame_off(tmp_path):
    """The same data tied to the catalog without its motions: the mean motion over
    8.5 years (tens of mas) stays in the frame."""
    stars, gals = _truth()
    groups = _groups(stars, gals)
    with_pm = tie_to_catalog(groups, _catalog(tmp_path, stars), _frame())
    without = tie_to_catalog(groups, _catalog(tmp_path, stars, motion=False), _frame())
    assert without.status == "TIED"
    err_with, _ = _frame_error_mas(with_pm, stars, EPOCHS["v1_F606W"])
    err_without, _ = _frame_error_mas(without, stars, EPOCHS["v1_F606W"])
    assert err_without > 20.0 > 10 * err_with
    # Moving stars no longer line up: the residuals grow past the gate.
    assert without.rms_arcsec > 5 * with_pm.rms_arcsec


def test_three_catalog_stars_fail_the_gate(tmp_path):
    stars, gals = _truth()
    tie = tie_to_catalog(_groups(stars, gals), _catalog(tmp_path, stars[:3]), _frame())
    reason = gate_tie(tie, min_matches=5, max_rms_arcsec=0.02)
    assert reason is not None and ("< 5 required" in reason or "failed" in reason)


def test_no_sources_or_no_catalog_is_a_failed_tie(tmp_path):
    stars, _ = _truth()
    empty = [TieGroup(name="v1", epoch_mjd=60500.0, ra=np.zeros(0), dec=np.zeros(0))]
    tie = tie_to_catalog(empty, _catalog(tmp_path, stars), _frame())
    assert tie.status == "FAILED" and "no sources" in tie.message
    assert gate_tie(tie, min_matches=5, max_rms_arcsec=0.02) == tie.message


def test_formal_uncertainty_matches_the_scatter_of_the_weighted_fit():
    """Monte Carlo of the weighted similarity fit tweakwcs makes (image and catalog weight
    columns): 20 stars with catalog errors of 1-12 mas, each matched in 3 groups (so its
    catalog error is shared by 3 pairs), 2 mas centroid errors. The scatter of the fitted
    rotation, scale and centre shift over 400 draws must match :func:`tie_uncertainty`
    (to 12%), and chi^2 per degree of freedom must be about 1."""
    from tweakwcs.linearfit import iter_linear_fit

    from hstred.align.absolute import tie_uncertainty

    rng = np.random.default_rng(11)
    frame = _frame()
    n_star, n_group, image_mas = 20, 3, 2.0
    scale_mas = 50.0
    sx, sy = rng.uniform(0, 4000, (2, n_star))
    cat_err = rng.uniform(1.0, 12.0, n_star)
    star = np.tile(np.arange(n_star), n_group)
    x, y = np.tile(sx, n_group), np.tile(sy, n_group)
    ce = cat_err[star]
    centre = np.array([1999.5, 1999.5])
    rot, scl, shift, chi2 = [], [], [], []
    for _ in range(400):
        cat_noise = rng.normal(0, 1, (2, n_star)) * cat_err / scale_mas
        img_noise = rng.normal(0, image_mas / scale_mas, (2, star.size))
        ref = np.column_stack([x + cat_noise[0][star], y + cat_noise[1][star]])
        img = np.column_stack([x, y]) + img_noise.T
        fit = iter_linear_fit(ref, img, wxy=1.0 / ce**2, wuv=np.full(star.size, 1 / image_mas**2),
                              fitgeom="rscale", center=centre, nclip=0)
        rot.append(fit["proper_rot"] if fit["proper_rot"] < 180 else fit["proper_rot"] - 360)
        scl.append(fit["<scale>"])
        shift.append(np.asarray(fit["shift"], float))
        res = (ref - centre) - (img - centre) @ fit["matrix"].T - fit["shift"]
        u = tie_uncertainty(frame, x, y, ce, star, image_error_mas=image_mas,
                            fit_geometry="rscale", dx_mas=-res[:, 0] * scale_mas,
                            dy_mas=res[:, 1] * scale_mas)
        chi2.append(u.chi2_dof)
    shift = np.array(shift)
    print(f"\nrotation sd {np.std(rot) * 3600:.3f}\" vs formal {u.rotation_deg * 3600:.3f}\", "
          f"scale sd {np.std(scl):.2e} vs {u.scale:.2e}, shift sd "
          f"{np.std(shift[:, 0]) * scale_mas:.3f} mas vs {u.shift_x_arcsec * 1000:.3f} mas, "
          f"chi2/dof {np.mean(chi2):.3f}")
    assert np.std(rot) == pytest.approx(u.rotation_deg, rel=0.12)
    assert np.std(scl) == pytest.approx(u.scale, rel=0.12)
    assert np.std(shift[:, 0]) * scale_mas / 1000 == pytest.approx(u.shift_x_arcsec, rel=0.12)
    assert np.std(shift[:, 1]) * scale_mas / 1000 == pytest.approx(u.shift_y_arcsec, rel=0.12)
    assert np.mean(chi2) == pytest.approx(1.0, abs=0.05)
    # Treating the shared catalog errors as independent would claim too small an error.
    alone = tie_uncertainty(frame, x, y, ce, np.arange(star.size), image_error_mas=image_mas,
                            fit_geometry="rscale")
    assert alone.rotation_deg < 0.75 * u.rotation_deg


def test_tie_records_its_formal_uncertainty(tmp_path):
    stars, gals = _truth()
    groups = _groups(stars, gals)
    tie = tie_to_catalog(groups, _catalog(tmp_path, stars), _frame())
    u = tie.uncertainty
    print(f"\nsigma shift ({u.shift_x_arcsec * 1000:.3f}, {u.shift_y_arcsec * 1000:.3f}) mas, "
          f"rotation {u.rotation_deg * 3600:.3f}\", chi2/dof {u.chi2_dof:.2f}")
    # About 2.4 mas per pair (0.3-1.7 mas catalog errors at the epoch, 2 mas assumed
    # centroid error, 1.5 mas drawn): 25 stars in 2 groups, 70" RMS from the centre, give
    # about 0.5 mas and 1.3"; chi^2 per degree of freedom below 1 (the centroid error
    # assumed is larger than the one drawn).
    assert 0.2 < u.shift_x_arcsec * 1000 < 1.0 and 0.2 < u.shift_y_arcsec * 1000 < 1.0
    assert 0.5 < u.rotation_deg * 3600 < 3.0
    assert 0.2 < u.chi2_dof < 1.0
