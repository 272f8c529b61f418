"""The whole reduction: inputs -> calibration -> alignment and drizzle -> run record.

A readable list of stages over one working directory ``DIR/hstred_work``:

1. inputs: ``*_raw.fits`` (or, without raws, archive ``_flc``/``_flt`` files) checked;
2. ``calibrate``: per exposure, skipped when the manifest shows it done with the same
   inputs, references, options and software;
3. ``drizzle``: per-visit drizzle, alignment, final per-filter products; skipped
   when its calibrated inputs, options and software are unchanged and the products
   are intact;
4. the run record ``DIR/OUTNAME_run.json`` (provenance, alignment and, with a reference
   catalog, the absolute tie under ``drizzle.absolute``: catalog file, epoch handling,
   matches, RMS, shift, rotation, scale and every residual; timings) and the QA report
   ``DIR/OUTNAME_report.html``. A Gaia cone fetched for ``reference_catalog = "gaia"``
   is kept in ``DIR/hstred_work/catalogs`` for offline reruns.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hstred._version import __version__
from hstred.calibrate import CalibrateConfig, CalibrateResult, run_calibrate
from hstred.drizzle import DrizzleConfig, run_drizzle
from hstred.drizzle.stage import distortion_references
from hstred.errors import InputError
from hstred.execution import Backend, make_backend
from hstred.inputs import check_inputs, find_calibrated_files
from hstred.manifest import Manifest, atomic_write_text, software_versions
from hstred.report import write_report

__all__ = ["STAGES", "PipelineConfig", "PipelineResult", "work_dir", "run_pipeline"]

log = logging.getLogger(__name__)

STAGES = ("calibrate", "drizzle")


@dataclass(frozen=True)
class PipelineConfig:
    """All options of ``hstred run``: one section per stage plus execution."""

    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    drizzle: DrizzleConfig = field(default_factory=DrizzleConfig)
    workers: int | None = None
    scheduler: str | None = None
    allow_mixed_targets: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PipelineResult:
    products: tuple[Path, ...]
    run_record: Path
    report: Path
    calibrated: tuple[Path, ...]
    skipped: dict
    timings_s: dict
    warnings: tuple[str, ...]


def work_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "hstred_work"


def _drizzle_key(manifest: Manifest, inputs, outname: str, config: DrizzleConfig,
                 distortion: dict) -> str:
    params = config.to_dict()
    params.pop("num_cores")  # parallelism does not change the products
    inputs = list(inputs)
    digests = dict(zip((Path(p).name for p in inputs), manifest.hash_many(inputs), strict=True))
    references = sorted({p for refs in distortion.values() for p in refs.paths.values()
                         if p is not None})
    ref_digests = dict(zip((p.name for p in references), manifest.hash_many(references),
                           strict=True))
    applied = {name: refs.names() for name, refs in sorted(distortion.items())}
    extra = {}
    named = config.reference_catalog.strip()
    catalog = Path(named) if named and named.lower() != "gaia" else None
    if catalog is not None and catalog.is_file():
        # The tie depends on the catalog's content, not only on its name.
        extra["reference_catalog"] = manifest.hash_many([catalog])[0]
    return manifest.make_key(inputs=digests, outname=outname, params=params,
                             distortion={"files": ref_digests, "applied": applied},
                             software=software_versions(), **extra)


def _check_outname(outname: str) -> None:
    if not outname or "/" in outname or outname.startswith((".", "-")):
        raise InputError(f"OUTNAME {outname!r} must be a plain file-name stem, e.g. ABELL1689")


def run_pipeline(data_dir: Path, outname: str, config: PipelineConfig | None = None,
                 *,
                 force: bool = False, from_stage: str | None = None,
                 backend: Backend | None = None,
                 on_exposure: Callable | None = None,
                 on_stage: Callable[[str, str], None] | None = None) -> PipelineResult:
    """Reduce the exposures in ``data_dir`` to ``DIR/OUTNAME_FILTER_drz_{sci,wht}.fits``.

    ``force`` redoes every stage; ``from_stage`` redoes that stage and those after it.
    ``on_stage(stage, state)`` is called with state 'start', 'done' or 'cached'.
    """
    config = config if config is not None else PipelineConfig()
    _check_outname(outname)
    if from_stage is not None and from_stage not in STAGES:
        raise InputError(f"--from must be one of {', '.join(STAGES)}, not {from_stage!r}")
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    work = work_dir(data_dir)
    work.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(work)
    redo = set(STAGES) if force else (set(STAGES[STAGES.index(from_stage):])
                                     if from_stage else set())
    notify = on_stage or (lambda stage, state: None)
    backend = backend or make_backend(workers=config.workers, scheduler=config.scheduler)
    timings: dict[str, float] = {}
    started: dict[str, float] = {}  # epoch seconds at which each stage began
    skipped: dict[str, object] = {}

    raws = sorted(data_dir.glob("*_raw.fits"))
    calibration: CalibrateResult | None = None
    if raws:
        notify("calibrate", "start")
        started["calibrate"] = time.time()
        t = time.perf_counter()
        calibration = run_calibrate(data_dir, config.calibrate, raw_files=raws,
                                    progress=on_exposure, backend=backend, manifest=manifest,
                                    force="calibrate" in redo,
                                    allow_mixed_targets=config.allow_mixed_targets)
        timings["calibrate"] = time.perf_counter() - t
        skipped["calibrate"] = list(calibration.skipped)
        calibrated = list(calibration.outputs)
        notify("calibrate", "cached" if not calibration.timings else "done")
    else:
        calibrated = find_calibrated_files(data_dir)
        if not calibrated:
            raise InputError(f"{data_dir}: no *_raw.fits, *_flc.fits or *_flt.fits files; "
                             "put the exposures there or pass --data DIR")
        check_inputs(calibrated, allow_mixed_targets=config.allow_mixed_targets)

    notify("drizzle", "start")
    started["drizzle"] = time.time()
    t = time.perf_counter()
    # Exposures without a distortion solution need their IDCTAB/NPOLFILE/D2IMFILE:
    # resolved (or reported missing) before any drizzle.
    distortion = distortion_references(calibrated, data_dir)
    key = _drizzle_key(manifest, calibrated, outname, config.drizzle, distortion)
    entry = None if "drizzle" in redo else manifest.lookup("drizzle", outname, key)
    if entry is not None:
        drizzle_record = entry["result"]
        skipped["drizzle"] = True
        notify("drizzle", "cached")
    else:
        drizzle_work = work / "drizzle"
        shutil.rmtree(drizzle_work, ignore_errors=True)
        result = run_drizzle(data_dir, outname, config.drizzle, inputs=calibrated,
                             work_dir=drizzle_work, backend=backend, distortion=distortion,
                             catalog_dir=work / "catalogs")
        drizzle_record = result.to_dict()
        outputs = [p.sci for p in result.products] + [p.wht for p in result.products]
        outputs += [s.sci for s in result.singles] + [s.wht for s in result.singles]
        manifest.record("drizzle", outname, key, outputs, info={"result": drizzle_record})
        skipped["drizzle"] = False
        notify("drizzle", "done")
    timings["drizzle"] = time.perf_counter() - t

    products = tuple(Path(p[k]) for p in drizzle_record["products"] for k in ("sci", "wht"))
    record = {
        "hstred_version": __version__,
        "software": software_versions(),
        "outname": outname,
        "data_dir": str(data_dir.resolve()),
        "config": config.to_dict(),
        "execution": backend.describe(),
        "inputs": [str(p.name) for p in (raws or calibrated)],
        "calibrated": [str(p) for p in calibrated],
        "references": ({r.exposure.name: r.names() for r in calibration.references}
                       if calibration else {}),
        "cte": _cte_record(calibrated),
        "drizzle": drizzle_record,
        "skipped": skipped,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    notify("report", "start")
    started["report"] = time.time()
    t = time.perf_counter()
    report_key = _report_key(manifest, record, products, calibrated)
    report = data_dir / f"{outname}_report.html"
    if not redo and manifest.lookup("report", outname, report_key) is not None:
        skipped["report"] = True
        notify("report", "cached")
    else:
        report = write_report(data_dir, outname, record, drizzle_work=work / "drizzle")
        figures = sorted((data_dir / f"{outname}_report_files").glob("*.png"))
        manifest.record("report", outname, report_key, [report, *figures])
        skipped["report"] = False
        notify("report", "done")
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    record["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    record["stage_start_epoch_s"] = {k: round(v, 3) for k, v in started.items()}
    run_record = data_dir / f"{outname}_run.json"
    atomic_write_text(run_record, json.dumps(record, indent=1, default=str))
    return PipelineResult(products=products, run_record=run_record, report=report,
                          calibrated=tuple(calibrated), skipped=skipped, timings_s=timings,
                          warnings=tuple(drizzle_record.get("warnings", ())))


#: Run-record entries that describe how a run went rather than what it produced.
_VOLATILE = ("skipped", "timings_s", "stage_start_epoch_s", "execution")


def _report_key(manifest: Manifest, record: dict, products, calibrated) -> str:
    """The report depends on the record's content and on the files it reads."""
    stable = {k: v for k, v in record.items() if k not in _VOLATILE}
    files = [*products, *calibrated]
    return manifest.make_key(record=stable, files=manifest.hash_files(files))


_CTE_KEYS = ("PCTECORR", "CTEMODEL", "CTEDATE", "CTE_NIT", "CTEEXPR", "CTETRAPD", "CTEFWELL",
             "CTEWFPOW", "ARCTICV")


def _cte_record(calibrated) -> dict:
    from astropy.io import fits

    out = {}
    for path in calibrated:
        header = fits.getheader(path, 0)
        out[Path(path).name] = {k: header[k] for k in _CTE_KEYS if k in header}
    return out
