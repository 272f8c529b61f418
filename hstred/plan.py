"""What ``hstred run`` would do, without doing it (``hstred plan``).

The same inputs, checks, reference search and stage cache keys as :func:`run_pipeline`,
computed and looked up only: nothing is written, no lock is taken, nothing is fetched.
Per filter and visit it says which exposures are calibrated already and which would be
(and why), which references are found and which are missing, and for an OUTNAME
whether the drizzle stage's finished products can be reused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits
from astropy.time import Time

from hstred.calibrate import choose_engine, exposure_key
from hstred.drizzle import product_paths
from hstred.drizzle.stage import distortion_references
from hstred.errors import InputError, ReferenceFileError
from hstred.inputs import InputExposure, check_inputs, check_outname, check_raw_layout, find_inputs
from hstred.manifest import Manifest
from hstred.pipeline import STAGES, PipelineConfig, drizzle_key
from hstred.refs.resolve import locate_reference, needed_references, search_paths
from hstred.workspace import existing_data_dir, work_dir

__all__ = ["ExposurePlan", "ReductionPlan", "StagePlan", "make_plan"]

#: Calibration states of an exposure in a plan.
CACHED = "cached"
RUN = "run"
CALIBRATED_INPUT = "calibrated input"


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


@dataclass(frozen=True)
class StagePlan:
    """The drizzle stage of one OUTNAME: ``state`` CACHED or RUN, and why."""

    outname: str
    state: str
    reason: str
    products: tuple[tuple[Path, bool], ...]  # (product, exists)


@dataclass(frozen=True)
class ReductionPlan:
    data_dir: Path
    exposures: tuple[ExposurePlan, ...]
    from_raw: bool
    engine: str
    drizzle: StagePlan | None

    def by_filter_and_visit(self) -> dict[str, dict[str, list[ExposurePlan]]]:
        groups: dict[str, dict[str, list[ExposurePlan]]] = defaultdict(lambda: defaultdict(list))
        for e in self.exposures:
            groups[e.exposure.filter][e.exposure.visit].append(e)
        return {f: dict(v) for f, v in sorted(groups.items())}

    @property
    def targets(self) -> list[str]:
        return sorted({e.exposure.target for e in self.exposures})

    @property
    def to_calibrate(self) -> list[ExposurePlan]:
        return [e for e in self.exposures if e.calibrate == RUN]

    @property
    def missing_references(self) -> list[str]:
        return sorted({n for e in self.exposures for n in e.missing_references})


def _calibration_plan(manifest: Manifest, exp: InputExposure, config, engine: str,
                      search: list[Path], redo: bool) -> ExposurePlan:
    names = needed_references(fits.getheader(exp.path, 0))
    refs = {k: (n, locate_reference(n, search) if n else None) for k, n in names.items()}
    date = Time(exp.expstart_mjd, format="mjd").isot[:19] if exp.expstart_mjd else "?"
    missing = [n for n, p in refs.values() if n is not None and p is None]
    entry = manifest.entries("calibrate").get(exp.rootname)
    if redo:
        state, reason = RUN, "redone on request"
    elif missing:
        state, reason = RUN, "references to fetch first"
    elif entry is None:
        state, reason = RUN, "not calibrated yet"
    else:
        key = exposure_key(manifest, exp.path, {k: p for k, (_n, p) in refs.items()},
                            config, engine)
        if manifest.lookup("calibrate", exp.rootname, key) is not None:
            state, reason = CACHED, ""
        elif entry.get("key") != key:
            state, reason = RUN, "raw file, references, options or software changed"
        else:
            state, reason = RUN, "its calibrated file is missing or changed"
    return ExposurePlan(exposure=exp, date=date, references=refs, calibrate=state,
                        reason=reason)


def _drizzle_plan(manifest: Manifest, data_dir: Path, outname: str, config,
                  exposures: list[ExposurePlan], calibrated: list[Path], redo: bool
                  ) -> StagePlan:
    filters = sorted({e.exposure.filter for e in exposures})
    products = tuple((p, p.is_file()) for f in filters
                     for p in product_paths(data_dir, outname, f))
    todo = [e for e in exposures if e.calibrate == RUN]
    entry = manifest.entries("drizzle").get(outname)
    if redo:
        return StagePlan(outname, RUN, "redone on request", products)
    if todo:
        return StagePlan(outname, RUN, f"after calibrating {len(todo)} exposure(s)", products)
    if entry is None:
        return StagePlan(outname, RUN, f"no finished drizzle of {outname}", products)
    try:
        distortion = distortion_references(calibrated, data_dir, fetch=False)
    except ReferenceFileError as err:
        return StagePlan(outname, RUN, f"distortion references to fetch first ({err})",
                         products)
    key = drizzle_key(manifest, calibrated, outname, config.drizzle, distortion)
    if manifest.lookup("drizzle", outname, key) is not None:
        return StagePlan(outname, CACHED, "", products)
    if entry.get("key") != key:
        return StagePlan(outname, RUN, "calibrated inputs, options, distortion references or "
                         "software changed", products)
    return StagePlan(outname, RUN, "its products are missing or changed", products)


def make_plan(data_dir: Path, config: PipelineConfig, outname: str | None = None, *,
              force: bool = False, from_stage: str | None = None) -> ReductionPlan:
    """What ``run_pipeline(data_dir, outname, config, force=..., from_stage=...)`` would do.

    Raises the errors the run
    would raise before any work (bad inputs, bad OUTNAME); missing references are part
    of the plan instead.
    """
    if outname is not None:
        check_outname(outname)
    if from_stage is not None and from_stage not in STAGES:
        raise InputError(f"--from must be one of {', '.join(STAGES)}, not {from_stage!r}")
    redo = set(STAGES) if force else (set(STAGES[STAGES.index(from_stage):])
                                     if from_stage else set())
    data_dir = existing_data_dir(data_dir)
    kind, paths = find_inputs(data_dir)
    inputs = check_inputs(paths, allow_mixed_targets=config.allow_mixed_targets)
    manifest = Manifest(work_dir(data_dir))  # read only: nothing is saved
    engine = choose_engine(config.calibrate.engine)
    exposures: list[ExposurePlan] = []
    calibrated: list[Path] = []
    if kind == "raw":
        check_raw_layout(inputs)
        search = search_paths(data_dir)
        for exp in inputs:
            plan = _calibration_plan(manifest, exp, config.calibrate, engine, search,
                                     "calibrate" in redo)
            exposures.append(plan)
            if plan.calibrate == CACHED:
                calibrated.append(manifest.outputs("calibrate", exp.rootname)[0])
        calibrated.sort(key=lambda p: p.name)  # as the calibration stage returns them
    else:
        for exp in inputs:
            date = Time(exp.expstart_mjd, format="mjd").isot[:19] if exp.expstart_mjd else "?"
            exposures.append(ExposurePlan(exposure=exp, date=date, references={},
                                          calibrate=CALIBRATED_INPUT, reason=""))
        calibrated = list(paths)  # as the run drizzles them
    drizzle = (_drizzle_plan(manifest, data_dir, outname, config, exposures,
                             calibrated, "drizzle" in redo)
               if outname is not None else None)
    return ReductionPlan(data_dir=data_dir, exposures=tuple(exposures),
                         from_raw=kind == "raw", engine=engine, drizzle=drizzle)
