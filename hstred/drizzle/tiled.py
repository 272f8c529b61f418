"""A filter's final drizzle cut into tiles of the common grid (``--tile-size``).

The whole-grid final drizzle is one AstroDrizzle call that finds the cosmic rays of all
the filter's exposures and drizzles them onto the grid, holding every output plane in
one process. Here the same work is done in two parts:

1. **Cosmic rays**, with the flags of AstroDrizzle's whole-grid step and no process
   holding a whole plane of it (``_tiled_cosmic_rays`` in the stage):

   a. :func:`prepare_cosmic_rays`, over all the filter's exposures at once: the DQ
      reset, static masks (one per chip position), sky and the grid of the separate
      drizzles (AstroDrizzle's default for the exposures, as in a whole-grid call);
   b. the median image in tiles of that grid (:class:`MedianTileTask`), of the final
      tiles' side (``--tile-size``): each tile drizzles the exposures that reach it onto
      its area (the tile and a margin, :func:`separate_tile`) and combines them
      (:func:`median_tile`). A median tile's tasks hold two planes of one drizzle at a
      time, about 12 bytes per pixel above a fixed 0.5 GB (measured on the standard
      program: 0.58 GB for tiles of 5.5 million pixels, 0.77 GB for one of 21.8 million),
      as a final tile's AstroDrizzle part does; one ACS/WFC pointing's median grid
      (AstroDrizzle's 0.05" default) is one tile of the default size. The median step
      masks each drizzle's pixels below 0.7 of its mean weight, a mean over the whole
      drizzle: it is summed over the tiles in between and handed to the step
      (:func:`_weight_means`);
   c. each exposure's blot and ``driz_cr`` against the median cut to its footprint
      (:func:`flag_exposure`), the flags put into its DQ (bit 4096) exactly as the final
      step would (drizzlepac's own ``updateInputDQArray``).

   The steps are drizzlepac's own functions (:func:`~hstred.drizzle.runner.run_steps`):
   AstroDrizzle would neither drizzle onto a grid of its own choosing nor run one
   exposure's flags against a median made elsewhere.
2. **One AstroDrizzle call per tile** (:func:`drizzle_tile`), the final step alone onto
   the tile's sub-grid (the common grid's WCS with CRPIX moved to the tile's corner),
   from only the exposures that overlap the tile. Each call subtracts the sky recorded
   in 1a (MDRIZSKY), honours the DQ flags, and uses the filter's static masks
   (:func:`shared_static_masks`: AstroDrizzle would otherwise combine the masks over the
   tile's exposures only, which differ from tile to tile).

Why AstroDrizzle on sub-grids rather than the ``drizzle`` library with pixel maps: the
tile's output pixels then come from the same C drizzle (``cdriz.tdriz``), fed by the
same weights (drizzlepac builds them from ERR, DQ and the masks) and the same
coordinate mapping (its WCS mapping sampled every 10 input pixels), as the whole-grid
product; the only difference is the grid's origin, so tiled and whole-grid science
agree to float32 rounding. A re-implementation of the weights and mapping with the
``drizzle`` library reproduces AstroDrizzle's product only to about 1e-4 of the noise
in the median (the RMS image's ``RMSCHK``), not to the last bit. The price is that
each tile maps all pixels of each chip it touches, so a chip spread over k tiles is
mapped k times: large tiles keep k small.

The tiles are independent tasks on the run's backend (local processes or Dask), each
writing its pixels into the product's pre-allocated image files (:class:`TiledImage`)
and, with the RMS image, its noise (from the weight maps of its own drizzle); the main
process only merges their headers (:func:`merge_headers`, which also checks that every
chip was drizzled). Each tile's AstroDrizzle product is checked as a whole-grid one is;
the product is then given its provenance and published like a whole-grid one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred.drizzle.grid import grid_from_numbers
from hstred.drizzle.runner import (
    chip_file,
    run_astrodrizzle,
    run_steps,
    to_hstwcs,
)
from hstred.drizzle.tileset import fits_image_header, write_tiled_image
from hstred.errors import StageError
from hstred.naming import TILE_INDEX_SUFFIX
from hstred.record import CR_BIT

__all__ = ["Tile", "in_tiles", "cut_grid", "tile_grid_numbers", "TiledImage", "shared_static_masks",
           "CosmicRayTask", "TileTask", "TileNoise", "TileResult",
           "drizzle_tile", "FactorTask", "tiled_noise_factors",
           "in_order", "indexed", "grown", "box_tile", "prepare_cosmic_rays",
           "later_step_parameters", "MedianTileTask", "separate_tile", "median_tile",
           "FlagTask", "flag_exposure", "MEDIAN_MARGIN_PX", "BLOT_MARGIN_PX",
           "merge_headers", "overlapping", "TILE_MARGIN_PX", "CR_BIT",
           "NOISE_BAND_PIXELS", "noise_bands"]

log = logging.getLogger(__name__)

#: Output pixels added around an exposure's footprint when testing tile overlap: the
#: drop of a border pixel (pixfrac <= 1) reaches under one output pixel beyond the
#: footprint's outline, which is sampled along the chip edges.
TILE_MARGIN_PX = 4

#: Output pixels around a tile where its noise is drizzled too (:func:`_tile_noise`): more
#: than a drop reaches beyond its input pixel's centre (1/ratio output pixels).
NOISE_MARGIN_PX = 8

#: Output pixels whose noise a tile drizzles at a time (:func:`_tile_noise`): a larger
#: tile is done in bands of rows (:func:`noise_bands`), each with its margin, so that the
#: RMS part's memory does not grow with ``--tile-size``. The part holds three float32
#: planes of its band and one chip's part at a time (science, variance, weight and a
#: float64 pixel map: 28 bytes per input pixel; a band can reach a whole chip when the
#: grid is turned against it). Measured per tile of the standard program's 2 x 2 tiles
#: (25.6 million pixels): the noise drizzle peaked at 1.16 GB in one band, 0.93 GB in
#: two, 0.78 GB in two with each chip's part read and mapped only where it reaches.
NOISE_BAND_PIXELS = 4096 * 4096

#: Pixels of the separate drizzles' grid drizzled and combined around a median tile but
#: not kept from it: the median step's minmed grows rejections into neighbours.
MEDIAN_MARGIN_PX = 8

#: Pixels of the median image around an exposure's footprint handed to its blot: the
#: interpolation (poly5) reads a few pixels beyond where a chip pixel lands.
BLOT_MARGIN_PX = 8

_LOCK = threading.RLock()

#: Rows of an AstroDrizzle plane copied into a product image at a time.
PLANE_ROWS = 512


@dataclass(frozen=True)
class Tile:
    """A rectangle of the common grid: columns ``x0``..``x0+nx``, rows ``y0``..``y0+ny``
    (0-based)."""

    row: int
    col: int
    x0: int
    y0: int
    nx: int
    ny: int

    @property
    def name(self) -> str:
        return f"tile_r{self.row:03d}c{self.col:03d}"

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.ny), slice(self.x0, self.x0 + self.nx)


def in_tiles(tile_size: int) -> bool:
    """Whether the final drizzles go in tiles of ``tile_size`` (0: never). A grid within
    one tile is one tile: drizzled whole, one AstroDrizzle call in one process holds whole
    planes of the grid and the RMS image's whole noise drizzle (1.41 GB measured for the
    standard program at 0.079"/pixel, 4076 x 3615 pixels; 1.53 GB at 0.05"), where a
    tile's tasks stay under 0.9 GB."""
    return tile_size > 0


def cut_grid(shape_xy: tuple[int, int], tile_size: int) -> list[Tile]:
    """The grid (``nx``, ``ny``) cut into the fewest tiles no larger than ``tile_size`` on
    a side, of near-equal sizes, row by row."""
    nx, ny = (int(v) for v in shape_xy)
    ncol, nrow = math.ceil(nx / tile_size), math.ceil(ny / tile_size)
    xs = [(i * nx) // ncol for i in range(ncol + 1)]
    ys = [(j * ny) // nrow for j in range(nrow + 1)]
    return [Tile(row=j, col=i, x0=xs[i], y0=ys[j], nx=xs[i + 1] - xs[i], ny=ys[j + 1] - ys[j])
            for j in range(nrow) for i in range(ncol)]


def noise_bands(tile: Tile) -> list[tuple[int, int]]:
    """Rows (r0, r1) of the tile in the bands its noise is drizzled in: the fewest of at
    most :data:`NOISE_BAND_PIXELS` pixels, of (nearly) equal height."""
    bands = min(tile.ny, max(1, math.ceil(tile.nx * tile.ny / NOISE_BAND_PIXELS)))
    rows = math.ceil(tile.ny / bands)
    return [(r, min(r + rows, tile.ny)) for r in range(0, tile.ny, rows)]


def tile_grid_numbers(grid: dict, tile: Tile) -> dict:
    """The tile's WCS numbers (as :func:`~hstred.drizzle.grid.grid_numbers` gives them):
    the common grid with its reference pixel moved to the tile's origin."""
    crpix = [grid["crpix"][0] - tile.x0, grid["crpix"][1] - tile.y0]
    return {**grid, "crpix": crpix, "pixel_shape": (tile.nx, tile.ny)}


def overlapping(tile: Tile, box: tuple[float, float, float, float]) -> bool:
    """Whether a footprint's bounding box (xmin, xmax, ymin, ymax; 0-based grid pixels)
    comes within :data:`TILE_MARGIN_PX` of the tile."""
    xmin, xmax, ymin, ymax = box
    m = TILE_MARGIN_PX
    return (xmax + m >= tile.x0 and xmin - m <= tile.x0 + tile.nx - 1
            and ymax + m >= tile.y0 and ymin - m <= tile.y0 + tile.ny - 1)


class TiledImage:
    """A product image written tile by tile, by any process, without holding it whole.

    The pixels live in a raw big-endian float32 file (``path.raw``), pre-allocated and
    written in place (tiles never overlap); :meth:`finish` writes the FITS file or the
    tiled image.
    """

    DTYPE = ">f4"

    def __init__(self, path: Path, shape_yx: tuple[int, int]):
        self.path = Path(path)
        self.shape = (int(shape_yx[0]), int(shape_yx[1]))

    @property
    def raw(self) -> Path:
        return self.path.with_name(self.path.name + ".raw")

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

    def allocate(self) -> None:
        self.raw.parent.mkdir(parents=True, exist_ok=True)
        with open(self.raw, "wb") as fh:
            fh.truncate(self.nbytes)  # sparse: pages are written by the tiles

    def _offset(self, y: int, x: int) -> int:
        return (y * self.shape[1] + x) * 4

    def write(self, tile: Tile, data: np.ndarray, *, row0: int = 0) -> None:
        """Write ``data`` as the tile's rows from ``row0`` on (by default the whole tile)."""
        if data.ndim != 2 or data.shape[1] != tile.nx or not (
                0 <= row0 and row0 + data.shape[0] <= tile.ny):
            raise StageError(f"{self.path.name}: tile {tile.name} is {(tile.nx, tile.ny)} "
                             f"pixels; {data.shape[::-1]} cannot be written from its row {row0}")
        # Row by row through the file, not a memory map: the tile's pages are not
        # counted in this process's resident memory.
        block = np.ascontiguousarray(data, dtype=self.DTYPE)
        fd = os.open(self.raw, os.O_WRONLY)
        try:
            for j in range(block.shape[0]):
                row = memoryview(block[j]).cast("B")
                offset = self._offset(tile.y0 + row0 + j, tile.x0)
                while row:  # a full disk raises ENOSPC on the write after a short one
                    written = os.pwrite(fd, row, offset)
                    row, offset = row[written:], offset + written
        finally:
            os.close(fd)

    def read_window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0``..``y1``, columns ``x0``..``x1`` (float32), read from the file."""
        out = np.empty((y1 - y0, x1 - x0), dtype=self.DTYPE)
        fd = os.open(self.raw, os.O_RDONLY)
        try:
            for j in range(y1 - y0):
                row = memoryview(out[j]).cast("B")
                if os.preadv(fd, [row], self._offset(y0 + j, x0)) != row.nbytes:
                    raise StageError(f"{self.raw}: shorter than its {self.shape[1]} x "
                                     f"{self.shape[0]} image (cut off outside this run?); "
                                     "run the command again")
        finally:
            os.close(fd)
        return out.astype(np.float32)

    def read(self, tile: Tile) -> np.ndarray:
        return self.read_window(tile.y0, tile.y0 + tile.ny, tile.x0, tile.x0 + tile.nx)

    def finish(self, header: fits.Header, *, tiles=None, kind: str = "sci",
               size: int = 0) -> Path:
        """Write the image: a FITS file (the header, then the pixels copied across in
        blocks) at :attr:`path`; or, given ``tiles`` (those to keep, of at most ``size``
        pixels a side), a tiled image of ``kind`` (:mod:`hstred.drizzle.tileset`) indexed
        beside it. The pixel file is removed; returns the FITS file or the index."""
        if tiles is not None:
            def rows(tile, r0, r1):
                return self.read_window(tile.y0 + r0, tile.y0 + r1, tile.x0, tile.x0 + tile.nx)

            index = write_tiled_image(self.path.with_suffix(TILE_INDEX_SUFFIX), header,
                                      self.shape, tiles, rows, kind=kind, size=size)
            self.raw.unlink()
            return index
        block = fits_image_header(header, self.shape).tostring(endcard=True, padding=True)
        with open(self.raw, "rb") as src, open(self.path, "wb") as dst:
            dst.write(block.encode("ascii"))
            shutil.copyfileobj(src, dst, 16 * 2**20)
            pad = (-self.nbytes) % 2880
            dst.write(b"\0" * pad)
        self.raw.unlink()
        return self.path


def mask_key(name: str) -> str:
    """The chip position in a static mask's file name (AstroDrizzle's
    ``<output>_<detector>_<nx>x<ny>_<chip>_staticMask.fits``, whose first part differs
    from call to call): ``<nx>x<ny>_<chip>``."""
    parts = name.split("_")
    if len(parts) < 3 or not name.endswith("_staticMask.fits"):
        raise StageError(f"{name}: not a static mask file name")
    return "_".join(parts[-3:-1])


@contextlib.contextmanager
def shared_static_masks(masks: dict[str, Path]) -> Iterator[None]:
    """Within the block, AstroDrizzle's static-mask step gives every chip the mask of its
    chip position from ``masks`` (:func:`mask_key` to path) instead of building one from
    the call's own images."""
    from drizzlepac import staticMask

    def create(imageObjectList=(), configObj=None, procSteps=None):  # noqa: N803
        if procSteps is not None:
            procSteps.addStep(staticMask.PROCSTEPS_NAME)
        for image in imageObjectList:
            chips = image.group if image.group is not None else image.getExtensions()
            for chip in chips:
                chipid = f"{image.scienceExt},{chip}"
                name = mask_key(staticMask.buildSignatureKey(image[chipid].signature))
                if name not in masks:
                    raise StageError(f"{image._filename}[{chipid}]: no static mask {name} from "
                                     "the filter's cosmic-ray step")
                image[chipid].outputNames["staticMask"] = str(masks[name])
        if procSteps is not None:
            procSteps.endStep(staticMask.PROCSTEPS_NAME)

    with _LOCK:
        saved = staticMask.createStaticMask
        staticMask.createStaticMask = create
        try:
            yield
        finally:
            staticMask.createStaticMask = saved


def grown(tile: Tile, margin: int, shape_xy: tuple[int, int]) -> Tile:
    """The tile grown by ``margin`` pixels on every side, within the grid (``nx``, ``ny``)."""
    x0, y0 = max(0, tile.x0 - margin), max(0, tile.y0 - margin)
    x1 = min(int(shape_xy[0]), tile.x0 + tile.nx + margin)
    y1 = min(int(shape_xy[1]), tile.y0 + tile.ny + margin)
    return Tile(row=tile.row, col=tile.col, x0=x0, y0=y0, nx=x1 - x0, ny=y1 - y0)


def box_tile(box: tuple[float, float, float, float], margin: int,
             shape_xy: tuple[int, int]) -> Tile:
    """The pixels of a grid (``nx``, ``ny``) within ``margin`` of a footprint's bounding
    box (xmin, xmax, ymin, ymax; 0-based)."""
    xmin, xmax, ymin, ymax = box
    x0, y0 = max(0, math.floor(xmin) - margin), max(0, math.floor(ymin) - margin)
    x1 = min(int(shape_xy[0]), math.ceil(xmax) + 1 + margin)
    y1 = min(int(shape_xy[1]), math.ceil(ymax) + 1 + margin)
    if x1 <= x0 or y1 <= y0:
        raise StageError(f"footprint {box} lies outside the grid of {shape_xy} pixels")
    return Tile(row=0, col=0, x0=x0, y0=y0, nx=x1 - x0, ny=y1 - y0)


@dataclass(frozen=True)
class CosmicRayTask:
    """The first part of a filter's cosmic-ray step (:func:`prepare_cosmic_rays`)."""

    inputs: tuple[Path, ...]  # working copies (their DQ is reset, their sky recorded)
    output: str
    run_dir: Path
    parameters: dict  # the whole-grid final drizzle's, but final_refimage


def prepare_cosmic_rays(task: CosmicRayTask) -> tuple[dict[str, Path], dict]:
    """What the cosmic-ray step needs from all of a filter's exposures at once, as
    AstroDrizzle's whole-grid call does it: the cosmic-ray bit reset in their DQ
    (``resetbits``), the static masks (one per chip position, over all exposures), the
    sky (measured over all exposures, or the visit drizzle's, and recorded in MDRIZSKY)
    and the grid of the separate drizzles (AstroDrizzle's default for these exposures).
    Returns the static masks (chip position, :func:`mask_key`, to path, in
    ``task.run_dir``) and that grid's WCS numbers. Nothing here holds an output plane."""
    from drizzlepac import sky, staticMask

    from hstred.drizzle.grid import grid_numbers

    run_dir = Path(task.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{task.output}.log"

    def steps(images, output_wcs, config):
        staticMask.createStaticMask(images, config)
        sky.subtractSky(images, config)
        return grid_numbers(output_wcs.single_wcs)

    grid = run_steps([str(Path(p).resolve()) for p in task.inputs], task.output, run_dir,
                     task.parameters, log_path, steps)
    masks = {mask_key(p.name): p for p in sorted(run_dir.glob("*_staticMask.fits"))}
    if not masks:
        raise StageError(f"AstroDrizzle wrote no static mask for {task.output}; see "
                         f"{log_path}")
    return masks, grid


def later_step_parameters(parameters: dict) -> dict:
    """The parameters of the steps after :func:`prepare_cosmic_rays`: its DQ reset, masks
    and sky are taken as they are (no reset, the sky from MDRIZSKY)."""
    return {**parameters, "resetbits": "0", "skysub": False, "skyuser": "MDRIZSKY",
            "num_cores": 1, "clean": False}


def _linked(inputs: Sequence[Path], directory: Path) -> list[Path]:
    """Links of the inputs in ``directory``: AstroDrizzle writes the separate drizzles,
    blotted images and masks beside its inputs, so links keep parallel tasks apart."""
    directory.mkdir(parents=True, exist_ok=True)
    links = [directory / Path(p).name for p in inputs]
    for link, target in zip(links, inputs, strict=True):
        link.symlink_to(Path(target).resolve())
    return links


@dataclass(frozen=True)
class MedianTileTask:
    """One tile of the median image of a filter's separate drizzles (:func:`separate_tile`
    then :func:`median_tile`)."""

    tile: Tile  # of the separate drizzles' grid: the pixels this task provides
    area: Tile  # the tile grown by MEDIAN_MARGIN_PX: the pixels it drizzles and combines
    inputs: tuple[Path, ...]  # working copies reaching the area, in filter order
    output: str
    run_dir: Path
    parameters: dict  # later_step_parameters
    grid: dict  # the area's WCS numbers
    static_masks: dict[str, Path]
    median: TiledImage
    means: tuple[float | None, ...] = ()  # per input, over its footprint (median_tile)
    totals: tuple[tuple[float, int], ...] = ()  # per input, what separate_tile reported


def _area_parameters(task: MedianTileTask) -> dict:
    return {**task.parameters, "driz_separate": True, "driz_sep_wcs": True,
            "driz_sep_refimage": to_hstwcs(grid_from_numbers(task.grid))}


def _core(task: MedianTileTask) -> tuple[slice, slice]:
    """The tile's pixels within its area."""
    y0, x0 = task.tile.y0 - task.area.y0, task.tile.x0 - task.area.x0
    return slice(y0, y0 + task.tile.ny), slice(x0, x0 + task.tile.nx)


def _weight_totals(data: np.ndarray) -> tuple[float, int]:
    """What AstroDrizzle's median step averages of a separate drizzle's weight: the
    pixels of at least 1e-8 (``ImageStats(lower=1e-8, nclip=0)``)."""
    used = data[data >= 1e-8]
    return float(used.sum(dtype=np.float64)), int(used.size)


def separate_tile(task: MedianTileTask) -> tuple[tuple[float, int], ...]:
    """Drizzle each input alone onto the tile's area (AstroDrizzle's separate drizzles,
    kept in ``task.run_dir`` for :func:`median_tile`); returns, per input, the sum and
    number of the weights that the median step averages, over the tile's own pixels."""
    from drizzlepac import adrizzle, sky, staticMask

    run_dir = Path(task.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    links = _linked(task.inputs, run_dir / "inputs")
    masks = _own_masks(task.static_masks, run_dir)

    def steps(images, output_wcs, config):
        staticMask.createStaticMask(images, config)
        sky.subtractSky(images, config)
        adrizzle.drizSeparate(images, output_wcs, config, wcsmap=None)

    with shared_static_masks(masks):
        run_steps([str(p) for p in links], task.output, run_dir, _area_parameters(task),
                  run_dir / f"{task.output}.log", steps)
    totals = []
    for link in links:
        with fits.open(_single_weight(link, task), memmap=False) as hdul:
            totals.append(_weight_totals(np.asarray(hdul[0].data)[_core(task)]))
    return tuple(totals)


def _single_weight(link: Path, task: MedianTileTask) -> Path:
    path = link.parent / f"{link.name.rsplit('_', 1)[0]}_single_wht.fits"
    if not path.is_file():
        raise StageError(f"AstroDrizzle wrote no {path.name} for {task.output}; see "
                         f"{Path(task.run_dir) / task.output}.log")
    return path


def _own_masks(masks: dict[str, Path], run_dir: Path) -> dict[str, Path]:
    """Copies of the static masks in ``run_dir`` (AstroDrizzle may remove them)."""
    own = {}
    for key, path in masks.items():
        own[key] = run_dir / Path(path).name
        shutil.copyfile(path, own[key])
    return own


@contextlib.contextmanager
def _weight_means(task: MedianTileTask, links: Sequence[Path]) -> Iterator[None]:
    """Within the block, AstroDrizzle's median step takes the mean weight of each input's
    separate drizzle from ``task.means`` (over its whole footprint, as a whole-grid run
    sees it) rather than over the tile's area. The step asks in input order; each
    answer is checked against the weight image it is asked about (the tile's sums that
    :func:`separate_tile` reported for it)."""
    from drizzlepac import createMedian

    queue = list(zip(links, task.means, task.totals, strict=True))

    class Stats:
        def __init__(self, data, lower=None, fields=None, nclip=None, **kwargs):
            if not queue or lower != 1e-8 or fields != "mean" or nclip != 0:
                raise StageError(f"{task.output}: AstroDrizzle's median step asked for a "
                                 "weight statistic this pipeline does not supply")
            link, mean, totals = queue.pop(0)
            if _weight_totals(np.asarray(data)[_core(task)]) != tuple(totals):
                raise StageError(f"{task.output}: the median step read the weights of "
                                 f"another image than {link.name}")
            if mean is None:  # no weight anywhere: ImageStats fails, the step takes 0
                raise ValueError(f"{link.name}: no weighted pixel")
            self.mean = mean

    with _LOCK:
        saved = createMedian.ImageStats
        createMedian.ImageStats = Stats
        try:
            yield
        finally:
            createMedian.ImageStats = saved
    if queue:
        raise StageError(f"{task.output}: the median step left the weights of "
                         f"{', '.join(q[0].name for q in queue)} unread")


def median_tile(task: MedianTileTask) -> Tile:
    """Combine the separate drizzles :func:`separate_tile` left in ``task.run_dir`` into
    the median image (AstroDrizzle's median step, each input's mean weight from
    ``task.means``, checked against ``task.totals``) and write the tile's pixels into
    ``task.median``."""
    from drizzlepac import createMedian, sky

    run_dir = Path(task.run_dir).resolve()
    links = [run_dir / "inputs" / Path(p).name for p in task.inputs]
    log_path = run_dir / f"{task.output}.log"
    try:
        def steps(images, output_wcs, config):
            sky.subtractSky(images, config)
            createMedian.createMedian(images, config)

        with _weight_means(task, links):
            run_steps([str(p) for p in links], task.output, run_dir,
                      {**_area_parameters(task), "median": True}, log_path, steps)
        median = run_dir / f"{task.output}_med.fits"
        if not median.is_file():
            raise StageError(f"AstroDrizzle wrote no {median.name}; see {log_path}")
        with fits.open(median, memmap=False) as hdul:
            task.median.write(task.tile, np.asarray(hdul[0].data, dtype=np.float32)[_core(task)])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return task.tile


@dataclass(frozen=True)
class FlagTask:
    """The cosmic rays of one exposure against the filter's median (:func:`flag_exposure`)."""

    input: Path  # the working copy whose DQ gets the flags
    extvers: tuple[int, ...]
    output: str
    run_dir: Path
    parameters: dict  # later_step_parameters
    cutout: Tile  # of the median: the exposure's footprint and BLOT_MARGIN_PX around it
    grid: dict  # the cutout's WCS numbers
    static_masks: dict[str, Path]
    median: TiledImage


def flag_exposure(task: FlagTask) -> Path:
    """AstroDrizzle's blot and ``driz_cr`` steps for one exposure, chip by chip, the median
    cut to its footprint; the flags go into its DQ (bit :data:`CR_BIT`) as the final step
    would put them there (drizzlepac's ``updateInputDQArray``)."""
    from drizzlepac import ablot, drizCR, sky, staticMask
    from drizzlepac.adrizzle import updateInputDQArray

    run_dir = Path(task.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        (link,) = _linked([task.input], run_dir / "inputs")
        masks = _own_masks(task.static_masks, run_dir)
        grid = grid_from_numbers(task.grid)
        header = grid.to_header()
        fits.PrimaryHDU(task.median.read(task.cutout), header=header).writeto(
            run_dir / f"{task.output}_med.fits")
        log_path = run_dir / f"{task.output}.log"

        def steps(images, output_wcs, config):
            staticMask.createStaticMask(images, config)
            sky.subtractSky(images, config)
            # wcsmap None, as AstroDrizzle passes it: drizzlepac's C mapping (runBlot's
            # own default is a slower Python mapping with other rounding)
            ablot.runBlot(images, output_wcs, config, wcsmap=None)
            drizCR.rundrizCR(images, config)

        pars = {**task.parameters, "driz_separate": True, "driz_sep_wcs": True,
                "driz_sep_refimage": to_hstwcs(grid), "median": True, "blot": True,
                "driz_cr": True}
        for extver in task.extvers:
            # One chip at a time (AstroDrizzle's ``group``): the cosmic-ray step's
            # full-chip temporaries of one chip are gone before the next one's are made.
            # Each chip's flags depend on its own pixels only.
            with shared_static_masks(masks):
                run_steps([str(link)], task.output, run_dir,
                          {**pars, "group": f"sci,{extver}"}, log_path, steps)
            crmask = chip_file(link, extver, "crmask.fits", output=task.output,
                               log_path=log_path)
            updateInputDQArray(str(Path(task.input).resolve()), "DQ", extver, str(crmask),
                               CR_BIT)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return Path(task.input)


@dataclass(frozen=True)
class TileNoise:
    """What a tile needs for its part of the product's RMS image."""

    rms: TiledImage
    sources: tuple[Path, ...]  # the calibrated exposures of the tile's inputs (their ERR)
    extvers: tuple[tuple[int, ...], ...]  # the inputs' SCI extensions
    weights_dir: Path  # each chip's final weight map is kept here (correlation factors)
    kernel: str
    pixfrac: float
    bands: tuple[tuple[int, int], ...]  # rows of the tile drizzled at a time (noise_bands)


@dataclass(frozen=True)
class TileTask:
    """The final drizzle of one tile (:func:`drizzle_tile`)."""

    tile: Tile
    inputs: tuple[Path, ...]  # working copies overlapping the tile, in filter order
    expected_chips: int
    output: str
    run_dir: Path
    parameters: dict  # without final_refimage: the tile's grid is made in the task
    grid: dict  # the tile's WCS numbers
    static_masks: dict[str, Path]
    sci: TiledImage
    wht: TiledImage
    noise: TileNoise | None = None


@dataclass(frozen=True)
class TileResult:
    tile: Tile
    header: str  # the tile's science header ("" for a tile no exposure reaches)
    wht_header: str  # and its weight image's
    seconds: float
    columns: np.ndarray | None = None  # finite science pixels per column of the tile
    rows: np.ndarray | None = None  # and per row
    missing: int = 0  # weighted pixels without an RMS
    mismatch_counts: np.ndarray | None = None  # noise.MISMATCH_BINS histogram
    noise_seconds: float = 0.0  # of ``seconds``, what the RMS pixels took


def drizzle_tile(task: TileTask) -> TileResult:
    """Drizzle the tile's exposures onto its sub-grid and write its pixels into the
    product images; a tile that no exposure reaches is written empty (NaN, weight 0).
    With ``task.noise``, the tile's RMS pixels too (:mod:`hstred.drizzle.noise`, from
    the weight maps this very drizzle used)."""
    t0 = time.perf_counter()
    tile, noise = task.tile, task.noise
    if not task.inputs:
        empty = np.full((tile.ny, tile.nx), np.nan, dtype=np.float32)
        task.sci.write(tile, empty)
        task.wht.write(tile, np.zeros((tile.ny, tile.nx), dtype=np.float32))
        if noise is not None:
            noise.rms.write(tile, empty)
        return TileResult(tile=tile, header="", wht_header="", seconds=time.perf_counter() - t0)
    run_dir = Path(task.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    # Own copies of the static masks: AstroDrizzle removes them when it cleans up.
    masks = {}
    for key, path in task.static_masks.items():
        masks[key] = run_dir / path.name
        shutil.copyfile(path, masks[key])
    inputs = list(task.inputs)
    if noise is not None:
        # AstroDrizzle writes each chip's weight map beside its input: links of the
        # inputs in the tile's own directory keep those of parallel tiles apart.
        (run_dir / "inputs").mkdir()
        inputs = [run_dir / "inputs" / Path(p).name for p in task.inputs]
        for link, target in zip(inputs, task.inputs, strict=True):
            link.symlink_to(Path(target).resolve())
    grid = grid_from_numbers(task.grid)
    pars = {**task.parameters, "final_refimage": to_hstwcs(grid)}
    extra = {}
    try:
        with shared_static_masks(masks):
            images = run_astrodrizzle(inputs, task.output, run_dir=run_dir, parameters=pars,
                                      expected_chips=task.expected_chips,
                                      require_coverage=False, resolve=noise is None)
        headers, extra = [], {}
        columns, rows = np.zeros(tile.nx, dtype=np.int64), np.zeros(tile.ny, dtype=np.int64)
        covered = np.zeros((tile.ny, tile.nx), dtype=bool) if noise is not None else None
        # AstroDrizzle's planes are copied into the product a block of rows at a time, read
        # without memory maps: no whole plane is held (the RMS part reads the science back).
        for image, path in ((task.sci, images.sci), (task.wht, images.wht)):
            with fits.open(path, memmap=False) as hdul:
                hdu = hdul[0]
                headers.append(hdu.header.tostring())
                if hdu.shape != (tile.ny, tile.nx):
                    raise StageError(f"{path.name}: {hdu.shape[::-1]} pixels, expected the "
                                     f"tile's {(tile.nx, tile.ny)}")
                for r in range(0, tile.ny, PLANE_ROWS):
                    block = np.asarray(hdu.section[r:r + PLANE_ROWS], dtype=np.float32)
                    image.write(tile, block, row0=r)
                    if image is task.sci:
                        finite = np.isfinite(block)
                        columns += finite.sum(axis=0)
                        rows[r:r + block.shape[0]] = finite.sum(axis=1)
                    elif covered is not None:
                        covered[r:r + block.shape[0]] = block > 0
        if noise is not None:
            extra = _tile_noise(task, inputs, covered)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return TileResult(tile=tile, header=headers[0], wht_header=headers[1],
                      seconds=time.perf_counter() - t0, columns=columns, rows=rows, **extra)


class _TileRows:
    """A tile of a tiled image read by rows (``[r0:r1]``), for a comparison in blocks."""

    def __init__(self, image: TiledImage, tile: Tile):
        self.image, self.tile = image, tile
        self.shape = (tile.ny, tile.nx)

    def __getitem__(self, rows: slice) -> np.ndarray:
        r0, r1, _ = rows.indices(self.tile.ny)
        t = self.tile
        return self.image.read_window(t.y0 + r0, t.y0 + r1, t.x0, t.x0 + t.nx)


def _tile_noise(task: TileTask, links: Sequence[Path], covered: np.ndarray) -> dict:
    """The tile's RMS pixels (where the product's weight, ``covered``, is positive),
    written into the product's RMS image band by band (``task.noise.bands``); its weight
    maps kept for the correlation factors."""
    from hstred.drizzle.noise import (
        ChipInput,
        check_mismatch,
        compare_tile,
        drizzle_noise,
        histogram_quantile,
        rms_pixels,
    )

    t0 = time.perf_counter()
    noise, tile = task.noise, task.tile
    log_path = Path(task.run_dir) / f"{task.output}.log"
    chips = [ChipInput(copy=link, source=source, extver=extver,
                       weight=chip_file(link, extver, "final_mask.fits", output=task.output,
                                        log_path=log_path))
             for link, source, extvers in zip(links, noise.sources, noise.extvers, strict=True)
             for extver in extvers]
    # The drizzle library leaves out drops of input pixels whose centres fall outside its
    # output, and parts of input lines that leave and re-enter it (seen: whole regions of
    # a tile with a chip mostly outside it): each chip is cut to the part that reaches the
    # band (drizzle_noise with factors=False), and the band grown by a margin, then cut
    # back. The RMS pixels then equal the whole grid's to the bit (tests).
    m = NOISE_MARGIN_PX
    (cx, cy), inner = task.grid["crpix"], np.s_[m:-m, m:-m]
    counts, missing = None, 0
    for r0, r1 in noise.bands:
        grown = {**task.grid, "crpix": [cx + m, cy - r0 + m],
                 "pixel_shape": (tile.nx + 2 * m, r1 - r0 + 2 * m)}
        images = drizzle_noise(chips, grid_from_numbers(grown), pixfrac=noise.pixfrac,
                               kernel=noise.kernel, factors=False)
        images = dataclasses.replace(images, sci=images.sci[inner], wht=images.wht[inner],
                                     var=images.var[inner])
        band = dataclasses.replace(tile, y0=tile.y0 + r0, ny=r1 - r0)
        part = compare_tile(images, _TileRows(task.sci, band))
        if part is not None:
            counts = part if counts is None else counts + part
        rms, n = rms_pixels(images, covered[r0:r1])
        del images
        noise.rms.write(tile, rms, row0=r0)
        missing += n
        del rms
    if counts is not None:
        check_mismatch(histogram_quantile(counts, 0.5))
    # The same for every tile (ERR, DQ and the filter's masks): the first one kept wins.
    noise.weights_dir.mkdir(parents=True, exist_ok=True)
    for chip in chips:
        kept = noise.weights_dir / chip.weight.name
        if not kept.exists():
            chip.weight.replace(kept)
    return {"missing": missing, "mismatch_counts": counts,
            "noise_seconds": time.perf_counter() - t0}


@dataclass(frozen=True)
class FactorTask:
    """The correlation factors and blank-sky check of a tiled product
    (:func:`tiled_noise_factors`)."""

    chips: tuple  # hstred.drizzle.noise.ChipInput, weights from the tiles' TileNoise
    grid: dict
    pixfrac: float
    kernel: str
    sci: TiledImage  # the product's science pixels, before TiledImage.finish
    wht: TiledImage  # its weight
    rms: TiledImage  # and its RMS
    check_window: tuple[int, int, int, int]  # (y0, y1, x0, x1) of the blank-sky check


def tiled_noise_factors(task: FactorTask) -> tuple[dict[int, float], float, dict]:
    """:func:`hstred.drizzle.noise.noise_factors` of a tiled product, reading the windows
    of its weight and RMS images from their files (nothing of the whole grid in memory),
    and the blank-sky check (:func:`~hstred.drizzle.noise.blank_sky_check`) in its window:
    (factors, scale ratio, blank-sky results)."""
    from hstred.drizzle.noise import blank_sky_check, noise_factors

    def windowed(y0, y1, x0, x1):
        r = np.asarray(task.rms.read_window(y0, y1, x0, x1), dtype=np.float64)
        known = np.isfinite(r)
        w = np.asarray(task.wht.read_window(y0, y1, x0, x1), dtype=np.float64)
        return np.where(known, w, 0.0), np.where(known, r * r, np.nan)

    factors, ratio = noise_factors(task.chips, grid_from_numbers(task.grid),
                                   pixfrac=task.pixfrac, kernel=task.kernel, windowed=windowed)
    y0, y1, x0, x1 = task.check_window
    blank = blank_sky_check(task.sci.read_window(y0, y1, x0, x1),
                            task.rms.read_window(y0, y1, x0, x1), factors)
    return factors, ratio, blank


def in_order(func, tasks: Sequence) -> list:
    """``func(task)`` for each task, one after another (one worker, in a child process)."""
    return [func(task) for task in tasks]


def indexed(item: tuple):
    """``(i, func(task))`` of ``(i, func, task)``: results of tasks run out of order
    find their place."""
    i, func, task = item
    return i, func(task)


_DKEY = re.compile(r"^D(\d{3})([A-Z0-9]{1,4})$")


def _chip_order(inputs: Sequence[str]):
    names = {name: i for i, name in enumerate(inputs)}

    def key(data: str) -> tuple[int, int]:
        name, _, ext = data.partition("[")
        extver = re.findall(r"\d+", ext)
        return names.get(Path(name).name, len(names)), int(extver[-1]) if extver else 0

    return key


def merge_headers(headers: Sequence[str], *, inputs: Sequence[str], expected_chips: int,
                  grid: dict, exptime: float, expstart: float, expend: float,
                  output: str) -> fits.Header:
    """A product's header from its tiles' headers (``""`` for empty tiles).

    The header of the tile that drizzled the most chips (the first such, in tile order)
    is the base. Its drizzle records (``D###xxxx``) are replaced by one per chip of the
    filter, in the whole-grid drizzle's order (``inputs``, the file names, in order;
    SCI extensions in order), each taken from a tile that drizzled the chip, with the
    product's name for the tile's in its output names; the reference pixel and the
    exposure totals become the product's."""
    parsed = [fits.Header.fromstring(h) for h in headers if h]
    if not parsed:
        raise StageError(f"{output}: no tile was drizzled")
    records: dict[str, list[tuple[str, object, str]]] = {}
    counts = []
    for hdr in parsed:
        blocks: dict[str, list] = {}
        for card in hdr.cards:
            m = _DKEY.match(card.keyword)
            if m:
                blocks.setdefault(m.group(1), []).append((m.group(2), card.value, card.comment))
        counts.append(len(blocks))
        for block in blocks.values():
            data = next((str(v) for k, v, _c in block if k == "DATA"), None)
            if data is not None:  # the tiles' inputs are links in their own directories
                name, _, ext = data.partition("[")
                chip = f"{Path(name).name}[{ext}"
                records.setdefault(chip, [(k, chip if k == "DATA" else v, c)
                                          for k, v, c in block])
    chips = sorted(records, key=_chip_order(inputs))
    if len(chips) != expected_chips:
        raise StageError(f"{output}: {len(chips)} chips drizzled in the tiles, expected "
                         f"{expected_chips}; an input was dropped")
    base = parsed[int(np.argmax(counts))].copy()
    tile_output = re.compile(re.escape(output) + r"_tile_r\d{3}c\d{3}")
    for key in [c.keyword for c in base.cards if _DKEY.match(c.keyword)]:
        base.remove(key, ignore_missing=True, remove_all=True)
    for n, chip in enumerate(chips, 1):
        for suffix, value, comment in records[chip]:
            if isinstance(value, str) and suffix in ("OUDA", "OUWE", "OUCO"):
                value = tile_output.sub(output, value)
            base.append((f"D{n:03d}{suffix}", value, comment), end=True)
    base["NDRIZIM"] = len(chips)
    base["EXPTIME"] = exptime
    if "TEXPTIME" in base:
        base["TEXPTIME"] = exptime
    base["EXPSTART"] = expstart
    base["EXPEND"] = expend
    base["CRPIX1"] = grid["crpix"][0]
    base["CRPIX2"] = grid["crpix"][1]
    return base
