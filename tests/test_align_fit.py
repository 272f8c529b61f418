"""Unit tests of the alignment fit (hstred.align.fit) on hand-built WCSs and catalogs."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import wcs as fitswcs
from test_drizzle_synthetic import VisitError, _chip_true_wcs, _tangent_wcs, _with_error

from hstred.align.fit import (
    GroupAlignment,
    align_group,
    assign_sources_to_chips,
    fit_similarity,
    gate_alignment,
    match_residuals,
    measure_wcs_change,
    standard_coordinates,
)

RA0, DEC0 = 150.1, 2.2


def _frame(scale_arcsec=0.05, n=800):
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cd = np.array([[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]])
    w.pixel_shape = (n, n)
    w.wcs.set()
    return w


def _visit(err: VisitError, *, lookup=False, n_stars=80, seed=4, shape=(200, 400)):
    """Two chips of one exposure: true and header WCS, and true star sky positions."""
    rng = np.random.default_rng(seed)
    pointing = _tangent_wcs(RA0, DEC0, 20.0, 1.0)
    true = [_chip_true_wcs(pointing, 20.0, e, shape, lookup=lookup) for e in (1, 2)]
    header = [_with_error(t, (RA0, DEC0), err) for t in true]
    ny, nx = shape
    ras, decs = [], []
    for t in true:
        x = rng.uniform(5, nx - 5, n_stars // 2)
        y = rng.uniform(5, ny - 5, n_stars // 2)
        r, d = t.all_pix2world(x, y, 0)
        ras.append(r)
        decs.append(d)
    return true, header, np.concatenate(ras), np.concatenate(decs)


def test_standard_coordinates_hand_values():
    xi, eta = standard_coordinates([RA0, RA0, RA0 + 1 / 3600 / np.cos(np.radians(DEC0))],
                                   [DEC0, DEC0 + 1 / 3600, DEC0], ra0_deg=RA0, dec0_deg=DEC0)
    assert xi == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)
    assert eta == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def test_fit_similarity_recovers_shift_rotation_scale():
    rng = np.random.default_rng(0)
    xi, eta = rng.uniform(-100, 100, (2, 50))
    t = np.radians(0.03)  # position angle increases by 0.03 deg
    s = 1.0 + 2e-5
    xi2 = s * (np.cos(t) * xi + np.sin(t) * eta) + 0.4
    eta2 = s * (-np.sin(t) * xi + np.cos(t) * eta) - 0.7
    sx, sy, rot, scale = fit_similarity(xi, eta, xi2, eta2)
    # The shift is that of the centroid of the first set.
    cx, cy = xi.mean(), eta.mean()
    assert sx == pytest.approx(xi2.mean() - cx, abs=1e-9)
    assert sy == pytest.approx(eta2.mean() - cy, abs=1e-9)
    assert rot == pytest.approx(0.03, abs=1e-9)
    assert scale == pytest.approx(s, rel=1e-12)


def test_match_residuals_counts_and_clips():
    rng = np.random.default_rng(1)
    ra = RA0 + rng.uniform(-0.01, 0.01, 40)
    dec = DEC0 + rng.uniform(-0.01, 0.01, 40)
    noise = 0.002 / 3600  # 2 mas
    ra2 = ra + rng.normal(0, noise, 40) / np.cos(np.radians(DEC0))
    dec2 = dec + rng.normal(0, noise, 40)
    dec2[0] += 0.03 / 3600  # one 30 mas outlier inside the radius: clipped
    n, rms, kept = match_residuals(ra2, dec2, ra, dec, radius_arcsec=0.05)
    assert n == 39 and not kept[0]
    assert rms == pytest.approx(0.002 * np.sqrt(2), rel=0.3)
    n0, rms0, _ = match_residuals(ra2, dec2, ra + 1.0, dec, radius_arcsec=0.05)
    assert n0 == 0 and np.isnan(rms0)


def test_assign_sources_to_chips_gives_each_source_once():
    _, header, ra, dec = _visit(VisitError())
    chips = [("a[SCI,1]", header[0]), ("a[SCI,2]", header[1]), ("b[SCI,1]", header[0])]
    out = assign_sources_to_chips(ra, dec, chips)
    assert [c.key for c in out] == ["a[SCI,1]", "a[SCI,2]", "b[SCI,1]"]
    assert len(out[2].x) == 0  # same footprint as the first chip: nothing left for it
    assert len(out[0].x) + len(out[1].x) <= len(ra)
    assert len(out[0].x) + len(out[1].x) >= len(ra) - 6  # only sources near edges dropped
    # Positions are where the chip's WCS puts the given sky positions.
    r, d = header[0].all_pix2world(out[0].x, out[0].y, 0)
    dist = np.hypot((r[:, None] - ra[None, :]) * np.cos(np.radians(DEC0)),
                    d[:, None] - dec[None, :]).min(axis=1) * 3600
    assert len(r) > 10 and dist.max() < 1e-5


@pytest.mark.parametrize("lookup", [False, True])
def test_align_group_recovers_injected_error(lookup):
    err = VisitError(0.45, -0.30, 0.03)
    true, header, ra, dec = _visit(err, lookup=lookup)
    # The visit's catalog: true sky positions placed through the wrong header WCS.
    chips = assign_sources_to_chips(*_header_sky(true, header, ra, dec),
                                    [(f"x[SCI,{i + 1}]", w) for i, w in enumerate(header)])
    res = align_group(chips, ra, dec, _frame(), name="v02_F606W")
    assert res.status == "ALIGNED"
    assert res.n_matches >= len(ra) - 6
    assert res.rms_arcsec < 1e-4
    # The correction undoes the error: shift ~ -(dx, dy), rotation ~ -rot.
    assert res.shift_x_arcsec == pytest.approx(-err.dx_arcsec, abs=0.01)
    assert res.shift_y_arcsec == pytest.approx(-err.dy_arcsec, abs=0.01)
    assert res.rotation_deg == pytest.approx(-err.rot_deg, abs=5e-4)
    assert res.scale == pytest.approx(1.0, abs=1e-5)
    # Corrected WCSs agree with the true ones to far better than a milli-arcsecond.
    for i, t in enumerate(true):
        w = res.wcs[f"x[SCI,{i + 1}]"]
        x, y = np.meshgrid(np.linspace(0, 399, 5), np.linspace(0, 199, 5))
        r1, d1 = t.all_pix2world(x.ravel(), y.ravel(), 0)
        r2, d2 = w.all_pix2world(x.ravel(), y.ravel(), 0)
        sep = np.hypot((r1 - r2) * np.cos(np.radians(DEC0)), d1 - d2) * 3600
        assert sep.max() < 1e-3
        # Distortion untouched: same SIP (and lookup tables).
        assert np.array_equal(w.sip.a, header[i].sip.a)
        if lookup:
            assert w.cpdis1 is not None and w.det2im1 is not None
    # The original WCSs were not modified.
    assert header[0].wcs.crval[0] == _with_error(true[0], (RA0, DEC0), err).wcs.crval[0]


def _header_sky(true, header, ra, dec):
    """Sky positions the header WCSs give to the true sources (what a catalog measures)."""
    out_r, out_d = np.array(ra, float), np.array(dec, float)
    for t, h in zip(true, header, strict=True):
        x, y = t.all_world2pix(ra, dec, 0)
        nx, ny = t.pixel_shape
        on = (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
        r, d = h.all_pix2world(x[on], y[on], 0)
        out_r[on], out_d[on] = r, d
    return out_r, out_d


def test_align_group_without_overlap_fails():
    true, header, ra, dec = _visit(VisitError())
    chips = assign_sources_to_chips(ra, dec, [("x[SCI,1]", header[0]), ("x[SCI,2]", header[1])])
    res = align_group(chips, ra + 0.2, dec, _frame(), name="far")  # 12 arcmin away
    assert res.status == "FAILED"
    assert res.wcs["x[SCI,1]"] is header[0]  # no silent change
    assert "match" in res.message or "fail" in res.message


def test_measure_wcs_change_of_identical_wcs_is_zero():
    _, header, _, _ = _visit(VisitError())
    sx, sy, rot, scale = measure_wcs_change(header, header)
    assert (sx, sy, rot, scale) == pytest.approx((0.0, 0.0, 0.0, 1.0), abs=1e-9)


def test_gate_alignment():
    ok = GroupAlignment(name="a", status="ALIGNED", wcs={}, n_matches=30, rms_arcsec=0.004)
    assert gate_alignment(ok, min_matches=10, max_rms_arcsec=0.02) is None
    few = GroupAlignment(name="a", status="ALIGNED", wcs={}, n_matches=5, rms_arcsec=0.004)
    assert "5 matches" in gate_alignment(few, min_matches=10, max_rms_arcsec=0.02)
    loose = GroupAlignment(name="a", status="ALIGNED", wcs={}, n_matches=50, rms_arcsec=0.05)
    assert "RMS" in gate_alignment(loose, min_matches=10, max_rms_arcsec=0.02)
    failed = GroupAlignment(name="a", status="FAILED", wcs={}, message="no matches")
    assert gate_alignment(failed, min_matches=1, max_rms_arcsec=1.0) == "no matches"
    ref = GroupAlignment(name="a", status="REFERENCE", wcs={})
    assert gate_alignment(ref, min_matches=10, max_rms_arcsec=0.02) is None


def test_group_outline_as_convex_hull_gives_the_exact_union_fit(monkeypatch):
    """tweakwcs trims the reference catalog to the group's outline; the convex hull
    used here (the chip gap included) gives the fit of the exact union of the chips."""
    import hstred.align.fit as fit_module

    err = VisitError(0.45, -0.30, 0.03)
    true, header, ra, dec = _visit(err)
    chips = assign_sources_to_chips(*_header_sky(true, header, ra, dec),
                                    [(f"x[SCI,{i + 1}]", w) for i, w in enumerate(header)])
    policies = []
    hull_align_wcs = fit_module.align_wcs

    def spy(*args, **kwargs):
        policies.append(kwargs["group_bb_policy"])
        return hull_align_wcs(*args, **kwargs)

    monkeypatch.setattr(fit_module, "align_wcs", spy)
    hull = align_group(chips, ra, dec, _frame(), name="v02_F606W")
    monkeypatch.setattr(fit_module, "align_wcs",
                        lambda *a, **k: spy(*a, **{**k, "group_bb_policy": "exact"}))
    exact = align_group(chips, ra, dec, _frame(), name="v02_F606W")
    assert policies == [0, 0, "exact", "exact"]  # two passes each
    assert hull.status == exact.status == "ALIGNED"
    assert (hull.n_matches, hull.shift_x_arcsec, hull.shift_y_arcsec, hull.rotation_deg,
            hull.scale, hull.rms_arcsec) == (exact.n_matches, exact.shift_x_arcsec,
                                             exact.shift_y_arcsec, exact.rotation_deg,
                                             exact.scale, exact.rms_arcsec)
