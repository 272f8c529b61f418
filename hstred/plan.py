"""What ``hstred run`` would do, without doing it (``hstred plan``).

The run's own stage loop (:func:`hstred.stages.plan_stages`) computing cache keys and
manifest lookups only: nothing is written, no lock is taken, nothing is fetched. Per
filter and visit it says which exposures are calibrated already and which would be (and
why), which references are found and which are missing, and for an OUTNAME whether the
drizzle stage's products and the report can be reused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hstred.calibrate import choose_engine
from hstred.manifest import Manifest
from hstred.naming import check_outname
from hstred.pipeline import PipelineConfig, redo_stages
from hstred.stages import (
    CACHED,
    CALIBRATED_INPUT,
    RUN,
    Context,
    ExposurePlan,
    StagePlan,
    plan_stages,
)
from hstred.workspace import existing_data_dir, work_dir

__all__ = ["CACHED", "RUN", "CALIBRATED_INPUT", "ExposurePlan", "ReductionPlan", "StagePlan",
           "make_plan"]


@dataclass(frozen=True)
class ReductionPlan:
    data_dir: Path
    exposures: tuple[ExposurePlan, ...]
    from_raw: bool
    engine: str
    drizzle: StagePlan | None
    report: StagePlan | None = None

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


def make_plan(data_dir: Path, config: PipelineConfig, outname: str | None = None, *,
              force: bool = False, from_stage: str | None = None) -> ReductionPlan:
    """What ``run_pipeline(data_dir, outname, config, force=..., from_stage=...)`` would do.

    Raises the errors the run would raise before any work (bad inputs, bad OUTNAME);
    missing references are part of the plan instead.
    """
    if outname is not None:
        check_outname(outname)
    redo = redo_stages(force, from_stage)
    data_dir = existing_data_dir(data_dir)
    ctx = Context(data_dir=data_dir, outname=outname, config=config,
                  manifest=Manifest(work_dir(data_dir)),  # read only: nothing is saved
                  redo=redo)
    plan_stages(ctx)
    return ReductionPlan(data_dir=data_dir, exposures=tuple(ctx.plans["calibrate"]),
                         from_raw=ctx.kind == "raw",
                         engine=choose_engine(config.calibrate.engine),
                         drizzle=ctx.plans.get("drizzle"), report=ctx.plans.get("report"))
