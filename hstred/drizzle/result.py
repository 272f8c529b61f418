"""What the alignment + drizzle stage returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from hstred.distortion import DistortionInfo
from hstred.drizzle.tileset import image_files
from hstred.naming import PRODUCT_KINDS
from hstred.satellites import TrailSearch

__all__ = ["AlignmentSolution", "AbsoluteTie", "DrizzleProduct", "SingleProduct", "GridInfo",
           "DrizzleResult"]


@dataclass(frozen=True)
class AlignmentSolution:
    """The alignment of one visit group (one visit in one filter).

    Shifts are arcsec along east (x) and north (y), rotation is the change of position
    angle (deg, north through east), scale the ratio of corrected to original sizes;
    all measured between the header and the aligned WCS of the group's chips.
    ``n_matches`` and ``rms_arcsec`` come from the independent check of the fit
    (sources matched to the reference catalog after correction); for the reference group
    they are its number of sources and 0. ``status`` is ``"REFERENCE"`` (the group whose
    header WCS defines the frame; its WCS is kept, renamed), ``"ALIGNED"`` or
    ``"DROPPED"`` (failed a gate with ``drop_unaligned``; ``message`` says why).
    """

    visit: str
    filter: str
    status: str
    reference: str
    shift_x_arcsec: float
    shift_y_arcsec: float
    rotation_deg: float
    scale: float
    n_matches: int
    rms_arcsec: float
    n_sources: int
    message: str = ""
    #: the matched sources after correction against the reference visit's: ``ra_deg``,
    #: ``dec_deg``, ``dx_mas`` east and ``dy_mas`` north (empty for the reference)
    residuals: dict = field(default_factory=dict, repr=False)

    @property
    def group(self) -> str:
        return f"{self.visit}_{self.filter}"


@dataclass(frozen=True)
class AbsoluteTie:
    """The tie of the (relatively aligned) visits to an absolute reference catalog.

    ``status`` is ``"TIED"`` (the products sit on the catalog's frame; WCSNAME
    ``wcsname``) or ``"RELATIVE"`` (the tie failed its gates and ``allow_relative``
    kept the relative solution; ``message`` says why). ``catalog`` is the file used
    (for ``gaia``, the saved cone), ``epoch_handling`` how positions were moved,
    ``epochs_jyear`` each visit group's epoch. Shift (arcsec east, north), rotation
    (deg, position angle) and scale are the correction applied to the aligned frame;
    ``n_matches`` counts distinct catalog stars, ``n_pairs`` their pairings with the
    groups' sources, ``rms_arcsec`` the RMS of the pairs' residuals; ``residuals``
    lists each pair (group, ra_deg, dec_deg, dx_mas east, dy_mas north). The
    ``*_error*`` values are the fit's formal 1-sigma errors of shift (at the frame's
    centre), rotation and scale, from the covariance of the weighted fit (catalog
    errors at the epochs, image centroid error); ``chi2_dof`` compares the residuals
    with those errors. NaN when no fit was made.
    """

    status: str
    catalog: str
    source: str  # "file" or "gaia"
    epoch_handling: str
    epochs_jyear: dict
    n_catalog: int
    n_matches: int
    n_pairs: int
    rms_arcsec: float
    shift_x_arcsec: float
    shift_y_arcsec: float
    rotation_deg: float
    scale: float
    wcsname: str
    min_matches: int
    max_rms_arcsec: float
    message: str = ""
    residuals: dict = field(default_factory=dict, repr=False)
    shift_x_error_arcsec: float = float("nan")
    shift_y_error_arcsec: float = float("nan")
    rotation_error_deg: float = float("nan")
    scale_error: float = float("nan")
    chi2_dof: float = float("nan")


def product_files(product) -> tuple[Path, ...]:
    """Every file of a product's images (:data:`PRODUCT_KINDS`): FITS files, or tile
    indexes and their tiles."""
    return tuple(f for p in (getattr(product, kind) for kind in PRODUCT_KINDS)
                 if p is not None for f in image_files(p))


@dataclass(frozen=True)
class DrizzleProduct:
    """The final drizzled image of one filter: science in electrons/s, its weight and its
    per-pixel noise (RMS, electrons/s; header RMSCORn for block sums)."""

    filter: str
    sci: Path
    wht: Path
    rms: Path | None  # None: not made (DrizzleConfig.rms off)
    exposures: tuple[str, ...]  # rootnames
    exptime_s: float
    #: the RMS image's noise cards (:func:`hstred.drizzle.noise.noise_summary`)
    noise: dict = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        return product_files(self)


@dataclass(frozen=True)
class SingleProduct:
    """One exposure drizzled alone onto the common grid (science, weight, RMS)."""

    rootname: str
    filter: str
    sci: Path
    wht: Path
    rms: Path | None  # None: not made (DrizzleConfig.rms off)
    exptime_s: float
    noise: dict = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        return product_files(self)


@dataclass(frozen=True)
class GridInfo:
    """The common output grid (TAN): shape (ny, nx), CRVAL (deg), CRPIX (1-indexed)."""

    shape: tuple[int, int]
    crval_deg: tuple[float, float]
    crpix: tuple[float, float]
    scale_arcsec: float
    orientation_deg: float


@dataclass(frozen=True)
class DrizzleResult:
    """Products, alignment solutions and warnings of :func:`hstred.drizzle.run_drizzle`."""

    products: tuple[DrizzleProduct, ...]
    singles: tuple[SingleProduct, ...]
    solutions: tuple[AlignmentSolution, ...]
    reference: str  # the reference group, "VISIT_FILTER"
    grid: GridInfo
    dropped: tuple[str, ...]  # groups dropped for failing alignment
    warnings: tuple[str, ...]
    distortion: tuple[DistortionInfo, ...] = ()  # per exposure, in plan order
    absolute: AbsoluteTie | None = None  # the tie to a reference catalog, when asked for
    #: fraction of each exposure's pixels flagged as cosmic rays, by rootname
    cr_fractions: dict = field(default_factory=dict)
    #: the satellite-trail search of each exposure, in plan order (empty when off)
    satellites: tuple[TrailSearch, ...] = ()

    def product(self, filter_: str) -> DrizzleProduct:
        for p in self.products:
            if p.filter == filter_:
                return p
        raise KeyError(filter_)

    def solution(self, visit: str, filter_: str) -> AlignmentSolution:
        for s in self.solutions:
            if s.visit == visit and s.filter == filter_:
                return s
        raise KeyError(f"{visit}_{filter_}")

    def to_dict(self, root: Path | None = None) -> dict:
        """A JSON-friendly dictionary: paths as strings, relative to ``root`` (the data
        directory) when inside it, so that the directory can be mounted elsewhere."""
        base = Path(root).resolve() if root is not None else None

        def convert(value):
            if isinstance(value, Path):
                if base is not None:
                    try:
                        return value.resolve().relative_to(base).as_posix()
                    except ValueError:
                        pass
                return str(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            return value

        out = convert(asdict(self))
        out["satellites"] = [convert(s.to_dict()) for s in self.satellites]
        return out
