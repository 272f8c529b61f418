"""The ``hstred`` command line.

Thin commands: parse options, call one library function, map the hstred
exception family to documented exit statuses:

====  ===============================================
0     success
1     unexpected internal error (a bug: please report it)
2     bad input files or options (InputError)
3     calibration reference files missing or unusable (ReferenceFileError)
4     a processing stage failed (StageError)
5     a product failed a quality gate (QualityGateError)
====  ===============================================
"""

from __future__ import annotations

import enum
import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from hstred import __version__
from hstred.errors import HstredError, InputError

app = typer.Typer(
    name="hstred",
    help="Reduce HST ACS/WFC raw exposures to aligned, drizzled, weak-lensing-quality images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _report_errors(func):
    """Turn hstred errors into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HstredError as err:
            typer.echo(f"hstred: error: {err}", err=True)
            raise typer.Exit(err.exit_code) from err

    return wrapper


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
    visits: Annotated[int, typer.Option(min=1, max=99, help="Number of visits.")] = 2,
    exposures: Annotated[int, typer.Option(min=1, max=20,
                                           help="Exposures per visit and filter.")] = 2,
    filters: Annotated[str, typer.Option(help="Comma-separated ACS/WFC filters.")]
    = "F606W,F814W",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, identical files.")] = 1,
    date: Annotated[str, typer.Option(help="ISO date of the first visit (YYYY-MM-DD).")]
    = "2024-06-01",
    sources: Annotated[int, typer.Option(min=1, help="Number of stars and galaxies.")] = 400,
    exptime: Annotated[float, typer.Option(min=1.0, help="Exposure time per exposure [s].")]
    = 500.0,
    no_cte: Annotated[bool, typer.Option("--no-cte", help="Do not add CTE trails.")] = False,
    truth_images: Annotated[bool, typer.Option(
        "--truth-images", help="Also write each exposure's noiseless electron image.")] = False,
) -> None:
    """Write a simulated ACS/WFC observing program: raw files, references and truth."""
    from hstred.simulate import SimulationConfig, simulate_program

    filter_names = tuple(f.strip().upper() for f in filters.split(",") if f.strip())
    try:
        config = SimulationConfig(visits=visits, exposures=exposures, filters=filter_names,
                                  seed=seed, date=date, sources=sources, cte=not no_cte,
                                  truth_images=truth_images, exptime_s=exptime)
    except ValueError as err:
        raise InputError(str(err)) from err
    result = simulate_program(directory, config, progress=_progress)
    typer.echo(f"wrote {len(result.raw_files)} raw files, references in "
               f"{result.reference_dir}, truth in {result.truth_catalog}")


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
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes "
                                                "(default: all cores).")] = None,
    cte_iterations: Annotated[int, typer.Option(min=1, help="arCTIc correction "
                                                "iterations.")] = 3,
    cte_express: Annotated[int, typer.Option(min=0, help="arCTIc express factor "
                                             "(0 = exact, slower).")] = 5,
) -> None:
    """Calibrate every raw exposure: bias, overscan, gain, CTE, dark, flat, DQ, ERR.

    Writes DIR/hstred_work/calibrated/ROOTNAME_flc.fits (or _flt.fits with --cte none).
    """
    from hstred.calibrate import CalibrateConfig, run_calibrate

    config = CalibrateConfig(cte=cte.value, engine=engine.value, workers=workers,
                             cte_iterations=cte_iterations, cte_express=cte_express)

    def report(timing, done, total):
        typer.echo(f"[{done}/{total}] {timing.output.name}  ccd {timing.ccd_s:.1f}s  "
                   f"cte {timing.cte_s:.1f}s  2d {timing.two_d_s:.1f}s", err=True)

    result = run_calibrate(data, config, progress=report)
    typer.echo(f"calibrated {len(result.outputs)} exposures with the {result.engine} engine "
               f"in {result.wall_s:.1f}s -> {result.outputs[0].parent}")


def run() -> None:  # pragma: no cover - console entry for `python -m hstred`
    app(prog_name="hstred")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
