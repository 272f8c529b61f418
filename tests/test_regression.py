"""Regression tests: a fixed, seeded program reduced end to end, compared with the
stored reference reduction in ``tests/test_regression/``.

What is compared (volatile keywords -- dates, versions, paths -- are stripped):

* statistics of each product (science and weight) -- ``num_regression``, rtol 1e-4;
* the products block-averaged over 64 x 64 pixels -- ``ndarrays_regression``: science
  rtol 1e-3 with atol 1e-4 e-/s (block means of sky-subtracted noise sit near zero),
  weight rtol 1e-3;
* the provenance keywords of the products: text, integers and the configuration exactly
  (``data_regression``), other numbers with rtol 1e-6 and matched-source counts +-3
  (``num_regression``);
* the alignment solutions of the run record (``num_regression``: shifts 2e-4", rotation
  1e-5 deg, scale 1e-7, fit RMS 2e-4", matches +-3).

After an intended change of the products, regenerate the stored files with
``make test PYTEST_ARGS="tests/test_regression.py --force-regen"`` (see the README),
look at the differences with ``git diff tests/test_regression/`` and commit them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scratch import fixture_dir

from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.drizzle.stage import distortion_references
from hstred.execution import ExecutionConfig
from hstred.naming import PRODUCT_KINDS
from hstred.pipeline import PipelineConfig, run_pipeline
from hstred.simulate import SimulationConfig, simulate_program

pytestmark = pytest.mark.slow

OUTNAME = "REG"
FILTER = "F606W"
#: The fixed program: two visits of two CTE-trailed F606W exposures (2024 epoch).
PROGRAM = SimulationConfig(visits=2, exposures=2, filters=(FILTER,), seed=7,
                           date="2024-06-01", cte=True)
BLOCK = 64

#: Header keywords that change with the software version, the date or the place of a run.
_VOLATILE_KEYS = {"DATE", "IRAF-TLM", "FILENAME", "HSTRVER", "HSTREDV", "ARCTICV", "PROD_VER",
                  "RULESVER", "BLENDVER", "RULEFILE", "ROOTNAME", "DRIZPARS", "ORIGIN"}
#: Per-input drizzle keywords (D001DATA ...) that hold paths or versions.
_VOLATILE_DRIZZLE = ("VER", "DATA", "OUDA", "OUWE", "OUCO", "MASK", "GEOM", "COEF")
#: Configuration values are compared exactly: a changed default must show as such.
_CONFIG_KEYS = {"DRZPIXFR", "DRZSCALE", "DRZORIEN"}


def _is_volatile(key: str) -> bool:
    if key in _VOLATILE_KEYS or key in ("HISTORY", "COMMENT", ""):
        return True
    return key[0] == "D" and key[1:4].isdigit() and key[4:] in _VOLATILE_DRIZZLE


@pytest.fixture(scope="module")
def reduction(tmp_path_factory):
    """The fixed program simulated and reduced with the default options."""
    with fixture_dir(tmp_path_factory, "regression") as root:
        data = root / "data"
        simulate_program(data, PROGRAM)
        result = run_pipeline(data, OUTNAME, PipelineConfig(execution=ExecutionConfig(workers=2)))
        record = json.loads(result.run_record.read_text())
        yield {"root": root, "data": data, "result": result, "record": record}


def _product(data: Path, outname: str = OUTNAME) -> tuple[Path, Path, Path]:
    """The science, weight and RMS images."""
    return tuple(data / f"{outname}_{FILTER}_drz_{kind}.fits" for kind in PRODUCT_KINDS)


def _block_mean(image: np.ndarray, block: int = BLOCK) -> np.ndarray:
    ny, nx = (s // block * block for s in image.shape)
    blocks = np.nan_to_num(image[:ny, :nx].astype(np.float64)).reshape(
        ny // block, block, nx // block, block)
    return blocks.mean(axis=(1, 3))


def _statistics(sci_path: Path, wht_path: Path, rms_path: Path) -> dict[str, float]:
    sci = fits.getdata(sci_path).astype(np.float64)
    wht = fits.getdata(wht_path).astype(np.float64)
    rms, rms_header = fits.getdata(rms_path, header=True)
    covered = wht > 0
    values, weights = sci[covered], wht[covered]
    sky = values[np.abs(values - np.median(values)) < 5 * np.std(values[::97])]
    p = np.percentile(values, [1, 50, 99, 99.9])
    return {
        "ny": float(sci.shape[0]), "nx": float(sci.shape[1]),
        "covered_fraction": covered.mean(),
        "nan_outside_fraction": np.isnan(sci[~covered]).mean() if (~covered).any() else 0.0,
        "sci_mean": values.mean(), "sci_p01": p[0], "sci_median": p[1], "sci_p99": p[2],
        "sci_p999": p[3], "sci_sky_std": sky.std(), "sci_sum": values.sum(),
        "wht_median": np.median(weights), "wht_p05": np.percentile(weights, 5),
        "wht_p95": np.percentile(weights, 95),
        "rms_median": np.nanmedian(rms), "rms_p99": np.nanpercentile(rms, 99),
        **{f"rmscor{n}": float(rms_header[f"RMSCOR{n}"]) for n in (4, 16)},
    }


def _provenance(path: Path) -> tuple[dict, dict]:
    """(exact part, numeric part) of a product's stable header keywords."""
    header = fits.getheader(path, 0)
    exact, numeric = {}, {}
    for card in header.cards:
        key, value = card.keyword, card.value
        if _is_volatile(key):
            continue
        measured = key.startswith("ALN") and key.endswith("NM")  # matched sources
        if (isinstance(value, float) or measured) and key not in _CONFIG_KEYS:
            numeric[key] = np.array([float(value)])
        else:
            exact[key] = value if isinstance(value, (bool, int, float)) else str(value)
    return exact, numeric


_SOLUTION_TOLERANCES = {"shift_x_arcsec": {"atol": 2e-4}, "shift_y_arcsec": {"atol": 2e-4},
                        "rotation_deg": {"atol": 1e-5}, "scale": {"atol": 1e-7},
                        "rms_arcsec": {"atol": 2e-4}, "n_matches": {"atol": 3}}


def _solutions(record: dict) -> dict[str, np.ndarray]:
    rows = sorted(record["drizzle"]["solutions"], key=lambda s: (s["filter"], s["visit"]))
    return {k: np.array([s[k] for s in rows], dtype=float) for k in _SOLUTION_TOLERANCES}


# --------------------------------------------------------------------- the checks
def check_statistics(num_regression, sci: Path, wht: Path, rms: Path) -> None:
    num_regression.check(_statistics(sci, wht, rms), basename="product_statistics",
                         default_tolerance={"rtol": 1e-4, "atol": 1e-6})


def check_images(ndarrays_regression, sci: Path, wht: Path, rms: Path) -> None:
    ndarrays_regression.check(
        {"sci_block_mean": _block_mean(fits.getdata(sci)),
         "wht_block_mean": _block_mean(fits.getdata(wht)),
         "rms_block_mean": _block_mean(fits.getdata(rms))},
        basename="product_images",
        tolerances={"sci_block_mean": {"rtol": 1e-3, "atol": 1e-4},
                    "wht_block_mean": {"rtol": 1e-3, "atol": 0.0},
                    "rms_block_mean": {"rtol": 1e-3, "atol": 1e-6}})


def check_provenance(data_regression, num_regression, sci: Path) -> None:
    """Both comparisons run (and, with --force-regen, both files are written) before any
    difference is reported."""
    exact, numeric = _provenance(sci)
    failures = []
    try:
        data_regression.check(exact, basename="provenance_keywords")
    except (AssertionError, pytest.fail.Exception) as err:  # differences; file written
        failures.append(str(err))
    try:
        num_regression.check(numeric, basename="provenance_numbers",
                             default_tolerance={"rtol": 1e-6, "atol": 1e-9},
                             tolerances={k: {"atol": 3} for k in numeric
                                         if k.startswith("ALN") and k.endswith("NM")})
    except (AssertionError, pytest.fail.Exception) as err:  # differences; file written
        failures.append(str(err))
    if failures:
        raise AssertionError("\n".join(failures))


def check_alignment(num_regression, record: dict) -> None:
    num_regression.check(_solutions(record), basename="alignment_solutions",
                         tolerances=_SOLUTION_TOLERANCES)


# --------------------------------------------------------------------- the tests
def test_product_statistics(reduction, num_regression):
    check_statistics(num_regression, *_product(reduction["data"]))


def test_product_images(reduction, ndarrays_regression):
    check_images(ndarrays_regression, *_product(reduction["data"]))


def test_provenance_keywords(reduction, data_regression, num_regression):
    sci, wht, rms = _product(reduction["data"])
    check_provenance(data_regression, num_regression, sci)
    assert fits.getval(wht, "DRZKERN") == fits.getval(sci, "DRZKERN")
    assert fits.getval(rms, "DRZKERN") == fits.getval(sci, "DRZKERN")


def test_alignment_solutions(reduction, num_regression):
    check_alignment(num_regression, reduction["record"])


def test_report_cte_panel_comes_from_the_record(reduction):
    """The CTE panel is drawn from the record's profile: charge the correction removed
    trails away from the readout behind the star."""
    profile = reduction["record"]["cte_profile"]
    offsets = np.asarray(profile["offsets"])
    removed = np.asarray(profile["trailed"]) - np.asarray(profile["corrected"])
    assert removed[(offsets > 1) & (offsets <= 20)].sum() > 0
    assert profile["description"].split(",")[0] in reduction["record"]["cte"]
    page = (reduction["data"] / f"{OUTNAME}_report.html").read_text()
    assert "<h2>CTE correction</h2>" in page and profile["description"] in page


def test_stored_reference_is_small():
    stored = Path(__file__).with_suffix("")
    total = sum(p.stat().st_size for p in stored.iterdir())
    assert 0 < total < 2_000_000, f"{stored} holds {total} bytes; keep it under 2 MB"


def test_changed_drizzle_default_fails_the_regression(reduction, request, num_regression,
                                                      ndarrays_regression, data_regression):
    """What a changed drizzle default (pixfrac 0.8 -> 0.9) would do to the tests above."""
    if request.config.getoption("force_regen") or request.config.getoption("regen_all"):
        pytest.skip("regenerating the stored files")
    assert DrizzleConfig().pixfrac == 0.8
    calibrated = sorted((reduction["data"] / "hstred_work" / "calibrated").glob("*_flc.fits"))
    changed = reduction["root"] / "changed"
    changed.mkdir()
    result = run_drizzle(changed, "CHANGED", DrizzleConfig(pixfrac=0.9), inputs=calibrated,
                         work_dir=reduction["root"] / "changed_work",
                         distortion=distortion_references(calibrated, reduction["data"],
                                                          fetch=False))
    sci, wht, rms = result.product(FILTER).files
    with pytest.raises(AssertionError) as failure:
        check_provenance(data_regression, num_regression, sci)
    message = str(failure.value)
    assert "DRZPIXFR" in message and "0.9" in message, message
    with pytest.raises(AssertionError) as failure:
        check_images(ndarrays_regression, sci, wht, rms)
    assert "wht_block_mean" in str(failure.value)
    with pytest.raises(AssertionError) as failure:
        check_statistics(num_regression, sci, wht, rms)
    assert "wht_median" in str(failure.value)
