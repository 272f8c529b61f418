"""How closely a correction setting follows the exact arCTIc model, on realistic quadrants.

``benchmarks/bench_cte_accuracy.py`` prints the map of CTE settings with these
tools; ``tests/test_cte_accuracy.py`` checks the default setting against the
accuracy its headers record. A *test quadrant* is an amplifier quadrant in
readout orientation (row 0 next to the serial register): sky, faint and bright
stars, hot pixels and cosmic rays, Poisson noise, clocked out through the exact
model (express 0) and given read noise. Its correction with a candidate setting
is compared with the *reference*, the exact model's correction with the same
number of iterations.

Conventions: electrons; pixel ``[row, column]``, 0-indexed; star positions are
the true centres of their Gaussian images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hstred.cte.model import MJD_TO_JD, load_arcticpy

__all__ = [
    "ACCURACY_BOUNDS",
    "DEFAULT_SETTING_ACCURACY",
    "AccuracyBounds",
    "CorrectionAccuracy",
    "NoiseStrip",
    "TestQuadrant",
    "compare_with_reference",
    "correction_iterates",
    "corrections",
    "noise_strip",
    "noise_strip_residuals",
    "realistic_quadrant",
]


@dataclass(frozen=True)
class AccuracyBounds:
    """How far a correction may stray from the exact model's correction.

    ``rms_read_noise``: RMS of the pixel differences in units of the read noise;
    ``flux_fraction``: largest star aperture-flux difference, as a fraction of
    the star's flux; ``centroid_px``: largest star centroid difference along the
    columns (the parallel direction, the only one CTE moves charge in).
    """

    rms_read_noise: float = 0.1
    flux_fraction: float = 1e-3
    centroid_px: float = 0.005

    def holds_for(self, accuracy: CorrectionAccuracy) -> bool:
        return (accuracy.rms_read_noise < self.rms_read_noise
                and accuracy.max_flux_fraction < self.flux_fraction
                and accuracy.max_centroid_px < self.centroid_px)

    def describe(self) -> str:
        return (f"RMS < {self.rms_read_noise:g} read noise, star flux < {self.flux_fraction:.1%}"
                f", centroid < {self.centroid_px:g} px of the exact model")


#: The accuracy asked of a cheaper CTE setting; the map marks the settings within it.
ACCURACY_BOUNDS = AccuracyBounds()

#: Bounds the default setting (:data:`hstred.cte.model.CORRECTION_EXPRESS`,
#: :data:`~hstred.cte.model.CORRECTION_ITERATIONS`) was measured within on the map's
#: 2003, 2012 and 2024 quadrants (``bench_cte_accuracy.py --columns 16``), against the
#: exact model with the same iterations; the worst date (2024) sets them: 0.455 read
#: noise RMS, 5.3 % of a star's flux and 0.059 px with the read noise held out of both
#: corrections (``--cte-noise separate``), 0.469, 4.7 % and 0.061 px without. The FLC
#: headers record these with the setting.
DEFAULT_SETTING_ACCURACY = AccuracyBounds(rms_read_noise=0.5, flux_fraction=0.06,
                                          centroid_px=0.07)

#: Aperture radius (pixels) for star fluxes and centroids.
_APERTURE_PX = 3.0
#: Rows behind a star (away from the readout) counted as its trail.
_TRAIL_ROWS = (4, 60)
_PSF_SIGMA_PX = 1.0
_STAR_SPACING = (64, 16)  # rows, columns between stars: their apertures and trails never meet


@dataclass(frozen=True)
class TestQuadrant:
    """A quadrant in readout orientation before (``truth``) and after (``trailed``) readout.

    ``truth`` holds the collected charge plus the read noise that ``trailed``
    also carries, so ``trailed - truth`` is exactly the CTE trailing. ``sky``
    is the sky level of each column; ``stars`` rows are (row, column, flux e-).
    """

    __test__ = False  # not a pytest class

    mjd: float
    truth: np.ndarray
    trailed: np.ndarray
    sky: np.ndarray
    stars: np.ndarray
    read_noise_e: float


def _arctic_model(mjd: float):
    return load_arcticpy().CTI_model_for_HST_ACS(mjd + MJD_TO_JD)


def _add_cti(image: np.ndarray, mjd: float, express: int, **options) -> np.ndarray:
    roe, ccd, traps = _arctic_model(mjd)
    return load_arcticpy().add_cti(np.ascontiguousarray(image, dtype=np.float64),
                                   parallel_roe=roe, parallel_ccd=ccd, parallel_traps=traps,
                                   parallel_express=express, verbosity=0, **options)


def _add_gaussian(image: np.ndarray, y: float, x: float, flux: float) -> None:
    half = 5
    iy, ix = int(round(y)), int(round(x))
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    psf = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * _PSF_SIGMA_PX**2))
    image[iy - half:iy + half + 1, ix - half:ix + half + 1] += flux * psf / psf.sum()


def realistic_quadrant(mjd: float, *, n_rows: int = 2048, n_columns: int = 128,
                       seed: int = 0, read_noise_e: float = 4.5,
                       exptime_s: float = 500.0) -> TestQuadrant:
    """A seeded test quadrant in readout orientation, trailed by the exact model.

    Sky rises from 10 to 100 e- across the columns (log-uniform); stars sit on a
    grid every 64 rows and 16 columns (so every distance from the readout has
    stars), alternately faint (200-2000 e-) and bright (2e4-3e5 e-, below full
    well); 0.6 % of pixels are hot (dark 0.09-4 e-/s); cosmic rays arrive at
    1.2 per cm2 per s as short tracks of about 1000 e-. Poisson noise on all the
    charge, read noise after readout. The exact readout of a full 2048-column
    quadrant takes hours: keep ``n_columns`` small.
    """
    rng = np.random.default_rng(seed)
    sky = np.geomspace(10.0, 100.0, n_columns)
    charge = np.repeat(sky[None, :], n_rows, axis=0)

    hot = rng.uniform(size=charge.shape) < 0.006
    charge[hot] += exptime_s * np.exp(rng.uniform(np.log(0.09), np.log(4.0), hot.sum()))

    dy, dx = _STAR_SPACING
    rows = np.arange(dy // 2, n_rows - 8, dy)
    cols = np.arange(dx // 2, n_columns - 6, dx)
    stars = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            bright = (i + j) % 2 == 1
            lo, hi = (2e4, 3e5) if bright else (200.0, 2000.0)
            flux = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            y, x = r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)
            _add_gaussian(charge, y, x, flux)
            stars.append((y, x, flux))

    area_cm2 = n_rows * n_columns * (15e-4) ** 2
    for _ in range(rng.poisson(1.2 * area_cm2 * exptime_s)):
        length = rng.exponential(3.0) + 1.0
        angle = rng.uniform(0.0, np.pi)
        y0, x0 = rng.uniform(0, n_rows - 1), rng.uniform(0, n_columns - 1)
        n_pts = int(np.ceil(length)) + 1
        t = np.linspace(0.0, 1.0, n_pts)
        ys = np.clip(np.round(y0 + t * length * np.sin(angle)), 0, n_rows - 1).astype(int)
        xs = np.clip(np.round(x0 + t * length * np.cos(angle)), 0, n_columns - 1).astype(int)
        np.add.at(charge, (ys, xs), rng.lognormal(np.log(1000.0), 0.5) / n_pts)

    collected = rng.poisson(charge).astype(np.float64)
    read_noise = rng.normal(0.0, read_noise_e, charge.shape)
    trailed = _add_cti(collected, mjd, express=0) + read_noise
    return TestQuadrant(mjd=mjd, truth=collected + read_noise, trailed=trailed, sky=sky,
                        stars=np.array(stars), read_noise_e=read_noise_e)


def correction_iterates(image: np.ndarray, mjd: float, *, express: int, n_iterations: int,
                        timings: list[float] | None = None, **options) -> list[np.ndarray]:
    """Every iterate of arcticpy's ``remove_cti(image, n_iterations)``, in order.

    ``remove_cti`` with ``n`` iterations returns the ``n``-th item when ``n >= 2``;
    with one iteration it returns the first item *before* negative pixels are set
    to zero (it only does that after the first of several iterations), which is
    returned here as item 0. So the list has ``n_iterations + 1`` items: the
    one-iteration result, then iterations 1.. ``n_iterations`` of a longer run.
    Each add's CPU time (seconds; arcticpy on one thread, so its wall time on an
    idle core) is appended to ``timings``; ``options`` go to ``add_cti``.
    """
    image = np.ascontiguousarray(image, dtype=np.float64)
    estimate = image.copy()
    out = []
    for iteration in range(1, n_iterations + 1):
        t0 = time.process_time()
        trailed = _add_cti(estimate, mjd, express, **options)
        if timings is not None:
            timings.append(time.process_time() - t0)
        estimate = estimate + (image - trailed)
        if iteration == 1:
            out.append(estimate.copy())
            estimate[estimate < 0.0] = 0.0
        out.append(estimate.copy())
    return out


def corrections(quadrant: TestQuadrant, *, express: int, n_iterations: int, noise: str,
                timings: list[float] | None = None) -> list[np.ndarray]:
    """:func:`correction_iterates` of a test quadrant with its read noise handled as the
    calibration stage's ``--cte-noise`` does: ``separate`` holds the read-noise estimate
    of :func:`hstred.cte.noise.separate_read_noise` out of the correction and adds it back
    to every iterate; ``amplify`` corrects it with the rest."""
    from hstred.cte.noise import separate_read_noise

    image, added_back = quadrant.trailed, 0.0
    if noise == "separate":
        image, added_back = separate_read_noise(quadrant.trailed, quadrant.read_noise_e)
    iterates = correction_iterates(image, quadrant.mjd, express=express,
                                   n_iterations=n_iterations, timings=timings)
    return [iterate + added_back for iterate in iterates]


@dataclass(frozen=True)
class CorrectionAccuracy:
    """One correction compared with the exact model's (see :func:`compare_with_reference`).

    ``trail_left_fraction`` is the charge left in the star trails as a fraction
    of the trails before correction (the reference has its own, given as
    ``reference_trail_left_fraction``); flux differences are fractions of each
    star's flux, centroid differences in pixels along the columns; ``max_*`` is
    the worst star, ``mean_*`` the mean over stars (signed: a bias).
    ``flux_to_truth`` is the median ratio of star fluxes to those in the image
    before readout.
    """

    rms_read_noise: float
    trail_left_fraction: float
    reference_trail_left_fraction: float
    max_flux_fraction: float
    mean_flux_fraction: float
    max_centroid_px: float
    mean_centroid_px: float
    flux_to_truth: float


def _star_windows(quadrant: TestQuadrant):
    n_rows, n_columns = quadrant.truth.shape
    r = int(np.ceil(_APERTURE_PX))
    for y, x, _flux in quadrant.stars:
        iy, ix = int(round(y)), int(round(x))
        rows = slice(max(iy - r, 0), min(iy + r + 1, n_rows))
        cols = slice(max(ix - r, 0), min(ix + r + 1, n_columns))
        yy, xx = np.mgrid[rows, cols]
        inside = (yy - y) ** 2 + (xx - x) ** 2 <= _APERTURE_PX**2
        trail = (slice(iy + _TRAIL_ROWS[0], min(iy + _TRAIL_ROWS[1], n_rows)),
                 slice(max(ix - 2, 0), ix + 3))
        yield (rows, cols), inside, yy, trail, quadrant.sky[ix]


def _photometry(image: np.ndarray, quadrant: TestQuadrant):
    fluxes, centroids = [], []
    for box, inside, yy, _trail, sky in _star_windows(quadrant):
        values = (image[box] - sky) * inside
        flux = values.sum()
        fluxes.append(flux)
        centroids.append((values * yy).sum() / flux)
    return np.array(fluxes), np.array(centroids)


def _trail_charge(image: np.ndarray, quadrant: TestQuadrant) -> float:
    return float(sum((image - quadrant.truth)[trail].sum()
                     for *_, trail, _sky in _star_windows(quadrant)))


def compare_with_reference(corrected: np.ndarray, reference: np.ndarray,
                           quadrant: TestQuadrant) -> CorrectionAccuracy:
    """Pixel, trail and star differences between a correction and the exact one."""
    rms = float(np.sqrt(np.mean((corrected - reference) ** 2)) / quadrant.read_noise_e)
    trail_before = _trail_charge(quadrant.trailed, quadrant)
    flux, centroid = _photometry(corrected, quadrant)
    ref_flux, ref_centroid = _photometry(reference, quadrant)
    true_flux = quadrant.stars[:, 2]
    truth_flux, _ = _photometry(quadrant.truth, quadrant)
    dflux = (flux - ref_flux) / true_flux
    dcen = centroid - ref_centroid
    return CorrectionAccuracy(
        rms_read_noise=rms,
        trail_left_fraction=_trail_charge(corrected, quadrant) / trail_before,
        reference_trail_left_fraction=_trail_charge(reference, quadrant) / trail_before,
        max_flux_fraction=float(np.abs(dflux).max()),
        mean_flux_fraction=float(dflux.mean()),
        max_centroid_px=float(np.abs(dcen).max()),
        mean_centroid_px=float(dcen.mean()),
        flux_to_truth=float(np.median(flux / truth_flux)),
    )


@dataclass(frozen=True)
class NoiseStrip:
    """A quadrant strip in detector orientation for the read-noise checks of the correction.

    ``truth``: the expected charge (sky + stars); ``collected``: its Poisson draw;
    ``trailed``: that clocked out through the arCTIc model (express 5, as the simulator
    does); ``noise``: the read noise added after readout, ``observed = trailed + noise``.
    ``stars`` rows are (row, column) of the star centres.
    """

    mjd: float
    sky: float
    read_noise_e: float
    quadrant: object
    truth: np.ndarray
    collected: np.ndarray
    trailed: np.ndarray
    noise: np.ndarray
    stars: tuple

    @property
    def observed(self) -> np.ndarray:
        return self.trailed + self.noise


def noise_strip(mjd: float, sky: float, *, columns: int = 48, rows: int = 2048, seed: int = 1,
                read_noise_e: float = 4.5) -> NoiseStrip:
    """A seeded strip of amplifier A's quadrant (2048 rows: every trail length): flat sky,
    stars of 100-10000 e- every 96 rows and 16 columns, Poisson noise, CTE, read noise."""
    from hstred.acs import quadrants
    from hstred.cte.model import add_cte_to_quadrant

    rng = np.random.default_rng(seed)
    truth = np.full((rows, columns), float(sky))
    yy, xx = np.mgrid[0:rows, 0:columns]
    stars = []
    for row in range(100, rows - 60, 96):
        for col in range(8, columns - 8, 16):
            flux = 10 ** rng.uniform(2.0, 4.0)
            truth += flux / (2 * np.pi) * np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / 2)
            stars.append((row, col))
    quad = quadrants(1)[0]
    collected = rng.poisson(truth).astype(np.float64)
    trailed = add_cte_to_quadrant(collected, quad, mjd)
    noise = rng.normal(0.0, read_noise_e, truth.shape)
    return NoiseStrip(mjd=mjd, sky=float(sky), read_noise_e=read_noise_e, quadrant=quad,
                      truth=truth, collected=collected, trailed=trailed, noise=noise,
                      stars=tuple(stars))


def noise_strip_residuals(strip: NoiseStrip, image: np.ndarray) -> tuple[float, float]:
    """``(width, trail charge)`` of a (corrected) strip: the robust width of the blank-sky
    ``(image - truth) / sqrt(RN**2 + truth)`` (1 = the expected noise), and the charge in
    rows 4-23 behind the stars beyond the collected charge and the read noise."""
    from astropy.stats import mad_std
    from scipy import ndimage

    away = -1 if strip.quadrant.flip_y else 1
    structure = ndimage.binary_dilation(strip.truth - strip.sky > 0.05, iterations=3)
    trails = np.zeros_like(structure)
    excess = image - strip.collected - strip.noise
    charge = 0.0
    for row, col in strip.stars:
        behind = slice(row + 4, row + 60) if away > 0 else slice(row - 59, row - 3)
        trails[behind, col - 3:col + 4] = True
        window = (slice(row + 4, row + 24) if away > 0 else slice(row - 23, row - 3),
                  slice(col - 1, col + 2))
        charge += float(excess[window].sum())
    blank = ~structure & ~trails
    err = np.sqrt(strip.read_noise_e ** 2 + strip.truth)
    return float(mad_std(((image - strip.truth) / err)[blank])), charge
