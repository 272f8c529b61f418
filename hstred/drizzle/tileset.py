"""Product images kept in tiles (``--tiled-products``): tile files and an index.

For mosaics too large for one file. Each tile of the common grid that an exposure
reaches is a FITS image of its own, with the product's header and the WCS moved onto the
tile: CRPIX less the tile's origin, and LTV1/LTV2 (IRAF's convention for an image cut
from a larger one: image pixel = product pixel + LTV) giving that origin. A tile no
exposure reaches is not written; it reads as the image's empty value (NaN science and
RMS, zero weight). The index, ``OUTNAME_FILTER_drz_sci.json``, holds the product's
header (its shape, WCS, exposure totals and provenance, as the whole FITS image would
have them) and every tile's place and file name; the tile files sit in the directory of
the same name beside it (:func:`hstred.naming.tile_directory`), so the two move together.

:class:`TiledProduct` reads a tiled image back by window, whole or in parts, without
holding more than the window.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.hdu.base import BITPIX2DTYPE

from hstred.errors import StageError
from hstred.fileio import atomic_write_text
from hstred.naming import TILE_INDEX_SUFFIX, tile_directory

__all__ = ["TiledProduct", "TilePlace", "write_tiled_image", "is_tiled",
           "image_header", "image_files", "image_section", "fits_image_header",
           "write_fits_image", "read_window", "EMPTY_VALUES"]

INDEX_FORMAT = "hstred tiled image"
INDEX_VERSION = 1
#: What a pixel no exposure reaches holds, by image kind.
EMPTY_VALUES = {"sci": math.nan, "wht": 0.0, "rms": math.nan}
_DTYPE = ">f4"
#: Rows of a tile copied into its file at a time.
COPY_ROWS = 512
#: At most this many bytes of whole rows are read at a time by :func:`read_window`.
READ_BLOCK_BYTES = 16 * 2**20


def read_window(hdu, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0``..``y1``, columns ``x0``..``x1`` of a 2-D image HDU of a file opened
    without a memory map, as astropy's ``hdu.section[y0:y1, x0:x1]`` gives them.

    astropy reads a window narrower than the image one row at a time, at a cost per
    row that dominates reading chip parts and tiles; an image stored as plain pixels
    (no scaling, not compressed) is read here in blocks of whole rows
    (:data:`READ_BLOCK_BYTES`) and cut to the columns. Others go through ``section``.
    """
    header = hdu.header
    info = hdu.fileinfo()
    raw = BITPIX2DTYPE.get(header.get("BITPIX"))
    if (raw is None or info is None or header.get("NAXIS") != 2 or "BSCALE" in header
            or "BZERO" in header or "BLANK" in header or isinstance(hdu, fits.CompImageHDU)
            or hdu._data_loaded):
        return np.asarray(hdu.section[y0:y1, x0:x1])
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    y0, y1, _ = slice(y0, y1).indices(ny)
    x0, x1, _ = slice(x0, x1).indices(nx)
    dtype = np.dtype(raw).newbyteorder(">")  # FITS pixels are big-endian
    out = np.empty((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=dtype.newbyteorder("="))
    step = max(1, READ_BLOCK_BYTES // (nx * dtype.itemsize))
    path = info["file"].name
    with open(path, "rb") as fh:
        for r in range(y0, y1, step):
            n = min(step, y1 - r)
            fh.seek(info["datLoc"] + r * nx * dtype.itemsize)
            block = np.fromfile(fh, dtype=dtype, count=n * nx)
            if block.size != n * nx:
                raise StageError(f"{path}: shorter than its {nx} x {ny} image "
                                 f"(cut off?); run the command again")
            out[r - y0:r - y0 + n] = block.reshape(n, nx)[:, x0:x1]
    return out


@dataclass(frozen=True)
class TilePlace:
    """Where a tile file's pixels sit in the product: columns ``x0``..``x0+nx``, rows
    ``y0``..``y0+ny`` (0-based)."""

    name: str
    x0: int
    y0: int
    nx: int
    ny: int
    file: str  # in the index's tile directory


def is_tiled(path: Path) -> bool:
    """Whether a product image path is a tile index (else a FITS file)."""
    return Path(path).suffix == TILE_INDEX_SUFFIX


def fits_image_header(header: fits.Header, shape_yx: tuple[int, int]) -> fits.Header:
    """``header`` made the primary header of a float32 image of ``shape_yx``."""
    header = header.copy()
    if "SIMPLE" not in header:
        header.insert(0, ("SIMPLE", True))
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = int(shape_yx[1])
    header["NAXIS2"] = int(shape_yx[0])
    for key in ("BSCALE", "BZERO"):
        header.remove(key, ignore_missing=True)
    return header


def write_fits_image(path: Path, header: fits.Header, shape_yx: tuple[int, int],
                     blocks: Iterator[np.ndarray]) -> Path:
    """Write a float32 FITS image: ``header``, then the pixels as ``blocks`` of whole rows
    give them (top to bottom), then the padding; nothing of the image is held at once."""
    block = fits_image_header(header, shape_yx).tostring(endcard=True, padding=True)
    written = 0
    with open(path, "wb") as dst:
        dst.write(block.encode("ascii"))
        for rows in blocks:
            data = np.ascontiguousarray(rows, dtype=_DTYPE)
            dst.write(memoryview(data).cast("B"))
            written += data.nbytes
        expected = int(shape_yx[0]) * int(shape_yx[1]) * 4
        if written != expected:
            raise StageError(f"{path.name}: {written} bytes of pixels written, expected "
                             f"{expected}")
        dst.write(b"\0" * ((-written) % 2880))
    return Path(path)


def tile_header(header: fits.Header, place: TilePlace) -> fits.Header:
    """The product's header moved onto one tile (every WCS's reference pixel shifted;
    LTV1/LTV2 the tile's origin as IRAF gives a cut-out's)."""
    header = fits_image_header(header, (place.ny, place.nx))
    for key in list(header.keys()):
        if len(key) in (6, 7) and key.startswith("CRPIX") and key[5] in "12" and (
                len(key) == 6 or key[6].isalpha()):
            header[key] = float(header[key]) - (place.x0 if key[5] == "1" else place.y0)
    header["LTV1"] = (float(-place.x0), "tile pixel = product pixel + LTV1 (x)")
    header["LTV2"] = (float(-place.y0), "tile pixel = product pixel + LTV2 (y)")
    header["LTM1_1"] = 1.0
    header["LTM2_2"] = 1.0
    header["TILENAME"] = (place.name, "this tile of the tiled product")
    return header


def _index_text(header: fits.Header, shape_yx, kind: str, size: int,
                places: Sequence[TilePlace]) -> str:
    return json.dumps({
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": kind,
        "shape": [int(shape_yx[0]), int(shape_yx[1])], "tile_size": int(size),
        "empty": repr(EMPTY_VALUES[kind]),
        "header": fits_image_header(header, shape_yx).tostring(sep="\n"),
        "tiles": [vars(p) for p in places]}, indent=1) + "\n"


def write_tiled_image(index: Path, header: fits.Header, shape_yx: tuple[int, int], tiles,
                      read: Callable[[object, int, int], np.ndarray], *, kind: str,
                      size: int) -> Path:
    """Write an image as tile files and an index (module doc): ``tiles`` (objects with
    ``name``, ``x0``, ``y0``, ``nx``, ``ny``) are the ones to keep, ``read(tile, r0, r1)``
    gives rows ``r0``..``r1`` of a tile's pixels (read :data:`COPY_ROWS` at a time),
    ``size`` is the tiles' largest side. Returns ``index``."""
    index = Path(index)
    directory = tile_directory(index)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    places = []
    for tile in tiles:
        place = TilePlace(name=tile.name, x0=int(tile.x0), y0=int(tile.y0), nx=int(tile.nx),
                          ny=int(tile.ny), file=f"{index.stem}_{tile.name}.fits")
        blocks = (read(tile, r, min(r + COPY_ROWS, place.ny))
                  for r in range(0, place.ny, COPY_ROWS))
        write_fits_image(directory / place.file, tile_header(header, place),
                         (place.ny, place.nx), blocks)
        places.append(place)
    atomic_write_text(index, _index_text(header, shape_yx, kind, size, places))
    return index


class TiledProduct:
    """A tiled image read back through its index: :attr:`header` (the product's),
    :attr:`shape` (ny, nx), :meth:`read` of any window, :attr:`section` (an array-like
    ``[rows, columns]`` of slices), :meth:`files`."""

    def __init__(self, index: Path):
        self.index = Path(index)
        try:
            info = json.loads(self.index.read_text())
            if info.get("format") != INDEX_FORMAT or info.get("version") != INDEX_VERSION:
                raise ValueError("not an index of this version")
            self.kind = str(info["kind"])
            self.shape = (int(info["shape"][0]), int(info["shape"][1]))
            self.empty = float(info["empty"])
            self.header = fits.Header.fromstring(info["header"], sep="\n")
            self.tiles = tuple(TilePlace(**t) for t in info["tiles"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StageError(f"{self.index}: not a readable tile index ({err}); run the "
                             "drizzle again to write it") from err

    @property
    def directory(self) -> Path:
        return tile_directory(self.index)

    def files(self) -> list[Path]:
        """The index and every tile file."""
        return [self.index, *(self.directory / t.file for t in self.tiles)]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0``..``y1``, columns ``x0``..``x1`` of the product (float32), from the
        tiles they cross (files opened without memory maps)."""
        out = np.full((max(y1 - y0, 0), max(x1 - x0, 0)), self.empty, dtype=np.float32)
        for t in self.tiles:
            ya, yb = max(y0, t.y0), min(y1, t.y0 + t.ny)
            xa, xb = max(x0, t.x0), min(x1, t.x0 + t.nx)
            if ya >= yb or xa >= xb:
                continue
            path = self.directory / t.file
            try:
                with fits.open(path, memmap=False) as hdul:
                    if hdul[0].shape != (t.ny, t.nx):
                        raise StageError(f"{path}: {hdul[0].shape[::-1]} pixels, the index "
                                         f"says {(t.nx, t.ny)}; run the drizzle again")
                    out[ya - y0:yb - y0, xa - x0:xb - x0] = read_window(
                        hdul[0], ya - t.y0, yb - t.y0, xa - t.x0, xb - t.x0)
            except FileNotFoundError as err:
                raise StageError(f"{path}: a tile of {self.index.name} is missing; run the "
                                 "drizzle again") from err
        return out

    @property
    def section(self) -> _Section:
        return _Section(self)


class _Section:
    """``product.section[rows, columns]`` (slices, step 1), read on demand."""

    def __init__(self, product: TiledProduct):
        self._product = product
        self.shape = product.shape

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        y0, y1, ys = rows.indices(self.shape[0])
        x0, x1, xs = cols.indices(self.shape[1])
        if ys != 1 or xs != 1:
            raise ValueError("a tiled product reads windows of step 1")
        return self._product.read(y0, y1, x0, x1)


def image_header(path: Path) -> fits.Header:
    """The primary header of a product image, FITS or tiled."""
    return TiledProduct(path).header if is_tiled(path) else fits.getheader(path, 0)


def image_files(path: Path) -> list[Path]:
    """The files of a product image: the FITS file, or the index and its tiles."""
    return TiledProduct(path).files() if is_tiled(path) else [Path(path)]


@contextlib.contextmanager
def image_section(path: Path) -> Iterator:
    """An array-like of a product image read on demand by ``[rows, columns]`` (an astropy
    section of the FITS file opened without memory maps, or :attr:`TiledProduct.section`)."""
    if is_tiled(path):
        yield TiledProduct(path).section
        return
    with fits.open(path, memmap=False) as hdul:
        yield hdul[0].section


def update_headers(path: Path, write_fits_header: Callable[[Path], None],
                   edit: Callable[[fits.Header], None]) -> None:
    """Change a tiled image's headers alike: ``write_fits_header(tile_file)`` for every
    tile, ``edit(header)`` for the index's copy of the product header."""
    product = TiledProduct(path)
    for t in product.tiles:
        write_fits_header(product.directory / t.file)
    header = product.header
    edit(header)
    size = int(json.loads(product.index.read_text())["tile_size"])
    atomic_write_text(product.index, _index_text(header, product.shape, product.kind, size,
                                                 product.tiles))
