"""ACS/WFC full-frame detector geometry shared by the simulator and the pipeline.

Conventions
-----------
* Arrays are numpy ``[row, column]`` = ``[y, x]``, 0-indexed.
* A raw full-frame file holds two imsets: imset 1 is WFC2 (``CCDCHIP=2``,
  amplifiers C left, D right), imset 2 is WFC1 (``CCDCHIP=1``, amplifiers
  A left, B right).
* A raw SCI array is 2068 rows x 4144 columns of uint16 DN: 24 physical prescan
  columns, 2 x 2048 science columns, 24 prescan columns; 2048 science rows plus
  20 virtual-overscan rows (after the science rows on WFC2, before them on WFC1).
* A trimmed (FLT) chip is 2048 rows x 4096 columns.
* Readout corners: C at row 0 / column 0, D at row 0 / last column, A at the last
  row / column 0, B at the last row / last column.  Parallel CTE trails therefore
  run toward +y on WFC2 and toward -y on WFC1; serial trails run toward +x for
  A and C, toward -x for B and D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RAW_NX",
    "RAW_NY",
    "PRESCAN",
    "VIRTUAL_OVERSCAN",
    "AMP_NX",
    "CHIP_NX",
    "CHIP_NY",
    "AMP_BOUNDARY_FLT",
    "AMP_BOUNDARY_RAW",
    "SM4_MJD",
    "ChipLayout",
    "Quadrant",
    "CHIPS",
    "chip_layout",
    "quadrants",
    "raw_to_trimmed",
    "to_readout_orientation",
    "from_readout_orientation",
]

RAW_NX = 4144
RAW_NY = 2068
PRESCAN = 24
VIRTUAL_OVERSCAN = 20
AMP_NX = 2048
CHIP_NX = 4096
CHIP_NY = 2048
#: The left/right amplifier boundary: FLT column 2048 (0-indexed start of the right amp).
AMP_BOUNDARY_FLT = 2048
AMP_BOUNDARY_RAW = AMP_BOUNDARY_FLT + PRESCAN
#: Servicing Mission 4 (EXPSTART on or after this MJD uses the post-SM4 electronics).
SM4_MJD = 54962.0


@dataclass(frozen=True)
class Quadrant:
    """One amplifier's quadrant of a chip.

    ``flt`` slices address the trimmed 2048 x 4096 chip; ``raw`` slices address
    the same science pixels in the raw 2068 x 4144 array; ``prescan`` addresses
    this amplifier's 24 physical prescan columns over the science rows.
    ``flip_y``/``flip_x`` say which axes must be reversed to bring the readout
    corner to [0, 0] (amplifier C's orientation).
    """

    amp: str
    chip: int
    flt: tuple[slice, slice]
    raw: tuple[slice, slice]
    prescan: tuple[slice, slice]
    flip_y: bool
    flip_x: bool


@dataclass(frozen=True)
class ChipLayout:
    """Where one chip's pixels sit in the raw file."""

    chip: int  # CCDCHIP
    imset: int  # EXTVER of SCI/ERR/DQ
    amps: str  # left amplifier then right amplifier
    ltv1: float
    ltv2: float
    trimy1: int  # rows trimmed from the start (row 0 side)
    trimy2: int  # rows trimmed from the end

    @property
    def science_rows(self) -> slice:
        return slice(self.trimy1, RAW_NY - self.trimy2)

    @property
    def science_cols(self) -> slice:
        return slice(PRESCAN, RAW_NX - PRESCAN)

    @property
    def virtual_overscan_rows(self) -> slice:
        if self.trimy1:
            return slice(0, self.trimy1)
        return slice(RAW_NY - self.trimy2, RAW_NY)


CHIPS: tuple[ChipLayout, ChipLayout] = (
    ChipLayout(chip=2, imset=1, amps="CD", ltv1=24.0, ltv2=0.0, trimy1=0, trimy2=20),
    ChipLayout(chip=1, imset=2, amps="AB", ltv1=24.0, ltv2=20.0, trimy1=20, trimy2=0),
)


def chip_layout(chip: int) -> ChipLayout:
    """Layout of CCDCHIP ``chip`` (1 = WFC1, 2 = WFC2)."""
    for layout in CHIPS:
        if layout.chip == chip:
            return layout
    raise ValueError(f"ACS/WFC has chips 1 and 2, not {chip!r}")


def quadrants(chip: int) -> tuple[Quadrant, Quadrant]:
    """The two amplifier quadrants of ``chip``, left amplifier first."""
    lay = chip_layout(chip)
    rows_raw = lay.science_rows
    rows_flt = slice(0, CHIP_NY)
    left, right = lay.amps
    flip_y = chip == 1  # WFC1 reads out at the top (A, B)
    return (
        Quadrant(
            amp=left,
            chip=chip,
            flt=(rows_flt, slice(0, AMP_NX)),
            raw=(rows_raw, slice(PRESCAN, PRESCAN + AMP_NX)),
            prescan=(rows_raw, slice(0, PRESCAN)),
            flip_y=flip_y,
            flip_x=False,
        ),
        Quadrant(
            amp=right,
            chip=chip,
            flt=(rows_flt, slice(AMP_NX, CHIP_NX)),
            raw=(rows_raw, slice(PRESCAN + AMP_NX, PRESCAN + 2 * AMP_NX)),
            prescan=(rows_raw, slice(RAW_NX - PRESCAN, RAW_NX)),
            flip_y=flip_y,
            flip_x=True,
        ),
    )


def raw_to_trimmed(raw: np.ndarray, chip: int) -> np.ndarray:
    """The 2048 x 4096 science region of a raw-sized chip array (a view)."""
    lay = chip_layout(chip)
    if raw.shape != (RAW_NY, RAW_NX):
        raise ValueError(f"expected a raw {RAW_NY}x{RAW_NX} array, got {raw.shape}")
    return raw[lay.science_rows, lay.science_cols]


def to_readout_orientation(quad_data: np.ndarray, quad: Quadrant) -> np.ndarray:
    """Flip a quadrant so its readout amplifier is at [0, 0] (a view)."""
    out = quad_data
    if quad.flip_y:
        out = out[::-1, :]
    if quad.flip_x:
        out = out[:, ::-1]
    return out


def from_readout_orientation(quad_data: np.ndarray, quad: Quadrant) -> np.ndarray:
    """Inverse of :func:`to_readout_orientation` (flips are their own inverse)."""
    return to_readout_orientation(quad_data, quad)
