"""Filter-dependent ACS/WFC point-spread functions and source rendering on stamps.

The PSF is built from first principles for each filter: the HST pupil (2.4 m
primary, 0.33 linear central obscuration, four spider vanes along V2/V3 and a
static, point-symmetric wavefront error of about 1/30 wave at 600 nm) is
Fourier transformed by a matrix Fourier transform at several wavelengths across
the band and summed; a wide-angle scattering halo (about 5 % of the light at
600 nm) and, in red filters, the long-wavelength CCD halo are added; the result
is convolved with telescope jitter, CCD charge diffusion (broader in the blue)
and the square pixel response.  The result is an *effective* PSF (ePSF): the fraction of a point
source's light collected by a pixel whose centre is at a given offset from the
source, tabulated every 1/``oversample`` pixel over the inner 97 x 97 pixels
(4.85") and every pixel in the wings out to 6.4", normalised so that a star
delivers all its photons within that 12.8" square.

Pixel convention: offsets are in detector pixels; the tabulated ePSF has the
source at its central sample.  Stamps are placed in 0-indexed array
coordinates (the centre of array element ``[j, i]`` is ``(x, y) = (i, j)``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from hstred.simulate.config import FILTERS

__all__ = [
    "PIXEL_SCALE_ARCSEC",
    "PsfModel",
    "psf_model",
    "render_point_source",
    "render_galaxy",
    "sersic_image",
    "add_stamp",
]

PIXEL_SCALE_ARCSEC = 0.05
PSF_HALF_SIZE_PX = 48
#: Half size in pixels of the whole-pixel table of the far wings.
PSF_OUTER_HALF_SIZE_PX = 128
#: Half size in pixels of the ePSF core convolved with extended sources.
CORE_HALF_SIZE_PX = 10
_D_PRIMARY_M = 2.4
_OBSCURATION = 0.33
_SPIDER_WIDTH_M = 0.025
_SPIDER_ANGLE_DEG = 2.7  # spiders lie along V2/V3; WFC rows are ~2.7 deg from V2
_JITTER_SIGMA_ARCSEC = 0.007
_PUPIL_SAMPLES = 160
# Finer pupil sampling pushes the transform's periodic copies beyond the 6.4" wings.
_PUPIL_SAMPLES_OUTER = 320
_N_WAVELENGTHS_OUTER = 3
_N_WAVELENGTHS = 7
# Zernike terms (Noll 4, 5, 6, 11: defocus, astigmatism x2, spherical) in nm rms.  Only
# point-symmetric terms, so a star's light centroid is at its position.
_ABERRATIONS_NM = (12.0, 14.0, -10.0, 9.0)
_HALO_FWHM_ARCSEC = 1.2
_HALO_BETA = 2.2
# Wide-angle scattering by mirror micro-roughness (fraction at 6000 A, scaling ~ 1/lambda).
_SCATTER_FRACTION_6000 = 0.05
_SCATTER_FWHM_ARCSEC = 0.5
_SCATTER_BETA = 1.8


@dataclass(frozen=True, eq=False)
class PsfModel:
    """An ePSF tabulated every 1/``oversample`` pixel (see module docstring).

    ``epsf`` covers the inner 97 x 97 pixels; sampled at whole-pixel steps
    for any sub-pixel phase it sums to ``total_inner``; ``outer`` holds the
    rest of the light (whole-pixel samples out to 6.4", zero inside).
    ``spline_full`` and ``spline_wing`` are cubic-spline coefficients of the
    inner ePSF and of the inner ePSF outside the ``core`` used to convolve
    extended sources.
    """

    filter: str
    oversample: int
    epsf: np.ndarray
    spline_full: np.ndarray
    spline_wing: np.ndarray
    core: np.ndarray
    outer: np.ndarray
    total_inner: float

    @property
    def center(self) -> int:
        return self.epsf.shape[0] // 2

    @property
    def half_size_px(self) -> int:
        return (self.epsf.shape[0] // self.oversample) // 2

    def fwhm_arcsec(self) -> float:
        """FWHM of the pixel-integrated profile (from the area above half maximum)."""
        peak = self.epsf.max()
        area_sub = np.count_nonzero(self.epsf >= 0.5 * peak)
        return float(2.0 * np.sqrt(area_sub / np.pi) / self.oversample * PIXEL_SCALE_ARCSEC)


def _pupil(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords = (np.arange(n) - (n - 1) / 2.0) * (_D_PRIMARY_M / n)
    xx, yy = np.meshgrid(coords, coords)
    r = np.hypot(xx, yy)
    radius = _D_PRIMARY_M / 2.0
    aperture = (r <= radius) & (r >= _OBSCURATION * radius)
    ang = np.radians(_SPIDER_ANGLE_DEG)
    xr = xx * np.cos(ang) + yy * np.sin(ang)
    yr = -xx * np.sin(ang) + yy * np.cos(ang)
    half = _SPIDER_WIDTH_M / 2.0
    aperture &= ~((np.abs(xr) < half) | (np.abs(yr) < half))
    rho = r / radius
    theta = np.arctan2(yy, xx)
    zernikes = (
        np.sqrt(3.0) * (2 * rho**2 - 1),
        np.sqrt(6.0) * rho**2 * np.sin(2 * theta),
        np.sqrt(6.0) * rho**2 * np.cos(2 * theta),
        np.sqrt(5.0) * (6 * rho**4 - 6 * rho**2 + 1),
    )
    wfe_nm = sum(c * z for c, z in zip(_ABERRATIONS_NM, zernikes, strict=True))
    return aperture.astype(float), np.where(aperture, wfe_nm, 0.0) * 1e-9, coords


@functools.lru_cache(maxsize=2)
def _pupil_cached(n: int):
    return _pupil(n)


def _monochromatic_psf(wavelength_m: float, offsets_rad: np.ndarray, *,
                       pupil_samples: int) -> np.ndarray:
    """Fraction of the light falling in each grid sample (matrix Fourier transform).

    Normalised through Parseval: the intensity density integrates to one over
    the whole plane, and each sample covers (offset step)^2.
    """
    amplitude, wfe_m, coords = _pupil_cached(pupil_samples)
    field = amplitude * np.exp(2j * np.pi * wfe_m / wavelength_m)
    kernel = np.exp(-2j * np.pi * np.outer(offsets_rad, coords) / wavelength_m)
    e = kernel @ field @ kernel.T
    d_area = (coords[1] - coords[0]) ** 2
    density = (e.real**2 + e.imag**2) * d_area**2 / wavelength_m**2 / (amplitude.sum() * d_area)
    step = offsets_rad[1] - offsets_rad[0]
    return density * step**2


def _moffat(xx_arcsec: np.ndarray, yy_arcsec: np.ndarray, *, fwhm_arcsec: float, beta: float,
            sample_arcsec: float) -> np.ndarray:
    """Fraction of a (normalised, infinite) Moffat profile in each grid sample."""
    alpha = fwhm_arcsec / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    density = (beta - 1.0) / (np.pi * alpha**2) * (
        1.0 + (xx_arcsec**2 + yy_arcsec**2) / alpha**2) ** (-beta)
    return density * sample_arcsec**2


def _charge_diffusion_sigma_px(wavelength_angstrom: float) -> float:
    # Blue photons are absorbed near the surface and diffuse further.
    return float(np.clip(0.42 - 0.12 * (wavelength_angstrom - 4000.0) / 5000.0, 0.28, 0.44))


def _psf_on_grid(filter_name: str, *, oversample: int, half_px: int, pupil_samples: int,
                 n_wavelengths: int) -> np.ndarray:
    """Light fraction per sample on a square grid every 1/oversample pixel (ePSF)."""
    info = FILTERS[filter_name]
    n = (2 * half_px + 1) * oversample
    offsets_px = (np.arange(n) - n // 2) / oversample
    offsets_arcsec = offsets_px * PIXEL_SCALE_ARCSEC
    offsets_rad = np.radians(offsets_arcsec / 3600.0)
    waves = info.pivot_angstrom + info.bandwidth_angstrom * np.linspace(-1.3, 1.3, n_wavelengths)
    optical = np.zeros((n, n))
    for wave in waves:
        optical += _monochromatic_psf(wave * 1e-10, offsets_rad, pupil_samples=pupil_samples)
    optical /= len(waves)
    scatter = _SCATTER_FRACTION_6000 * 6000.0 / info.pivot_angstrom
    xx, yy = np.meshgrid(offsets_arcsec, offsets_arcsec)
    sample = PIXEL_SCALE_ARCSEC / oversample
    optical = ((1.0 - scatter - info.halo_fraction) * optical
               + scatter * _moffat(xx, yy, fwhm_arcsec=_SCATTER_FWHM_ARCSEC,
                                   beta=_SCATTER_BETA, sample_arcsec=sample)
               + info.halo_fraction * _moffat(xx, yy, fwhm_arcsec=_HALO_FWHM_ARCSEC,
                                              beta=_HALO_BETA, sample_arcsec=sample))
    sigma_px = np.hypot(_charge_diffusion_sigma_px(info.pivot_angstrom),
                        _JITTER_SIGMA_ARCSEC / PIXEL_SCALE_ARCSEC)
    smoothed = ndimage.gaussian_filter(optical, sigma_px * oversample, mode="nearest")
    if oversample == 1:
        return smoothed
    # Pixel response: sum over a pixel-wide box of samples.
    return ndimage.uniform_filter(smoothed, size=oversample, mode="nearest") * oversample**2


@functools.lru_cache(maxsize=16)
def psf_model(filter_name: str, *, oversample: int = 5) -> PsfModel:
    """The ePSF of an ACS/WFC filter (deterministic, cached per process).

    The inner 97 x 97 pixels are tabulated every 1/``oversample`` pixel; the
    wings out to 128 pixels (6.4") every pixel (``outer``, zero inside).
    Together they hold all the light: ``epsf.sum() / oversample**2 +
    outer.sum() = 1``.
    """
    if oversample % 2 != 1:
        raise ValueError("oversample must be odd so that pixel centres are samples")
    if oversample == 1:
        # The ePSF at whole-pixel offsets is every 5th sample of the finer table.
        fine = psf_model(filter_name, oversample=5)
        return _model_from_tables(filter_name, 1, fine.epsf[2::5, 2::5].copy(),
                                  fine.outer.copy(), fine.total_inner)
    inner = _psf_on_grid(filter_name, oversample=oversample, half_px=PSF_HALF_SIZE_PX,
                         pupil_samples=_PUPIL_SAMPLES, n_wavelengths=_N_WAVELENGTHS)
    # The far wings vary slowly with wavelength: fewer wavelengths suffice.
    outer = _psf_on_grid(filter_name, oversample=1, half_px=PSF_OUTER_HALF_SIZE_PX,
                         pupil_samples=_PUPIL_SAMPLES_OUTER, n_wavelengths=_N_WAVELENGTHS_OUTER)
    c = PSF_OUTER_HALF_SIZE_PX
    h = PSF_HALF_SIZE_PX
    outer[c - h:c + h + 1, c - h:c + h + 1] = 0.0
    total = inner.sum() / oversample**2 + outer.sum()
    inner /= total
    outer /= total
    return _model_from_tables(filter_name, oversample, inner, outer,
                              float(inner.sum() / oversample**2))


def _model_from_tables(filter_name: str, oversample: int, epsf: np.ndarray,
                       outer: np.ndarray, total_inner: float) -> PsfModel:
    # Re-normalise so a whole-pixel sampling of the inner table sums to total_inner.
    epsf = epsf * (total_inner * oversample**2 / epsf.sum())
    n = epsf.shape[0]
    core_n = (2 * CORE_HALF_SIZE_PX + 1) * oversample
    lo = n // 2 - core_n // 2
    core = epsf[lo:lo + core_n, lo:lo + core_n].copy()
    wing = epsf.copy()
    wing[lo:lo + core_n, lo:lo + core_n] = 0.0
    spline_full = ndimage.spline_filter(epsf, order=3, mode="mirror")
    spline_wing = ndimage.spline_filter(wing, order=3, mode="mirror")
    for arr in (epsf, core, spline_full, spline_wing, outer):
        arr.setflags(write=False)
    return PsfModel(filter=filter_name, oversample=oversample, epsf=epsf,
                    spline_full=spline_full, spline_wing=spline_wing, core=core, outer=outer,
                    total_inner=total_inner)


def _stamp_grid(x0: float, y0: float, half: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    ix, iy = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
    offs = np.arange(-half, half + 1, dtype=float)
    return ix, iy, offs - (x0 - ix), offs - (y0 - iy)


def render_point_source(psf: PsfModel, *, x0: float, y0: float, flux: float,
                        wing_only: bool = False) -> tuple[np.ndarray, int, int]:
    """A point source of total ``flux`` at array position (x0, y0).

    Returns the stamp and the array indices (x, y) of its [0, 0] element.  With
    ``wing_only`` only the light outside the core (see :func:`render_galaxy`).
    """
    half = psf.half_size_px
    ix, iy, dx, dy = _stamp_grid(x0, y0, half)
    n = psf.epsf.shape[0]
    c = psf.center
    col = c + dx * psf.oversample
    row = c + dy * psf.oversample
    rr, cc = np.meshgrid(row, col, indexing="ij")
    coeffs = psf.spline_wing if wing_only else psf.spline_full
    inner = ndimage.map_coordinates(coeffs, [rr.ravel(), cc.ravel()], order=3,
                                    mode="mirror", prefilter=False).reshape(rr.shape)
    outside = (rr < 0) | (rr > n - 1) | (cc < 0) | (cc > n - 1)
    inner[outside] = 0.0
    np.clip(inner, 0.0, None, out=inner)
    if not wing_only:
        total = inner.sum()
        if total > 0:
            inner *= psf.total_inner / total
    # The far wings are smooth on pixel scales: share them bilinearly between the
    # four whole-pixel positions around the source.
    big = psf.outer.shape[0] // 2
    fx0, fy0 = int(np.floor(x0)), int(np.floor(y0))
    wx, wy = x0 - fx0, y0 - fy0
    m = psf.outer.shape[0]
    stamp = np.zeros((m + 1, m + 1))
    stamp[:m, :m] += (1 - wx) * (1 - wy) * psf.outer
    stamp[:m, 1:] += wx * (1 - wy) * psf.outer
    stamp[1:, :m] += (1 - wx) * wy * psf.outer
    stamp[1:, 1:] += wx * wy * psf.outer
    ox = ix - half - (fx0 - big)
    oy = iy - half - (fy0 - big)
    stamp[oy:oy + inner.shape[0], ox:ox + inner.shape[1]] += inner
    stamp *= flux
    return stamp, fx0 - big, fy0 - big


def sersic_image(dx_px: np.ndarray, dy_px: np.ndarray, *, jacobian_arcsec: np.ndarray,
                 r_eff_arcsec: float, n: float, ellip: float, pa_deg: float,
                 trunc_reff: float = 5.0) -> np.ndarray:
    """Unnormalised Sersic surface brightness at pixel offsets from the centre.

    ``jacobian_arcsec`` maps pixel offsets to (east, north) arcsec.  The shape is
    defined on the sky (position angle ``pa_deg`` north through east, ``ellip``
    = 1 - b/a) and tapered smoothly to zero between 0.8 and 1.0 x ``trunc_reff``
    effective radii (elliptical radius).
    """
    from astropy.modeling.functional_models import Sersic2D

    east = jacobian_arcsec[0, 0] * dx_px + jacobian_arcsec[0, 1] * dy_px
    north = jacobian_arcsec[1, 0] * dx_px + jacobian_arcsec[1, 1] * dy_px
    theta = np.radians(90.0 - pa_deg)
    img = Sersic2D.evaluate(east, north, 1.0, r_eff_arcsec, n, 0.0, 0.0, ellip, theta)
    ct, st = np.cos(theta), np.sin(theta)
    maj = east * ct + north * st
    mnr = (-east * st + north * ct) / (1.0 - ellip)
    rell = np.hypot(maj, mnr) / r_eff_arcsec
    t0, t1 = 0.8 * trunc_reff, trunc_reff
    taper = np.clip((t1 - rell) / (t1 - t0), 0.0, 1.0)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    return img * taper


def render_galaxy(psf: PsfModel, *, x0: float, y0: float, flux: float,
                  jacobian_arcsec: np.ndarray, r_eff_arcsec: float, n: float,
                  ellip: float, pa_deg: float) -> tuple[np.ndarray, int, int]:
    """A PSF-convolved, pixel-integrated Sersic galaxy of total ``flux``.

    The profile is sampled every 1/oversample pixel (at pixel centres when the
    effective radius exceeds 6 pixels), convolved with the ePSF core; the ePSF
    wings beyond the core are added as a point source of the same flux, so the
    stamp holds all the light.  ``psf`` is the finely sampled model.  Returns (stamp, x, y) like
    :func:`render_point_source`.
    """
    scale = np.sqrt(abs(np.linalg.det(jacobian_arcsec)))
    # Large galaxies are smooth on pixel scales: sample them at pixel centres.
    model = psf_model(psf.filter, oversample=1) if r_eff_arcsec / scale >= 6.0 else psf
    os_ = model.oversample
    r_major_px = 5.0 * r_eff_arcsec / scale
    half = int(np.ceil(r_major_px)) + CORE_HALF_SIZE_PX + 1
    ix, iy, _, _ = _stamp_grid(x0, y0, half)
    m = (2 * half + 1) * os_
    sub = (np.arange(m) - m // 2) / os_
    gx = sub[None, :] - (x0 - ix)
    gy = sub[:, None] - (y0 - iy)
    profile = sersic_image(gx, gy, jacobian_arcsec=jacobian_arcsec, r_eff_arcsec=r_eff_arcsec,
                           n=n, ellip=ellip, pa_deg=pa_deg)
    total = profile.sum()
    if not total > 0:
        raise ValueError("galaxy profile is empty; check its size parameters")
    profile *= flux / total
    conv = signal.fftconvolve(profile, model.core, mode="same")
    stamp = np.clip(conv[os_ // 2::os_, os_ // 2::os_], 0.0, None)
    core_flux = model.core.sum() / os_**2
    stamp *= core_flux * flux / max(stamp.sum(), 1e-300)
    wing, wx0, wy0 = render_point_source(psf, x0=x0, y0=y0, flux=flux, wing_only=True)
    gx0, gy0 = ix - half, iy - half
    x_lo, y_lo = min(gx0, wx0), min(gy0, wy0)
    x_hi = max(gx0 + stamp.shape[1], wx0 + wing.shape[1])
    y_hi = max(gy0 + stamp.shape[0], wy0 + wing.shape[0])
    out = np.zeros((y_hi - y_lo, x_hi - x_lo))
    out[gy0 - y_lo:gy0 - y_lo + stamp.shape[0], gx0 - x_lo:gx0 - x_lo + stamp.shape[1]] += stamp
    out[wy0 - y_lo:wy0 - y_lo + wing.shape[0], wx0 - x_lo:wx0 - x_lo + wing.shape[1]] += wing
    return out, x_lo, y_lo


def add_stamp(image: np.ndarray, stamp: np.ndarray, x_start: int, y_start: int) -> None:
    """Add ``stamp`` into ``image`` (in place) with its [0, 0] at [y_start, x_start]."""
    ny, nx = image.shape
    sy, sx = stamp.shape
    y0, x0 = max(y_start, 0), max(x_start, 0)
    y1, x1 = min(y_start + sy, ny), min(x_start + sx, nx)
    if y1 <= y0 or x1 <= x0:
        return
    image[y0:y1, x0:x1] += stamp[y0 - y_start:y1 - y_start, x0 - x_start:x1 - x_start]
