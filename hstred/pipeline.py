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

Before any work, under the data directory's lock (:mod:`hstred.workspace`): leftovers
of killed runs are removed; the inputs' headers and structure, the references, the
product destinations and the free space are checked. Calibrated exposures pass the
data-quality gates (:mod:`hstred.quality`) before anything is drizzled.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hstred._version import __version__
from hstred.acs import CHIP_NX, CHIP_NY
from hstred.calibrate import CalibrateConfig, CalibrateResult, run_calibrate
from hstred.drizzle import DrizzleConfig, product_paths, run_drizzle
from hstred.drizzle.stage import distortion_references
from hstred.errors import InputError
from hstred.execution import Backend, ExecutionConfig, bind_children_to_process, make_backend
from hstred.fileio import atomic_write_text, check_destinations
from hstred.inputs import check_inputs, check_outname, check_raw_layout, find_inputs
from hstred.manifest import Manifest, software_versions
from hstred.quality import check_exposure_quality
from hstred.record import cte_keywords, cte_profile, exposure_rows
from hstred.refs import resolve_references
from hstred.report import write_report
from hstred.workspace import (
    check_free_space,
    data_dir_lock,
    drizzle_work_dir,
    existing_data_dir,
    remove_leftovers,
    work_dir,
)

__all__ = ["STAGES", "PipelineConfig", "PipelineResult", "work_dir", "run_pipeline"]

log = logging.getLogger(__name__)

#: The stages after the input checks, in order; ``--from`` names one of the first two.
STAGES = ("calibrate", "drizzle")
PIPELINE = ("calibrate", "drizzle", "report")
#: What each command runs: ``hstred calibrate`` and ``hstred drizzle`` are the pipeline
#: limited to their stages, with the same checks, lock, log, cache and record.
COMMAND_STAGES = {"run": PIPELINE, "calibrate": ("calibrate",), "drizzle": ("drizzle", "report")}
#: The run record's format (``OUTNAME_run.json`` key ``schema``).
RECORD_SCHEMA = "hstred-run/2"


@dataclass(frozen=True)
class PipelineConfig:
    """All options of ``hstred run``: the science options, one section per stage, and
    the execution settings apart (they never change a product)."""

    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    drizzle: DrizzleConfig = field(default_factory=DrizzleConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    allow_mixed_targets: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, path: Path) -> PipelineConfig:
        """The science options of the run recorded in ``path`` (an ``OUTNAME_run.json``);
        the execution settings are not taken: they belong to the machine."""
        path = Path(path)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"--config {path}: no such file; give an OUTNAME_run.json "
                             "that hstred run wrote") from None
        except (OSError, ValueError) as err:
            raise InputError(f"--config {path}: not readable as a run record ({err}); give an "
                             "OUTNAME_run.json that hstred run wrote") from None
        config = record.get("config") if isinstance(record, dict) else None
        if not isinstance(config, dict) or not {"calibrate", "drizzle"} <= set(config):
            raise InputError(f"--config {path} holds no run options; give an OUTNAME_run.json "
                             "that hstred run wrote")
        try:  # a section is None when its stage did not run (hstred drizzle)
            return cls(calibrate=CalibrateConfig(**(config["calibrate"] or {})),
                       drizzle=DrizzleConfig(**(config["drizzle"] or {})),
                       allow_mixed_targets=bool(config.get("allow_mixed_targets", False)))
        except TypeError as err:
            raise InputError(f"--config {path}: options this hstred does not know ({err}); "
                             "the record comes from another version") from None


@dataclass(frozen=True)
class PipelineResult:
    products: tuple[Path, ...]
    run_record: Path | None  # None when no OUTNAME was reduced (hstred calibrate)
    report: Path | None
    calibrated: tuple[Path, ...]
    skipped: dict
    timings_s: dict
    warnings: tuple[str, ...]
    engine: str | None = None  # the calibration engine used, when calibration ran


def drizzle_key(manifest: Manifest, inputs, outname: str, config: DrizzleConfig,
                distortion: dict) -> str:
    """The drizzle stage's cache key of one OUTNAME."""
    params = config.to_dict()
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


#: Bytes of one calibrated exposure: two 4096 x 2048 chips of float32 SCI and ERR, int16 DQ.
CALIBRATED_BYTES = 2 * CHIP_NX * CHIP_NY * (4 + 4 + 2)
#: Side (arcsec) of a north-up box holding one ACS/WFC field at any roll: the field's
#: diagonal, distortion included (a 2-exposure program measured 291" x 269").
_FIELD_ARCSEC = 300.0


def _grid_pixels(exposures, scale_arcsec: float) -> float:
    """Pixels of an output grid covering ``exposures`` (their pointings' spread plus one
    field), from the primary headers' RA_TARG/DEC_TARG."""
    from astropy.io import fits

    ras, decs = [], []
    for e in exposures:
        header = fits.getheader(e.path, 0)
        if "RA_TARG" in header and "DEC_TARG" in header:
            ras.append(float(header["RA_TARG"]))
            decs.append(float(header["DEC_TARG"]))
    spread = 0.0
    if ras:
        cos_dec = math.cos(math.radians(sum(decs) / len(decs)))
        spread = 3600.0 * max((max(ras) - min(ras)) * cos_dec, max(decs) - min(decs))
    return ((spread + _FIELD_ARCSEC) / scale_arcsec) ** 2


def space_needed(exposures, *, n_calibrate: int, drizzle: bool, config: PipelineConfig) -> float:
    """Bytes a run writes on the data directory's disk at its peak (an upper estimate).

    Calibration: one calibrated file per exposure still to do. Drizzle: a working copy of
    every exposure; the visit images and each filter's separate drizzles (float32 science
    and weight per exposure at 0.05"/pixel); the blotted images (float32, raw chip size);
    the final science and weight images of every filter (and of every exposure with
    ``--singles``) at the output scale, staged beside the products and published over
    the previous ones.
    """
    need = n_calibrate * CALIBRATED_BYTES
    if drizzle and exposures:
        n = len(exposures)
        by_filter: dict[str, int] = {}
        for e in exposures:
            by_filter[e.filter] = by_filter.get(e.filter, 0) + 1
        separate = _grid_pixels(exposures, 0.05) * 8
        final = _grid_pixels(exposures, config.drizzle.pixel_scale_arcsec) * 8
        need += n * CALIBRATED_BYTES  # working copies
        need += n * separate + max(by_filter.values()) * (separate + CALIBRATED_BYTES // 2)
        need += 2 * len(by_filter) * final
        if config.drizzle.singles:
            need += 2 * n * final
    return need * 1.1


def run_pipeline(data_dir: Path, outname: str | None, config: PipelineConfig | None = None,
                 *,
                 stages: tuple[str, ...] = PIPELINE,
                 force: bool = False, from_stage: str | None = None,
                 backend: Backend | None = None,
                 on_exposure: Callable | None = None,
                 on_phase: Callable[[str, str], None] | None = None,
                 on_stage: Callable[[str, str], None] | None = None,
                 on_drizzle_step: Callable[[str, int, int], None] | None = None
                 ) -> PipelineResult:
    """Reduce the exposures in ``data_dir`` to ``DIR/OUTNAME_FILTER_drz_{sci,wht}.fits``.

    ``stages`` limits the run to some of :data:`PIPELINE` (:data:`COMMAND_STAGES`): without
    ``calibrate``, raw exposures must have been calibrated already; without ``drizzle``,
    no OUTNAME is needed and no run record is written. ``force`` redoes every stage;
    ``from_stage`` redoes that stage and those after it.
    ``on_stage(stage, state)`` is called with state 'start', 'done' or 'cached';
    ``on_exposure(timing, done, total)`` as exposures finish calibrating and
    ``on_phase(rootname, phase)`` as local workers start each part of one;
    ``on_drizzle_step(step, done, total)`` as the drizzle stage's sub-steps advance.
    """
    config = config if config is not None else PipelineConfig()
    if tuple(stages) not in COMMAND_STAGES.values():
        raise ValueError(f"stages must be one of {list(COMMAND_STAGES.values())}, "
                         f"not {stages!r}")
    if "drizzle" in stages or outname is not None:
        check_outname(outname)
    if from_stage is not None and from_stage not in STAGES:
        raise InputError(f"--from must be one of {', '.join(STAGES)}, not {from_stage!r}")
    data_dir = existing_data_dir(data_dir)
    backend = backend or make_backend(config.execution)
    backend.check()
    bind_children_to_process()  # AstroDrizzle's worker processes end with the run
    command = next(c for c, s in COMMAND_STAGES.items() if s == tuple(stages))
    with data_dir_lock(data_dir, command=f"hstred {command} {outname or ''}".strip()):
        remove_leftovers(data_dir)
        return _run_locked(data_dir, outname, config, stages=tuple(stages), force=force,
                           from_stage=from_stage,
                           backend=backend, on_exposure=on_exposure, on_phase=on_phase,
                           on_stage=on_stage,
                           on_drizzle_step=on_drizzle_step)


def _destinations(data_dir: Path, outname: str | None, exposures, config: PipelineConfig):
    if outname is None:
        return [], []
    files = [*(p for f in sorted({e.filter for e in exposures})
               for p in product_paths(data_dir, outname, f)),
             data_dir / f"{outname}_run.json", data_dir / f"{outname}_report.html"]
    if config.drizzle.singles:
        files += [data_dir / "singles" / f"{e.rootname}_drz_{k}.fits"
                  for e in exposures for k in ("sci", "wht")]
    return files, [data_dir / f"{outname}_report_files"]


def _drizzle_cached(manifest: Manifest, outname: str) -> bool:
    """True when a finished drizzle of OUTNAME is recorded with its products intact (the
    calibration it used may still change: the drizzle stage checks again)."""
    outputs = manifest.outputs("drizzle", outname)
    return bool(outputs) and all(p.is_file() for p in outputs)


def _calibrated_before(manifest: Manifest, exposures) -> list[Path]:
    """The calibrated files of raw exposures calibrated by an earlier run, or an error
    naming those that were not."""
    found, missing = [], []
    for e in exposures:
        outputs = manifest.outputs("calibrate", e.rootname)
        if outputs and all(p.is_file() for p in outputs):
            found.append(outputs[0])
        else:
            missing.append(e.path.name)
    if missing:
        raise InputError(f"{len(missing)} exposure(s) not calibrated yet "
                         f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                         "run hstred calibrate first, or hstred run")
    return sorted(found, key=lambda p: p.name)


def _run_locked(data_dir: Path, outname: str | None, config: PipelineConfig, *,
                stages: tuple[str, ...], force: bool, from_stage: str | None,
                backend: Backend, on_exposure, on_stage, on_phase=None,
                on_drizzle_step=None) -> PipelineResult:
    t0 = time.perf_counter()
    work = work_dir(data_dir)
    work.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(work)
    redo = set(STAGES) if force else (set(STAGES[STAGES.index(from_stage):])
                                     if from_stage else set())
    notify = on_stage or (lambda stage, state: None)
    timings: dict[str, float] = {}
    started: dict[str, float] = {}  # epoch seconds at which each stage began
    skipped: dict[str, object] = {}

    # Everything that can be checked before work, is.
    kind, paths = find_inputs(data_dir)
    exposures = check_inputs(paths, allow_mixed_targets=config.allow_mixed_targets)
    raws = [e.path for e in exposures] if kind == "raw" else []
    calibrating = bool(raws) and "calibrate" in stages
    if raws:
        check_raw_layout(exposures)
    if calibrating:
        resolve_references(raws, data_dir)
    files, directories = _destinations(data_dir, outname, exposures, config)
    check_destinations(files, directories=directories)
    drizzle_later = "drizzle" in stages and (
        "drizzle" in redo or not _drizzle_cached(manifest, outname))
    n_calibrate = 0 if not calibrating else len(raws) if "calibrate" in redo else sum(
        1 for e in exposures if not manifest.entries("calibrate").get(e.rootname))
    check_free_space(data_dir, space_needed(exposures, n_calibrate=n_calibrate,
                                            drizzle=drizzle_later, config=config),
                     what=f"{n_calibrate} calibrated exposure(s)"
                     + (f" and drizzling {len(exposures)}" if drizzle_later else ""))

    calibration: CalibrateResult | None = None
    if calibrating:
        notify("calibrate", "start")
        started["calibrate"] = time.time()
        t = time.perf_counter()
        calibration = run_calibrate(data_dir, config.calibrate, raw_files=raws,
                                    progress=on_exposure, on_phase=on_phase,
                                    backend=backend, manifest=manifest,
                                    force="calibrate" in redo,
                                    allow_mixed_targets=config.allow_mixed_targets)
        timings["calibrate"] = time.perf_counter() - t
        skipped["calibrate"] = list(calibration.skipped)
        calibrated = list(calibration.outputs)
        notify("calibrate", "cached" if not calibration.timings else "done")
    elif raws:
        calibrated = _calibrated_before(manifest, exposures)
    else:
        calibrated = list(paths)
    if "drizzle" not in stages:
        return PipelineResult(products=(), run_record=None, report=None,
                              calibrated=tuple(calibrated), skipped=skipped,
                              timings_s=timings, warnings=(),
                              engine=calibration.engine if calibration else None)

    notify("drizzle", "start")
    started["drizzle"] = time.time()
    t = time.perf_counter()
    drizzle_work = drizzle_work_dir(data_dir, outname)
    # Exposures without a distortion solution need their IDCTAB/NPOLFILE/D2IMFILE:
    # resolved (or reported missing) before any drizzle.
    distortion = distortion_references(calibrated, data_dir)
    key = drizzle_key(manifest, calibrated, outname, config.drizzle, distortion)
    entry = None if "drizzle" in redo else manifest.lookup("drizzle", outname, key)
    if entry is not None:
        drizzle_record = entry["result"]
        skipped["drizzle"] = True
        notify("drizzle", "cached")
    else:
        by_root = {e.rootname: e.path for e in exposures}
        sources = {p.name: by_root.get(p.name.split("_")[0].lower(), p) for p in calibrated}
        check_exposure_quality(calibrated, good_bits=config.drizzle.good_bits, sources=sources)
        check_free_space(data_dir, space_needed(exposures, n_calibrate=0, drizzle=True,
                                                config=config),
                         what=f"drizzling {len(exposures)} exposure(s)")
        shutil.rmtree(drizzle_work, ignore_errors=True)
        try:
            result = run_drizzle(data_dir, outname, config.drizzle, inputs=calibrated,
                                 work_dir=drizzle_work, backend=backend,
                                 distortion=distortion, progress=on_drizzle_step,
                                 catalog_dir=work / "catalogs")
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                shutil.rmtree(drizzle_work, ignore_errors=True)  # give the space back
            raise
        drizzle_record = result.to_dict()
        outputs = [p.sci for p in result.products] + [p.wht for p in result.products]
        outputs += [s.sci for s in result.singles] + [s.wht for s in result.singles]
        manifest.record("drizzle", outname, key, outputs, info={"result": drizzle_record})
        skipped["drizzle"] = False
        notify("drizzle", "done")
    timings["drizzle"] = time.perf_counter() - t

    products = tuple(Path(p[k]) for p in drizzle_record["products"] for k in ("sci", "wht"))
    record = {
        "schema": RECORD_SCHEMA,
        "hstred_version": __version__,
        "software": software_versions(),
        "outname": outname,
        "data_dir": str(data_dir.resolve()),
        "config": {**config.to_dict(),
                   **({} if calibrating else {"calibrate": None})},
        "execution": backend.describe(),
        "inputs": [str(p.name) for p in (raws or calibrated)],
        "calibrated": [str(p) for p in calibrated],
        "engine": calibration.engine if calibration else None,
        "crds": {"context": os.environ.get("CRDS_CONTEXT"),
                 "server": os.environ.get("CRDS_SERVER_URL")},
        "references": ({r.exposure.name: r.names() for r in calibration.references}
                       if calibration else {}),
        "reference_sha256": _reference_hashes(manifest, calibration, distortion),
        "warnings": list(drizzle_record.get("warnings", ())),
        "cte": cte_keywords(calibrated),
        "exposures": exposure_rows(calibrated, drizzle_record.get("cr_fractions")),
        "cte_profile": _cte_profile(calibrated),
        "drizzle": drizzle_record,
        "skipped": skipped,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    notify("report", "start")
    started["report"] = time.time()
    t = time.perf_counter()
    report_key = _report_key(manifest, record, products)
    report = data_dir / f"{outname}_report.html"
    if not redo and manifest.lookup("report", outname, report_key) is not None:
        skipped["report"] = True
        notify("report", "cached")
    else:
        report = write_report(data_dir, outname, record)
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
                          warnings=tuple(drizzle_record.get("warnings", ())),
                          engine=calibration.engine if calibration else None)


def _reference_hashes(manifest: Manifest, calibration: CalibrateResult | None,
                      distortion: dict) -> dict[str, str]:
    """SHA-256 of every reference file the run used, by file name."""
    paths = {p for r in (calibration.references if calibration else ()) for p in r.paths.values()
             if p is not None}
    paths |= {p for r in distortion.values() for p in r.paths.values() if p is not None}
    paths = sorted(paths, key=lambda p: p.name)
    return dict(zip((p.name for p in paths), manifest.hash_many(paths), strict=True))


#: Run-record entries that describe how a run went rather than what it produced.
_VOLATILE = ("skipped", "timings_s", "stage_start_epoch_s", "execution")


def _report_key(manifest: Manifest, record: dict, products) -> str:
    """The report draws the record and the products only."""
    stable = {k: v for k, v in record.items() if k not in _VOLATILE}
    return manifest.make_key(record=stable, files=manifest.hash_files(products))


def _cte_profile(calibrated) -> dict | None:
    """The CTE panel's profile, from the first CTE-corrected exposure (None without)."""
    from astropy.io import fits

    for path in calibrated:
        if fits.getval(path, "PCTECORR", 0, default="") == "COMPLETE":
            return cte_profile(path)
    return None
