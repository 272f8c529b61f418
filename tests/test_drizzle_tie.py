"""run_drizzle with a reference catalog, on small synthetic programs with known truth.

Both visits carry a header-WCS error; relative alignment leaves the products where the
reference visit's error puts them. With the truth stars as the catalog the products
must land on the truth; with only three catalog stars the tie must stop, or, allowed,
warn and keep the relative solution (and say so in WCSNAME and the headers).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from photutils.centroids import centroid_2dg, centroid_sources
from scratch import fixture_dir
from test_drizzle_synthetic import VisitError, write_fake_program

from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.errors import QualityGateError

CHIP = (200, 400)
ERRORS = {"jfak01": VisitError(0.55, -0.45, 0.04), "jfak02": VisitError(-0.3, 0.7, -0.03)}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "tie") as root:
        prog = write_fake_program(root / "data", chip_shape=CHIP, visit_errors=ERRORS,
                                  n_stars=110, seed=9, filters=("F606W",))
        bright = prog.stars[prog.stars["flux_F606W"] > 150.0]
        catalog = Table({"ra": bright["ra"], "dec": bright["dec"]})
        catalog["phot_g_mean_mag"] = 26.5 - 2.5 * np.log10(bright["flux_F606W"])
        full = root / "catalog.ecsv"
        catalog.write(full)
        few = root / "three.csv"
        catalog[:3].write(few)
        yield prog, root, full, few


def _star_offsets_px(path, stars):
    """Measured minus truth positions (pixels) of isolated bright stars in a product."""
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        sci = np.nan_to_num(hdul[0].data.astype(float))
        w = WCS(hdul[0].header)
    x, y = w.all_world2pix(stars["ra"], stars["dec"], 0)
    ny, nx = sci.shape
    ok = (x > 15) & (x < nx - 15) & (y > 15) & (y < ny - 15)
    ok[ok] &= np.array([np.all(sci[int(b) - 8:int(b) + 9, int(a) - 8:int(a) + 9] != 0)
                        for a, b in zip(x[ok], y[ok], strict=True)])
    xc, yc = centroid_sources(sci, x[ok], y[ok], box_size=7, centroid_func=centroid_2dg)
    return np.asarray(xc) - x[ok], np.asarray(yc) - y[ok]


def _stars(prog):
    s = prog.stars
    xy = np.column_stack([s["ra"] * np.cos(np.radians(s["dec"])), s["dec"]]) * 3600
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return s[(d[:, 1] > 1.0) & (s["flux_F606W"] > 300.0)]


def test_products_tied_to_the_catalog_sit_on_the_truth(program, tmp_path):
    prog, root, full, _ = program
    config = DrizzleConfig(reference_catalog=str(full), pixel_scale_arcsec=0.05)
    result = run_drizzle(prog.directory, "tied", config, work_dir=tmp_path / "work")
    tie = result.absolute
    assert tie.status == "TIED" and tie.wcsname == "HSTRED-GAIA" and tie.source == "file"
    assert tie.catalog == str(full) and tie.epoch_handling.startswith("none")
    assert tie.n_matches >= 20 and tie.rms_arcsec < 0.01
    # The reference visit's error is undone (tie shift ~ minus its shift).
    ref = ERRORS[result.reference.split("_")[0]]
    assert np.hypot(tie.shift_x_arcsec + ref.dx_arcsec, tie.shift_y_arcsec + ref.dy_arcsec) < 0.03
    dx, dy = _star_offsets_px(result.product("F606W").sci, _stars(prog))
    assert dx.size >= 15
    assert abs(np.mean(dx)) < 0.05 and abs(np.mean(dy)) < 0.05  # 2.5 mas at 0.05"/px
    hdr = fits.getheader(result.product("F606W").sci)
    assert hdr["ABSSTAT"] == "TIED" and hdr["ALNWCSN"] == "HSTRED-GAIA"
    assert hdr["ABSCAT"] == full.name and hdr["ABSEPOCH"] == "NONE"
    assert hdr["ABSNM"] == tie.n_matches
    assert hdr["ABSDX"] == pytest.approx(tie.shift_x_arcsec, abs=1e-6)
    for copy in (tmp_path / "work" / "exposures").glob("*_fl?.fits"):
        with fits.open(copy) as hdul:
            h = hdul["SCI", 1].header
            assert h["WCSNAME"] == "HSTRED-GAIA"
            # The relative solution is kept as an alternate WCS.
            assert "HSTRED-ALIGN" in [h.get(f"WCSNAME{k}") for k in "ABCDEFGH"]
    assert len(result.to_dict()["absolute"]["residuals"]["dx_mas"]) == tie.n_pairs


def test_relative_products_are_off_by_the_reference_visit_error(program, tmp_path):
    """The same program without a catalog: the frame error the tie removes is real."""
    prog, *_ = program
    result = run_drizzle(prog.directory, "rel", DrizzleConfig(pixel_scale_arcsec=0.05),
                         work_dir=tmp_path / "work")
    assert result.absolute is None
    hdr = fits.getheader(result.product("F606W").sci)
    assert "ABSSTAT" not in hdr and hdr["ALNWCSN"] == "HSTRED-ALIGN"
    dx, dy = _star_offsets_px(result.product("F606W").sci, _stars(prog))
    assert np.hypot(np.mean(dx), np.mean(dy)) > 5.0  # > 0.25": the header error stays


def test_three_catalog_stars_stop_the_run_naming_the_catalog(program, tmp_path):
    prog, _, _, few = program
    with pytest.raises(QualityGateError, match="three.csv") as info:
        run_drizzle(prog.directory, "few", DrizzleConfig(reference_catalog=str(few)),
                    work_dir=tmp_path / "work")
    assert "--allow-relative" in str(info.value) and "\n" not in str(info.value)
    assert not list(prog.directory.glob("few_*"))


def test_three_catalog_stars_allowed_relative_warn_and_say_so(program, tmp_path):
    prog, _, _, few = program
    config = DrizzleConfig(reference_catalog=str(few), allow_relative=True)
    result = run_drizzle(prog.directory, "fallback", config, work_dir=tmp_path / "work")
    assert result.absolute.status == "RELATIVE" and result.absolute.wcsname == "HSTRED-ALIGN"
    assert any("three.csv" in w and "relative" in w for w in result.warnings)
    hdr = fits.getheader(result.product("F606W").sci)
    assert hdr["ABSSTAT"] == "RELATIVE" and hdr["ALNWCSN"] == "HSTRED-ALIGN"
    assert any("not applied" in str(h) for h in hdr["HISTORY"])
    for copy in (tmp_path / "work" / "exposures").glob("*_fl?.fits"):
        assert fits.getval(copy, "WCSNAME", extname="SCI", extver=1) == "HSTRED-ALIGN"


def test_cli_catalog_options_documented(program):
    from typer.testing import CliRunner

    from hstred.cli import app

    for command in ("drizzle", "run"):
        res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        assert "--reference-catalog" in res.output and "--allow-relative" in res.output


def test_cli_missing_catalog_file_exit_2_one_line(program, tmp_path):
    import subprocess
    import sys

    prog, *_ = program
    data = tmp_path / "data"
    data.mkdir()
    for p in prog.paths:
        (data / p.name).symlink_to(p)
    missing = tmp_path / "nowhere.ecsv"
    res = subprocess.run([sys.executable, "-m", "hstred", "drizzle", "out", "--data", str(data),
                          "--reference-catalog", str(missing)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("hstred: error:")]
    assert len(errors) == 1 and "--reference-catalog" in errors[0] and str(missing) in errors[0]
    assert not list(data.glob("out_*"))


def test_cli_gaia_without_a_server_names_the_file_to_supply(program, tmp_path, monkeypatch):
    from astroquery.gaia import Gaia
    from typer.testing import CliRunner

    from hstred.cli import app

    def no_server(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(Gaia, "launch_job_async", no_server)
    prog, *_ = program
    data = tmp_path / "data"
    data.mkdir()
    for p in prog.paths:
        (data / p.name).symlink_to(p)
    res = CliRunner().invoke(app, ["drizzle", "out", "--data", str(data),
                                   "--reference-catalog", "gaia"])
    assert res.exit_code == 6, res.output
    line = [x for x in res.output.splitlines() if x.startswith("hstred: error:")]
    assert len(line) == 1 and "Gaia archive did not answer" in line[0]
    assert str(data / "hstred_work" / "catalogs" / "gaiadr3_") in line[0]
    assert not list(data.glob("out_*"))


def test_cli_gaia_cone_saved_and_reused(program, tmp_path, monkeypatch):
    """The online path with astroquery's query replaced: the cone is fetched once, saved
    under the work directory, named in the result, and a rerun asks no server."""
    from astroquery.gaia import Gaia

    prog, root, full, _ = program
    calls = []

    class Job:
        def get_results(self):
            t = Table.read(full)
            t["ref_epoch"] = 2016.0
            t["pmra"] = 0.0
            t["pmdec"] = 0.0
            return t

    def launch(query, *args, **kwargs):
        calls.append(query)
        return Job()

    monkeypatch.setattr(Gaia, "launch_job_async", launch)
    config = DrizzleConfig(reference_catalog="gaia", pixel_scale_arcsec=0.05)
    catalogs = tmp_path / "catalogs"
    result = run_drizzle(prog.directory, "cone", config, work_dir=tmp_path / "work",
                         catalog_dir=catalogs)
    saved = list(catalogs.glob("gaiadr3_*.ecsv"))
    assert len(calls) == 1 and len(saved) == 1
    assert result.absolute.status == "TIED" and result.absolute.source == "gaia"
    assert result.absolute.catalog == str(saved[0])
    assert fits.getheader(result.product("F606W").sci)["ABSSRC"] == "gaia"

    def offline(*args, **kwargs):
        raise AssertionError("a rerun must not query")

    monkeypatch.setattr(Gaia, "launch_job_async", offline)
    again = run_drizzle(prog.directory, "cone", config, work_dir=tmp_path / "work2",
                        catalog_dir=catalogs)
    assert again.absolute.catalog == str(saved[0])
    assert again.absolute.n_matches == result.absolute.n_matches


def test_drizzle_stage_key_follows_the_catalog_content(tmp_path):
    """A changed catalog file redoes the drizzle stage; an unchanged one does not."""
    from hstred.manifest import Manifest
    from hstred.pipeline import drizzle_key

    manifest = Manifest(tmp_path / "work")
    inputs = [tmp_path / "a_flc.fits"]
    inputs[0].write_bytes(b"x" * 100)
    cat = tmp_path / "cat.csv"
    Table({"ra": [1.0], "dec": [2.0]}).write(cat)
    config = DrizzleConfig(reference_catalog=str(cat))

    def key(c):
        return drizzle_key(manifest, inputs, "out", c, {})

    first = key(config)
    assert key(config) == first
    Table({"ra": [1.0], "dec": [2.5]}).write(cat, overwrite=True)
    assert key(config) != first
    assert key(DrizzleConfig()) != key(config)
    assert key(DrizzleConfig(reference_catalog="gaia")) == key(DrizzleConfig(
        reference_catalog="gaia"))
