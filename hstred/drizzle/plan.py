"""The drizzle plan: calibrated exposures grouped by filter, then by visit.

A visit is named by the first six characters of the rootname (instrument, program
and visit code, e.g. ``jd7101`` in ``jd7101abq``). The filter is the non-CLEAR element
of FILTER1/FILTER2 (both, joined by ``-``, for the rare crossed configurations).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from hstred.acs import CHIP_NX, CHIP_NY
from hstred.errors import InputError
from hstred.naming import filter_name, visit_name

__all__ = [
    "CalibratedExposure",
    "VisitGroup",
    "DrizzlePlan",
    "read_exposure",
    "build_plan",
    "REQUIRED_PRIMARY_KEYWORDS",
    "REQUIRED_SCI_KEYWORDS",
]

#: Primary-header keywords AstroDrizzle needs (with updatewcs=False) or this stage reads.
REQUIRED_PRIMARY_KEYWORDS = (
    "TELESCOP", "INSTRUME", "DETECTOR", "ROOTNAME", "EXPTIME", "EXPSTART", "EXPEND",
    "FILTER1", "FILTER2", "ATODGNA", "ATODGNB", "ATODGNC", "ATODGND",
    "READNSEA", "READNSEB", "READNSEC", "READNSED",
)
#: Keywords every SCI extension must carry.
REQUIRED_SCI_KEYWORDS = (
    "EXTVER", "MEANDARK", "NGOODPIX", "EXPNAME", "CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2",
    "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
)


@dataclass(frozen=True)
class CalibratedExposure:
    """One calibrated exposure (``_flt``/``_flc``) as the drizzle stage sees it."""

    path: Path
    rootname: str  # lower case, 9 characters
    filter: str
    visit: str
    exptime_s: float
    expstart_mjd: float
    extvers: tuple[int, ...]  # EXTVERs of the SCI extensions (1 = WFC2, 2 = WFC1)
    suffix: str  # "flc" or "flt"
    #: SUBARRAY is F and every SCI array is a whole chip (what the trail search needs)
    full_frame: bool = True


@dataclass(frozen=True)
class VisitGroup:
    """The exposures of one visit in one filter: the unit that is aligned."""

    filter: str
    visit: str
    exposures: tuple[CalibratedExposure, ...]

    @property
    def name(self) -> str:
        return f"{self.visit}_{self.filter}"


@dataclass(frozen=True)
class DrizzlePlan:
    """Visit groups ordered by filter (as first seen in time) then by visit."""

    groups: tuple[VisitGroup, ...]

    @property
    def filters(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.filter for g in self.groups))

    @property
    def exposures(self) -> tuple[CalibratedExposure, ...]:
        return tuple(e for g in self.groups for e in g.exposures)

    def groups_in(self, filter_: str) -> tuple[VisitGroup, ...]:
        return tuple(g for g in self.groups if g.filter == filter_)

    def group(self, name: str) -> VisitGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def _require(header: fits.Header, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in header or header[k] is None or header[k] == ""]
    if missing:
        raise InputError(
            f"{where}: missing keyword(s) {', '.join(missing)}; this is not a calibrated "
            "ACS/WFC exposure in the archive FLT layout"
        )


def read_exposure(path: Path) -> CalibratedExposure:
    """Read and check the headers of one calibrated ACS/WFC exposure.

    Checks what AstroDrizzle would otherwise silently mishandle: a missing or zero
    EXPTIME (the image is dropped and an empty product written), non-electron units,
    missing detector keywords or a SCI extension without a celestial WCS.
    """
    path = Path(path)
    name = path.name
    suffix = "flc" if name.endswith("_flc.fits") else "flt" if name.endswith("_flt.fits") else ""
    if not suffix:
        raise InputError(f"{path}: not an _flc.fits or _flt.fits file; pass calibrated exposures")
    try:
        with fits.open(path) as hdul:
            prim = hdul[0].header
            _require(prim, REQUIRED_PRIMARY_KEYWORDS, str(path))
            if str(prim["INSTRUME"]).strip() != "ACS" or str(prim["DETECTOR"]).strip() != "WFC":
                raise InputError(
                    f"{path}: INSTRUME/DETECTOR are {prim['INSTRUME']}/{prim['DETECTOR']}; "
                    "only ACS/WFC exposures can be drizzled here"
                )
            exptime = float(prim["EXPTIME"])
            if not exptime > 0:
                raise InputError(
                    f"{path}: EXPTIME is {exptime}; AstroDrizzle would drop it silently, "
                    "remove the file or fix its header"
                )
            extvers = []
            full_frame = prim.get("SUBARRAY") is False
            for hdu in hdul[1:]:
                if hdu.header.get("EXTNAME", "").strip().upper() != "SCI":
                    continue
                where = f"{path}[SCI,{hdu.header.get('EXTVER')}]"
                _require(hdu.header, REQUIRED_SCI_KEYWORDS, where)
                if not str(hdu.header["CTYPE1"]).startswith("RA---TAN"):
                    raise InputError(f"{where}: CTYPE1 {hdu.header['CTYPE1']!r} is not a TAN "
                                     "projection; the exposure needs its distortion WCS")
                bunit = str(hdu.header.get("BUNIT", "ELECTRONS")).strip().upper()
                if bunit != "ELECTRONS":
                    raise InputError(f"{where}: BUNIT is {bunit!r}; the drizzle stage needs "
                                     "calibrated images in ELECTRONS")
                extvers.append(int(hdu.header["EXTVER"]))
                full_frame &= (hdu.header.get("NAXIS1"), hdu.header.get("NAXIS2")) == (
                    CHIP_NX, CHIP_NY)
            for extname in ("ERR", "DQ"):
                for extver in extvers:
                    try:
                        hdul[extname, extver]
                    except KeyError as err:
                        raise InputError(f"{path}: no [{extname},{extver}] extension; the file "
                                         "is not in the FLT layout") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read it as FITS ({err}); replace the file") from err
    if not extvers:
        raise InputError(f"{path}: no SCI extensions; not a calibrated exposure")
    rootname = str(prim["ROOTNAME"]).strip().lower()
    filt = filter_name(prim["FILTER1"], prim["FILTER2"])
    if not filt:
        raise InputError(f"{path}: FILTER1/FILTER2 are both clear; cannot group it by filter")
    try:
        visit = visit_name(rootname)
    except ValueError as err:
        raise InputError(f"{path}: {err}; fix ROOTNAME") from err
    return CalibratedExposure(
        path=path,
        rootname=rootname,
        filter=filt,
        visit=visit,
        exptime_s=exptime,
        expstart_mjd=float(prim["EXPSTART"]),
        extvers=tuple(sorted(extvers)),
        suffix=suffix,
        full_frame=full_frame,
    )


def build_plan(exposures: Sequence[CalibratedExposure]) -> DrizzlePlan:
    """Group exposures by filter, then by visit; both ordered by first exposure start.

    Raises :class:`InputError` for an empty list or a rootname given twice.
    """
    if not exposures:
        raise InputError("no calibrated exposures to drizzle; check the input directory")
    seen: dict[str, Path] = {}
    for e in exposures:
        if e.rootname in seen:
            raise InputError(f"{e.path}: rootname {e.rootname} also in {seen[e.rootname]}; "
                             "pass each exposure once")
        seen[e.rootname] = e.path
    ordered = sorted(exposures, key=lambda e: (e.expstart_mjd, e.rootname))
    filters = list(dict.fromkeys(e.filter for e in ordered))
    groups = []
    for filt in filters:
        in_filter = [e for e in ordered if e.filter == filt]
        for visit in dict.fromkeys(e.visit for e in in_filter):
            members = tuple(e for e in in_filter if e.visit == visit)
            groups.append(VisitGroup(filter=filt, visit=visit, exposures=members))
    return DrizzlePlan(groups=tuple(groups))
