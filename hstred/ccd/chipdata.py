"""The frozen per-chip record that moves through CCD calibration.

Each calibration step takes a :class:`ChipData` and returns a new one; arrays
and headers of the input are never modified in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

__all__ = ["UNITS_DN", "UNITS_ELECTRONS", "ChipData"]

UNITS_DN = "COUNTS"
UNITS_ELECTRONS = "ELECTRONS"


@dataclass(frozen=True, eq=False)
class ChipData:
    """One chip (imset) of an ACS/WFC exposure.

    Attributes
    ----------
    sci : numpy.ndarray
        Science array, float32, ``[row, column]``; raw-sized (2068 x 4144) before
        the overscan trim and 2048 x 4096 after it. Units given by ``units``.
    err : numpy.ndarray
        1-sigma uncertainty of ``sci``, float32, same shape and units.
    dq : numpy.ndarray
        Data-quality bit mask, int16, same shape.
    units : str
        ``'COUNTS'`` (DN) or ``'ELECTRONS'``.
    header : astropy.io.fits.Header
        The SCI extension header (EXTVER, CCDCHIP, LTV, WCS, ...).
    primary : astropy.io.fits.Header
        The exposure's primary header as updated so far (shared meaning for both
        chips of an exposure).
    err_header, dq_header : astropy.io.fits.Header
        The ERR and DQ extension headers.
    """

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    units: str
    header: fits.Header
    primary: fits.Header = field(default_factory=fits.Header)
    err_header: fits.Header = field(default_factory=fits.Header)
    dq_header: fits.Header = field(default_factory=fits.Header)

    def __post_init__(self) -> None:
        shapes = {self.sci.shape, self.err.shape, self.dq.shape}
        if len(shapes) != 1:
            raise ValueError(f"sci/err/dq shapes differ: {self.sci.shape}, {self.err.shape}, "
                             f"{self.dq.shape}")

    @property
    def chip(self) -> int:
        """CCDCHIP of this imset (1 = WFC1, 2 = WFC2)."""
        return int(self.header["CCDCHIP"])

    @property
    def extver(self) -> int:
        """EXTVER of this imset in the raw and calibrated files."""
        return int(self.header.get("EXTVER", 1))

    @property
    def shape(self) -> tuple[int, int]:
        return self.sci.shape

    def replace(self, **changes) -> ChipData:
        """A new record with ``changes`` applied (arrays are not copied)."""
        return dataclasses.replace(self, **changes)

    def with_keywords(self, **cards) -> ChipData:
        """A new record whose SCI header has ``cards`` set.

        Values may be ``value`` or ``(value, comment)``.
        """
        header = self.header.copy()
        for key, value in cards.items():
            header[key] = value
        return self.replace(header=header)
