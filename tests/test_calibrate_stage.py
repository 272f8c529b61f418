"""The calibration stage on simulated programs: CTE evidence, parallelism, caching, CLI."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from scratch import fixture_dir
from typer.testing import CliRunner

from hstred.acs import quadrants
from hstred.calibrate import PHASES, CalibrateConfig, run_calibrate
from hstred.cli import app
from hstred.cte.accuracy import DEFAULT_SETTING_ACCURACY
from hstred.cte.noise import BLOCK_PX, CLIP_READ_NOISE, LOCAL_PX, STRUCTURE_FACTOR
from hstred.execution import LocalBackend
from hstred.manifest import Manifest

pytestmark = pytest.mark.slow

# Fast arCTIc settings where only determinism and bookkeeping are tested.
#: The cheapest correction (one iteration, express 1): these tests compare runs, not accuracy.
QUICK_CTE = CalibrateConfig(cte="arctic", engine="native", cte_iterations=1, cte_express=1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def late(sim_program_late_cte, tmp_path_factory):
    """The late-date exposure calibrated with and without CTE correction, plus its truth."""
    directory, _config, result = sim_program_late_cte
    raw = result.raw_files[0]
    before = _sha(raw)
    with fixture_dir(tmp_path_factory, "late") as d:
        out = {}
        for cte in ("none", "arctic"):
            res = run_calibrate(directory, CalibrateConfig(cte=cte, engine="native"),
                                out_dir=d / cte)
            out[cte] = res.outputs[0]
        assert _sha(raw) == before, "the raw file was modified"
        yield out, result.truth_images[0]


def _chips(path: Path, name: str = "SCI"):
    with fits.open(path) as hdul:
        return {h.header["CCDCHIP"]: h.data.astype(np.float64) for h in hdul[1:]
                if h.name == name}


def _compact_sources(truth: np.ndarray, chip: int, *, margin: int = 40):
    """Isolated compact sources of a noiseless truth chip: (y, x, quadrant)."""
    sky = np.median(truth[::16, ::16])
    excess = truth - sky
    peaks = (excess == ndimage.maximum_filter(excess, size=31)) & (excess > 60)
    out = []
    for y, x in zip(*np.nonzero(peaks), strict=True):
        if not (margin < y < truth.shape[0] - margin and margin < x < truth.shape[1] - margin):
            continue
        if abs(x - 2048) < margin:
            continue
        box = excess[y - 3:y + 4, x - 3:x + 4]
        if excess[y, x] / box.sum() < 0.12:  # extended galaxy
            continue
        quad = quadrants(chip)[0 if x < 2048 else 1]
        out.append((y, x, quad))
    return out


def _trail_and_flux(image, truth, err, sources):
    """Per source: excess charge in the trail window and the 7x7 aperture flux ratio."""
    sky = np.median(truth[::16, ::16])
    hits = ndimage.binary_dilation((image - truth) > 6 * err, iterations=2)  # cosmic rays
    trails, ratios = [], []
    for y, x, quad in sources:
        away = -1 if quad.flip_y else 1
        rows = slice(y + 4, y + 24) if away > 0 else slice(y - 23, y - 3)
        window = (rows, slice(x - 1, x + 2))
        aperture = (slice(y - 3, y + 4), slice(x - 3, x + 4))
        if hits[window].any() or hits[aperture].any():
            continue
        trails.append((image - truth)[window].sum())
        ratios.append((image[aperture] - sky).sum() / (truth[aperture] - sky).sum())
    return np.array(trails), np.array(ratios)


def test_cte_correction_removes_trails_and_restores_flux(late):
    outputs, truth_path = late
    truths = _chips(truth_path, "TRUTH")
    results = {}
    for cte, path in outputs.items():
        sci, err = _chips(path), _chips(path, "ERR")
        trails, ratios = [], []
        for chip, truth in truths.items():
            sources = _compact_sources(truth, chip)
            t, r = _trail_and_flux(sci[chip], truth, err[chip], sources)
            trails.append(t)
            ratios.append(r)
        results[cte] = (np.concatenate(trails), np.concatenate(ratios))
    trails_before, ratio_before = results["none"]
    trails_after, ratio_after = results["arctic"]
    assert len(trails_before) > 40
    assert trails_before.sum() > 0
    # charge in the trails falls by at least 90 %
    assert abs(trails_after.sum()) <= 0.10 * trails_before.sum(), (trails_before.sum(),
                                                                   trails_after.sum())
    assert np.median(ratio_before) < 0.97  # the uncorrected image really lost flux
    assert np.median(ratio_after) == pytest.approx(1.0, abs=0.01)


def test_cte_provenance_in_header(late):
    outputs, _truth = late
    header = fits.getheader(outputs["arctic"], 0)
    assert outputs["arctic"].name.endswith("_flc.fits")
    assert header["PCTECORR"] == "COMPLETE"
    assert "Massey" in header["CTEMODEL"]
    assert header["CTE_NIT"] == 3 and header["CTEEXPR"] == 5
    assert 4.2 < header["CTETRAPD"] < 4.8
    assert header["ARCTICV"] == "2.6"
    # the accuracy the default setting was measured within, against the exact model
    assert header["CTEACRMS"] == DEFAULT_SETTING_ACCURACY.rms_read_noise
    assert header["CTEACFLX"] == DEFAULT_SETTING_ACCURACY.flux_fraction
    assert header["CTEACCEN"] == DEFAULT_SETTING_ACCURACY.centroid_px
    # the read noise was held out of the correction, with the separation's parameters
    assert header["CTERNOIS"] == "separate"
    assert (header["CTERNBLK"], header["CTERNLOC"]) == (BLOCK_PX, LOCAL_PX)
    assert (header["CTERNSTF"], header["CTERNCLP"]) == (STRUCTURE_FACTOR, CLIP_READ_NOISE)
    assert fits.getval(outputs["none"], "PCTECORR", 0) in ("OMIT", "SKIPPED")


def test_err_describes_the_noise_after_cte_correction(late):
    """Blank sky of the CTE-corrected late exposure: (SCI - truth)/ERR has a robust width
    of 1.00 +- 0.03 (the read noise is not amplified by the correction), on each chip."""
    from astropy.stats import mad_std

    outputs, truth_path = late
    truths = _chips(truth_path, "TRUTH")
    path = outputs["arctic"]
    sci, err, dq = _chips(path), _chips(path, "ERR"), _chips(path, "DQ")
    for chip, truth in truths.items():
        res = sci[chip] - truth
        outliers = ndimage.binary_dilation(np.abs(res) > 4 * err[chip], iterations=2)
        blank = (truth < np.median(truth) + 0.05) & (dq[chip] == 0) & ~outliers
        assert blank.sum() > 1_000_000
        width = mad_std(res[blank] / err[chip][blank])
        assert width == pytest.approx(1.0, abs=0.03), (chip, width)


def test_parallel_output_identical_and_cache(sim_program_two_visits, tmp_path):
    directory, _config, result = sim_program_two_visits
    serial = run_calibrate(directory, QUICK_CTE, out_dir=tmp_path / "serial",
                           backend=LocalBackend(workers=1))
    manifest = Manifest(tmp_path / "work")
    phases = []
    parallel = run_calibrate(directory, QUICK_CTE, out_dir=tmp_path / "parallel",
                             manifest=manifest, backend=LocalBackend(workers=2),
                             on_phase=lambda root, phase: phases.append((root, phase)))
    # the workers report each part of the exposure they start, in order
    roots = sorted({root for root, _ in phases})
    assert roots == sorted(p.name[:9] for p in parallel.outputs)
    for root in roots:
        assert [phase for r, phase in phases if r == root] == list(PHASES)
    assert len(serial.outputs) == len(parallel.outputs) == len(result.raw_files) == 2
    for a, b in zip(serial.outputs, parallel.outputs, strict=True):
        with fits.open(a) as ha, fits.open(b) as hb:
            for x, y in zip(ha[1:], hb[1:], strict=True):
                assert np.array_equal(x.data, y.data), (a.name, x.name)
    # a second run finds everything done; a changed option redoes the work
    again = run_calibrate(directory, QUICK_CTE, out_dir=tmp_path / "parallel",
                          manifest=Manifest(tmp_path / "work"))
    assert again.timings == () and len(again.skipped) == 2
    changed = CalibrateConfig(**{**QUICK_CTE.__dict__, "cte": "none"})
    redo = run_calibrate(directory, changed, out_dir=tmp_path / "parallel",
                         manifest=Manifest(tmp_path / "work"))
    assert len(redo.timings) == 2


def test_cli_missing_reference_exit_code_and_no_outputs(sim_program_small, tmp_path):
    directory, _config, result = sim_program_small
    raw = result.raw_files[0]
    shutil.copy(raw, tmp_path / raw.name)
    res = CliRunner().invoke(app, ["calibrate", "--data", str(tmp_path), "--cte", "none"],
                             env={"CRDS_SERVER_URL": "http://127.0.0.1:9", "CRDS_PATH": "",
                                  "jref": ""})
    assert res.exit_code == 3, res.output
    assert "reference file(s) missing" in res.output and "crds sync --files" in res.output
    assert not list((tmp_path / "hstred_work" / "calibrated").glob("*.fits"))


def test_cli_no_raw_files_exit_code(tmp_path):
    res = CliRunner().invoke(app, ["calibrate", "--data", str(tmp_path)])
    assert res.exit_code == 2
    assert "no *_raw.fits" in res.output
