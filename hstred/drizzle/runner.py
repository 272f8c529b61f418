"""Running AstroDrizzle safely and checking what it wrote.

AstroDrizzle fails silently in several ways (an image without EXPTIME is dropped and an
empty product written; intermediate files land in the current directory; the
cosmic-ray step writes DQ flags into its inputs). Every call here therefore runs in its
own directory, on working copies, with its chatter sent to a log file, and the products
are checked afterwards: both files exist, every expected input chip was drizzled,
the weight is positive somewhere, the science image is finite there, the units are
electrons per second and the exposure time is positive.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hstred.drizzle.parallel import parallel_steps
from hstred.errors import StageError

__all__ = [
    "DrizzleImages",
    "call_astrodrizzle",
    "chip_file",
    "files_in",
    "run_astrodrizzle",
    "run_astrodrizzle_median",
    "run_steps",
    "check_drizzle_product",
    "to_hstwcs",
    "visit_parameters",
    "final_parameters",
    "single_parameters",
    "PER_EXPOSURE_SKY_METHODS",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrizzleImages:
    """The science and weight images of one AstroDrizzle run (build=False), and the RMS
    image made from it (final drizzles)."""

    sci: Path
    wht: Path
    rms: Path | None = None
    rms_seconds: float = 0.0  # what making the RMS image took


def to_hstwcs(wcs: WCS):
    """An ``stwcs`` HSTWCS copy of an undistorted celestial WCS, for ``final_refimage``."""
    from stwcs.wcsutil import HSTWCS

    out = HSTWCS()
    out.wcs.ctype = list(wcs.wcs.ctype)
    out.wcs.crval = wcs.wcs.crval
    out.wcs.crpix = wcs.wcs.crpix
    out.wcs.cd = wcs.wcs.cd
    out.wcs.radesys = wcs.wcs.radesys or "ICRS"
    out.pixel_shape = wcs.pixel_shape
    out.wcs.set()
    out.setPscale()
    out.setOrient()
    return out


def _common_parameters(*, num_cores: int, good_bits: int, sky_method: str) -> dict:
    return {
        "updatewcs": False,  # the headers already hold the (aligned) distortion WCS
        "build": False,
        "clean": True,
        "preserve": False,
        "restore": False,
        "overwrite": False,
        "context": False,
        "in_memory": False,
        "num_cores": num_cores,
        "static": True,
        "skysub": True,
        "skymethod": sky_method,
        "driz_sep_bits": str(good_bits),
        "final_bits": str(good_bits),
        "final_units": "cps",
        "final_wt_scl": "exptime",
        "final_wcs": True,
    }


def _cr_parameters(n_images: int) -> dict:
    if n_images < 2:
        return {"driz_separate": False, "median": False, "blot": False, "driz_cr": False,
                "resetbits": "4096"}
    return {
        "driz_separate": True,
        "driz_sep_kernel": "turbo",
        "driz_sep_pixfrac": 1.0,
        "median": True,
        # Few images: minmed copes with places seen by only two or three of them (chip
        # edges, gaps, roll differences), where a plain median keeps half of a cosmic ray.
        # Four or more: the median of all but the highest value rejects those as well and,
        # unlike minmed, does not take the lowest of the differently sampled peaks of
        # undersampled stars as the model (which flags star cores as cosmic rays and
        # lowers their drizzled flux by several per cent).
        "combine_type": "minmed" if n_images < 4 else "median",
        "combine_nhigh": 0 if n_images < 4 else 1,
        "blot": True,
        "driz_cr": True,
        "driz_cr_snr": "3.5 3.0",
        # A larger derivative allowance than the 1.2 0.7 default keeps the steep cores of
        # stars unflagged; measured on simulated programs it still finds > 99.5 % of the
        # cosmic-ray pixels.
        "driz_cr_scale": "1.5 1.2",
        "driz_cr_grow": 1,
        "resetbits": "4096",
    }


def visit_parameters(n_images: int, *, num_cores: int, good_bits: int, sky_method: str) -> dict:
    """AstroDrizzle parameters of a visit image for source detection.

    Two or more exposures: only the steps up to the median image (static mask, sky,
    separate drizzles at 0.05"/pixel, minmed/median combination), which is free of
    cosmic rays wherever two exposures overlap; blotting, flagging and the final
    drizzle would only repeat what the filter's final drizzle does on all its
    exposures. One exposure: a final drizzle (north up, 0.05"/pixel, square kernel)
    without cosmic-ray rejection.
    """
    pars = _common_parameters(num_cores=num_cores, good_bits=good_bits, sky_method=sky_method)
    pars.update(_cr_parameters(n_images))
    pars.update({"final_kernel": "square", "final_pixfrac": 1.0, "final_wht_type": "EXP",
                 "final_scale": 0.05, "final_rot": 0.0})
    if n_images >= 2:
        pars.update({"blot": False, "driz_cr": False, "driz_combine": False,
                     "clean": False})  # the separate weights give the coverage
    return pars


#: Sky methods that give each exposure its own sky value, independent of the other
#: exposures in the run ("globalmin" and the "match" methods compare exposures).
PER_EXPOSURE_SKY_METHODS = ("localmin",)


def _sky_parameters(sky_method: str) -> dict:
    """Sky options of a drizzle after the visit images.

    With a per-exposure method the visit drizzle has already measured every exposure's
    sky and written it to the working copy (MDRIZSKY); later drizzles subtract that value
    instead of measuring it again, so the filter image and the single-exposure images of
    one exposure share one sky. Other methods compare the exposures of a run and are
    measured again over the run's exposures.
    """
    if sky_method in PER_EXPOSURE_SKY_METHODS:
        return {"skysub": False, "skyuser": "MDRIZSKY"}
    return {}


def final_parameters(n_images: int, grid: WCS, *, kernel: str, pixfrac: float,
                     weight_type: str, num_cores: int, good_bits: int, sky_method: str,
                     sky_measured: bool = False, weight_maps: bool = False) -> dict:
    """AstroDrizzle parameters of a filter's final image on the common grid.

    ``sky_measured``: the working copies hold the sky of their visit drizzle (MDRIZSKY);
    with a per-exposure sky method it is used rather than measured again.
    ``weight_maps``: AstroDrizzle keeps its intermediate files, among them each chip's
    final weight map (``*_final_mask.fits``), for the RMS image; the caller removes them.
    """
    pars = _common_parameters(num_cores=num_cores, good_bits=good_bits, sky_method=sky_method)
    pars.update(_cr_parameters(n_images))
    pars.update({"final_kernel": kernel, "final_pixfrac": pixfrac,
                 "final_wht_type": weight_type, "final_refimage": to_hstwcs(grid),
                 "clean": not weight_maps})
    if sky_measured:
        pars.update(_sky_parameters(sky_method))
    return pars


def single_parameters(grid: WCS, *, kernel: str, pixfrac: float, weight_type: str,
                      good_bits: int, sky_method: str, sky_measured: bool = False,
                      weight_maps: bool = False) -> dict:
    """AstroDrizzle parameters of one exposure alone on the common grid; the cosmic-ray
    flags found by the filter's final drizzle (DQ 4096) are kept and honoured, and with
    ``sky_measured`` the sky subtracted is the one the filter image used."""
    pars = _common_parameters(num_cores=1, good_bits=good_bits, sky_method=sky_method)
    pars.update({"driz_separate": False, "median": False, "blot": False, "driz_cr": False,
                 "resetbits": "0", "final_kernel": kernel, "final_pixfrac": pixfrac,
                 "final_wht_type": weight_type, "final_refimage": to_hstwcs(grid),
                 "clean": not weight_maps})
    if sky_measured:
        pars.update(_sky_parameters(sky_method))
    return pars


def files_in(directories) -> set[Path]:
    """The entries of ``directories``, as absolute paths with symbolic links resolved
    (what an AstroDrizzle call added is the difference before and after)."""
    return {p.resolve() for d in directories if d.is_dir() for p in d.iterdir()}


def chip_file(copy: Path, extver: int, suffix: str, *, output: str, log_path: Path) -> Path:
    """The per-chip file AstroDrizzle wrote beside an input (``<root>_sci<extver>_<suffix>``,
    e.g. ``final_mask.fits`` or ``crmask.fits``); :class:`StageError` when it is missing."""
    copy = Path(copy)
    path = copy.parent / f"{copy.name.rsplit('_', 1)[0]}_sci{extver}_{suffix}"
    if not path.is_file():
        raise StageError(f"AstroDrizzle wrote no {path.name} for {output}; see {log_path}")
    return path


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _captured_output(log_path: Path):
    """Send everything AstroDrizzle prints or logs (under any logger name) to ``log_path``.

    drizzlepac re-logs its printed output under the printing module's name, so the
    existing root handlers are muted for the duration and a file handler takes over.
    """
    root = logging.getLogger()
    mute = _DropAll()
    muted = list(root.handlers)
    for handler in muted:
        handler.addFilter(mute)
    with open(log_path, "a") as fh:
        file_handler = logging.StreamHandler(fh)
        file_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield
        finally:
            root.removeHandler(file_handler)
            for handler in muted:
                handler.removeFilter(mute)


@contextlib.contextmanager
def _in_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


_NAMES_LOCK = threading.RLock()


@contextlib.contextmanager
def _mask_names_from_file_names() -> Iterator[None]:
    """drizzlepac names each chip's separate-drizzle mask by replacing "final" with
    "single" anywhere in the path of its final-drizzle mask, so an input in a directory
    with "final" in its path (ours: ``final/``; a user's: ``~/final_images/``) gets a
    mask in a directory that does not exist. Within the block the replacement is made in
    the file name alone."""
    from drizzlepac import imageObject

    cls = imageObject.baseImageObject
    with _NAMES_LOCK:
        original = cls._setChipOutputNames

        def names(self, rootname, chip):
            fnames = original(self, rootname, chip)
            head, tail = os.path.split(fnames["finalMask"])
            fnames["singleDrizMask"] = os.path.join(head, tail.replace("final", "single"))
            return fnames

        cls._setChipOutputNames = names
        try:
            yield
        finally:
            cls._setChipOutputNames = original


class OneAtATime(list):
    """A list of drizzlepac images that forgets each image's pixel arrays once a step has
    moved on to the next: drizzlepac's images keep every array they read, so a step over
    many exposures would otherwise end up holding all of them. An array asked for again
    is read again from its file (every change drizzlepac makes to an input's pixels, the
    DQ reset and the cosmic-ray flags, it writes to the file)."""

    def __iter__(self):
        for image in list.__iter__(self):
            yield image
            for hdu in image._image:
                if hdu.__dict__.get("data") is not None:
                    hdu.data = None


#: drizzlepac's steps that go through their images one by one and keep what they read:
#: (module, function). The static masks read every chip's science array, the cosmic-ray
#: step its science, DQ and blotted arrays, each drizzle its science and weights.
_ONE_IMAGE_STEPS = (("adrizzle", "run_driz"), ("staticMask", "createStaticMask"),
                    ("drizCR", "rundrizCR"))


def _sky_one_image_at_a_time(original):
    """drizzlepac's sky step (``sky.subtractSky``), made image by image when the sky
    method gives each exposure its own sky (:data:`PER_EXPOSURE_SKY_METHODS`): its
    matching code holds every image it is given. The other methods compare the images
    and get them all."""
    from drizzlepac import sky, util

    def subtract_sky(images, config, *args, procSteps=None, **kwargs):  # noqa: N803
        pars = config[util.getSectionName(config, sky.STEP_NUM)]
        if not (util.getConfigObjPar(config, "skysub") and not pars.get("skyfile")
                and pars["skymethod"] in PER_EXPOSURE_SKY_METHODS):
            return original(images, config, *args, procSteps=procSteps, **kwargs)
        if procSteps is not None:
            procSteps.addStep(sky.PROCSTEPS_NAME)
        for image in OneAtATime(images):
            original([image], config, *args, **kwargs)
        if procSteps is not None:
            procSteps.endStep(sky.PROCSTEPS_NAME)
        return None

    return subtract_sky


@contextlib.contextmanager
def _steps_one_image_at_a_time() -> Iterator[None]:
    """Within the block (every :func:`call_astrodrizzle` and :func:`run_steps`), the
    steps of :data:`_ONE_IMAGE_STEPS` see their images through :class:`OneAtATime`, and
    a per-exposure sky is measured image by image (:func:`_sky_one_image_at_a_time`): a
    step's memory is then its output planes and one exposure, however many exposures it
    goes through (a visit can hold eight or more; a tile of a mosaic reaches up to eight).
    Measured on one visit of 8 exposures (its visit drizzle): 1.85 GB with the drizzles
    alone one at a time; with the static masks too, 1.31 GB, all of it in the sky step;
    with the sky image by image too, 0.69 GB (the separate drizzles)."""
    import importlib

    from drizzlepac import sky

    with _NAMES_LOCK:
        saved = [(sky, "subtractSky", sky.subtractSky)]
        sky.subtractSky = functools.wraps(sky.subtractSky)(
            _sky_one_image_at_a_time(sky.subtractSky))
        for module_name, name in _ONE_IMAGE_STEPS:
            module = importlib.import_module(f"drizzlepac.{module_name}")
            original = getattr(module, name)

            def one_at_a_time(images, *args, _original=original, **kwargs):
                return _original(OneAtATime(images), *args, **kwargs)

            saved.append((module, name, original))
            setattr(module, name, functools.wraps(original)(one_at_a_time))
        try:
            yield
        finally:
            for module, name, original in saved:
                setattr(module, name, original)


def call_astrodrizzle(files: Sequence[str], output: str, run_dir: Path, parameters: dict,
                       log_path: Path) -> None:
    console_path = run_dir / f"{output}_console.log"  # whatever else it prints or logs
    try:
        with _in_directory(run_dir), _captured_output(console_path):
            from drizzlepac import astrodrizzle  # its import logs too

            with parallel_steps(int(parameters.get("num_cores") or 1)), \
                    _mask_names_from_file_names(), _steps_one_image_at_a_time():
                astrodrizzle.AstroDrizzle(input=list(files), output=output,
                                          runfile=str(log_path), **parameters)
    except (Exception, SystemExit) as err:  # drizzlepac raises many types, or exits
        raise StageError(f"AstroDrizzle failed for {output} ({type(err).__name__}: {err}); "
                         f"see {log_path}") from err


def run_steps(files: Sequence[str], output: str, run_dir: Path, parameters: dict,
              log_path: Path, steps):
    """AstroDrizzle's set-up, then ``steps(images, output_wcs, config)`` in its place.

    The configuration is built from ``parameters`` as ``AstroDrizzle`` builds it, and the
    inputs opened as it opens them (``processInput.setCommonInput``, which also resets
    the DQ bits named by ``resetbits``); ``steps`` then calls drizzlepac's step functions
    (``staticMask.createStaticMask``, ``sky.subtractSky``, ``adrizzle.drizSeparate``,
    ``createMedian.createMedian``, ``ablot.runBlot``, ``drizCR.rundrizCR``) itself. For
    the parts of a drizzle that AstroDrizzle will not run on their own: a separate-drizzle
    grid other than the inputs' own, a median of one image, the cosmic rays of one image
    against a median made elsewhere. Returns what ``steps`` returns; like
    :func:`call_astrodrizzle`, it runs in ``run_dir`` with all chatter in ``log_path``.
    """
    try:
        with _in_directory(run_dir), _captured_output(log_path):
            from drizzlepac import astrodrizzle, processInput, util
            from stsci.tools import teal

            input_dict = {**parameters, "input": list(files), "output": output}
            configobj = teal.load(astrodrizzle.__taskname__, defaults=True)
            if "updatewcs" in input_dict:
                configobj["updatewcs"] = input_dict.pop("updatewcs")
            config = util.getDefaultConfigObj(astrodrizzle.__taskname__, configobj,
                                              input_dict, loadOnly=True)
            util.applyUserPars_steps(config, input_dict, step="3a")
            util.applyUserPars_steps(config, input_dict, step="7a")
            config["mdriztab"] = False
            with _mask_names_from_file_names():
                images, output_wcs = processInput.setCommonInput(config,
                                                                 overwrite_dict=input_dict)
            if not images:
                raise StageError(f"AstroDrizzle found no usable input for {output}; see "
                                 f"{log_path}")
            try:
                with _steps_one_image_at_a_time():
                    return steps(images, output_wcs, config)
            finally:
                for image in images:
                    image.close()
    except StageError:
        raise
    except (Exception, SystemExit) as err:  # drizzlepac raises many types, or exits
        raise StageError(f"AstroDrizzle failed for {output} ({type(err).__name__}: {err}); "
                         f"see {log_path}") from err


def run_astrodrizzle_median(inputs: Sequence[Path], output: str, *, run_dir: Path,
                            parameters: dict, min_coverage: int = 2) -> DrizzleImages:
    """Run AstroDrizzle up to its median image (``visit_parameters`` of 2+ images).

    Returns the median image (``output_med.fits``, sky-subtracted, in the separate
    drizzles' frame) and a ``output_use.fits`` mask (uint8, same WCS) that is 1 where at
    least ``min_coverage`` exposures contribute, so that no cosmic ray survives there.
    The separate drizzles (written beside the inputs) and masks are deleted afterwards.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{output}.log"
    files = [str(Path(p).resolve()) for p in inputs]
    call_astrodrizzle(files, output, run_dir, parameters, log_path)
    median = run_dir / f"{output}_med.fits"
    # the separate drizzles land beside their inputs
    roots = [(Path(f).parent, Path(f).name.rsplit("_", 1)[0]) for f in files]
    weights = [where / f"{root}_single_wht.fits" for where, root in roots]
    missing = [p.name for p in [median, *weights] if not p.exists()]
    if missing:
        raise StageError(f"AstroDrizzle wrote no {', '.join(missing)} for {output}; "
                         f"see {log_path}")
    coverage = None
    for path in weights:
        with fits.open(path, memmap=True) as hdul:
            used = np.asarray(hdul[0].data > 0, dtype=np.uint8)
        coverage = used if coverage is None else coverage + used
    with fits.open(median) as hdul:
        header = hdul[0].header
        finite = np.isfinite(hdul[0].data)
    usable = ((coverage >= min_coverage) & finite).astype(np.uint8)
    if not usable.any():
        raise StageError(f"{output}: no pixel is covered by {min_coverage} exposures; the "
                         "visit's exposures do not overlap")
    use = run_dir / f"{output}_use.fits"
    fits.PrimaryHDU(usable, header=header).writeto(use, overwrite=True)
    leftovers = [*run_dir.glob("*_mask*.fits"), *run_dir.glob("*staticMask.fits")]
    for where, root in roots:
        leftovers += [where / f"{root}_single_sci.fits", where / f"{root}_single_wht.fits",
                      *where.glob(f"{root}_sci*_single_mask.fits")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return DrizzleImages(sci=median, wht=use)


def run_astrodrizzle(inputs: Sequence[Path], output: str, *, run_dir: Path,
                     parameters: dict, expected_chips: int,
                     require_coverage: bool = True, resolve: bool = True) -> DrizzleImages:
    """Run AstroDrizzle on ``inputs`` inside ``run_dir`` and check its products.

    Parameters
    ----------
    inputs : sequence of Path
        Working copies of calibrated exposures (they are modified: sky keywords, DQ).
    output : str
        Product root name (no directory); products are ``run_dir/output_dr?_sci.fits``.
    run_dir : Path
        Directory for this run (created); AstroDrizzle's intermediate files and the log
        ``output.log`` go there.
    parameters : dict
        AstroDrizzle parameters (see :func:`visit_parameters` and siblings).
    expected_chips : int
        Number of SCI extensions that must appear in the product's drizzle history.
    require_coverage : bool
        Whether a product without any positive weight is an error (it is not for a tile
        of a larger grid that the inputs' outlines only graze).
    resolve : bool
        Pass the inputs' resolved paths (symbolic links followed); False passes links as
        they are, so that AstroDrizzle's per-chip files land beside the links.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{output}.log"  # AstroDrizzle's own trailer
    files = [str(Path(p).resolve() if resolve else Path(p).absolute()) for p in inputs]
    call_astrodrizzle(files, output, run_dir, parameters, log_path)
    for tag in ("drc", "drz"):
        sci, wht = run_dir / f"{output}_{tag}_sci.fits", run_dir / f"{output}_{tag}_wht.fits"
        if sci.exists() or wht.exists():
            break
    images = DrizzleImages(sci=sci, wht=wht)
    check_drizzle_product(images, expected_inputs=[Path(f).name for f in files],
                          expected_chips=expected_chips, log_path=log_path,
                          require_coverage=require_coverage)
    return images


def check_drizzle_product(images: DrizzleImages, *, expected_inputs: Sequence[str],
                          expected_chips: int, log_path: Path | None = None,
                          require_coverage: bool = True) -> None:
    """Raise :class:`StageError` unless an AstroDrizzle product is complete and non-empty."""
    where = f"; see {log_path}" if log_path else ""
    for path in (images.sci, images.wht):
        if not path.exists():
            raise StageError(f"AstroDrizzle wrote no {path.name}{where}")
    with fits.open(images.sci) as hdul:
        hdr = hdul[0].header
        sci = hdul[0].data
    with fits.open(images.wht) as hdul:
        wht = hdul[0].data
    if sci is None or wht is None or sci.shape != wht.shape:
        raise StageError(f"{images.sci.name}: empty or mismatched science/weight images{where}")
    covered = np.isfinite(wht) & (wht > 0)
    if require_coverage and not covered.any():
        raise StageError(f"{images.sci.name}: the weight image is zero everywhere; no input "
                         f"pixel was drizzled{where}")
    if not np.isfinite(sci[covered]).all():
        raise StageError(f"{images.sci.name}: non-finite science pixels with positive "
                         f"weight{where}")
    if not float(hdr.get("EXPTIME", 0.0)) > 0:
        raise StageError(f"{images.sci.name}: EXPTIME is {hdr.get('EXPTIME')}; an input was "
                         f"dropped{where}")
    bunit = str(hdr.get("BUNIT", "")).strip().upper()
    if bunit != "ELECTRONS/S":
        raise StageError(f"{images.sci.name}: BUNIT is {bunit!r}, expected ELECTRONS/S{where}")
    drizzled = [str(hdr[k]) for k in hdr if k.startswith("D") and k.endswith("DATA")
                and len(k) == 8 and k[1:4].isdigit()]
    if len(drizzled) != expected_chips:
        raise StageError(f"{images.sci.name}: {len(drizzled)} chips drizzled, expected "
                         f"{expected_chips}; an input was dropped{where}")
    names = {Path(d.split("[")[0]).name for d in drizzled}
    missing = sorted(set(expected_inputs) - names)
    if missing:
        raise StageError(f"{images.sci.name}: inputs {missing} were not drizzled{where}")
