"""The calibration stage: raw exposures -> ``_flt``/``_flc`` files, in parallel.

For every ``*_raw.fits`` in the data directory the stage resolves the reference
files (before any work, so a missing file stops the run at once), then runs, per
exposure, either the native CCD steps (:mod:`hstred.ccd`) or STScI's calacs
programs, with arCTIc pixel-CTE correction on the trimmed, bias-free electron
image between the CCD and 2-D steps.

Exposures run in separate processes (``workers``). arCTIc parallelises over
columns with OpenMP; each worker gets ``workers // active workers`` threads, so a
single exposure still uses every core it was given. Columns are independent in arCTIc, so
the output does not depend on the number of workers or threads.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from hstred.cte.model import CORRECTION_EXPRESS, CORRECTION_ITERATIONS
from hstred.cte.noise import NOISE_METHODS, noise_parameters
from hstred.errors import HstredError, InputError, StageError
from hstred.execution import Backend, LocalBackend, forwarded_queue, make_backend
from hstred.inputs import check_inputs, check_raw_layout, find_raw_files
from hstred.manifest import Manifest, software_versions
from hstred.refs import ReferenceSet, resolve_references
from hstred.workspace import calibrated_dir

__all__ = [
    "CalibrateConfig",
    "ExposureTiming",
    "CalibrateResult",
    "calibrated_dir",
    "calacs_available",
    "run_calibrate",
    "calibrate_one",
]

log = logging.getLogger(__name__)

CTEChoice = Literal["arctic", "none"]
EngineChoice = Literal["native", "calacs", "auto"]


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of the calibration stage.

    cte
        ``'arctic'`` (pixel CTE correction, ``_flc`` outputs) or ``'none'`` (``_flt``).
    engine
        ``'native'`` (hstred's own CCD steps), ``'calacs'`` (hstcal's acsccd.e and
        acs2d.e, which must be on PATH) or ``'auto'`` (calacs when present).
    cte_iterations, cte_express
        arCTIc forward-modelling iterations and express factor (0 = exact); the
        defaults are set, with the reasons, in :mod:`hstred.cte.model`.
    cte_noise
        ``'separate'`` (default): each quadrant's read-noise estimate is held out of the CTE
        correction and added back unamplified (:mod:`hstred.cte.noise`); ``'amplify'``: the
        whole quadrant is corrected, read noise included.
    """

    cte: CTEChoice = "arctic"
    engine: EngineChoice = "auto"
    cte_iterations: int = CORRECTION_ITERATIONS
    cte_express: int = CORRECTION_EXPRESS
    cte_noise: str = "separate"

    def __post_init__(self) -> None:
        if self.cte not in ("arctic", "none"):
            raise InputError(f"--cte must be 'arctic' or 'none', not {self.cte!r}")
        if self.engine not in ("native", "calacs", "auto"):
            raise InputError(f"--engine must be native, calacs or auto, not {self.engine!r}")
        if self.cte_iterations < 1:
            raise InputError("--cte-iterations must be at least 1")
        if self.cte_express < 0:
            raise InputError("--cte-express must be 0 (exact) or more")
        if self.cte_noise not in NOISE_METHODS:
            raise InputError(f"--cte-noise must be {' or '.join(NOISE_METHODS)}, not "
                             f"{self.cte_noise!r}")


@dataclass(frozen=True)
class ExposureTiming:
    """Wall-clock seconds of one exposure's calibration, by part."""

    rootname: str
    output: Path
    engine: str
    ccd_s: float
    cte_s: float
    two_d_s: float
    write_s: float
    total_s: float
    peak_rss_mb: float


@dataclass(frozen=True)
class CalibrateResult:
    outputs: tuple[Path, ...]
    timings: tuple[ExposureTiming, ...]
    engine: str
    workers: int
    wall_s: float
    references: tuple[ReferenceSet, ...] = field(default=())
    skipped: tuple[str, ...] = field(default=())  # rootnames found finished in the manifest


def calacs_available() -> bool:
    """True when hstcal's acsccd.e and acs2d.e are on PATH."""
    return all(shutil.which(p) is not None for p in ("acsccd.e", "acs2d.e"))


def choose_engine(engine: EngineChoice) -> str:
    if engine == "auto":
        return "calacs" if calacs_available() else "native"
    if engine == "calacs" and not calacs_available():
        raise InputError("--engine calacs needs hstcal's acsccd.e and acs2d.e on PATH; install "
                         "hstcal (conda-forge) or use --engine native")
    return engine


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _correct_all(correct, quad_sci, quad, mjd, read_noise_e):
    """``--cte-noise amplify``: the quadrant corrected whole, its read noise included."""
    return correct(quad_sci, quad, mjd)


def _cte_function(config: CalibrateConfig):
    from hstred.cte.model import remove_cte_from_quadrant

    correct = functools.partial(remove_cte_from_quadrant, express=config.cte_express,
                                n_iterations=config.cte_iterations)
    return correct if config.cte_noise == "separate" else functools.partial(_correct_all,
                                                                            correct)


def _cte_info(config: CalibrateConfig, expstart_mjd: float) -> dict:
    """The CTE model and setting for the headers; with the default setting, also the
    bounds its differences from the exact model were measured within."""
    from hstred.cte.accuracy import DEFAULT_SETTING_ACCURACY as measured
    from hstred.cte.model import arcticpy_version, cte_model_for_date

    model = cte_model_for_date(expstart_mjd)
    info = model.to_dict()
    info.update(model=model.name, total_trap_density=model.total_trap_density,
                n_iterations=config.cte_iterations, express=config.cte_express,
                arcticpy_version=arcticpy_version(), read_noise=config.cte_noise)
    if config.cte_noise == "separate":
        info.update(noise_parameters())
    info.pop("name", None)
    if (config.cte_express, config.cte_iterations) == (CORRECTION_EXPRESS,
                                                        CORRECTION_ITERATIONS):
        info.update(accuracy_rms_read_noise=measured.rms_read_noise,
                    accuracy_flux_fraction=measured.flux_fraction,
                    accuracy_centroid_px=measured.centroid_px)
    return info


#: The parts of one exposure's calibration a worker reports as it starts them.
PHASES = ("CCD steps", "CTE correction", "2-D steps", "writing")


def _no_phase(phase: str) -> None:
    return None


def _calibrate_native(raw: Path, references, out_dir: Path, config: CalibrateConfig,
                      phase: Callable[[str], None] = _no_phase) -> ExposureTiming:
    from hstred.ccd import apply_cte, ccd_stage, two_d_stage, write_calibrated

    t0 = time.perf_counter()
    phase(PHASES[0])
    chips = ccd_stage(raw, references)
    t1 = time.perf_counter()
    if config.cte == "arctic":
        phase(PHASES[1])
        expstart = float(chips[0].primary["EXPSTART"])
        chips = apply_cte(chips, _cte_function(config), cte_info=_cte_info(config, expstart))
    t2 = time.perf_counter()
    phase(PHASES[2])
    chips = two_d_stage(chips, references)
    t3 = time.perf_counter()
    phase(PHASES[3])
    out = write_calibrated(chips, out_dir)
    t4 = time.perf_counter()
    return ExposureTiming(rootname=str(chips[0].primary["ROOTNAME"]).strip().lower(),
                          output=out, engine="native", ccd_s=t1 - t0, cte_s=t2 - t1,
                          two_d_s=t3 - t2, write_s=t4 - t3, total_s=t4 - t0,
                          peak_rss_mb=_peak_rss_mb())


def calibrate_one(raw: Path, references, out_dir: Path, config: CalibrateConfig,
                  engine: str, phase: Callable[[str], None] = _no_phase) -> ExposureTiming:
    """Calibrate one exposure with the chosen engine (runs inside a worker); the native
    engine calls ``phase(name)`` as it starts each of :data:`PHASES`."""
    if engine == "calacs":
        from hstred.ccd.calacs import calibrate_with_calacs

        phase("calacs")
        cte = _cte_function(config) if config.cte == "arctic" else None
        return calibrate_with_calacs(raw, references, out_dir, cte=cte,
                                     cte_info_for=functools.partial(_cte_info, config))
    return _calibrate_native(raw, references, out_dir, config, phase)


def _worker_task(args) -> tuple[ExposureTiming, Path]:
    raw, references, out_dir, config, engine, threads, phases = args
    from threadpoolctl import threadpool_limits

    from hstred.cte.model import load_arcticpy

    def phase(name: str) -> None:
        if phases is not None:
            phases.put((Path(raw).name.split("_")[0].lower(), name))

    load_arcticpy()  # its OpenMP runtime must be loaded for the limit to reach it
    try:
        with threadpool_limits(limits=threads, user_api="openmp"):
            return calibrate_one(raw, references, out_dir, config, engine, phase), raw
    except HstredError as err:
        if str(raw) in str(err) or Path(raw).name in str(err):
            raise
        raise type(err)(f"{raw}: {err}") from err


def exposure_key(manifest: Manifest, raw: Path, references: dict, config: CalibrateConfig,
                 engine: str) -> str:
    """The calibration stage's cache key of one exposure."""
    params = asdict(config)
    return manifest.make_key(raw=manifest.hash_file(raw),
                             references={k: (manifest.hash_file(p) if p else None)
                                         for k, p in sorted(references.items())},
                             params=params, engine=engine, software=software_versions())


def run_calibrate(data_dir: Path, config: CalibrateConfig | None = None, *,
                  raw_files: Sequence[Path] | None = None, out_dir: Path | None = None,
                  progress: Callable[[ExposureTiming, int, int], None] | None = None,
                  on_phase: Callable[[str, str], None] | None = None,
                  allow_mixed_targets: bool = False, backend: Backend | None = None,
                  manifest: Manifest | None = None, force: bool = False) -> CalibrateResult:
    """Calibrate every raw exposure of ``data_dir`` into ``DIR/hstred_work/calibrated``.

    Inputs are checked and references resolved for all exposures before any work;
    raw files are only read. With a ``manifest``, exposures whose raw file,
    references, options and software are unchanged since a finished calibration
    (and whose output is intact) are skipped unless ``force``; each finished
    exposure is recorded at once. ``backend`` runs the exposures (default: a local
    pool of one process per core). Returns all outputs, sorted by rootname.
    """
    config = config if config is not None else CalibrateConfig()
    t_start = time.perf_counter()
    data_dir = Path(data_dir)
    raws = [Path(p) for p in raw_files] if raw_files is not None else find_raw_files(data_dir)
    exposures = check_inputs(raws, allow_mixed_targets=allow_mixed_targets)
    check_raw_layout(exposures)
    raws = [e.path for e in exposures]
    engine = choose_engine(config.engine)
    refsets = resolve_references(raws, data_dir)
    out_dir = Path(out_dir) if out_dir is not None else calibrated_dir(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    done: dict[str, Path] = {}
    todo: list[tuple[ReferenceSet, str]] = []
    for refset in refsets:
        root = refset.exposure.name.split("_")[0].lower()
        key = (exposure_key(manifest, refset.exposure, dict(refset.paths), config, engine)
               if manifest is not None else "")
        entry = manifest.lookup("calibrate", root, key) if manifest and not force else None
        if entry is not None:
            done[root] = manifest.outputs("calibrate", root)[0]
        else:
            todo.append((refset, key))

    if backend is None:
        backend = make_backend()
    active = max(1, min(backend.slots, len(todo)))
    # Local workers share this machine's cores; Dask workers each own their threads.
    threads = max(1, backend.slots // active) if isinstance(backend, LocalBackend) else 1
    # Dask workers on other machines cannot reach the queue: they report finished
    # exposures only.
    with forwarded_queue(on_phase if isinstance(backend, LocalBackend) else None) as phases:
        tasks = [(r.exposure, dict(r.paths), out_dir, config, engine, threads, phases)
                 for r, _ in todo]
        return _calibrate_all(backend, tasks, todo, done, manifest=manifest, progress=progress,
                              data_dir=data_dir, engine=engine, active=active,
                              t_start=t_start, refsets=refsets)


def _calibrate_all(backend: Backend, tasks, todo, done: dict, *, manifest, progress,
                   data_dir, engine: str, active: int, t_start: float,
                   refsets) -> CalibrateResult:
    keys = {r.exposure: k for r, k in todo}
    timings: list[ExposureTiming] = []
    for timing, raw in backend.imap_unordered(_worker_task, tasks):
        if not timing.output.is_file():
            raise StageError(f"{raw}: calibration did not write {timing.output}; see "
                             f"{Path(data_dir) / 'hstred_work' / 'hstred.log'}")
        if manifest is not None:
            manifest.record("calibrate", timing.rootname, keys[raw], [timing.output],
                            info={"input": str(raw), "seconds": round(timing.total_s, 3),
                                  "engine": timing.engine})
        timings.append(timing)
        done[timing.rootname] = timing.output
        log.info("calibrated %s (%s): ccd %.1f s, cte %.1f s, 2-d %.1f s, write %.1f s, "
                 "peak %.0f MB", timing.rootname, timing.engine, timing.ccd_s, timing.cte_s,
                 timing.two_d_s, timing.write_s, timing.peak_rss_mb)
        if progress:
            progress(timing, len(timings), len(tasks))
    timings.sort(key=lambda t: t.rootname)
    return CalibrateResult(outputs=tuple(done[k] for k in sorted(done)), timings=tuple(timings),
                           engine=engine, workers=active, wall_s=time.perf_counter() - t_start,
                           references=tuple(refsets),
                           skipped=tuple(sorted(set(done) - {t.rootname for t in timings})))


def timing_rows(result: CalibrateResult) -> list[dict]:
    """Timings as plain dicts (for JSON and tables)."""
    return [{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(t).items()}
            for t in result.timings]
