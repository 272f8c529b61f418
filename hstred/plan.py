"""What ``hstred run`` would do, without doing it (``hstred plan``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from astropy.time import Time

from hstred.calibrate import CalibrateConfig, _choose_engine, _exposure_key
from hstred.inputs import InputExposure, check_inputs, find_calibrated_files
from hstred.manifest import Manifest
from hstred.refs.resolve import _locate, needed_references, search_paths

__all__ = ["ExposurePlan", "ReductionPlan", "make_plan"]


@dataclass(frozen=True)
class ExposurePlan:
    exposure: InputExposure
    date: str
    references: dict  # keyword -> (name, found path or None)
    calibrate: str  # "calibrate", "cached" or "calibrated input"

    @property
    def missing_references(self) -> list[str]:
        return [name for name, path in self.references.values()
                if name is not None and path is None]


@dataclass(frozen=True)
class ReductionPlan:
    data_dir: Path
    exposures: tuple[ExposurePlan, ...]
    from_raw: bool

    def by_filter_and_visit(self) -> dict[str, dict[str, list[ExposurePlan]]]:
        groups: dict[str, dict[str, list[ExposurePlan]]] = defaultdict(lambda: defaultdict(list))
        for e in self.exposures:
            groups[e.exposure.filter][e.exposure.visit].append(e)
        return {f: dict(v) for f, v in sorted(groups.items())}

    @property
    def targets(self) -> list[str]:
        return sorted({e.exposure.target for e in self.exposures})


def make_plan(data_dir: Path, config: CalibrateConfig | None = None, *,
              allow_mixed_targets: bool = False) -> ReductionPlan:
    """Inventory of ``data_dir``: exposures by filter and visit, references, cached work."""
    from astropy.io import fits

    config = config if config is not None else CalibrateConfig()
    data_dir = Path(data_dir)
    raws = sorted(data_dir.glob("*_raw.fits"))
    from_raw = bool(raws)
    paths = raws or find_calibrated_files(data_dir)
    exposures = check_inputs(paths, allow_mixed_targets=allow_mixed_targets)
    manifest = Manifest(data_dir / "hstred_work")
    dirs = search_paths(data_dir)
    engine = _choose_engine(config.engine)
    out = []
    for exp in exposures:
        refs: dict = {}
        status = "calibrated input"
        if from_raw:
            names = needed_references(fits.getheader(exp.path, 0))
            refs = {k: (n, _locate(n, dirs) if n else None) for k, n in names.items()}
            status = "calibrate"
            if all(p is not None for n, p in refs.values() if n is not None):
                resolved = {k: p for k, (_n, p) in refs.items()}
                key = _exposure_key(manifest, exp.path, resolved, config, engine)
                if manifest.lookup("calibrate", exp.rootname, key) is not None:
                    status = "cached"
        date = Time(exp.expstart_mjd, format="mjd").isot[:19] if exp.expstart_mjd else "?"
        out.append(ExposurePlan(exposure=exp, date=date, references=refs, calibrate=status))
    return ReductionPlan(data_dir=data_dir, exposures=tuple(out), from_raw=from_raw)
