"""Mosaic programs: ``hstred simulate --pointings NxM`` lays out overlapping pointings,
each epoch observing every pointing in a visit of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scratch import fixture_dir
from typer.testing import CliRunner

from hstred.cli import app
from hstred.simulate import SimulationConfig
from hstred.simulate.plan import MOSAIC_STEP_ARCSEC, catalog_sources, plan_program
from hstred.simulate.wcs import tangent_plane


def test_plan_of_a_mosaic():
    plain = plan_program(SimulationConfig(visits=2))
    plan = plan_program(SimulationConfig(visits=2, pointings=(3, 2)))
    assert [v.number for v in plan.visits] == list(range(1, 13))
    assert [v.visit_id for v in plan.visits][:2] == ["jd7101", "jd7102"]
    for epoch in (1, 2):
        visits = [v for v in plan.visits if v.epoch == epoch]
        assert sorted(v.cell for v in visits) == [(i, j) for i in range(3) for j in range(2)]
        # one day, one roll; one visit after the other
        assert len({v.pa_v3_deg for v in visits}) == 1
        starts = [v.start_mjd for v in visits]
        assert starts == sorted(starts) and starts[-1] - starts[0] < 1.0
        assert starts[1] > visits[0].exposures[-1].expstart_mjd
        # each visit its own guide-star acquisition: header-WCS errors differ
        assert len({v.wcs_error.dx_arcsec for v in visits}) == len(visits)
        # POS TARGs step by the mosaic step, the epoch's offset in common
        by_cell = {v.cell: v for v in visits}
        dx = np.subtract(by_cell[(1, 0)].offset_arcsec, by_cell[(0, 0)].offset_arcsec)
        dy = np.subtract(by_cell[(0, 1)].offset_arcsec, by_cell[(0, 0)].offset_arcsec)
        assert dx == pytest.approx([MOSAIC_STEP_ARCSEC, 0.0])
        assert dy == pytest.approx([0.0, MOSAIC_STEP_ARCSEC])
        # neighbours' pointings are the step apart on the sky too
        ra0, dec0 = by_cell[(0, 0)].pointing
        for cell in ((1, 0), (0, 1)):
            xi, eta = tangent_plane(by_cell[cell].pointing[0], by_cell[cell].pointing[1],
                                    ra0_deg=ra0, dec0_deg=dec0)
            assert np.hypot(xi, eta) * 3600 == pytest.approx(MOSAIC_STEP_ARCSEC, rel=0.01)
    # the epochs are the plain program's visits: dates and rolls
    assert [v.start_mjd for v in plan.visits if v.cell == (0, 0)] == [
        v.start_mjd for v in plain.visits]
    assert [v.pa_v3_deg for v in plan.visits if v.cell == (0, 0)] == [
        v.pa_v3_deg for v in plain.visits]
    # the same source density over the wider catalog
    assert catalog_sources(SimulationConfig(pointings=(3, 2))) > 4 * 400


def _footprints(raw: Path) -> list[WCS]:
    with fits.open(raw) as hdul:
        return [WCS(hdul["SCI", v].header, hdul) for v in (1, 2)]


def _inside(wcs_list, ra, dec) -> np.ndarray:
    inside = np.zeros(ra.shape, dtype=bool)
    for w in wcs_list:
        x, y = w.all_world2pix(ra, dec, 0)
        nx, ny = w.pixel_shape
        inside |= (x > 24) & (x < nx - 24) & (y > 20) & (y < ny - 20)  # without overscan
    return inside


@pytest.mark.slow
def test_simulated_mosaic_overlaps_by_ten_percent(tmp_path_factory):
    with fixture_dir(tmp_path_factory, "mosaic") as out:
        result = CliRunner().invoke(app, [
            "simulate", str(out), "--pointings", "2x1", "--visits", "1", "--exposures", "1",
            "--filters", "F814W", "--no-cte", "--sources", "100", "--seed", "3"])
        assert result.exit_code == 0, result.output
        raws = sorted(out.glob("*_raw.fits"))
        assert [r.name[:6] for r in raws] == ["jd7101", "jd7102"]
        headers = [fits.getheader(r) for r in raws]
        assert headers[0]["TARGNAME"] == headers[1]["TARGNAME"]
        assert headers[0]["DARKFILE"] == headers[1]["DARKFILE"]  # one epoch, one dark
        assert headers[1]["POSTARG1"] - headers[0]["POSTARG1"] == pytest.approx(
            MOSAIC_STEP_ARCSEC, abs=1e-3)
        left, right = (_footprints(r) for r in raws)
        # sample the sky on a 2" grid around both pointings
        ra0, dec0 = left[0].wcs.crval
        grid = np.arange(-500.0, 500.0, 2.0) / 3600.0
        dra, ddec = np.meshgrid(grid / np.cos(np.radians(dec0)), grid)
        ra, dec = (ra0 + dra).ravel(), (dec0 + ddec).ravel()
        in_left, in_right = _inside(left, ra, dec), _inside(right, ra, dec)
        overlap = np.sum(in_left & in_right) / np.sum(in_left)
        assert 0.07 < overlap < 0.15, overlap
        # the truth catalog and the Gaia-like catalog cover the whole mosaic
        truth = json.loads((out / "truth.json").read_text())
        assert [v["mosaic_cell"] for v in truth["visits"]] == [[0, 0], [1, 0]]
        assert [v["epoch"] for v in truth["visits"]] == [1, 1]
        catalog = Table.read(out / "truth.ecsv")
        assert len(catalog) == truth["catalog"]["n_sources"] > 100
        covered = np.asarray(catalog["kind"]) != ""
        for footprint in (left, right):
            assert np.sum(_inside(footprint, np.asarray(catalog["ra"]),
                                  np.asarray(catalog["dec"])) & covered) > 30
        gaia = Table.read(out / "gaia.ecsv")
        for footprint in (left, right):
            assert _inside(footprint, np.asarray(gaia["ra"]), np.asarray(gaia["dec"])).any()
