"""Options of the alignment + drizzle stage."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hstred.errors import InputError
from hstred.satellites import SATELLITE_MODES, TRAIL_DQ

__all__ = ["DrizzleConfig", "KERNELS", "WEIGHT_TYPES", "FIT_GEOMETRIES", "SKY_METHODS"]

#: Drizzle kernels AstroDrizzle offers for the final combination.
KERNELS = ("square", "point", "turbo", "gaussian", "tophat", "lanczos2", "lanczos3")
#: Final weight images: ERR = inverse variance of the background from the ERR arrays
#: (the sources' own shot noise removed, see hstred.drizzle.weights), EXP = exposure time.
WEIGHT_TYPES = ("ERR", "EXP")
#: tweakwcs fit geometries.
FIT_GEOMETRIES = ("shift", "rshift", "rscale", "general")
#: Fewest matched sources a visit may be required to have (--min-matches).
MIN_MATCHES = 3
#: Smallest tile side (output pixels) of a tiled final drizzle: every tile is one
#: AstroDrizzle call that maps whole chips, so tiles much smaller than a chip waste time.
MIN_TILE_SIZE = 64
#: Default tile side of the final drizzles (--tile-size): a tile's planes are at most
#: 117 MB each, and a worker drizzling one holds one exposure at a time (its RMS part
#: goes in bands, hstred.drizzle.tiled.NOISE_BAND_PIXELS). Every tile maps in full each
#: chip it touches, so fewer, larger tiles cost less: at 5400 the standard program's
#: grid (10735 x 9521) is 2 x 2 tiles instead of 3 x 3 at 4096, and one pointing's median
#: grid one tile. What a worker peaks at is measured by benchmarks/bench_pipeline.py
#: (README). Larger grids are cut (hstred.drizzle.tiled.cut_grid).
DEFAULT_TILE_SIZE = 5400
SKY_METHODS = ("localmin", "globalmin", "match", "globalmin+match")


@dataclass(frozen=True)
class DrizzleConfig:
    """Alignment and drizzle options.

    Drizzle
    -------
    kernel : final drizzle kernel (``KERNELS``).
    pixel_scale_arcsec : output pixel scale, arcsec per pixel.
    pixfrac : linear drop size as a fraction of the input pixel (0 < pixfrac <= 1).
    weight_type : ``"ERR"`` (inverse variance from the ERR arrays, without the sources'
        own shot noise, which would bias bright sources low) or ``"EXP"``.
    north_up : output +y toward north; otherwise the output follows the
        orientation of the reference visit's first exposure (WFC1 +y axis).
    good_bits : DQ bits still counted as good pixels in the final drizzle
        (336 = 16 + 64 + 256, hot/warm pixels and full-well saturation, as in the ACS
        pipeline's drizzle defaults). Cosmic rays (4096) are never good.
    sky_method : AstroDrizzle sky method. ``localmin`` (one sky per exposure) is measured
        once, in the visit drizzle, and reused by the filter and single-exposure
        drizzles; the methods that compare exposures are measured in every run.
    singles : also drizzle every exposure alone onto the common grid.
    rms : also write each product's RMS image (``_drz_rms.fits``: the noise of every
        science pixel and the correlated-noise factors, :mod:`hstred.drizzle.noise`);
        it costs about as much again as the final drizzle. Without it, an RMS image left
        by an earlier run of the same product is removed with the new products.
    tile_size : N (default :data:`DEFAULT_TILE_SIZE`): each filter's cosmic rays are
        found in tiles of N x N pixels of the separate drizzles' grid and exposure by
        exposure, then the grid is drizzled in tiles of at most N x N pixels (one, when it
        holds the grid), each a separate task on the run's backend that writes into the
        product in place (:mod:`hstred.drizzle.tiled`); single-exposure images and RMS
        images are made in the same tiles, and no process holds a whole plane. 0: the
        whole grid, one AstroDrizzle call in one process
        (:func:`~hstred.drizzle.tiled.in_tiles`).
    tiled_products : keep every product image (and single image) as tile files of at
        most ``tile_size`` pixels a side plus an index, ``OUTNAME_FILTER_drz_sci.json``
        beside the directory ``OUTNAME_FILTER_drz_sci/`` (:mod:`hstred.drizzle.tileset`),
        instead of one FITS file: for mosaics too large for one file. Tiles no exposure
        reaches are not written. Images of the same products in the other layout are
        removed with the new ones.
    satellites : ``"mask"`` (default): satellite trails are found in every exposure
        (:mod:`hstred.satellites`) and their pixels flagged with DQ bit 16384 in the
        working copies before any drizzle; ``"off"``: exposures are drizzled as they are.

    Alignment
    ---------
    fit_geometry : ``"rscale"`` (shift + rotation + scale; default), ``"shift"``,
        ``"rshift"`` or ``"general"``.
    searchrad_px : search radius for the 2-D offset histogram, in pixels of the
        alignment frame (the reference visit's drizzled image at 0.05"/pixel).
    tolerance_px : matching tolerance of the first pass, alignment-frame pixels.
    refine_tolerance_px : matching tolerance of the second (refining) pass.
    min_matches : fewest sources a visit must match (after clipping) to pass.
    max_rms_arcsec : largest RMS of the fit residuals a visit may have to pass.
    drop_unaligned : drop visits that fail the gates (reported) instead of raising
        :class:`hstred.errors.QualityGateError`.
    detection_nsigma : detection threshold of the visit catalogs, in sky sigma.
    wcsname : WCSNAME given to the aligned WCS in the working copies.

    Absolute astrometry
    -------------------
    reference_catalog : ``""`` (none: the frame stays where the reference visit's
        header WCS puts it), a table file with Gaia DR3 column names (ECSV, FITS or
        CSV; see :mod:`hstred.align.refcat`), or ``"gaia"`` (the Gaia DR3 cone around
        the footprint, fetched through astroquery once and saved).
    allow_relative : when the tie to the catalog fails its gates, warn and keep the
        relative solution instead of raising :class:`hstred.errors.QualityGateError`.
    tie_min_matches : fewest distinct catalog stars the tie must match (an ``rscale``
        fit has 4 parameters; one more star leaves a check).
    tie_max_rms_arcsec : largest RMS of the tie's residuals (HAP's ACS/WFC gate is 20 mas).
    tie_wcsname : WCSNAME of the WCS tied to the catalog.
    """

    kernel: str = "square"
    pixel_scale_arcsec: float = 0.03
    pixfrac: float = 0.8
    weight_type: str = "ERR"
    north_up: bool = True
    good_bits: int = 336
    sky_method: str = "localmin"
    singles: bool = False
    rms: bool = True
    tile_size: int = DEFAULT_TILE_SIZE
    tiled_products: bool = False
    satellites: str = "mask"
    fit_geometry: str = "rscale"
    searchrad_px: float = 60.0
    tolerance_px: float = 3.0
    refine_tolerance_px: float = 1.0
    min_matches: int = 10
    max_rms_arcsec: float = 0.02
    drop_unaligned: bool = False
    detection_nsigma: float = 5.0
    wcsname: str = "HSTRED-ALIGN"
    reference_catalog: str = ""
    allow_relative: bool = False
    tie_min_matches: int = 5
    tie_max_rms_arcsec: float = 0.02
    tie_wcsname: str = "HSTRED-GAIA"

    def __post_init__(self) -> None:
        validate_config(self)

    def to_dict(self) -> dict:
        return asdict(self)


#: Command-line spelling of the options that have one (errors name what the user typed).
_FLAGS = {"pixel_scale_arcsec": "--pixel-scale", "max_rms_arcsec": "--max-rms",
          "min_matches": "--min-matches", "kernel": "--kernel",
          "weight_type": "--weight-type", "fit_geometry": "--fit-geometry",
          "pixfrac": "--pixfrac", "satellites": "--satellites", "rms": "--rms/--no-rms",
          "tile_size": "--tile-size", "tiled_products": "--tiled-products"}


def _option(name: str) -> str:
    return _FLAGS.get(name, f"drizzle option {name}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise InputError(f"{_option(name)} must be a positive number, got {value!r}")


def validate_config(config: DrizzleConfig) -> DrizzleConfig:
    """Check the options; raise :class:`InputError` naming the bad one and its choices."""
    if config.kernel not in KERNELS:
        raise InputError(f"--kernel {config.kernel!r} is unknown; choose from "
                         f"{', '.join(KERNELS)}")
    if config.weight_type not in WEIGHT_TYPES:
        raise InputError(
            f"--weight-type {config.weight_type!r} is unknown; choose from "
            f"{', '.join(WEIGHT_TYPES)}"
        )
    if config.fit_geometry not in FIT_GEOMETRIES:
        raise InputError(
            f"--fit-geometry {config.fit_geometry!r} is unknown; choose from "
            f"{', '.join(FIT_GEOMETRIES)}"
        )
    if config.sky_method not in SKY_METHODS:
        raise InputError(f"sky method {config.sky_method!r} is unknown; choose from {SKY_METHODS}")
    for name in ("pixel_scale_arcsec", "searchrad_px", "tolerance_px", "refine_tolerance_px",
                 "max_rms_arcsec", "detection_nsigma", "tie_max_rms_arcsec"):
        _positive(name, getattr(config, name))
    if not 0.0 < config.pixfrac <= 1.0:
        raise InputError(f"--pixfrac must be in (0, 1], got {config.pixfrac!r}")
    if config.pixel_scale_arcsec > 1.0:
        raise InputError(
            f"--pixel-scale {config.pixel_scale_arcsec} arcsec is implausible for ACS/WFC; "
            "give it in arcsec per pixel (e.g. 0.03)"
        )
    if isinstance(config.min_matches, int) and not isinstance(config.min_matches, bool) and (
            config.min_matches < MIN_MATCHES):
        raise InputError(f"--min-matches must be at least {MIN_MATCHES} (a fit of shift, "
                         "rotation and scale needs that many stars to be checked), got "
                         f"{config.min_matches}")
    for name in ("min_matches", "good_bits", "tie_min_matches"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (
            0 if name == "good_bits" else 1
        ):
            raise InputError(f"{_option(name)} must be a positive integer, got {value!r}")
    if config.good_bits & 4096:
        raise InputError("good_bits must not include 4096 (cosmic rays found by the drizzle stage)")
    if config.good_bits & TRAIL_DQ:
        raise InputError(f"good_bits must not include {TRAIL_DQ} (satellite trails)")
    if isinstance(config.tile_size, bool) or not isinstance(config.tile_size, int) or not (
            config.tile_size == 0 or config.tile_size >= MIN_TILE_SIZE):
        raise InputError(f"--tile-size must be 0 (the whole grid at once) or at least "
                         f"{MIN_TILE_SIZE} pixels, got {config.tile_size!r}")
    if not isinstance(config.tiled_products, bool):
        raise InputError(f"{_option('tiled_products')} is on or off, got "
                         f"{config.tiled_products!r}")
    if config.tiled_products and config.tile_size == 0:
        raise InputError("--tiled-products needs tiles: give --tile-size a size of at least "
                         f"{MIN_TILE_SIZE} pixels, not 0")
    if config.satellites not in SATELLITE_MODES:
        raise InputError(f"--satellites {config.satellites!r} is unknown; choose from "
                         f"{', '.join(SATELLITE_MODES)}")
    if config.refine_tolerance_px > config.tolerance_px:
        raise InputError("refine_tolerance_px must not exceed tolerance_px")
    for name in ("wcsname", "tie_wcsname"):
        value = getattr(config, name)
        if not isinstance(value, str) or not value or len(value) > 68:
            raise InputError(f"{name} must be a non-empty FITS string, got {value!r}")
    if config.tie_wcsname == config.wcsname:
        raise InputError("tie_wcsname must differ from wcsname: the WCSNAME tells a tied WCS "
                         "from a relative one")
    if not isinstance(config.reference_catalog, str):
        raise InputError("reference_catalog must be a file name, 'gaia' or '' (none), got "
                         f"{config.reference_catalog!r}")
    return config
