"""Synthetic calibrated ACS/WFC exposures (FLT layout) with known truth, and their tests.

The builder writes ``*_flc.fits`` files in the archive FLT layout (primary header, then
SCI/ERR/DQ for chip 2 and chip 1) with point sources placed at known RA/Dec through a
known "true" TAN-SIP WCS (optionally with lookup-table distortion), sky, Poisson and read
noise and cosmic rays, while each visit's header WCS carries a deliberate pointing error.
Chips can be small for fast tests or full size (4096 x 2048).

Other test modules import :func:`write_fake_program` from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from astropy import wcs as fitswcs
from astropy.io import fits
from astropy.table import Table
from scipy.special import erf

__all__ = ["FakeProgram", "VisitError", "write_fake_program", "true_pixel_area_ratio"]

PIXEL_SCALE_ARCSEC = 0.05
PSF_SIGMA_PX = 1.1
READ_NOISE_E = 4.0
CHIP_GAP_PX = 50
FILTER_WHEELS = {"F606W": ("F606W", "CLEAR2L"), "F814W": ("CLEAR1L", "F814W"),
                 "F435W": ("F435W", "CLEAR2L"), "F775W": ("F775W", "CLEAR2L")}


@dataclass(frozen=True)
class VisitError:
    """A header-WCS error: shift (arcsec, along +RA*cos(dec) and +Dec) and rotation (deg)."""

    dx_arcsec: float = 0.0
    dy_arcsec: float = 0.0
    rot_deg: float = 0.0


@dataclass
class FakeProgram:
    """What :func:`write_fake_program` wrote and the truth behind it."""

    directory: Path
    paths: list[Path]
    stars: Table  # ra, dec (deg), flux_<FILTER> (e-/s)
    visit_errors: dict[str, VisitError]
    true_wcs: dict[tuple[str, int], fitswcs.WCS] = field(default_factory=dict)  # (root, extver)
    cr_masks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    exptime_s: float = 0.0
    visit_centres: dict[str, tuple[float, float]] = field(default_factory=dict)

    def header_sky(self, ra, dec, visit: str):
        """Where the header WCS of ``visit`` places sources truly at (ra, dec)."""
        err = self.visit_errors.get(visit, VisitError())
        plane = _tangent_wcs(*self.visit_centres[visit], 0.0, 1.0)
        th = np.deg2rad(err.rot_deg)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        xy = plane.wcs_world2pix(np.column_stack([ra, dec]), 0)
        xy = xy @ rot.T + np.array([-err.dx_arcsec, err.dy_arcsec])
        out = plane.wcs_pix2world(xy, 0)
        return out[:, 0], out[:, 1]


def _tangent_wcs(ra_deg: float, dec_deg: float, pa_deg: float,
                 scale_arcsec: float) -> fitswcs.WCS:
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = [0.0, 0.0]
    w.wcs.cd = _cd_matrix(pa_deg, scale_arcsec)
    w.wcs.set()
    return w


def _cd_matrix(pa_deg: float, scale_arcsec: float) -> np.ndarray:
    """CD (deg/px) for a detector whose +y axis points ``pa_deg`` east of north."""
    s = scale_arcsec / 3600.0
    c, n = np.cos(np.deg2rad(pa_deg)), np.sin(np.deg2rad(pa_deg))
    return np.array([[-s * c, s * n], [s * n, s * c]])


def _sip_coefficients(nx: int, order: int = 3,
                      amp_px: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """ACS-like smooth SIP polynomials with about ``amp_px`` of distortion at the chip edge."""
    r = nx / 2.0
    a = np.zeros((order + 1, order + 1))
    b = np.zeros((order + 1, order + 1))
    terms_a = {(2, 0): 0.8, (1, 1): 0.5, (0, 2): -0.3, (3, 0): 0.15, (1, 2): -0.1}
    terms_b = {(2, 0): -0.2, (1, 1): 0.6, (0, 2): 0.4, (2, 1): 0.12, (0, 3): -0.08}
    for (p, q), k in terms_a.items():
        if p + q <= order:
            a[p, q] = amp_px * k / r ** (p + q - 1) / r
    for (p, q), k in terms_b.items():
        if p + q <= order:
            b[p, q] = amp_px * k / r ** (p + q - 1) / r
    return a, b


def _chip_true_wcs(pointing: fitswcs.WCS, pa_deg: float, extver: int, shape: tuple[int, int],
                   *, lookup: bool) -> fitswcs.WCS:
    """True WCS of one chip: chip 2 (extver 1) below chip 1 (extver 2) in the focal plane."""
    ny, nx = shape
    offset_px = (ny + CHIP_GAP_PX) / 2.0 * (-1 if extver == 1 else 1)
    # Centre of the chip in the pointing tangent plane (pointing pixels are 1 arcsec).
    xc, yc = np.array([0.0, offset_px * PIXEL_SCALE_ARCSEC])
    ra, dec = pointing.wcs_pix2world([[xc, yc]], 0)[0]
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.crval = [ra, dec]
    w.wcs.cd = _cd_matrix(pa_deg, PIXEL_SCALE_ARCSEC)
    a, b = _sip_coefficients(nx)
    if extver == 2:
        b = -b  # the two chips see opposite halves of the distortion field
    w.sip = fitswcs.Sip(a, b, None, None, w.wcs.crpix)
    w.pixel_shape = (nx, ny)
    if lookup:
        yy, xx = np.mgrid[0:17, 0:33]
        t1 = (0.06 * np.sin(xx / 5.0) * np.cos(yy / 4.0)).astype(np.float32)
        t2 = (0.05 * np.cos(xx / 6.0) * np.sin(yy / 3.0)).astype(np.float32)
        cd = (nx / 32.0, ny / 16.0)
        w.cpdis1 = fitswcs.DistortionLookupTable(t1, (1.0, 1.0), (1.0, 1.0), cd)
        w.cpdis2 = fitswcs.DistortionLookupTable(t2, (1.0, 1.0), (1.0, 1.0), cd)
        cols = (0.04 * ((np.arange(nx) // 64) % 2) - 0.02).astype(np.float32)[None, :]
        w.det2im1 = fitswcs.DistortionLookupTable(cols, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    w.wcs.set()
    return w


def _with_error(true_wcs: fitswcs.WCS, centre: tuple[float, float], err: VisitError) -> fitswcs.WCS:
    """The true WCS rotated about the visit centre and shifted (the header's wrong WCS)."""
    w = true_wcs.deepcopy()
    plane = _tangent_wcs(*centre, 0.0, 1.0)  # north up, x toward -RA, arcsec
    th = np.deg2rad(err.rot_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    # The error is given along +RA and +Dec; plane pixels run toward -RA and +Dec.
    xy = plane.wcs_world2pix([w.wcs.crval], 0)[0]
    xy = rot @ xy + np.array([-err.dx_arcsec, err.dy_arcsec])
    w.wcs.crval = plane.wcs_pix2world([xy], 0)[0]
    # Intermediate coordinates (x toward +RA, y toward +Dec): rotate by -theta there so the
    # field turns the same way as the pointing-plane rotation above.
    flip = np.diag([-1.0, 1.0])
    w.wcs.cd = flip @ rot @ flip @ w.wcs.cd
    w.wcs.set()
    return w


def true_pixel_area_ratio(w: fitswcs.WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pixel area relative to the reference pixel (det of d(focal)/d(pixel)), 0-indexed x, y."""
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    h = 0.5
    fx1 = w.pix2foc(np.column_stack([x + h, y]), 0)
    fx0 = w.pix2foc(np.column_stack([x - h, y]), 0)
    fy1 = w.pix2foc(np.column_stack([x, y + h]), 0)
    fy0 = w.pix2foc(np.column_stack([x, y - h]), 0)
    dx = (fx1 - fx0) / (2 * h)
    dy = (fy1 - fy0) / (2 * h)
    return dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]


def _render_stars(shape, x, y, counts, sigma_px=PSF_SIGMA_PX, half=7):
    """Pixel-integrated Gaussian point sources (counts total each); 0-indexed centres."""
    img = np.zeros(shape, dtype=np.float64)
    ny, nx = shape
    for xi, yi, ci in zip(x, y, counts, strict=True):
        x0, x1 = int(np.floor(xi)) - half, int(np.floor(xi)) + half + 1
        y0, y1 = int(np.floor(yi)) - half, int(np.floor(yi)) + half + 1
        if x1 <= 0 or y1 <= 0 or x0 >= nx or y0 >= ny:
            continue
        xe = np.arange(x0, x1 + 1) - 0.5 - xi
        ye = np.arange(y0, y1 + 1) - 0.5 - yi
        fx = np.diff(0.5 * erf(xe / (np.sqrt(2) * sigma_px)))
        fy = np.diff(0.5 * erf(ye / (np.sqrt(2) * sigma_px)))
        stamp = ci * np.outer(fy, fx)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x1, nx), min(y1, ny)
        img[sy0:sy1, sx0:sx1] += stamp[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return img


def _add_cosmic_rays(rng, shape, n, value_range=(3000.0, 30000.0)):
    """Cosmic-ray image (electrons) of ``n`` short tracks, and its boolean mask."""
    ny, nx = shape
    crs = np.zeros(shape)
    for _ in range(n):
        y0, x0 = rng.integers(5, ny - 5), rng.integers(5, nx - 5)
        length = rng.integers(1, 5)
        ang = rng.uniform(0, np.pi)
        for k in range(length):
            yy = int(round(y0 + k * np.sin(ang)))
            xx = int(round(x0 + k * np.cos(ang)))
            if 0 <= yy < ny and 0 <= xx < nx:
                crs[yy, xx] += rng.uniform(*value_range)
    return crs, crs > 0


def _lookup_cards(w: fitswcs.WCS, extver: int) -> tuple[list[tuple], list[fits.ImageHDU]]:
    """Distortion keywords and their WCSDVARR/D2IMARR extensions, renumbered for ``extver``."""
    hl = w.to_fits(relax=True)
    cards, hdus = [], []
    if w.cpdis1 is None and w.det2im1 is None:
        return cards, hdus
    for card in hl[0].header.cards:
        key = card.keyword
        if key.startswith(("CPDIS", "D2IMDIS")) or key.startswith(("DP1", "DP2", "D2IM1", "D2IM2")):
            value = card.value
            if key.endswith(".EXTVER"):
                value = float(value) + 2 * (extver - 1)
            cards.append((key, value))
    for hdu in hl[1:]:
        hdu = fits.ImageHDU(data=hdu.data, header=hdu.header)
        hdu.header["EXTVER"] = hdu.header["EXTVER"] + 2 * (extver - 1)
        hdus.append(hdu)
    return cards, hdus


def _sci_header(w: fitswcs.WCS, extver: int, rootname: str, filt: str) -> fits.Header:
    h = fits.Header()
    h["EXTNAME"] = "SCI"
    h["EXTVER"] = extver
    h["CCDCHIP"] = 2 if extver == 1 else 1
    h["BUNIT"] = "ELECTRONS"
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = w.wcs.ctype
    h["CRPIX1"], h["CRPIX2"] = w.wcs.crpix
    h["CRVAL1"], h["CRVAL2"] = w.wcs.crval
    h["CD1_1"], h["CD1_2"] = w.wcs.cd[0]
    h["CD2_1"], h["CD2_2"] = w.wcs.cd[1]
    h["WCSNAME"] = "OPUS"
    h["LTV1"], h["LTV2"] = 0.0, 0.0
    for name, coeffs in (("A", w.sip.a), ("B", w.sip.b)):
        order = coeffs.shape[0] - 1
        h[f"{name}_ORDER"] = order
        for p in range(order + 1):
            for q in range(order + 1 - p):
                if coeffs[p, q] != 0.0:
                    h[f"{name}_{p}_{q}"] = coeffs[p, q]
    h["ORIENTAT"] = float(np.rad2deg(np.arctan2(w.wcs.cd[0, 1], w.wcs.cd[1, 1])))
    h["MEANDARK"] = 3.1
    h["NGOODPIX"] = w.pixel_shape[0] * w.pixel_shape[1]
    h["EXPNAME"] = rootname[:8] + "q"
    h["PHOTMODE"] = f"ACS WFC1 {filt} MJD#59000.0"
    h["PHOTFLAM"] = 1.5e-19 if filt == "F606W" else 7.0e-20
    h["PHOTZPT"] = -21.1
    h["PHOTPLAM"] = 5900.0 if filt == "F606W" else 8050.0
    h["PHOTBW"] = 660.0
    return h


def write_fake_program(
    directory: Path,
    *,
    chip_shape: tuple[int, int] = (256, 512),
    filters: tuple[str, ...] = ("F606W", "F814W"),
    visits: int = 2,
    exposures: int = 2,
    visit_errors: dict[str, VisitError] | None = None,
    visit_pointing_offsets_arcsec: dict[str, tuple[float, float]] | None = None,
    n_stars: int = 120,
    exptime_s: float = 400.0,
    sky_e: float = 60.0,
    cr_per_chip: int | None = None,
    lookup_distortion: bool = False,
    suffix: str = "flc",
    seed: int = 1,
    star_box_arcsec: tuple[float, float, float, float] | None = None,
) -> FakeProgram:
    """Write a synthetic multi-visit, multi-filter program of calibrated exposures.

    Visit ``k`` (1-based) has rootnames ``jfak0k`` + exposure letter; every visit observes
    each filter ``exposures`` times with small dithers. The header WCS of each visit is the
    true WCS with that visit's :class:`VisitError` applied. Stars fill ``star_box_arcsec``
    (x0, x1, y0, y1 about the first pointing, in the frame of the pointing offsets), by
    default a field slightly larger than one pointing.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ny, nx = chip_shape
    ra0, dec0, pa0 = 150.1, 2.2, 35.0
    fov = np.array([nx, 2 * ny + CHIP_GAP_PX]) * PIXEL_SCALE_ARCSEC  # arcsec
    centre = _tangent_wcs(ra0, dec0, pa0, 1.0)
    # Stars over a field slightly larger than one pointing.
    if star_box_arcsec is None:
        sx = rng.uniform(-0.6, 0.6, n_stars) * fov[0]
        sy = rng.uniform(-0.6, 0.6, n_stars) * fov[1]
    else:
        x0, x1, y0, y1 = star_box_arcsec
        sx, sy = rng.uniform(x0, x1, n_stars), rng.uniform(y0, y1, n_stars)
    ra, dec = centre.wcs_pix2world(sx, sy, 0)
    stars = Table({"ra": ra, "dec": dec})
    base = 10 ** rng.uniform(np.log10(40.0), np.log10(3000.0), n_stars)
    for filt in filters:
        colour = 10 ** rng.normal(0.0, 0.1, n_stars)
        stars[f"flux_{filt}"] = base * colour
    visit_names = [f"jfak{v:02d}" for v in range(1, visits + 1)]
    if visit_errors is None:
        visit_errors = {}
        for v in visit_names:
            visit_errors[v] = VisitError(float(rng.uniform(-0.8, 0.8)),
                                         float(rng.uniform(-0.8, 0.8)),
                                         float(rng.uniform(-0.04, 0.04)))
    offsets = visit_pointing_offsets_arcsec or {}
    if cr_per_chip is None:
        cr_per_chip = max(10, nx * ny // 4000)
    prog = FakeProgram(directory=directory, paths=[], stars=stars, visit_errors=visit_errors,
                       exptime_s=exptime_s)
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = 0
    for vi, visit in enumerate(visit_names):
        off = offsets.get(visit, (vi * 1.5, -vi * 1.0))
        pa = pa0 + 2.0 * vi
        vra, vdec = centre.wcs_pix2world([off], 0)[0]
        prog.visit_centres[visit] = (float(vra), float(vdec))
        for fi, filt in enumerate(filters):
            for e in range(exposures):
                rootname = f"{visit}{letters[fi * exposures + e]}{(e % 9) + 1}q"
                dither = np.array(off) + np.array([e * 0.35, e * 0.55])
                pra, pdec = centre.wcs_pix2world([dither], 0)[0]
                pointing = _tangent_wcs(pra, pdec, pa, 1.0)
                hdus = [fits.PrimaryHDU()]
                extra = []
                for extver in (1, 2):
                    true = _chip_true_wcs(pointing, pa, extver, chip_shape,
                                          lookup=lookup_distortion)
                    header_wcs = _with_error(true, prog.visit_centres[visit],
                                             visit_errors.get(visit, VisitError()))
                    # Linear positions first: SIP inversion diverges far off the chip.
                    x, y = true.wcs_world2pix(stars["ra"], stars["dec"], 0)
                    near = (x > -50) & (x < nx + 50) & (y > -50) & (y < ny + 50)
                    x[near], y[near] = true.all_world2pix(stars["ra"][near], stars["dec"][near], 0)
                    inside = near & (x > -10) & (x < nx + 10) & (y > -10) & (y < ny + 10)
                    area = np.ones(len(x))
                    area[inside] = true_pixel_area_ratio(true, x[inside], y[inside])
                    counts = stars[f"flux_{filt}"] * exptime_s / area
                    ideal = _render_stars(chip_shape, x[inside], y[inside], counts[inside])
                    sci = rng.poisson(ideal + sky_e).astype(np.float64)
                    sci += rng.normal(0.0, READ_NOISE_E, chip_shape)
                    crs, crmask = _add_cosmic_rays(rng, chip_shape, cr_per_chip)
                    sci += crs
                    err = np.sqrt(np.maximum(sci, 0.0) + READ_NOISE_E**2)
                    dq = np.zeros(chip_shape, dtype=np.int16)
                    sh = _sci_header(header_wcs, extver, rootname, filt)
                    cards, lut = _lookup_cards(header_wcs, extver)
                    for key, value in cards:
                        sh[key] = value
                    extra.extend(lut)
                    hdus.append(fits.ImageHDU(sci.astype(np.float32), header=sh))
                    eh = fits.Header([("EXTNAME", "ERR"), ("EXTVER", extver),
                                      ("BUNIT", "ELECTRONS")])
                    hdus.append(fits.ImageHDU(err.astype(np.float32), header=eh))
                    dh = fits.Header([("EXTNAME", "DQ"), ("EXTVER", extver)])
                    hdus.append(fits.ImageHDU(dq, header=dh))
                    prog.true_wcs[(rootname, extver)] = true
                    prog.cr_masks[(rootname, extver)] = crmask
                ph = hdus[0].header
                mjd = 59000.0 + vi + 0.02 * (fi * exposures + e)
                f1, f2 = FILTER_WHEELS[filt]
                for key, value in (
                    ("TELESCOP", "HST"), ("INSTRUME", "ACS"), ("DETECTOR", "WFC"),
                    ("ROOTNAME", rootname), ("FILENAME", f"{rootname}_{suffix}.fits"),
                    ("TARGNAME", "FAKEFIELD"), ("FILTER1", f1), ("FILTER2", f2),
                    ("EXPTIME", exptime_s), ("EXPSTART", mjd),
                    ("EXPEND", mjd + exptime_s / 86400.0), ("PA_V3", pa),
                    ("CCDAMP", "ABCD"), ("CCDGAIN", 2.0), ("SUBARRAY", False),
                    ("FLASHDUR", 0.0), ("NEXTEND", len(hdus) - 1 + len(extra)),
                    ("RA_TARG", ra0), ("DEC_TARG", dec0),
                ):
                    ph[key] = value
                for amp in "ABCD":
                    ph[f"ATODGN{amp}"] = 2.0
                    ph[f"READNSE{amp}"] = READ_NOISE_E
                path = directory / f"{rootname}_{suffix}.fits"
                fits.HDUList(hdus + extra).writeto(path, overwrite=True)
                prog.paths.append(path)
                n += 1
    return prog


# --------------------------------------------------------------------------------------------
# Tests of the builder itself (the truth it reports must be what it wrote).


def test_fake_program_layout_and_truth(tmp_path):
    prog = write_fake_program(tmp_path, chip_shape=(64, 128), visits=1, exposures=1,
                              filters=("F606W",), n_stars=20, seed=3)
    assert [p.name for p in prog.paths] == ["jfak01a1q_flc.fits"]
    with fits.open(prog.paths[0]) as hdul:
        names = [(h.header.get("EXTNAME"), h.header.get("EXTVER")) for h in hdul[1:]]
        assert names == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2)]
        assert hdul[1].data.dtype.itemsize == 4 and hdul[1].data.shape == (64, 128)
        assert hdul[0].header["FILTER1"] == "F606W"
        assert hdul[1].header["CCDCHIP"] == 2 and hdul[4].header["CCDCHIP"] == 1
        head = fitswcs.WCS(hdul[1].header, hdul)
    true = prog.true_wcs[("jfak01a1q", 1)]
    err = prog.visit_errors["jfak01"]
    # The header WCS is off by the injected error, in the right direction, near the centre.
    ra_t, dec_t = true.all_pix2world([[64.0, 32.0]], 0)[0]
    ra_h, dec_h = head.all_pix2world([[64.0, 32.0]], 0)[0]
    assert err.dx_arcsec != 0.0
    assert (ra_h - ra_t) * np.cos(np.deg2rad(dec_t)) * 3600 == pytest.approx(
        err.dx_arcsec, abs=0.01)
    assert (dec_h - dec_t) * 3600 == pytest.approx(err.dy_arcsec, abs=0.01)


def test_rendered_counts_follow_pixel_area():
    img = _render_stars((40, 40), [20.3], [19.6], [1000.0])
    assert img.sum() == pytest.approx(1000.0, rel=1e-6)
    yy, xx = np.mgrid[0:40, 0:40]
    assert (img * xx).sum() / img.sum() == pytest.approx(20.3, abs=1e-3)


def test_lookup_distortion_is_read_back(tmp_path):
    prog = write_fake_program(tmp_path, chip_shape=(64, 128), visits=1, exposures=1,
                              filters=("F814W",), n_stars=5, lookup_distortion=True)
    with fits.open(prog.paths[0]) as hdul:
        assert "WCSDVARR" in [h.name for h in hdul] and "D2IMARR" in [h.name for h in hdul]
        w2 = fitswcs.WCS(hdul["SCI", 2].header, hdul)
    assert w2.cpdis1 is not None and w2.det2im1 is not None
    assert w2.cpdis1.data.shape == (17, 33)
