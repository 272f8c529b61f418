"""The reduction's stages as data: inputs, calibrate, drizzle, report.

Each stage has a name and four operations on one shared :class:`Context`:

``plan(ctx)``
    the stage's cache keys and manifest lookups only: what exists, what would run and
    why. Nothing is written, fetched or locked (``hstred plan``).
``run(ctx)``
    the work, skipping every unit whose key is found finished in the manifest and whose
    outputs are intact; returns True when everything was reused.
``outputs(ctx)``
    the files the stage produced (or would reuse).
``record(ctx)``
    the stage's part of the run record ``OUTNAME_run.json``.

A stage that a command does not run but needs (``hstred drizzle`` after ``hstred
calibrate``) is *reused*: ``reuse(ctx)`` takes its finished outputs from the manifest or
names what is missing. :func:`hstred.pipeline.run_pipeline` and
:func:`hstred.plan.make_plan` are the same loop over :data:`STAGES`, one calling ``run``
and the other ``plan``.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astropy.io import fits
from astropy.time import Time

from hstred._version import __version__
from hstred.acs import CHIP_NX, CHIP_NY
from hstred.calibrate import CalibrateResult, choose_engine, exposure_key, run_calibrate
from hstred.drizzle import run_drizzle
from hstred.drizzle.stage import distortion_references
from hstred.drizzle.tileset import image_files
from hstred.errors import InputError, ReferenceFileError
from hstred.execution import Backend
from hstred.fileio import check_destinations
from hstred.inputs import InputExposure, check_inputs, check_raw_layout, find_inputs
from hstred.manifest import Manifest, software_versions
from hstred.naming import (
    PRODUCT_KINDS,
    drizzle_destinations,
    product_kinds,
    product_paths,
    report_files_dir,
    report_path,
    run_record_path,
)
from hstred.quality import check_exposure_quality
from hstred.record import cte_keywords, cte_profile, exposure_rows
from hstred.refs import ReferenceSet, resolve_references
from hstred.refs.resolve import locate_reference, needed_references, search_paths
from hstred.report import write_report
from hstred.workspace import check_free_space, drizzle_work_dir, work_dir

if TYPE_CHECKING:
    from hstred.pipeline import PipelineConfig

__all__ = ["PIPELINE", "FROM_STAGES", "COMMAND_STAGES", "RECORD_SCHEMA", "CACHED", "RUN",
           "CALIBRATED_INPUT", "Context", "Events", "ExposurePlan", "StagePlan", "Stage",
           "STAGES", "run_stages", "plan_stages", "build_record", "drizzle_key", "report_key",
           "space_needed"]

#: The names of the stages after the input checks (:data:`STAGES`), in order.
PIPELINE = ("calibrate", "drizzle", "report")
#: What ``--from`` can name: the stage redone with those after it.
FROM_STAGES = ("calibrate", "drizzle")
#: What each command runs: ``hstred calibrate`` and ``hstred drizzle`` are the pipeline
#: limited to their stages, with the same checks, lock, log, cache and record.
COMMAND_STAGES = {"run": PIPELINE, "calibrate": ("calibrate",), "drizzle": ("drizzle", "report")}
#: The run record's format (``OUTNAME_run.json`` key ``schema``).
RECORD_SCHEMA = "hstred-run/3"

#: States of a unit in a plan.
CACHED = "cached"
RUN = "run"
CALIBRATED_INPUT = "calibrated input"


@dataclass(frozen=True)
class Events:
    """Progress callbacks of a run (all optional): ``on_stage(stage, state)`` with state
    'start', 'done' or 'cached'; ``on_exposure(timing, done, total)`` as exposures finish
    calibrating; ``on_phase(rootname, phase)`` as local workers start each part of one;
    ``on_drizzle_step(step, done, total)`` as the drizzle stage's sub-steps advance."""

    on_stage: Callable[[str, str], None] | None = None
    on_exposure: Callable | None = None
    on_phase: Callable[[str, str], None] | None = None
    on_drizzle_step: Callable[[str, int, int], None] | None = None

    def stage(self, name: str, state: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name, state)


@dataclass
class Context:
    """What the stages of one run (or plan) share; each stage fills in its part."""

    data_dir: Path
    outname: str | None
    config: PipelineConfig
    manifest: Manifest
    command: str = "run"  # a key of COMMAND_STAGES
    redo: frozenset[str] = frozenset()
    backend: Backend | None = None  # None when planning
    events: Events = field(default_factory=Events)
    # inputs
    kind: str = ""  # 'raw' or 'calibrated'
    paths: list[Path] = field(default_factory=list)
    exposures: list[InputExposure] = field(default_factory=list)
    # calibrate
    calibration: CalibrateResult | None = None
    calibrated: list[Path] = field(default_factory=list)
    # drizzle: its finished unit's manifest entry (result, exposure rows, CTE profile)
    distortion: dict = field(default_factory=dict)
    drizzle: dict | None = None
    # report
    report: Path | None = None
    record: dict | None = None
    # bookkeeping
    plans: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    @property
    def raws(self) -> list[Path]:
        return [e.path for e in self.exposures] if self.kind == "raw" else []

    @property
    def calibrating(self) -> bool:
        return bool(self.raws) and "calibrate" in _selected(self)


def _selected(ctx: Context) -> tuple[str, ...]:
    return COMMAND_STAGES[ctx.command]


class Stage:
    """One stage of the reduction (see the module's docstring)."""

    name: str = ""

    def plan(self, ctx: Context) -> Any:
        raise NotImplementedError

    def run(self, ctx: Context) -> bool:
        raise NotImplementedError

    def reuse(self, ctx: Context) -> None:
        raise NotImplementedError(f"the {self.name} stage is never skipped")

    def applies(self, ctx: Context) -> bool:
        """False when the stage has nothing to do for these inputs (it is then reused)."""
        return True

    def outputs(self, ctx: Context) -> list[Path]:
        return []

    def record(self, ctx: Context) -> dict:
        return {}


#: Pixels of one ACS/WFC exposure: two 4096 x 2048 chips.
_FULL_FRAME_PIXELS = 2 * CHIP_NX * CHIP_NY
#: Bytes per pixel of a calibrated exposure: float32 SCI and ERR, int16 DQ.
_CALIBRATED_BYTES_PER_PIXEL = 4 + 4 + 2
#: Side (arcsec) of a north-up box holding one full ACS/WFC field at any roll: the
#: field's diagonal, distortion included (a 2-exposure program measured 291" x 269").
_FIELD_ARCSEC = 300.0


def _science_pixels(path: Path) -> int:
    """Pixels in the SCI extensions of ``path``, read from their headers (overscan
    included in a raw file: an upper bound for the calibrated image)."""
    with fits.open(path, lazy_load_hdus=True) as hdul:
        return sum(int(h.header.get("NAXIS1", 0)) * int(h.header.get("NAXIS2", 0))
                   for h in hdul[1:] if h.name == "SCI")


def _grid_pixels(exposures, pixels: dict[Path, int], scale_arcsec: float) -> float:
    """Pixels of an output grid covering ``exposures`` (their pointings' spread plus the
    largest field), from the primary headers' RA_TARG/DEC_TARG."""

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
    field = _FIELD_ARCSEC * math.sqrt(max(pixels.values()) / _FULL_FRAME_PIXELS)
    return ((spread + field) / scale_arcsec) ** 2


def space_needed(exposures, *, n_calibrate: int, drizzle: bool, config: PipelineConfig) -> float:
    """Bytes a run writes on the data directory's disk at its peak (an upper estimate),
    from the image sizes in the inputs' headers (a full-frame exposure calibrates to
    168 MB).

    Calibration: one calibrated file per exposure still to do (the largest inputs'
    size). Drizzle: a working copy of every exposure; the visit images and each filter's
    separate drizzles (float32 science and weight per exposure at 0.05"/pixel); the
    blotted images (float32, chip size); the final science and weight images of every
    filter (and of every exposure with ``--singles``) at the output scale, staged beside
    the products and published over the previous ones.
    """
    if not exposures:
        return 0.0
    pixels = {e.path: _science_pixels(e.path) for e in exposures}
    calibrated = max(pixels.values()) * _CALIBRATED_BYTES_PER_PIXEL
    need = n_calibrate * calibrated
    if drizzle:
        n = len(exposures)
        by_filter: dict[str, int] = {}
        for e in exposures:
            by_filter[e.filter] = by_filter.get(e.filter, 0) + 1
        separate = _grid_pixels(exposures, pixels, 0.05) * 8
        final = _grid_pixels(exposures, pixels, config.drizzle.pixel_scale_arcsec) * 8
        need += sum(pixels.values()) * _CALIBRATED_BYTES_PER_PIXEL  # working copies
        need += n * separate + max(by_filter.values()) * (separate + calibrated // 2)
        need += 2 * len(by_filter) * final
        if config.drizzle.singles:
            need += 2 * n * final
    return need * 1.1


# ---------------------------------------------------------------------------- inputs
class InputsStage(Stage):
    """Finds and checks the inputs; before a run, everything else that can be checked
    before any work: references (fetched when missing), destinations, free space."""

    name = "inputs"

    def plan(self, ctx: Context) -> list[InputExposure]:
        ctx.kind, ctx.paths = find_inputs(ctx.data_dir)
        ctx.exposures = check_inputs(ctx.paths,
                                     allow_mixed_targets=ctx.config.allow_mixed_targets)
        if ctx.kind == "raw":
            check_raw_layout(ctx.exposures)
        return ctx.exposures

    def run(self, ctx: Context) -> bool:
        self.plan(ctx)
        if ctx.calibrating:
            resolve_references(ctx.raws, ctx.data_dir)
        files, directories = _destinations(ctx)
        check_destinations(files, directories=directories)
        drizzle_later = "drizzle" in _selected(ctx) and (
            "drizzle" in ctx.redo or not _drizzle_finished(ctx.manifest, ctx.outname))
        done = ctx.manifest.entries("calibrate")
        n_calibrate = (0 if not ctx.calibrating else len(ctx.raws) if "calibrate" in ctx.redo
                       else sum(1 for e in ctx.exposures if not done.get(e.rootname)))
        check_free_space(ctx.data_dir,
                         space_needed(ctx.exposures, n_calibrate=n_calibrate,
                                      drizzle=drizzle_later, config=ctx.config),
                         what=f"{n_calibrate} calibrated exposure(s)"
                         + (f" and drizzling {len(ctx.exposures)}" if drizzle_later else ""))
        return False

    def record(self, ctx: Context) -> dict:
        return {"inputs": [p.name for p in (ctx.raws or ctx.paths)]}


def _destinations(ctx: Context) -> tuple[list[Path], list[Path]]:
    if ctx.outname is None:
        return [], []
    data_dir, outname = ctx.data_dir, ctx.outname
    files, directories = drizzle_destinations(
        data_dir, outname, sorted({e.filter for e in ctx.exposures}),
        [e.rootname for e in ctx.exposures] if ctx.config.drizzle.singles else ())
    return ([*files, run_record_path(data_dir, outname), report_path(data_dir, outname)],
            [*directories, report_files_dir(data_dir, outname)])


# ---------------------------------------------------------------------------- calibrate
@dataclass(frozen=True)
class ExposurePlan:
    exposure: InputExposure
    date: str
    references: dict  # keyword -> (name, found path or None)
    calibrate: str  # CACHED, RUN or CALIBRATED_INPUT
    reason: str  # why it would run (empty when it would not)

    @property
    def missing_references(self) -> list[str]:
        return [name for name, path in self.references.values()
                if name is not None and path is None]


def _date(exp: InputExposure) -> str:
    return Time(exp.expstart_mjd, format="mjd").isot[:19] if exp.expstart_mjd else "?"


class CalibrateStage(Stage):
    """Raw exposures -> calibrated ``_flc``/``_flt`` files, one manifest unit per
    exposure (archive-calibrated inputs pass through)."""

    name = "calibrate"

    def plan(self, ctx: Context) -> list[ExposurePlan]:
        plans = []
        if ctx.kind != "raw":
            plans = [ExposurePlan(exposure=e, date=_date(e), references={},
                                  calibrate=CALIBRATED_INPUT, reason="")
                     for e in ctx.exposures]
            ctx.calibrated = list(ctx.paths)
            return plans
        engine = choose_engine(ctx.config.calibrate.engine)
        search = search_paths(ctx.data_dir)
        calibrated = []
        for exp in ctx.exposures:
            plan = self._plan_one(ctx, exp, engine, search)
            plans.append(plan)
            if plan.calibrate == CACHED:
                calibrated.append(ctx.manifest.outputs("calibrate", exp.rootname)[0])
        ctx.calibrated = sorted(calibrated, key=lambda p: p.name)  # as run() returns them
        if all(p.calibrate == CACHED for p in plans):
            # What run() would return: the record (and the report's key) can be planned.
            ctx.calibration = CalibrateResult(
                outputs=tuple(ctx.calibrated), timings=(), engine=engine, workers=0,
                wall_s=0.0, skipped=tuple(e.rootname for e in ctx.exposures),
                references=tuple(ReferenceSet(exposure=p.exposure.path,
                                              paths={k: path for k, (_n, path)
                                                     in p.references.items()})
                                 for p in plans))
        return plans

    def _plan_one(self, ctx: Context, exp: InputExposure, engine: str,
                  search: list[Path]) -> ExposurePlan:
        names = needed_references(fits.getheader(exp.path, 0))
        refs = {k: (n, locate_reference(n, search) if n else None) for k, n in names.items()}
        missing = [n for n, p in refs.values() if n is not None and p is None]
        entry = ctx.manifest.entries("calibrate").get(exp.rootname)
        if "calibrate" in ctx.redo:
            state, reason = RUN, "redone on request"
        elif missing:
            state, reason = RUN, "references to fetch first"
        elif entry is None:
            state, reason = RUN, "not calibrated yet"
        else:
            key = exposure_key(ctx.manifest, exp.path,
                               {k: p for k, (_n, p) in refs.items()},
                               ctx.config.calibrate, engine)
            if ctx.manifest.lookup("calibrate", exp.rootname, key) is not None:
                state, reason = CACHED, ""
            elif entry.get("key") != key:
                state, reason = RUN, "raw file, references, options or software changed"
            else:
                state, reason = RUN, "its calibrated file is missing or changed"
        return ExposurePlan(exposure=exp, date=_date(exp), references=refs, calibrate=state,
                            reason=reason)

    def applies(self, ctx: Context) -> bool:
        return ctx.kind == "raw"

    def run(self, ctx: Context) -> bool:
        ctx.calibration = run_calibrate(
            ctx.data_dir, ctx.config.calibrate, raw_files=ctx.raws,
            progress=ctx.events.on_exposure, on_phase=ctx.events.on_phase,
            backend=ctx.backend, manifest=ctx.manifest, force="calibrate" in ctx.redo,
            allow_mixed_targets=ctx.config.allow_mixed_targets)
        ctx.skipped["calibrate"] = list(ctx.calibration.skipped)
        ctx.calibrated = list(ctx.calibration.outputs)
        return not ctx.calibration.timings

    def reuse(self, ctx: Context) -> None:
        """The calibrated files of an earlier run (with whatever options it had), or an
        error naming the exposures not calibrated yet."""
        if ctx.kind != "raw":
            ctx.calibrated = list(ctx.paths)
            return
        found, missing = [], []
        entries = ctx.manifest.entries("calibrate")
        for e in ctx.exposures:
            entry = entries.get(e.rootname)
            if entry and ctx.manifest.lookup("calibrate", e.rootname, entry["key"]):
                found.append(ctx.manifest.outputs("calibrate", e.rootname)[0])
            else:
                missing.append(e.path.name)
        if missing:
            raise InputError(f"{len(missing)} exposure(s) not calibrated yet "
                             f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})"
                             "; run hstred calibrate first, or hstred run")
        ctx.calibrated = sorted(found, key=lambda p: p.name)

    def outputs(self, ctx: Context) -> list[Path]:
        return list(ctx.calibrated)

    def record(self, ctx: Context) -> dict:
        c = ctx.calibration
        return {"calibrated": [_relative(ctx, p) for p in ctx.calibrated],
                "engine": c.engine if c else None,
                "references": {r.exposure.name: r.names() for r in c.references} if c else {},
                "cte": cte_keywords(ctx.calibrated)}


def _relative(ctx: Context, path: Path) -> str:
    """A path as the record keeps it: relative to the data directory when inside it."""
    try:
        return Path(path).resolve().relative_to(ctx.data_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- drizzle
@dataclass(frozen=True)
class StagePlan:
    """A stage of one OUTNAME: ``state`` CACHED or RUN, and why."""

    outname: str
    state: str
    reason: str
    products: tuple[tuple[Path, bool], ...]  # (product, exists)


def drizzle_key(manifest: Manifest, inputs, outname: str, config, distortion: dict) -> str:
    """The drizzle stage's cache key of one OUTNAME: its inputs' and distortion
    references' content (by file name, never by path), options and software."""
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


def _drizzle_finished(manifest: Manifest, outname: str | None) -> bool:
    """True when a finished drizzle of OUTNAME is recorded with its products present (the
    calibration it used may still change: the drizzle stage checks again)."""
    outputs = manifest.outputs("drizzle", outname) if outname else []
    return bool(outputs) and all(p.is_file() for p in outputs)


def _first_cte_profile(calibrated) -> dict | None:
    """The CTE panel's profile, from the first CTE-corrected exposure (None without)."""
    for path in calibrated:
        if fits.getval(path, "PCTECORR", 0, default="") == "COMPLETE":
            return cte_profile(path)
    return None


class DrizzleStage(Stage):
    """Per-visit drizzles, alignment (and the tie to a reference catalog), the final
    per-filter products: one manifest unit per OUTNAME, holding the drizzle result and
    what the record says of each exposure (measured once, with the drizzle)."""

    name = "drizzle"

    def _products(self, ctx: Context) -> tuple[tuple[Path, bool], ...]:
        filters = sorted({e.filter for e in ctx.exposures})
        kinds = product_kinds(rms=ctx.config.drizzle.rms)
        return tuple((p, p.is_file()) for f in filters
                     for p in product_paths(ctx.data_dir, ctx.outname, f, kinds,
                                            tiled=ctx.config.drizzle.tiled_products))

    def plan(self, ctx: Context) -> StagePlan:
        products = self._products(ctx)
        todo = [e for e in ctx.plans.get("calibrate", ()) if e.calibrate == RUN]
        entry = ctx.manifest.entries("drizzle").get(ctx.outname)
        if "drizzle" in ctx.redo:
            return StagePlan(ctx.outname, RUN, "redone on request", products)
        if todo:
            return StagePlan(ctx.outname, RUN, f"after calibrating {len(todo)} exposure(s)",
                             products)
        if entry is None:
            return StagePlan(ctx.outname, RUN, f"no finished drizzle of {ctx.outname}",
                             products)
        try:
            ctx.distortion = distortion_references(ctx.calibrated, ctx.data_dir, fetch=False)
        except ReferenceFileError as err:
            return StagePlan(ctx.outname, RUN, f"distortion references to fetch first ({err})",
                             products)
        key = drizzle_key(ctx.manifest, ctx.calibrated, ctx.outname, ctx.config.drizzle,
                          ctx.distortion)
        found = ctx.manifest.lookup("drizzle", ctx.outname, key)
        if found is not None:
            ctx.drizzle = found
            return StagePlan(ctx.outname, CACHED, "", products)
        if entry.get("key") != key:
            return StagePlan(ctx.outname, RUN, "calibrated inputs, options, distortion "
                             "references or software changed", products)
        return StagePlan(ctx.outname, RUN, "its products are missing or changed", products)

    def run(self, ctx: Context) -> bool:
        data_dir, outname, config = ctx.data_dir, ctx.outname, ctx.config
        # Exposures without a distortion solution need their IDCTAB/NPOLFILE/D2IMFILE:
        # resolved (or reported missing) before any drizzle.
        ctx.distortion = distortion_references(ctx.calibrated, data_dir)
        key = drizzle_key(ctx.manifest, ctx.calibrated, outname, config.drizzle,
                          ctx.distortion)
        entry = None if "drizzle" in ctx.redo else ctx.manifest.lookup("drizzle", outname, key)
        ctx.skipped["drizzle"] = entry is not None
        if entry is not None:
            ctx.drizzle = entry
            return True
        by_root = {e.rootname: e.path for e in ctx.exposures}
        sources = {p.name: by_root.get(p.name.split("_")[0].lower(), p) for p in ctx.calibrated}
        check_exposure_quality(ctx.calibrated, good_bits=config.drizzle.good_bits,
                               sources=sources)
        check_free_space(data_dir, space_needed(ctx.exposures, n_calibrate=0, drizzle=True,
                                                config=config),
                         what=f"drizzling {len(ctx.exposures)} exposure(s)")
        drizzle_work = drizzle_work_dir(data_dir, outname)
        shutil.rmtree(drizzle_work, ignore_errors=True)
        try:
            result = run_drizzle(data_dir, outname, config.drizzle, inputs=ctx.calibrated,
                                 work_dir=drizzle_work, backend=ctx.backend,
                                 distortion=ctx.distortion,
                                 progress=ctx.events.on_drizzle_step,
                                 catalog_dir=work_dir(data_dir) / "catalogs")
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                shutil.rmtree(drizzle_work, ignore_errors=True)  # give the space back
            raise
        info = {"result": result.to_dict(root=data_dir),
                "exposures": exposure_rows(ctx.calibrated, result.cr_fractions),
                "cte_profile": _first_cte_profile(ctx.calibrated)}
        outputs = [f for p in (*result.products, *result.singles) for f in p.files]
        ctx.manifest.record("drizzle", outname, key, outputs, info=info)
        ctx.drizzle = ctx.manifest.entries("drizzle")[outname]
        return False

    def outputs(self, ctx: Context) -> list[Path]:
        if ctx.drizzle is None:
            return []
        return [ctx.data_dir / p[k] for p in ctx.drizzle["result"]["products"]
                for k in PRODUCT_KINDS if p.get(k)]

    def record(self, ctx: Context) -> dict:
        d = ctx.drizzle or {}
        result = d.get("result") or {}
        return {"drizzle": result, "warnings": list(result.get("warnings", ())),
                "exposures": d.get("exposures", []), "cte_profile": d.get("cte_profile")}


# ---------------------------------------------------------------------------- report
#: Run-record entries that describe how a run went, or where, rather than what it
#: produced: outside the report's cache key.
_NOT_REPORTED = ("skipped", "timings_s", "stage_start_epoch_s", "execution", "data_dir")


def report_key(manifest: Manifest, record: dict, products) -> str:
    """The report draws the record and the products only (not where the directory is
    mounted, nor which CRDS server was asked)."""
    stable = {k: v for k, v in record.items() if k not in _NOT_REPORTED}
    stable["crds"] = {"context": (record.get("crds") or {}).get("context")}
    stable["config"] = {k: v for k, v in record.get("config", {}).items() if k != "execution"}
    return manifest.make_key(record=stable,
                             files={Path(p).name: d for p, d in
                                    manifest.hash_files(products).items()})


def build_record(ctx: Context) -> dict:
    """The run record: each stage's part, with the run's identity and options."""
    record = {
        "schema": RECORD_SCHEMA,
        "hstred_version": __version__,
        "software": software_versions(),
        "outname": ctx.outname,
        "data_dir": str(ctx.data_dir.resolve()),
        "config": {**ctx.config.to_dict(),
                   **({} if ctx.calibrating else {"calibrate": None})},
        "execution": ctx.backend.describe() if ctx.backend is not None else "",
        "crds": {"context": os.environ.get("CRDS_CONTEXT"),
                 "server": os.environ.get("CRDS_SERVER_URL")},
        "reference_sha256": _reference_hashes(ctx),
    }
    for stage in STAGES:
        record.update(stage.record(ctx))
    record.update(skipped=ctx.skipped, timings_s={k: round(v, 3) for k, v in
                                                 ctx.timings.items()})
    return record


def _reference_hashes(ctx: Context) -> dict[str, str]:
    """SHA-256 of every reference file the run used, by file name."""
    c = ctx.calibration
    paths = {p for r in (c.references if c else ()) for p in r.paths.values() if p is not None}
    paths |= {p for r in ctx.distortion.values() for p in r.paths.values() if p is not None}
    paths = sorted(paths, key=lambda p: p.name)
    return dict(zip((p.name for p in paths), ctx.manifest.hash_many(paths), strict=True))


class ReportStage(Stage):
    """The QA report ``OUTNAME_report.html`` and its figures, from the run record and the
    products only."""

    name = "report"

    def _key(self, ctx: Context) -> str:
        ctx.record = build_record(ctx)
        return report_key(ctx.manifest, ctx.record,
                          [f for p in DrizzleStage().outputs(ctx) for f in image_files(p)])

    def plan(self, ctx: Context) -> StagePlan:
        path = report_path(ctx.data_dir, ctx.outname)
        products = ((path, path.is_file()),)
        if "report" in ctx.redo:
            return StagePlan(ctx.outname, RUN, "redone on request", products)
        if ctx.drizzle is None:
            return StagePlan(ctx.outname, RUN, "after the drizzle", products)
        if ctx.manifest.lookup("report", ctx.outname, self._key(ctx)) is not None:
            return StagePlan(ctx.outname, CACHED, "", products)
        return StagePlan(ctx.outname, RUN, "the run record or the products changed", products)

    def run(self, ctx: Context) -> bool:
        key = self._key(ctx)
        ctx.report = report_path(ctx.data_dir, ctx.outname)
        if "report" not in ctx.redo and ctx.manifest.lookup("report", ctx.outname, key):
            ctx.skipped["report"] = True
            return True
        ctx.report = write_report(ctx.data_dir, ctx.outname, ctx.record)
        figures = sorted(report_files_dir(ctx.data_dir, ctx.outname).glob("*.png"))
        ctx.manifest.record("report", ctx.outname, key, [ctx.report, *figures])
        ctx.skipped["report"] = False
        return False

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.report] if ctx.report is not None else []


#: The reduction, in order.
STAGES: tuple[Stage, ...] = (InputsStage(), CalibrateStage(), DrizzleStage(), ReportStage())


def run_stages(ctx: Context) -> None:
    """Run the command's stages in order: those before its first are reused, those after
    its last are not touched."""
    selected = _selected(ctx)
    for stage in STAGES:
        if stage.name == "inputs":
            stage.run(ctx)
            continue
        if stage.name not in selected or not stage.applies(ctx):
            if not stage.applies(ctx) or any(s.name in selected
                                             for s in STAGES[STAGES.index(stage) + 1:]):
                stage.reuse(ctx)
                continue
            break
        ctx.events.stage(stage.name, "start")
        ctx.started[stage.name] = time.time()
        t = time.perf_counter()
        cached = stage.run(ctx)
        ctx.timings[stage.name] = time.perf_counter() - t
        ctx.events.stage(stage.name, "cached" if cached else "done")


def plan_stages(ctx: Context) -> None:
    """The same loop, keys and lookups only: ``ctx.plans[stage]`` for every stage the
    command would run (``report`` only for an OUTNAME)."""
    selected = _selected(ctx)
    for stage in STAGES:
        if stage.name == "inputs" or stage.name in selected:
            if stage.name in ("drizzle", "report") and ctx.outname is None:
                continue
            ctx.plans[stage.name] = stage.plan(ctx)
