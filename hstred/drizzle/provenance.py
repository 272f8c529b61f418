"""Provenance keywords of drizzled products.

Keywords (primary header of ``*_drz_sci.fits``, ``*_drz_wht.fits`` and ``*_drz_rms.fits``):

========  ==========================================================
HSTRVER   hstred version
HSTRSTEP  'DRIZZLE' (stage that wrote the product)
HSTRPROD  'FILTER' (per-filter combination) or 'SINGLE' (one exposure)
DRZKERN   final drizzle kernel
DRZPIXFR  final pixfrac
DRZSCALE  output pixel scale (arcsec)
DRZORIEN  position angle of the output +y axis (deg)
DRZWHTTY  final weight type (ERR or EXP)
DRZBITS   DQ bits counted as good
DRZSKYM   sky method
DRZNIMG   number of exposures combined
ALNWCSN   WCSNAME of the aligned input WCS (the tied one when tied to a catalog)
ALNREF    reference visit group (VISIT_FILTER)
ALNFITGE  fit geometry
ALNNGRP   number of visit groups in the alignment
ALNnnNAM  visit group nn (01-99): VISIT_FILTER
ALNnnST   its status (REFERENCE, ALIGNED, DROPPED)
ALNnnDX   its shift east, arcsec
ALNnnDY   its shift north, arcsec
ALNnnROT  its rotation, deg (position angle, north through east)
ALNnnSCL  its scale
ALNnnNM   matched sources
ALNnnRMS  fit RMS, arcsec
DSTWCSN   WCSNAME of the inputs' distortion solution (e.g. IDC_<idctab rootname>)
DSTAPPL   T when hstred applied it with stwcs, F when the inputs carried it
DSTIDC    IDCTAB of the distortion solution
DSTNPL    NPOLFILE of the distortion solution
DSTD2I    D2IMFILE of the distortion solution
ABSSTAT   tie to a reference catalog: TIED, or RELATIVE (failed, relative kept)
ABSCAT    the reference catalog file (for 'gaia', the saved cone)
ABSSRC    'file' (given) or 'gaia' (fetched from the Gaia archive)
ABSEPOCH  epoch handling: PM+PLX, PM (moved to each visit's epoch) or NONE
ABSNCAT   stars in the catalog
ABSNM     catalog stars matched and kept in the fit
ABSRMS    RMS of the tie's residuals, arcsec
ABSDX     the tie's shift east, arcsec
ABSDY     the tie's shift north, arcsec
ABSROT    the tie's rotation, arcsec (position angle, north through east)
ABSSCL    the tie's scale
ABSEDX    formal 1-sigma error of ABSDX, arcsec (covariance of the weighted fit)
ABSEDY    formal 1-sigma error of ABSDY, arcsec
ABSEROT   formal 1-sigma error of ABSROT, arcsec
ABSESCL   formal 1-sigma error of ABSSCL
ABSCHI2   chi^2 per degree of freedom of the tie's residuals against those errors
========  ==========================================================

The ABS keywords appear only when a reference catalog was asked for; each visit
group's epoch is written as a HISTORY line.

When the combined exposures differ in a distortion value it reads 'MULTIPLE' and
every exposure's solution is listed in a HISTORY line.

Each solution is also written as a HISTORY line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from hstred import __version__
from hstred.distortion import DistortionInfo
from hstred.drizzle.config import DrizzleConfig
from hstred.drizzle.result import AbsoluteTie, AlignmentSolution
from hstred.drizzle.tileset import is_tiled, update_headers
from hstred.fileio import atomic_path

__all__ = ["provenance_cards", "write_provenance"]


def _num(value: float) -> float:
    """FITS cannot hold NaN as a keyword value: use -1 for 'not measured'."""
    return float(value) if np.isfinite(value) else -1.0


def provenance_cards(
    *,
    config: DrizzleConfig,
    product_kind: str,
    n_images: int,
    orientation_deg: float,
    solutions: Sequence[AlignmentSolution],
    reference: str,
    distortion: Sequence[DistortionInfo] = (),
    absolute: AbsoluteTie | None = None,
) -> tuple[list[tuple[str, object, str]], list[str]]:
    """Keyword cards and HISTORY lines describing how a product was made."""
    wcsname = absolute.wcsname if absolute is not None else config.wcsname
    cards: list[tuple[str, object, str]] = [
        ("HSTRVER", __version__, "hstred version"),
        ("HSTRSTEP", "DRIZZLE", "hstred stage that wrote this file"),
        ("HSTRPROD", product_kind, "FILTER combination or SINGLE exposure"),
        ("DRZKERN", config.kernel, "final drizzle kernel"),
        ("DRZPIXFR", float(config.pixfrac), "final drizzle pixfrac"),
        ("DRZSCALE", float(config.pixel_scale_arcsec), "output pixel scale (arcsec)"),
        ("DRZORIEN", float(orientation_deg), "PA of output +y axis (deg)"),
        ("DRZWHTTY", config.weight_type, "final weight type"),
        ("DRZBITS", int(config.good_bits), "DQ bits counted as good"),
        ("DRZSKYM", config.sky_method, "sky method"),
        ("DRZNIMG", int(n_images), "exposures combined"),
        ("ALNWCSN", wcsname, "WCSNAME of the aligned input WCS"),
        ("ALNREF", reference, "reference visit group (VISIT_FILTER)"),
        ("ALNFITGE", config.fit_geometry, "alignment fit geometry"),
        ("ALNNGRP", len(solutions), "visit groups in the alignment"),
    ]
    history = [f"hstred {__version__} alignment: reference {reference}, "
               f"fit geometry {config.fit_geometry}, WCSNAME {wcsname}"]
    for i, s in enumerate(solutions, start=1):
        if i <= 99:
            p = f"ALN{i:02d}"
            cards += [
                (f"{p}NAM", s.group, "visit group"),
                (f"{p}ST", s.status, "alignment status"),
                (f"{p}DX", round(_num(s.shift_x_arcsec), 6), "shift east (arcsec)"),
                (f"{p}DY", round(_num(s.shift_y_arcsec), 6), "shift north (arcsec)"),
                (f"{p}ROT", round(_num(s.rotation_deg), 8), "rotation, PA (deg)"),
                (f"{p}SCL", round(_num(s.scale), 10), "scale"),
                (f"{p}NM", int(s.n_matches), "matched sources"),
                (f"{p}RMS", round(_num(s.rms_arcsec), 6), "fit RMS (arcsec)"),
            ]
        history.append(
            f"align {s.group} {s.status}: dx={s.shift_x_arcsec:+.4f}\" "
            f"dy={s.shift_y_arcsec:+.4f}\" rot={s.rotation_deg:+.5f}deg "
            f"scale={s.scale:.7f} matches={s.n_matches} rms={s.rms_arcsec:.4f}\""
        )
    history.append(
        f"drizzle: kernel={config.kernel} pixfrac={config.pixfrac} "
        f"scale={config.pixel_scale_arcsec}\" wht={config.weight_type} bits={config.good_bits}"
    )
    dist_cards, dist_history = _distortion_cards(distortion)
    abs_cards, abs_history = _absolute_cards(absolute)
    return cards + dist_cards + abs_cards, history + dist_history + abs_history


def _epoch_code(handling: str) -> str:
    if handling.startswith("none"):
        return "NONE"
    return "PM+PLX" if "parallax" in handling else "PM"


def _absolute_cards(tie: AbsoluteTie | None):
    if tie is None:
        return [], []
    cards = [
        ("ABSSTAT", tie.status, "tie to the reference catalog"),
        ("ABSCAT", Path(tie.catalog).name[-68:], "reference catalog file"),
        ("ABSSRC", tie.source, "catalog given (file) or fetched (gaia)"),
        ("ABSEPOCH", _epoch_code(tie.epoch_handling), "catalog moved to each visit epoch"),
        ("ABSNCAT", int(tie.n_catalog), "stars in the catalog"),
        ("ABSNM", int(tie.n_matches), "catalog stars matched"),
        ("ABSRMS", round(_num(tie.rms_arcsec), 6), "tie residual RMS (arcsec)"),
        ("ABSDX", round(_num(tie.shift_x_arcsec), 6), "tie shift east (arcsec)"),
        ("ABSDY", round(_num(tie.shift_y_arcsec), 6), "tie shift north (arcsec)"),
        ("ABSROT", round(_num(tie.rotation_deg) * 3600.0, 5), "tie rotation, PA (arcsec)"),
        ("ABSSCL", round(_num(tie.scale), 10), "tie scale"),
        ("ABSEDX", round(_num(tie.shift_x_error_arcsec), 6), "1-sigma error of ABSDX (arcsec)"),
        ("ABSEDY", round(_num(tie.shift_y_error_arcsec), 6), "1-sigma error of ABSDY (arcsec)"),
        ("ABSEROT", round(_num(tie.rotation_error_deg * 3600.0), 5),
         "1-sigma error of ABSROT (arcsec)"),
        ("ABSESCL", round(_num(tie.scale_error), 10), "1-sigma error of ABSSCL"),
        ("ABSCHI2", round(_num(tie.chi2_dof), 4), "tie residual chi^2 per degree of freedom"),
    ]
    history = [f"absolute tie {tie.status} to {tie.catalog} ({tie.source}): "
               f"{tie.epoch_handling}; {tie.n_matches} stars, {tie.n_pairs} pairs, "
               f"rms={tie.rms_arcsec:.4f}\" dx={tie.shift_x_arcsec:+.4f}\" "
               f"dy={tie.shift_y_arcsec:+.4f}\" rot={tie.rotation_deg * 3600:+.3f}\" "
               f"scale={tie.scale:.7f}; 1-sigma dx={tie.shift_x_error_arcsec:.4f}\" "
               f"dy={tie.shift_y_error_arcsec:.4f}\" "
               f"rot={tie.rotation_error_deg * 3600:.3f}\" chi2/dof={tie.chi2_dof:.2f}"]
    history += [f"absolute tie epoch {group}: J{epoch:.4f}"
                for group, epoch in tie.epochs_jyear.items()]
    if tie.message:
        history.append(f"absolute tie not applied: {tie.message}")
    return cards, history


def _one(values: set) -> object:
    return next(iter(values)) if len(values) == 1 else "MULTIPLE"


def _distortion_cards(infos: Sequence[DistortionInfo]):
    if not infos:
        return [], []
    cards = [
        ("DSTWCSN", _one({d.wcsname for d in infos}), "WCSNAME of the distortion solution"),
        ("DSTAPPL", _one({d.applied for d in infos}), "distortion applied by hstred (stwcs)"),
    ]
    for key, keyword in (("DSTIDC", "IDCTAB"), ("DSTNPL", "NPOLFILE"), ("DSTD2I", "D2IMFILE")):
        cards.append((key, _one({d.files.get(keyword) or "N/A" for d in infos}),
                      f"{keyword} of the distortion solution"))
    history = [f"distortion {d.rootname}: {d.wcsname} "
               f"({'applied with stwcs' if d.applied else 'from the input file'}; "
               + ", ".join(f"{k}={v or 'N/A'}" for k, v in d.files.items()) + ")"
               for d in infos]
    return cards, history


def _add_cards(header: fits.Header, cards, history) -> None:
    for key, value, comment in cards:
        header[key] = (value, comment)
    for line in history:
        header.add_history(line)


def write_provenance(path: Path, cards, history) -> None:
    """Add provenance cards and HISTORY lines to the primary header of ``path`` (of a
    tiled image: of every tile, and to the product header in its index).

    Only the primary header is rewritten: the new header, formatted by astropy, is
    followed by the file's bytes after the old one (the image and any extensions,
    copied unchanged by the kernel) in a temporary file that then replaces ``path``.
    Updating the file in place would have astropy re-encode the whole image when the
    header outgrows its blocks (about 1 s for a 400 MB product).
    """
    path = Path(path)
    if is_tiled(path):  # every tile's header, and the index's copy of the product's
        update_headers(path, lambda tile: write_provenance(tile, cards, history),
                       lambda header: _add_cards(header, cards, history))
        return
    with fits.open(path, memmap=True) as hdul:
        hdr = hdul[0].header.copy()
        data_start = int(hdul.fileinfo(0)["datLoc"])
    _add_cards(hdr, cards, history)
    block = hdr.tostring(endcard=True, padding=True).encode("ascii")
    with open(path, "rb") as src, atomic_path(path) as tmp, open(tmp, "wb") as dst:
        dst.write(block)
        dst.flush()
        offset, remaining = data_start, os.fstat(src.fileno()).st_size - data_start
        while remaining > 0:
            sent = os.sendfile(dst.fileno(), src.fileno(), offset, remaining)
            if sent == 0:
                raise OSError(f"{path}: short copy while adding provenance keywords")
            offset += sent
            remaining -= sent
