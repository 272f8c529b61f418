"""End-to-end tests of run_drizzle on small synthetic programs with known truth.

The synthetic exposures (see test_drizzle_synthetic) have 200 x 400-pixel chips with
Gaussian stars at known RA/Dec, sky, noise, cosmic rays and a wrong header WCS per
visit. Everything is checked against that truth: positions, fluxes, grids, cosmic rays,
the alignment solutions, provenance, failure modes and that inputs stay untouched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg, centroid_sources
from scipy.spatial import cKDTree
from scratch import fixture_dir
from test_drizzle_synthetic import VisitError, write_fake_program

from hstred import __version__
from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.errors import InputError, QualityGateError

CHIP = (200, 400)
ERRORS = {"jfak01": VisitError(0.62, -0.41, 0.035), "jfak02": VisitError(-0.35, 0.78, -0.042)}


def _digest(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "stage") as root:
        prog = write_fake_program(root / "data", chip_shape=CHIP, visit_errors=ERRORS,
                                  n_stars=110, seed=7)
        before = _digest(prog.paths)
        # cut-out chips: no satellite-trail search (it needs whole chips;
        # tests/test_satellites.py); the whole-grid drizzle (--tile-size 0), whose logs
        # these tests read (the tiled one: tests/test_drizzle_tiled.py)
        result = run_drizzle(prog.directory, "field",
                             DrizzleConfig(singles=True, satellites="off", tile_size=0),
                             work_dir=root / "work")
        yield prog, result, before, root / "work"


def _image(path):
    with fits.open(path) as hdul:
        w = WCS(hdul[0].header)
        w.pixel_shape = (hdul[0].header["NAXIS1"], hdul[0].header["NAXIS2"])
        return hdul[0].data.astype(float), hdul[0].header, w


def _isolated_stars(prog, *, min_sep_arcsec=1.0, min_flux=200.0, filt="F606W"):
    s = prog.stars
    xy = np.column_stack([s["ra"] * np.cos(np.radians(s["dec"])), s["dec"]]) * 3600
    d, _ = cKDTree(xy).query(xy, k=2)
    return s[(d[:, 1] > min_sep_arcsec) & (s[f"flux_{filt}"] > min_flux)]


def _measure(path, ra, dec, *, box=9):
    """Centroids (pixels) of sources expected at (ra, dec) in a drizzled image."""
    sci, hdr, w = _image(path)
    wht = fits.getdata(Path(str(path).replace("_sci", "_wht")))
    x, y = w.all_world2pix(ra, dec, 0)
    ny, nx = sci.shape
    ok = (x > 25) & (x < nx - 25) & (y > 25) & (y < ny - 25)
    ok[ok] &= np.array([np.all(wht[int(b) - 20:int(b) + 21, int(a) - 20:int(a) + 21] > 0)
                        for a, b in zip(x[ok], y[ok], strict=True)])
    xc, yc = centroid_sources(np.nan_to_num(sci), x[ok], y[ok], box_size=box,
                              centroid_func=centroid_2dg)
    return ok, x[ok], y[ok], np.asarray(xc), np.asarray(yc), sci, wht


def _skies_applied(log: Path) -> dict[str, float]:
    """Sky values AstroDrizzle's final step subtracted, by working copy and chip."""
    out = {}
    for line in log.read_text().splitlines():
        if "Applying sky value of" in line:
            value, target = line.split("Applying sky value of ")[1].split(" to ")
            out[Path(target.strip()).name] = float(value)
    return out


def test_final_and_single_drizzles_reuse_the_visit_sky(program):
    """Each exposure's sky is measured once (visit drizzle, MDRIZSKY in the working copy);
    the filter image and its single-exposure images subtract that same value."""
    prog, _, _, work = program
    copies = sorted((work / "exposures").glob("*_flc.fits"))
    measured = {}
    for copy in copies:
        with fits.open(copy) as hdul:
            for extver in (1, 2):
                measured[f"{copy.name}[sci,{extver}]"] = hdul["SCI", extver].header["MDRIZSKY"]
    assert len(measured) == 2 * len(prog.paths) and min(measured.values()) > 0
    for filt in ("F606W", "F814W"):
        log = work / "final" / filt / f"field_{filt}.log"
        text = log.read_text()
        assert "Computed sky value" not in text and "skymatch" not in text  # not measured
        applied = _skies_applied(log)
        assert len(applied) == len(prog.paths)  # one line per chip of the filter's exposures
        for chip, value in applied.items():
            assert value == pytest.approx(measured[chip], rel=1e-6)
    for single in sorted((work / "singles").iterdir()):
        applied = _skies_applied(single / f"{single.name}.log")
        assert applied and all(v == pytest.approx(measured[k], rel=1e-6)
                               for k, v in applied.items())


def test_products_exist_on_one_grid_with_provenance(program):
    prog, result, _, _ = program
    assert [p.filter for p in result.products] == ["F606W", "F814W"]
    grids = []
    for p in result.products:
        assert p.sci == prog.directory / f"field_{p.filter}_drz_sci.fits"
        assert p.wht == prog.directory / f"field_{p.filter}_drz_wht.fits"
        sci, hdr, w = _image(p.sci)
        wht = fits.getdata(p.wht)
        assert hdr["BUNIT"] == "ELECTRONS/S"
        assert p.exptime_s == pytest.approx(4 * prog.exptime_s)
        assert (wht > 0).mean() > 0.3 and np.isfinite(sci[wht > 0]).all()
        assert hdr["HSTRVER"] == __version__ and hdr["DRZKERN"] == "square"
        assert hdr["DRZPIXFR"] == 0.8 and hdr["DRZSCALE"] == 0.03 and hdr["DRZWHTTY"] == "ERR"
        assert hdr["ALNREF"] == result.reference and hdr["ALNNGRP"] == 4
        assert {hdr[f"ALN0{i}NAM"] for i in range(1, 5)} == {s.group for s in result.solutions}
        assert any("align jfak02" in str(h) for h in hdr["HISTORY"])
        assert w.proj_plane_pixel_scales()[0].to_value("arcsec") == pytest.approx(0.03)
        grids.append((w, sci.shape))
    for single in result.singles:
        _, hdr, w = _image(single.sci)
        assert single.sci == prog.directory / "singles" / f"{single.rootname}_drz_sci.fits"
        assert single.wht.exists()
        assert hdr["EXPTIME"] == pytest.approx(prog.exptime_s) and hdr["HSTRPROD"] == "SINGLE"
        grids.append((w, fits.getdata(single.sci).shape))
    assert len(result.singles) == 8
    (w0, shape0) = grids[0]
    for w, shape in grids[1:]:
        assert shape == shape0
        assert np.allclose(w.wcs.crval, w0.wcs.crval, rtol=0, atol=1e-12)
        assert np.allclose(w.wcs.crpix, w0.wcs.crpix) and np.allclose(w.wcs.cd, w0.wcs.cd)
    assert result.grid.shape == shape0 and result.warnings == () and result.dropped == ()
    json.dumps(result.to_dict())


def _robust_width(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def test_rms_images_describe_the_noise(program):
    """Every product and single has its RMS image on its grid: NaN where the science has
    no weight, the re-drizzled science matching AstroDrizzle's, blank-sky science over
    RMS of unit width, and the correlated-noise factors in the header."""
    prog, result, _, work = program
    stars = prog.stars
    for p in [*result.products, *result.singles]:
        assert p.rms == p.sci.with_name(p.sci.name.replace("_sci", "_rms"))
        sci, _hdr, w = _image(p.sci)
        with fits.open(p.rms) as hdul:
            rms, hdr = hdul[0].data, hdul[0].header
        wht = fits.getdata(p.wht)
        assert rms.shape == sci.shape and hdr["BUNIT"] == "ELECTRONS/S"
        known = np.isfinite(rms)
        assert not (known & ~(wht > 0)).any() and (rms[known] > 0).all()
        # all but edge slivers (a millionth of the typical weight): counted in RMSNMISS
        assert hdr["RMSNMISS"] == np.count_nonzero(~known & (wht > 0)) <= 5
        assert hdr["RMSCHK"] < 0.01 and hdr["RMSCHK99"] < 0.2
        assert hdr["RMSCORR"] == pytest.approx(1.7778, abs=1e-4)  # 0.03" from 0.05", 0.8
        factors = [hdr[f"RMSCOR{n}"] for n in (2, 4, 8, 16, 32)]
        assert 1.2 < factors[0] < factors[1] < factors[2] < factors[3] < 2.3
        assert "HSTRVER" in hdr and w.wcs.compare(WCS(hdr).wcs, tolerance=1e-12)
        # the record's noise entry reads back from JSON unchanged (stable cache keys)
        assert json.loads(json.dumps(p.noise)) == p.noise
        assert p.noise["correlation"]["16"] == hdr["RMSCOR16"]
        # blank sky: more than 1" from every star
        x, y = w.all_world2pix(stars["ra"], stars["dec"], 0)
        yy, xx = np.mgrid[0:sci.shape[0]:4, 0:sci.shape[1]:4]
        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([xx.ravel(),
                                                                          yy.ravel()]))
        # (the few RMSNMISS edge slivers without an RMS are counted above)
        blank = (dist.reshape(xx.shape) > 1.0 / 0.03) & known[yy, xx]
        z = sci[yy, xx][blank] / rms[yy, xx][blank]
        assert blank.sum() > 2000
        assert _robust_width(z) == pytest.approx(1.0, abs=0.06), p.sci.name
    # AstroDrizzle's intermediate files (weight maps, blots, masks) are all gone
    assert sorted(q.name for q in (work / "exposures").iterdir()) == sorted(
        q.name for q in prog.paths)


def test_inputs_untouched_and_no_leftovers(program):
    prog, _, before, _ = program
    assert _digest(prog.paths) == before
    leftovers = [p.name for p in prog.directory.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_alignment_solutions_undo_the_injected_errors(program):
    prog, result, _, _ = program
    ref_visit = result.reference.split("_")[0]
    ref = ERRORS[ref_visit]
    for s in result.solutions:
        assert s.reference == result.reference
        if s.status == "REFERENCE":
            assert s.group == result.reference
            continue
        # (catalogs cover only where both exposures of a visit overlap)
        assert s.status == "ALIGNED" and s.n_matches >= 30 and s.rms_arcsec < 0.005
        e = ERRORS[s.visit]
        # correction(visit) = -(error(visit) - error(reference)), to a few mas
        assert s.shift_x_arcsec == pytest.approx(-(e.dx_arcsec - ref.dx_arcsec), abs=0.005)
        assert s.shift_y_arcsec == pytest.approx(-(e.dy_arcsec - ref.dy_arcsec), abs=0.005)
        assert s.rotation_deg == pytest.approx(-(e.rot_deg - ref.rot_deg), abs=0.002)
        # ~40 stars over a 10" field: the scale is known to ~3e-5 (0.006 px at the edge)
        assert s.scale == pytest.approx(1.0, abs=6e-5)


def test_star_positions_match_truth_in_every_filter_and_visit(program):
    prog, result, _, _ = program
    ref_visit = result.reference.split("_")[0]
    stars = _isolated_stars(prog)
    # The reference visit defines the frame: truth seen through its header WCS.
    ra, dec = prog.header_sky(stars["ra"], stars["dec"], ref_visit)
    positions = {}
    for p in result.products:
        ok, x, y, xc, yc, _, _ = _measure(p.sci, ra, dec)
        dx, dy = xc - x, yc - y
        assert ok.sum() >= 20
        rms = np.sqrt(np.mean(dx**2 + dy**2))
        assert rms <= 0.05, f"{p.filter}: position RMS {rms:.3f} px"
        pairs = zip(xc, yc, strict=True)
        positions[p.filter] = dict(zip(np.flatnonzero(ok), pairs, strict=True))
    # The same star falls on the same pixel in both filters.
    common = sorted(set(positions["F606W"]) & set(positions["F814W"]))
    d = [np.hypot(positions["F606W"][i][0] - positions["F814W"][i][0],
                  positions["F606W"][i][1] - positions["F814W"][i][1]) for i in common]
    assert len(common) >= 20 and np.mean(d) <= 0.05
    # No visit is offset from another: mean offsets of the single-exposure images.
    means = {}
    for single in result.singles:
        ok, x, y, xc, yc, _, _ = _measure(single.sci, ra, dec)
        means.setdefault(single.rootname[:6], []).append((np.mean(xc - x), np.mean(yc - y)))
    v1, v2 = (np.mean(means[v], axis=0) for v in sorted(means))
    assert np.hypot(*(v1 - v2)) <= 0.02


def test_star_fluxes_match_truth(program):
    prog, result, _, _ = program
    ref_visit = result.reference.split("_")[0]
    for p in result.products:
        stars = _isolated_stars(prog, min_sep_arcsec=2.0, filt=p.filter)
        ra, dec = prog.header_sky(stars["ra"], stars["dec"], ref_visit)
        ok, x, y, xc, yc, sci, wht = _measure(p.sci, ra, dec)
        data = np.nan_to_num(sci)
        # Gaussian PSF of sigma 1.1 native pixels = 1.83 output pixels: r = 8 sigma.
        pos = np.column_stack([xc, yc])
        ap = CircularAperture(pos, r=15.0)
        ann = CircularAnnulus(pos, r_in=17.0, r_out=22.0)
        bkg = aperture_photometry(data, ann)["aperture_sum"] / ann.area
        flux = aperture_photometry(data, ap)["aperture_sum"] - bkg * ap.area  # e-/s
        truth = stars[f"flux_{p.filter}"][ok]
        ratio = np.median(flux / truth)
        assert ratio == pytest.approx(1.0, abs=0.005), f"{p.filter}: median ratio {ratio:.4f}"


def _covered_elsewhere(prog, work, root, ra, dec, filt_roots):
    """How many other exposures of the filter see each sky position (2-pixel margin)."""
    count = np.zeros(np.size(ra), dtype=int)
    for other in filt_roots:
        if other == root:
            continue
        with fits.open(work / "exposures" / f"{other}_flc.fits") as hdul:
            for extver in (1, 2):
                w = WCS(hdul["SCI", extver].header, hdul)
                x, y = w.all_world2pix(ra, dec, 0)
                ny, nx = hdul["SCI", extver].data.shape
                count += (x > 1.5) & (x < nx - 2.5) & (y > 1.5) & (y < ny - 2.5)
    return count


def test_cosmic_rays_rejected(program):
    """>= 99 % of the injected cosmic-ray pixels that another exposure also sees are
    flagged, and none of them shows in the products."""
    prog, result, _, work = program
    flagged = total = 0
    for p in result.products:
        sci, _, w = _image(p.sci)
        noise = np.nanstd(sci[fits.getdata(p.wht) > 0])
        star_x, star_y = w.all_world2pix(prog.stars["ra"], prog.stars["dec"], 0)
        tree = cKDTree(np.column_stack([star_x, star_y]))
        peaks = []
        for root in p.exposures:
            for extver in (1, 2):
                mask = prog.cr_masks[(root, extver)]
                with fits.open(work / "exposures" / f"{root}_flc.fits") as hdul:
                    dq = hdul["DQ", extver].data
                    cw = WCS(hdul["SCI", extver].header, hdul)
                yy, xx = np.nonzero(mask)
                ra, dec = cw.all_pix2world(xx, yy, 0)
                seen = _covered_elsewhere(prog, work, root, ra, dec, p.exposures) > 0
                flagged += int(((dq[yy, xx] & 4096) > 0)[seen].sum())
                total += int(seen.sum())
                ox, oy = w.all_world2pix(ra[seen], dec[seen], 0)
                far = tree.query(np.column_stack([ox, oy]))[0] > 25  # away from every star
                ix, iy = np.round(ox[far]).astype(int), np.round(oy[far]).astype(int)
                peaks.append(sci[iy, ix])
        peaks = np.concatenate(peaks)
        peaks = peaks[np.isfinite(peaks)]
        assert peaks.size > 200
        assert np.mean(peaks > 10 * noise) < 0.01
    assert total > 500 and flagged / total >= 0.99, f"{flagged} of {total} flagged"


def test_alignment_failure_stops_the_run_without_products(tmp_path):
    prog = write_fake_program(tmp_path / "data", chip_shape=(120, 240), filters=("F606W",),
                              n_stars=60, seed=11, visit_errors=ERRORS,
                              visit_pointing_offsets_arcsec={"jfak02": (600.0, 0.0)})
    with pytest.raises(QualityGateError) as info:
        run_drizzle(prog.directory, "far", DrizzleConfig())
    message = str(info.value)
    assert "jfak0" in message and "matches" in message and "rms" in message
    assert sorted(p.name for p in prog.directory.iterdir()) == sorted(p.name for p in prog.paths)
    # Dropping unaligned visits instead: a product from the reference visit alone.
    result = run_drizzle(prog.directory, "far", DrizzleConfig(drop_unaligned=True))
    assert len(result.dropped) == 1 and result.dropped[0] != result.reference
    dropped = [s for s in result.solutions if s.status == "DROPPED"]
    assert dropped and dropped[0].message and any("dropped" in w for w in result.warnings)
    product = result.product("F606W")
    assert all(e.startswith(result.reference[:6]) for e in product.exposures)
    assert fits.getval(product.sci, "DRZNIMG") == 2


def test_mosaic_pointings_align_through_their_neighbours(tmp_path):
    """A row of four pointings overlapping by 40 %: the ends never overlap the reference
    visit, yet every visit aligns (through its neighbours) and every star lands where the
    reference's frame puts it."""
    step = 0.6 * 240 * 0.05  # 60 % of the chips' width (arcsec)
    errors = {f"jfak0{k}": VisitError(*e) for k, e in enumerate(
        ((0.5, -0.3, 0.02), (-0.4, 0.6, -0.03), (0.7, 0.2, 0.01), (-0.2, -0.7, 0.03)), 1)}
    offsets = {f"jfak0{k}": ((k - 1) * step, 0.0) for k in range(1, 5)}
    prog = write_fake_program(tmp_path / "data", chip_shape=(120, 240), filters=("F606W",),
                              visits=4, exposures=2, n_stars=500, seed=8, visit_errors=errors,
                              visit_pointing_offsets_arcsec=offsets,
                              star_box_arcsec=(-8.0, 3 * step + 8.0, -9.0, 9.0))
    result = run_drizzle(prog.directory, "row", DrizzleConfig(satellites="off", rms=False))
    ref_visit = result.reference.split("_")[0]
    assert ref_visit in ("jfak02", "jfak03")
    far = "jfak04" if ref_visit == "jfak02" else "jfak01"
    by_visit = {s.visit: s for s in result.solutions}
    assert all(s.status in ("REFERENCE", "ALIGNED") for s in result.solutions)
    assert by_visit[far].n_matches >= 10
    ref = errors[ref_visit]
    for s in result.solutions:
        if s.status == "ALIGNED":
            e = errors[s.visit]
            assert s.shift_x_arcsec == pytest.approx(-(e.dx_arcsec - ref.dx_arcsec), abs=0.01)
            assert s.shift_y_arcsec == pytest.approx(-(e.dy_arcsec - ref.dy_arcsec), abs=0.01)
    stars = _isolated_stars(prog)
    ra, dec = prog.header_sky(stars["ra"], stars["dec"], ref_visit)
    ok, x, y, xc, yc, sci, _ = _measure(result.product("F606W").sci, ra, dec)
    assert ok.sum() >= 15
    # stars from end to end of the row
    span = np.hypot(*np.subtract(*_extremes(x, y)))
    assert span > 0.6 * np.hypot(*sci.shape)
    assert np.sqrt(np.mean((xc - x) ** 2 + (yc - y) ** 2)) <= 0.05


def _extremes(x, y):
    """The two points farthest apart."""
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    i, j = np.unravel_index(np.argmax(d), d.shape)
    return (x[i], y[i]), (x[j], y[j])


def test_bad_inputs_and_options(tmp_path):
    with pytest.raises(InputError):
        run_drizzle(tmp_path / "nothing", "x", DrizzleConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        run_drizzle(tmp_path / "empty", "x", DrizzleConfig())
    with pytest.raises(InputError):
        run_drizzle(tmp_path / "empty", "../x", DrizzleConfig())


def test_archive_style_inputs_with_lookup_tables_and_options(tmp_path):
    """_flt files carrying WCSDVARR/D2IMARR distortion, lanczos3, EXP weights, not north up."""
    prog = write_fake_program(tmp_path / "data", chip_shape=(160, 320), filters=("F814W",),
                              n_stars=80, seed=5, visit_errors=ERRORS, lookup_distortion=True,
                              suffix="flt")
    config = DrizzleConfig(kernel="lanczos3", pixfrac=1.0, weight_type="EXP", north_up=False,
                           pixel_scale_arcsec=0.04, fit_geometry="general")
    result = run_drizzle(prog.directory, "lut", config, inputs=prog.paths)
    assert all(s.status in ("REFERENCE", "ALIGNED") for s in result.solutions)
    p = result.product("F814W")
    sci, hdr, w = _image(p.sci)
    assert hdr["DRZKERN"] == "lanczos3" and hdr["DRZWHTTY"] == "EXP"
    assert result.grid.orientation_deg == pytest.approx(36.0, abs=1.5)  # visits at PA 35, 37
    stars = _isolated_stars(prog, filt="F814W")
    ra, dec = prog.header_sky(stars["ra"], stars["dec"], result.reference.split("_")[0])
    ok, x, y, xc, yc, _, _ = _measure(p.sci, ra, dec)
    assert ok.sum() >= 15
    assert np.sqrt(np.mean((xc - x) ** 2 + (yc - y) ** 2)) <= 0.05


def test_relative_data_directory_keeps_the_products(tmp_path, monkeypatch):
    """A data directory given relative to the working directory (as in the container, where
    ``hstred run`` drizzles ``.``): the clean-up after AstroDrizzle must not take the
    products for its intermediate files."""
    prog = write_fake_program(tmp_path / "data", chip_shape=(96, 192), visits=1, exposures=2,
                              filters=("F606W",), n_stars=30, seed=4)
    monkeypatch.chdir(tmp_path)
    result = run_drizzle(Path("data"), "rel", DrizzleConfig(satellites="off"),
                         work_dir=Path("work"))
    (product,) = result.products
    assert all(p.is_file() for p in product.files) and len(product.files) == 3
    assert sorted(q.name for q in (tmp_path / "work" / "exposures").iterdir()) == sorted(
        q.name for q in prog.paths)
