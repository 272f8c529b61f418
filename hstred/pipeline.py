"""The whole reduction: inputs -> calibration -> alignment and drizzle -> run record.

The stages (:mod:`hstred.stages`, run in order by one loop that ``hstred plan`` shares)
over one working directory ``DIR/hstred_work``:

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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hstred.calibrate import CalibrateConfig
from hstred.drizzle import DrizzleConfig
from hstred.errors import InputError
from hstred.execution import Backend, ExecutionConfig, bind_children_to_process, make_backend
from hstred.fileio import atomic_write_text
from hstred.inputs import find_inputs
from hstred.manifest import Manifest
from hstred.naming import check_outname, run_record_path
from hstred.stages import (
    COMMAND_STAGES,
    FROM_STAGES,
    PIPELINE,
    RECORD_SCHEMA,
    Context,
    DrizzleStage,
    Events,
    drizzle_key,
    run_stages,
    space_needed,
)
from hstred.workspace import data_dir_lock, existing_data_dir, remove_leftovers, work_dir

__all__ = ["COMMAND_STAGES", "FROM_STAGES", "PIPELINE", "RECORD_SCHEMA", "PipelineConfig",
           "PipelineResult", "drizzle_key", "space_needed", "work_dir", "run_pipeline"]

log = logging.getLogger(__name__)

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


def run_pipeline(data_dir: Path, outname: str | None, config: PipelineConfig | None = None,
                 *,
                 command: str = "run",
                 force: bool = False, from_stage: str | None = None,
                 backend: Backend | None = None,
                 on_exposure: Callable | None = None,
                 on_phase: Callable[[str, str], None] | None = None,
                 on_stage: Callable[[str, str], None] | None = None,
                 on_drizzle_step: Callable[[str, int, int], None] | None = None
                 ) -> PipelineResult:
    """Reduce the exposures in ``data_dir`` to ``DIR/OUTNAME_FILTER_drz_{sci,wht}.fits``.

    ``command`` (a key of :data:`COMMAND_STAGES`) limits the run to some of the stages
    (:data:`hstred.stages.STAGES`): without ``calibrate``, raw exposures must have been
    calibrated already; without ``drizzle``, no OUTNAME is needed and no run record is
    written. ``force`` redoes every stage; ``from_stage`` redoes that stage and those
    after it. The callbacks are those of :class:`hstred.stages.Events`.
    """
    config = config if config is not None else PipelineConfig()
    if command not in COMMAND_STAGES:
        raise ValueError(f"command must be one of {list(COMMAND_STAGES)}, not {command!r}")
    if "drizzle" in COMMAND_STAGES[command] or outname is not None:
        check_outname(outname)
    redo = redo_stages(force, from_stage)
    data_dir = existing_data_dir(data_dir)
    kind, _paths = find_inputs(data_dir)  # before the lock: an empty directory stays empty
    if COMMAND_STAGES[command] == ("calibrate",) and kind != "raw":
        raise InputError(f"{data_dir}: no *_raw.fits files to calibrate (its _flc/_flt files "
                         "are calibrated already); drizzle them with hstred drizzle OUTNAME "
                         "or hstred run OUTNAME")
    backend = backend or make_backend(config.execution)
    backend.check()
    bind_children_to_process()  # AstroDrizzle's worker processes end with the run
    events = Events(on_stage=on_stage, on_exposure=on_exposure, on_phase=on_phase,
                    on_drizzle_step=on_drizzle_step)
    with data_dir_lock(data_dir, command=f"hstred {command} {outname or ''}".strip()):
        remove_leftovers(data_dir)
        log.info("hstred %s %s in %s: %s", command, outname or "", data_dir,
                 backend.describe())
        t0 = time.perf_counter()
        work = work_dir(data_dir)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(data_dir=data_dir, outname=outname, config=config,
                      manifest=Manifest(work), command=command, redo=redo,
                      backend=backend, events=events)
        run_stages(ctx)
        engine = ctx.calibration.engine if ctx.calibration else None
        if ctx.record is None:  # no OUTNAME reduced: hstred calibrate
            return PipelineResult(products=(), run_record=None, report=None,
                                  calibrated=tuple(ctx.calibrated), skipped=ctx.skipped,
                                  timings_s=ctx.timings, warnings=(), engine=engine)
        ctx.timings["total"] = time.perf_counter() - t0
        record = {**ctx.record,
                  "skipped": ctx.skipped,
                  "timings_s": {k: round(v, 3) for k, v in ctx.timings.items()},
                  "stage_start_epoch_s": {k: round(v, 3) for k, v in ctx.started.items()}}
        run_record = run_record_path(data_dir, outname)
        atomic_write_text(run_record, json.dumps(record, indent=1, default=str))
        return PipelineResult(products=tuple(DrizzleStage().outputs(ctx)),
                              run_record=run_record, report=ctx.report,
                              calibrated=tuple(ctx.calibrated), skipped=ctx.skipped,
                              timings_s=ctx.timings, warnings=tuple(record["warnings"]),
                              engine=engine)


def redo_stages(force: bool, from_stage: str | None) -> frozenset[str]:
    """The stages a run redoes even when their work is found finished."""
    if from_stage is not None and from_stage not in FROM_STAGES:
        raise InputError(f"--from must be one of {', '.join(FROM_STAGES)}, not {from_stage!r}")
    if force:
        return frozenset(PIPELINE)
    if from_stage is None:
        return frozenset()
    return frozenset(PIPELINE[PIPELINE.index(from_stage):])
