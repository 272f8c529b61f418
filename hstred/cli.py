"""The ``hstred`` command line.

Thin commands: parse options, call one library function, map the hstred
exception family to documented exit statuses:

====  ===============================================
0     success
1     unexpected internal error (a bug: please report it)
2     bad input files or options (InputError)
3     calibration reference files missing or unusable (ReferenceFileError)
4     a processing stage failed (StageError)
5     a product or an exposure failed a quality gate (QualityGateError)
6     the environment: permissions, disk space, network, Dask scheduler
      (RunEnvironmentError, and the operating system's own such errors)
7     another hstred run holds the data directory (DataDirBusyError)
130   interrupted (Ctrl-C); finished work is kept and a re-run resumes
====  ===============================================

Every failure is one line on stderr (``hstred: error: ...``) naming the file or
option and the fix, and the same line goes to the log; only a bug prints a
traceback, which the log keeps too.
"""

from __future__ import annotations

import enum
import functools
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from hstred import __version__
from hstred.errors import HstredError, InputError


class _OneLineErrors(typer.Typer):
    """The console entry: a bad option or argument is one line on stderr (exit 2), like
    every other failure, instead of click's usage block."""

    def __call__(self, *args, **kwargs):
        if "standalone_mode" in kwargs:
            return super().__call__(*args, **kwargs)
        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except Exception as err:
            # click's usage errors (typer ships its own copy of click): they format
            # their message and carry their exit status
            if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
                raise
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()
                sys.exit(err.exit_code)
            where = getattr(getattr(err, "ctx", None), "command_path", None) or "hstred"
            message = " ".join(err.format_message().split()).rstrip(".")
            typer.echo(f"hstred: error: {message}; see '{where} --help'", err=True)
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = _OneLineErrors(
    name="hstred",
    help="Reduce HST ACS/WFC raw exposures to aligned, drizzled, weak-lensing-quality images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[arcsec]" is a unit, not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("hstred")

#: Exit status of a run interrupted with Ctrl-C (SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_FILE_ONLY = {"console": False}  # log records the terminal already shows


def _fail(message: str, code: int) -> typer.Exit:
    # Into the log when the command has logged already (else logging's last resort would
    # print it again, or the log would be created for a command that did nothing).
    if any(isinstance(h, _LogFile) and h.stream is not None
           for h in logging.getLogger().handlers):
        log.error(message, extra=_FILE_ONLY)
    typer.echo(f"hstred: error: {message}", err=True)
    return typer.Exit(code)


def _report_errors(func):
    """Turn failures into one line on stderr (and in the log) and the documented exit code;
    a bug keeps its traceback (stderr and log) and exits 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return _reported(func, *args, **kwargs)
        finally:
            _close_logging()  # the command's log ends with it (in-process callers go on)

    return wrapper


def _close_logging() -> None:
    """Detach and close the log file and console handlers a command attached."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LogFile | _Console)]:
        root.removeHandler(handler)
        handler.close()


def _reported(func, *args, **kwargs):
    from hstred.fileio import environment_error

    try:
        return func(*args, **kwargs)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted; finished work is recorded: run the same command again "
                    "to resume", EXIT_INTERRUPTED) from None
    except HstredError as err:
        raise _fail(str(err), err.exit_code) from err
    except OSError as err:
        problem = environment_error(err, directory=kwargs.get("data"))
        if problem is None:
            raise _bug(err) from err
        raise _fail(str(problem), problem.exit_code) from err
    except Exception as err:
        raise _bug(err) from err


def _bug(err: BaseException) -> typer.Exit:
    text = "".join(traceback.format_exception(err))
    if any(isinstance(h, _LogFile) for h in logging.getLogger().handlers):
        log.error("internal error:\n%s", text, extra=_FILE_ONLY)
    typer.echo(text.rstrip(), err=True)
    return _fail(f"internal error (a bug), {type(err).__name__}: {err}; please report it with "
                 "the traceback above", 1)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hstred {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback,
                                          is_eager=True, help="Print the version and exit.")]
    = False,
) -> None:
    """Reduce HST ACS/WFC raw exposures to aligned, drizzled images."""


class CTEOption(enum.StrEnum):
    arctic = "arctic"
    none = "none"


class EngineOption(enum.StrEnum):
    native = "native"
    calacs = "calacs"
    auto = "auto"


DataOption = Annotated[
    Path,
    typer.Option("--data", "-d", help="Directory holding the *_raw.fits files.",
                 file_okay=False, dir_okay=True),
]


def _progress(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
@_report_errors
def simulate(
    directory: Annotated[Path, typer.Argument(help="Directory to write the program into "
                                              "(created if needed).", file_okay=False)],
    # limits: SimulationConfig's, the one place they are checked
    visits: Annotated[int, typer.Option(help="Number of visits.")] = 2,
    exposures: Annotated[int, typer.Option(help="Exposures per visit and filter.")] = 2,
    filters: Annotated[str, typer.Option(help="Comma-separated ACS/WFC filters.")]
    = "F606W,F814W",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, identical files.")] = 1,
    date: Annotated[str, typer.Option(help="ISO date of the first visit (YYYY-MM-DD).")]
    = "2024-06-01",
    sources: Annotated[int, typer.Option(help="Number of stars and galaxies.")] = 400,
    exptime: Annotated[float, typer.Option(help="Exposure time per exposure [s].")]
    = 500.0,
    no_cte: Annotated[bool, typer.Option("--no-cte", help="Do not add CTE trails.")] = False,
    truth_images: Annotated[bool, typer.Option(
        "--truth-images", help="Also write each exposure's noiseless electron image.")] = False,
    satellites: Annotated[float, typer.Option(
        help="Fraction of exposures crossed by a satellite trail (0 to 1); each trail's "
             "mask in truth/ROOTNAME_trails.fits.")] = 0.0,
    pointings: Annotated[str, typer.Option(
        metavar="NxM", help="A mosaic of N x M pointings overlapping by about 10 %; each "
                            "visit epoch observes every pointing in a visit of its own, and "
                            "--sources counts per pointing.")] = "1x1",
) -> None:
    """Write a simulated ACS/WFC observing program: raw files, references and truth."""
    from hstred.simulate import SimulationConfig, simulate_program
    from hstred.simulate.config import parse_pointings

    filter_names = tuple(f.strip().upper() for f in filters.split(",") if f.strip())
    mosaic = parse_pointings(pointings)
    try:
        config = SimulationConfig(visits=visits, exposures=exposures, filters=filter_names,
                                  seed=seed, date=date, sources=sources, cte=not no_cte,
                                  truth_images=truth_images, exptime_s=exptime,
                                  satellites=satellites, pointings=mosaic)
    except ValueError as err:
        raise InputError(str(err)) from err
    result = simulate_program(directory, config, progress=_progress)
    typer.echo(f"wrote {len(result.raw_files)} raw files, references in "
               f"{result.reference_dir}, truth in {result.truth_catalog}, Gaia-like catalog "
               f"in {result.gaia_catalog}")


@app.command()
@_report_errors
def refs(
    data: DataOption = Path("."),
    fetch: Annotated[bool, typer.Option(help="Fetch missing files through CRDS when a "
                                        "server is reachable.")] = True,
) -> None:
    """List the reference files each raw exposure needs and where they were found."""
    from hstred.inputs import find_raw_files
    from hstred.refs import resolve_references

    raws = find_raw_files(data)
    for refset in resolve_references(raws, data, fetch=fetch):
        typer.echo(refset.exposure.name)
        for key, path in refset.paths.items():
            typer.echo(f"  {key:<9} {path if path is not None else 'N/A'}")


@app.command()
@_report_errors
def calibrate(
    data: DataOption = Path("."),
    cte: Annotated[CTEOption, typer.Option(
        help="Pixel CTE correction: 'arctic' (Massey et al. 2014 model via arcticpy; "
             "writes _flc) or 'none' (_flt).")]
    = CTEOption.arctic,
    engine: Annotated[EngineOption, typer.Option(
        help="'native' (hstred's CCD steps), 'calacs' (hstcal's acsccd.e/acs2d.e on PATH) "
             "or 'auto' (calacs when present).")] = EngineOption.auto,
    workers: Annotated[int | None, typer.Option(help="Worker processes "
                                                "(default: all cores).")] = None,
    cte_iterations: Annotated[int | None, typer.Option(help="arCTIc correction "
                                                       "iterations (default: the "
                                                       "calibration stage's, see README).")]
    = None,
    cte_express: Annotated[int | None, typer.Option(help="arCTIc express factor "
                                                    "(0 = exact, slower; default: the "
                                                    "calibration stage's, see README).")]
    = None,
    cte_noise: CteNoiseOpt = "separate",
    force: Annotated[bool, typer.Option("--force", help="Recalibrate exposures already "
                                        "calibrated with the same inputs and options.")]
    = False,
) -> None:
    """Calibrate every raw exposure: bias, overscan, gain, CTE, dark, flat, DQ, ERR.

    Writes DIR/hstred_work/calibrated/ROOTNAME_flc.fits (or _flt.fits with --cte none).
    """
    from hstred.calibrate import CalibrateConfig
    from hstred.execution import ExecutionConfig
    from hstred.pipeline import PipelineConfig, run_pipeline

    _setup_logging(data, quiet=False)
    # unset CTE options keep CalibrateConfig's defaults, the one place they are set
    cte_setting = {k: v for k, v in (("cte_iterations", cte_iterations),
                                     ("cte_express", cte_express)) if v is not None}
    config = PipelineConfig(
        calibrate=CalibrateConfig(cte=cte.value, engine=engine.value, cte_noise=cte_noise,
                                  **cte_setting),
        execution=ExecutionConfig(workers=workers))

    def report(timing, done, total):
        typer.echo(f"[{done}/{total}] {timing.output.name}  ccd {timing.ccd_s:.1f}s  "
                   f"cte {timing.cte_s:.1f}s  2d {timing.two_d_s:.1f}s", err=True)

    result = run_pipeline(data, None, config, command="calibrate", force=force,
                          on_exposure=report)
    done = len(result.skipped.get("calibrate", []))
    typer.echo(f"calibrated {len(result.calibrated) - done} exposures ({done} already "
               f"done) with the {result.engine} engine in {result.timings_s['calibrate']:.1f}s"
               f" -> {result.calibrated[0].parent}")


KernelOpt = Annotated[str, typer.Option(help="Final drizzle kernel: square, point, turbo, "
                                        "gaussian, tophat, lanczos2, lanczos3.")]
ScaleOpt = Annotated[float, typer.Option("--pixel-scale", help="Output pixel scale [arcsec].")]
PixfracOpt = Annotated[float, typer.Option(help="Drop size as a fraction of the input pixel.")]
WeightOpt = Annotated[str, typer.Option("--weight-type", help="ERR (inverse variance) or EXP.")]
NorthOpt = Annotated[bool, typer.Option("--north-up/--no-north-up", help="Orient the output "
                                        "grid north up.")]
FitOpt = Annotated[str, typer.Option("--fit-geometry", help="Visit alignment fit: rscale, "
                                     "shift, rshift or general.")]
MatchesOpt = Annotated[int, typer.Option("--min-matches", help="Fewest matched sources "
                                         "a visit needs to pass alignment.")]
RmsOpt = Annotated[float, typer.Option("--max-rms", help="Largest alignment fit RMS a visit "
                                       "may have [arcsec].")]
DropOpt = Annotated[bool, typer.Option("--drop-unaligned", help="Drop (and report) visits that "
                                       "fail alignment instead of stopping.")]
RmsMapOpt = Annotated[bool, typer.Option(
    "--rms/--no-rms", help="Write each product's _drz_rms.fits (the noise of every science "
    "pixel, with the correlated-noise factors in its header); --no-rms saves its cost, "
    "about as much again as the final drizzle.")]
TileOpt = Annotated[int | None, typer.Option(
    "--tile-size", metavar="PIXELS", show_default=False,
    help="Drizzle each filter in tiles of at most PIXELS x PIXELS output pixels, each a task "
         "on the workers (or the Dask cluster) writing into the product in place, so no "
         "process holds a whole image (a grid within one tile is one tile). 0 drizzles "
         "the whole grid in one process. Default: the drizzle configuration's tile size "
         "(see README).")]
TiledProductsOpt = Annotated[bool, typer.Option(
    "--tiled-products",
    help="Keep each product image as tile files of at most --tile-size pixels a side plus "
         "an index (OUTNAME_FILTER_drz_sci.json beside the directory OUTNAME_FILTER_drz_sci/), "
         "for mosaics too large for one file; tiles no exposure reaches are not written.")]
SinglesOpt = Annotated[bool, typer.Option("--singles", help="Also write singles/ROOTNAME_drz_"
                                          "sci.fits per exposure on the same grid.")]
RefCatOpt = Annotated[str | None, typer.Option(
    "--reference-catalog", metavar="FILE|gaia",
    help="Tie the products to an absolute catalog: a table (ECSV, FITS or CSV) with Gaia DR3 "
         "column names (ra, dec; optional ra_error, dec_error, pmra, pmdec, parallax, "
         "ref_epoch, phot_g_mean_mag), moved to each visit's epoch; or 'gaia' to fetch the "
         "Gaia DR3 cone around the footprint once (saved in DIR/hstred_work/catalogs, so "
         "reruns are offline).")]
AllowRelativeOpt = Annotated[bool, typer.Option(
    "--allow-relative", help="When the tie to --reference-catalog fails its gates, warn and "
                             "keep the relative alignment instead of stopping.")]
CteNoiseOpt = Annotated[str, typer.Option(
    "--cte-noise", metavar="separate|amplify",
    help="Hold each quadrant's read-noise estimate out of the CTE correction and add it back "
         "unamplified, or correct the whole image, read noise included.")]
SatellitesOpt = Annotated[str, typer.Option(
    "--satellites", metavar="mask|off",
    help="Find satellite trails in every exposure (acstools) and mask them (DQ 16384) "
         "before drizzling, or leave the exposures as they are.")]
WorkersOpt = Annotated[int | None, typer.Option(help="Local worker processes "
                                                "(default: all cores).")]
OutnameArg = Annotated[str, typer.Argument(help="Product name stem: writes "
                                           "OUTNAME_FILTER_drz_sci.fits, _drz_wht.fits and "
                                           "_drz_rms.fits.")]

def _drizzle_config(kernel, pixel_scale, pixfrac, weight_type, north_up, fit_geometry,
                    min_matches, max_rms, drop_unaligned, singles, *,
                    reference_catalog=None, allow_relative=False, satellites="mask",
                    rms_map=True, tile_size=None, tiled_products=False):
    """DrizzleConfig from the drizzle options shared by ``drizzle`` and ``run``.
    Options left unset (None) keep the configuration's defaults."""
    from hstred.drizzle import DrizzleConfig

    given = {}
    if tile_size is not None:
        given["tile_size"] = tile_size
    if tiled_products:
        given["tiled_products"] = True
    if reference_catalog is not None:
        given["reference_catalog"] = reference_catalog
    if allow_relative:
        given["allow_relative"] = True
    return DrizzleConfig(kernel=kernel, pixel_scale_arcsec=pixel_scale, pixfrac=pixfrac,
                         weight_type=weight_type.upper(), north_up=north_up,
                         fit_geometry=fit_geometry, min_matches=min_matches,
                         max_rms_arcsec=max_rms, drop_unaligned=drop_unaligned,
                         singles=singles, satellites=satellites, rms=rms_map, **given)


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.console = False
        return True


def _mark_file_only(logger: logging.Logger) -> None:
    if not any(isinstance(f, _FileOnly) for f in logger.filters):
        logger.addFilter(_FileOnly())


class _Console(logging.StreamHandler):
    """Warnings on the terminal."""


class _LogFile(logging.FileHandler):
    """The log file, created (with its directory) by the first line logged: a command that
    stops on bad inputs before logging anything leaves the directory as it was."""

    def __init__(self, path: Path):
        super().__init__(path, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _setup_logging(data: Path, *, quiet: bool) -> Path:
    """Log to ``DIR/hstred_work/hstred.log`` (created in an existing ``data`` only) and
    warnings to the terminal unless ``quiet``."""
    from hstred.workspace import existing_data_dir, work_dir

    log_path = work_dir(existing_data_dir(data)) / "hstred.log"
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LogFile | _Console)]:
        root.removeHandler(old)  # an earlier command in this process logged elsewhere
        old.close()
    handler = _LogFile(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # astropy prints its warnings itself; they reach the log file through the root logger
    # but are not printed a second time by the console handler below
    from astropy import log as astropy_log  # created by astropy, as its own logger class
    _mark_file_only(astropy_log)
    if quiet:  # only errors on the terminal, astropy's own warnings included
        for handler in astropy_log.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.ERROR))
    if not quiet:
        console = _Console()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("hstred: %(levelname)s: %(message)s"))
        console.addFilter(_ConsoleFilter())
        root.addHandler(console)
    return log_path


@app.command()
@_report_errors
def drizzle(
    outname: OutnameArg,
    data: DataOption = Path("."),
    kernel: KernelOpt = "square",
    pixel_scale: ScaleOpt = 0.03,
    pixfrac: PixfracOpt = 0.8,
    weight_type: WeightOpt = "ERR",
    north_up: NorthOpt = True,
    fit_geometry: FitOpt = "rscale",
    min_matches: MatchesOpt = 10,
    max_rms: RmsOpt = 0.02,
    drop_unaligned: DropOpt = False,
    singles: SinglesOpt = False,
    workers: WorkersOpt = None,
    reference_catalog: RefCatOpt = None,
    allow_relative: AllowRelativeOpt = False,
    satellites: SatellitesOpt = "mask",
    rms_map: RmsMapOpt = True,
    tile_size: TileOpt = None,
    tiled_products: TiledProductsOpt = False,
) -> None:
    """Align the visits and drizzle each filter from calibrated exposures.

    Uses the exposures hstred calibrate (or run) calibrated from the raw files in DIR,
    else the archive *_flc.fits / *_flt.fits files in DIR. Writes the products, the run
    record and the QA report, as hstred run does.
    """
    from hstred.execution import ExecutionConfig
    from hstred.naming import check_outname
    from hstred.pipeline import PipelineConfig, run_pipeline

    check_outname(outname)  # before anything is created
    _setup_logging(data, quiet=False)
    config = PipelineConfig(
        drizzle=_drizzle_config(kernel, pixel_scale, pixfrac, weight_type, north_up,
                                fit_geometry, min_matches, max_rms, drop_unaligned, singles,
                                reference_catalog=reference_catalog,
                                allow_relative=allow_relative, satellites=satellites,
                                rms_map=rms_map, tile_size=tile_size,
                                tiled_products=tiled_products),
        execution=ExecutionConfig(workers=workers))
    result = run_pipeline(data, outname, config, command="drizzle")
    for product in result.products:
        typer.echo(str(product))
    typer.echo(f"run record {result.run_record}; QA report {result.report}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("run")
@_report_errors
def run_command(
    ctx: typer.Context,
    outname: OutnameArg,
    data: DataOption = Path("."),
    cte: Annotated[CTEOption, typer.Option(help="Pixel CTE correction (arctic or none).")]
    = CTEOption.arctic,
    engine: Annotated[EngineOption, typer.Option(help="CCD calibration engine.")]
    = EngineOption.auto,
    cte_noise: CteNoiseOpt = "separate",
    workers: WorkersOpt = None,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address "
                                                  "(tcp://host:8786) for per-exposure work.")]
    = None,
    kernel: KernelOpt = "square",
    pixel_scale: ScaleOpt = 0.03,
    pixfrac: PixfracOpt = 0.8,
    weight_type: WeightOpt = "ERR",
    north_up: NorthOpt = True,
    fit_geometry: FitOpt = "rscale",
    min_matches: MatchesOpt = 10,
    max_rms: RmsOpt = 0.02,
    drop_unaligned: DropOpt = False,
    singles: SinglesOpt = False,
    reference_catalog: RefCatOpt = None,
    allow_relative: AllowRelativeOpt = False,
    satellites: SatellitesOpt = "mask",
    rms_map: RmsMapOpt = True,
    tile_size: TileOpt = None,
    tiled_products: TiledProductsOpt = False,
    allow_mixed_targets: Annotated[bool, typer.Option("--allow-mixed-targets",
                                                      help="Reduce exposures of several "
                                                      "targets together.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage.")] = False,
    from_stage: Annotated[str | None, typer.Option("--from", help="Redo this stage "
                                                   "(calibrate, drizzle) and those after.")]
    = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on the "
                                        "terminal.")] = False,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="Replay the options of a run: its OUTNAME_run.json. Options given "
        "here as well override it; workers and scheduler are this machine's.")] = None,
) -> None:
    """Reduce a directory of raw ACS/WFC exposures end to end.

    Checks the inputs, resolves references, calibrates with CTE correction, aligns
    the visits and drizzles each filter onto one grid. Finished work recorded in
    DIR/hstred_work/manifest.json is not redone.
    """
    from hstred.naming import check_outname

    check_outname(outname)  # before anything is created
    _setup_logging(data, quiet=quiet)
    config = _pipeline_config(
        ctx, config_file=config_file,
        cte=cte, engine=engine, cte_noise=cte_noise, workers=workers, scheduler=scheduler,
        kernel=kernel, pixel_scale=pixel_scale, pixfrac=pixfrac, weight_type=weight_type,
        north_up=north_up,
        fit_geometry=fit_geometry, min_matches=min_matches, max_rms=max_rms,
        drop_unaligned=drop_unaligned, singles=singles, reference_catalog=reference_catalog,
        allow_relative=allow_relative, satellites=satellites, rms_map=rms_map,
        tile_size=tile_size, tiled_products=tiled_products,
        allow_mixed_targets=allow_mixed_targets)
    result = _run_with_progress(data, outname, config, force=force, from_stage=from_stage,
                                quiet=quiet)
    if not quiet:
        _print_summary(result)


#: ``run`` options -> (section of PipelineConfig, field) they set; workers and scheduler
#: are execution settings, never replayed from a record.
_SCIENCE_OPTIONS = {
    "cte": ("calibrate", "cte"), "engine": ("calibrate", "engine"),
    "cte_noise": ("calibrate", "cte_noise"),
    "kernel": ("drizzle", "kernel"), "pixel_scale": ("drizzle", "pixel_scale_arcsec"),
    "pixfrac": ("drizzle", "pixfrac"), "weight_type": ("drizzle", "weight_type"),
    "north_up": ("drizzle", "north_up"), "fit_geometry": ("drizzle", "fit_geometry"),
    "min_matches": ("drizzle", "min_matches"), "max_rms": ("drizzle", "max_rms_arcsec"),
    "drop_unaligned": ("drizzle", "drop_unaligned"), "singles": ("drizzle", "singles"),
    "reference_catalog": ("drizzle", "reference_catalog"),
    "allow_relative": ("drizzle", "allow_relative"),
    "satellites": ("drizzle", "satellites"), "rms_map": ("drizzle", "rms"),
    "tile_size": ("drizzle", "tile_size"),
    "tiled_products": ("drizzle", "tiled_products"),
    "allow_mixed_targets": (None, "allow_mixed_targets"),
}


def _pipeline_config(ctx: typer.Context, *, config_file, cte, engine, cte_noise, workers,
                     scheduler, kernel, pixel_scale, pixfrac, weight_type, north_up,
                     fit_geometry, min_matches, max_rms, drop_unaligned, singles,
                     reference_catalog, allow_relative, satellites, rms_map, tile_size,
                     tiled_products, allow_mixed_targets):
    """PipelineConfig from the options of ``run`` (which ``plan`` shares); with
    ``--config``, the recorded run's science options, overridden by those given here."""
    import dataclasses

    from hstred.calibrate import CalibrateConfig
    from hstred.execution import ExecutionConfig
    from hstred.pipeline import PipelineConfig

    execution = ExecutionConfig(workers=workers, scheduler=scheduler)
    given = PipelineConfig(
        calibrate=CalibrateConfig(cte=cte.value, engine=engine.value, cte_noise=cte_noise),
        drizzle=_drizzle_config(kernel, pixel_scale, pixfrac, weight_type, north_up,
                                fit_geometry, min_matches, max_rms, drop_unaligned, singles,
                                reference_catalog=reference_catalog,
                                allow_relative=allow_relative, satellites=satellites,
                                rms_map=rms_map, tile_size=tile_size,
                                tiled_products=tiled_products),
        execution=execution, allow_mixed_targets=allow_mixed_targets)
    if config_file is None:
        return given
    recorded = PipelineConfig.from_record(config_file)
    sections = {"calibrate": dataclasses.asdict(recorded.calibrate),
                "drizzle": dataclasses.asdict(recorded.drizzle)}
    top = {"allow_mixed_targets": recorded.allow_mixed_targets}
    for name, (section, field) in _SCIENCE_OPTIONS.items():
        # (typer carries its own copy of click: the source is compared by name)
        source = getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        if source in ("DEFAULT", "DEFAULT_MAP"):
            continue  # not given: the record's value
        target = sections[section] if section else top
        source = getattr(given, section) if section else given
        target[field] = getattr(source, field)
    return PipelineConfig(calibrate=CalibrateConfig(**sections["calibrate"]),
                          drizzle=dataclasses.replace(given.drizzle, **sections["drizzle"]),
                          execution=execution, **top)


#: ``run`` options that do not change what a run would do.
_NOT_PLANNED = ("quiet",)  # plan shares run's other parameters, its context included


def _plan(outname: str | None = None, **options) -> None:
    """Show what hstred run would do, per filter and visit, and write nothing.

    Takes run's options: which exposures are calibrated already and which would be (and
    why), which references are found or missing, and, given OUTNAME, whether the drizzle
    stage.s products and the report would be reused or redone.
    """
    from rich.console import Console
    from rich.table import Table

    from hstred.plan import RUN, make_plan

    data = options.pop("data")
    force = options.pop("force")
    from_stage = options.pop("from_stage")
    config = _pipeline_config(options.pop("ctx"), **options)
    plan = make_plan(data, config, outname, force=force, from_stage=from_stage)
    console = Console(width=max(Console().width, 120))
    table = Table(title=f"{plan.data_dir.resolve()}: target {', '.join(plan.targets)}")
    for column in ("filter", "visit", "exposure", "date (UT)", "exptime [s]", "references",
                   "calibration"):
        table.add_column(column)
    for filt, visits in plan.by_filter_and_visit().items():
        for visit, exposures in visits.items():
            for e in exposures:
                n_refs = sum(1 for n, _p in e.references.values() if n)
                lost = e.missing_references
                refs = (f"{n_refs} found" if not lost else f"{len(lost)} of {n_refs} missing")
                state = f"{e.calibrate}: {e.reason}" if e.reason else e.calibrate
                table.add_row(filt, visit, e.exposure.rootname, e.date,
                              f"{e.exposure.exptime_s:g}", refs if e.references else "-",
                              state)
    console.print(table, markup=False)
    todo = plan.to_calibrate
    if plan.from_raw:
        console.print(f"calibrate: {len(todo)} of {len(plan.exposures)} exposure(s) to "
                      f"calibrate with the {plan.engine} engine (cte "
                      f"{config.calibrate.cte}), {len(plan.exposures) - len(todo)} cached",
                      markup=False)
    if plan.missing_references:
        console.print("missing references (fetched through CRDS at run time when a server "
                      f"answers): {', '.join(plan.missing_references)}", markup=False)
    if plan.drizzle is None:
        console.print("drizzle: give OUTNAME to see whether its products would be redone",
                      markup=False)
        return
    d = plan.drizzle
    state = f"run ({d.reason})" if d.state == RUN else "cached: products reused"
    console.print(f"drizzle {d.outname}: {state}; {len(plan.by_filter_and_visit())} "
                  "filter(s) onto one grid", markup=False)
    for product, exists in d.products:
        console.print(f"  {product}  {'exists' if exists else 'to be written'}",
                      markup=False)
    r = plan.report
    state = f"run ({r.reason})" if r.state == RUN else "cached: report reused"
    console.print(f"report {r.outname}: {state}", markup=False)


def _plan_signature():
    """``plan`` takes ``run``'s options (one declaration of each), OUTNAME optional."""
    import inspect

    run_sig = inspect.signature(run_command, eval_str=True)
    optional = Annotated[str | None, typer.Argument(
        help="Product name stem of the run to plan (shows its drizzle stage).")]
    params = [p.replace(annotation=optional, default=None) if name == "outname" else p
              for name, p in run_sig.parameters.items() if name not in _NOT_PLANNED]
    return inspect.Signature(params), {p.name: p.annotation for p in params}


_plan.__signature__, _plan.__annotations__ = _plan_signature()
app.command("plan")(_report_errors(_plan))


def _run_with_progress(data, outname, config, *, force, from_stage, quiet):
    """Run the pipeline under rich progress bars (counts, elapsed, ETA) unless quiet."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hstred.pipeline import run_pipeline

    if quiet:
        return run_pipeline(data, outname, config, force=force, from_stage=from_stage)
    # The console keeps the stderr of now: AstroDrizzle's output capture swaps
    # sys.stderr for a log file while it runs, and the display must go on meanwhile.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<40}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=Console(file=sys.stderr))
    tasks: dict[str, int] = {}

    def on_stage(stage, state):
        if state == "start":
            tasks[stage] = progress.add_task(stage, total=None)
        elif stage in tasks:
            label = f"{stage} (cached)" if state == "cached" else stage
            progress.update(tasks[stage], description=label, total=1, completed=1)

    def on_exposure(timing, done, total):
        progress.update(tasks["calibrate"], total=total, completed=done,
                        description=f"calibrate: {timing.rootname} done")

    def on_phase(rootname, phase):  # a worker started a part of an exposure
        progress.update(tasks["calibrate"], description=f"calibrate: {rootname} {phase}")

    def on_drizzle_step(step, done, total):
        progress.update(tasks["drizzle"], total=total, completed=done,
                        description=f"drizzle: {step}")

    with progress:
        return run_pipeline(data, outname, config, force=force, from_stage=from_stage,
                            on_stage=on_stage, on_exposure=on_exposure, on_phase=on_phase,
                            on_drizzle_step=on_drizzle_step)


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="hstred run")
    table.add_column("product / stage")
    table.add_column("detail")
    for product in result.products:
        table.add_row(str(product), "")
    for stage, seconds in result.timings_s.items():
        cached = result.skipped.get(stage)
        note = (f"{len(cached)} exposure(s) cached" if isinstance(cached, list) and cached
                else ("cached" if cached is True else ""))
        table.add_row(f"{stage} time", f"{seconds:.1f} s {note}".strip())
    table.add_row("run record", str(result.run_record))
    table.add_row("QA report", str(result.report))
    for warning in result.warnings:
        table.add_row("[yellow]warning[/yellow]", warning)
    console.print(table)


def run() -> None:  # pragma: no cover - console entry for `python -m hstred`
    app(prog_name="hstred")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
