"""Reference catalogs: epoch propagation, reading Gaia-like tables, fetching the Gaia cone."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from hstred.align.epoch import mjd_to_jyear, positions_at_epoch
from hstred.align.refcat import (
    fetch_gaia_cone,
    footprint_cone,
    gaia_cone_file,
    read_reference_catalog,
)
from hstred.errors import InputError, RunEnvironmentError

MAS = 1.0 / 3.6e6


def test_proper_motion_moves_stars_by_pm_times_elapsed_years():
    """Hand-worked: 100 mas/yr east and -50 mas/yr north over 10.0 Julian years from
    J2016.0 (MJD 57388.5 + 3652.5 days) is 1000 mas east, 500 mas south."""
    ra0 = np.array([10.0, 200.0])
    dec0 = np.array([0.0, 60.0])
    pmra = np.array([100.0, 100.0])
    pmdec = np.array([-50.0, -50.0])
    mjd = 57388.5 + 3652.5
    ra, dec = positions_at_epoch(ra0, dec0, ref_epoch_jyear=2016.0, mjd=mjd, pmra_mas_yr=pmra,
                                 pmdec_mas_yr=pmdec)
    east = (ra - ra0) * np.cos(np.radians(dec0)) / MAS
    north = (dec - dec0) / MAS
    np.testing.assert_allclose(east, 1000.0, atol=0.5)
    np.testing.assert_allclose(north, -500.0, atol=0.5)
    # Inputs untouched; no motion, no change.
    assert ra0.tolist() == [10.0, 200.0] and pmra.tolist() == [100.0, 100.0]
    same = positions_at_epoch(ra0, dec0, ref_epoch_jyear=2016.0, mjd=mjd)
    np.testing.assert_allclose(same[0], ra0, atol=1e-12)


def test_annual_parallax_at_the_ecliptic_pole_is_a_circle_of_the_parallax():
    """At the ecliptic pole a star's parallactic displacement is the parallax (times the
    Earth's distance from the barycentre, about 0.98-1.02 AU) all year; it turns once a year."""
    ra0, dec0 = 270.0, 66.560708  # north ecliptic pole
    disp = []
    for day in np.arange(0.0, 365.0, 30.0):
        ra, dec = positions_at_epoch([ra0], [dec0], ref_epoch_jyear=2016.0,
                                     mjd=60310.0 + day, parallax_mas=[100.0])
        disp.append(((ra[0] - ra0) * np.cos(np.radians(dec0)) / MAS, (dec[0] - dec0) / MAS))
    disp = np.array(disp)
    size = np.hypot(disp[:, 0], disp[:, 1])
    assert np.all((size > 97.5) & (size < 102.5))
    assert np.ptp(disp[:, 0]) > 190.0 and np.ptp(disp[:, 1]) > 190.0


def test_mjd_to_jyear():
    assert mjd_to_jyear(51544.5) == pytest.approx(2000.0, abs=1e-6)


def _gaia_like(n=5):
    t = Table()
    t["ra"] = np.linspace(150.0, 150.01, n)
    t["dec"] = np.full(n, 2.0)
    t["ra_error"] = np.full(n, 0.3)
    t["dec_error"] = np.full(n, 0.5)
    t["pmra"] = np.full(n, 10.0)
    t["pmdec"] = np.full(n, -5.0)
    t["pmra_error"] = np.full(n, 0.2)
    t["pmdec_error"] = np.full(n, 0.4)
    t["parallax"] = np.full(n, 0.5)
    t["ref_epoch"] = np.full(n, 2016.0)
    t["phot_g_mean_mag"] = np.full(n, 19.0)
    return t


@pytest.mark.parametrize("suffix,fmt", [(".ecsv", "ascii.ecsv"), (".fits", "fits"),
                                        (".csv", "ascii.csv")])
def test_catalog_read_in_each_format_with_errors_grown_to_the_epoch(tmp_path, suffix, fmt):
    path = tmp_path / f"cat{suffix}"
    _gaia_like().write(path, format=fmt)
    cat = read_reference_catalog(path)
    assert len(cat) == 5 and cat.has_motion and cat.parallax is not None
    assert cat.epoch_handling().startswith("proper motion and parallax from J2016.0")
    mjd = 57388.5 + 3652.5  # J2026.0
    ra, dec, err = cat.at_epoch(mjd)
    # Position error 0.4 mas (mean of 0.3, 0.5); PM error 0.3 mas/yr x 10 yr = 3 mas.
    np.testing.assert_allclose(err, np.hypot(0.4, 3.0), rtol=1e-3)
    assert np.all((dec - 2.0) / MAS < -49.0)  # moved ~50 mas south (parallax < 1 mas)


def test_catalog_without_motion_is_used_as_given(tmp_path):
    path = tmp_path / "plain.csv"
    Table({"ra": [1.0, 1.001], "dec": [2.0, 2.001]}).write(path)
    cat = read_reference_catalog(path)
    assert not cat.has_motion and cat.epoch_handling().startswith("none")
    ra, dec, err = cat.at_epoch(60000.0)
    assert ra.tolist() == [1.0, 1.001] and err.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("columns,message", [
    ({"RAJ2000": [1.0], "dec": [2.0]}, "no column ra"),
    ({"ra": [1.0], "dec": [2.0], "pmra": [1.0], "pmdec": [1.0]}, "need a ref_epoch"),
    ({"ra": [1.0], "dec": [2.0], "pmra": [1.0]}, "only one of pmra and pmdec"),
    ({"ra": [np.nan], "dec": [2.0]}, "no row has a finite ra and dec"),
])
def test_unusable_catalogs_name_the_option_and_the_fix(tmp_path, columns, message):
    path = tmp_path / "bad.ecsv"
    Table(columns).write(path)
    with pytest.raises(InputError, match=message) as info:
        read_reference_catalog(path)
    assert "--reference-catalog" in str(info.value) and str(path) in str(info.value)


def test_missing_or_unknown_catalog_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_reference_catalog(tmp_path / "none.ecsv")
    odd = tmp_path / "cat.txt"
    odd.write_text("ra dec\n")
    with pytest.raises(InputError, match="unknown format"):
        read_reference_catalog(odd)


class _Job:
    def __init__(self, table):
        self.table = table

    def get_results(self):
        return self.table


def test_gaia_cone_fetched_once_then_read_offline(tmp_path, monkeypatch):
    from astroquery.gaia import Gaia

    queries = []

    def fake_launch(query, *args, **kwargs):
        queries.append(query)
        t = _gaia_like(3)
        t.rename_column("ra", "RA")  # the archive's case is not guaranteed
        return _Job(t)

    monkeypatch.setattr(Gaia, "launch_job_async", fake_launch)
    path = fetch_gaia_cone(150.005, 2.0, 2.5, directory=tmp_path / "catalogs")
    assert path == gaia_cone_file(tmp_path / "catalogs", 150.005, 2.0, 2.5) and path.is_file()
    assert len(queries) == 1 and "gaiadr3.gaia_source" in queries[0]
    assert "CIRCLE('ICRS', 150.0050000, 2.0000000, 0.0416667)" in queries[0]
    cat = read_reference_catalog(path)
    assert len(cat) == 3 and cat.has_motion

    def offline(*args, **kwargs):
        raise AssertionError("queried again")

    monkeypatch.setattr(Gaia, "launch_job_async", offline)
    assert fetch_gaia_cone(150.005, 2.0, 2.5, directory=tmp_path / "catalogs") == path


def test_gaia_without_a_server_names_the_file_to_supply(tmp_path, monkeypatch):
    from astroquery.gaia import Gaia

    def no_server(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(Gaia, "launch_job_async", no_server)
    with pytest.raises(RunEnvironmentError) as info:
        fetch_gaia_cone(10.0, -30.0, 3.0, directory=tmp_path)
    text = str(info.value)
    assert "\n" not in text and "did not answer" in text
    assert str(gaia_cone_file(tmp_path, 10.0, -30.0, 3.0)) in text
    assert not list(tmp_path.iterdir())


def test_footprint_cone_holds_every_point():
    ra = np.array([150.0, 150.05, 150.0, 150.05])
    dec = np.array([2.0, 2.0, 2.05, 2.05])
    ra0, dec0, radius = footprint_cone(ra, dec)
    assert ra0 == pytest.approx(150.025, abs=1e-4) and dec0 == pytest.approx(2.025, abs=1e-4)
    half_diagonal = np.hypot(0.025 * np.cos(np.radians(2.025)), 0.025) * 60.0
    assert half_diagonal + 0.49 < radius < half_diagonal + 0.52
