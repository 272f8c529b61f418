"""Read noise kept out of the pixel CTE correction.

arCTIc's correction treats every pixel value as charge that was clocked through the traps.
Read noise is added by the amplifier after the transfer, so "correcting" it amplifies it. On
a 2024 quadrant strip the blank-sky residuals of the plain correction are 2.34 times the
expected noise with a 5 e- sky, 1.59 times at 15 e-, 1.17 at 40 e- and 1.04 at 100 e-
(express 5, 3 iterations; ``benchmarks/bench_cte_noise.py``). calacs separates the read
noise before its correction for the same reason (PCTERNOI and its smoothing).

Here each amplifier quadrant is split into a read-noise estimate ``N`` and the rest
``S = image - N``; ``S`` is corrected and ``N`` added back unchanged. ``N`` is the linear
minimum-variance (Wiener) estimate of each pixel's read noise from its deviation ``d`` from
the mean of the other pixels of its :data:`NEIGHBOUR_PX` x :data:`NEIGHBOUR_PX` box. The
pixel's read noise enters ``d`` alone, so ``cov(noise, d) = RN**2`` and the estimate is
``(RN**2 / V) d``, with ``V`` the variance of ``d`` where the pixel is. ``V`` comes from the
data, so the signal's own scatter (the sky's shot noise, smoothed along the columns by the
CTE trailing) decides how much of ``d`` is read noise:

- in the sky: ``V`` is the median of ``d**2`` in blocks of :data:`BLOCK_PX` pixels (divided
  by 0.4549, the median of a chi-square variable with one degree of freedom);
- near stars, cosmic rays and hot pixels: the mean of ``d**2`` over the
  :data:`LOCAL_PX` x :data:`LOCAL_PX` neighbourhood, where it exceeds the block's value
  :data:`STRUCTURE_FACTOR` times. The structure then makes ``V`` so large that almost none
  of it goes into ``N``: it stays in ``S`` and is corrected.

``N`` is also clipped at :data:`CLIP_READ_NOISE` read noises. Measured on the same strips:
blank-sky widths of 1.10, 0.99, 0.97 and 0.99 at those sky levels, against 0.98, 0.97, 0.98
and 1.00 when the true read noise is held out (which no method can know), and the charge in
the star trails removed as by that ideal separation. A 3 x 3 box leaves 1.22 and 1.02 at the
two darkest skies; a 7 x 7 box gains nothing more. On the simulated 2025 exposure (65 e- sky)
the calibrated (SCI - truth)/ERR has a blank-sky width of 1.027 and 1.022 on its two chips,
against 1.08 with the plain correction and 1.003 for the same exposure simulated without CTE
(a 3 x 3 box: 1.021 and 1.016).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["BLOCK_PX", "CLIP_READ_NOISE", "LOCAL_PX", "STRUCTURE_FACTOR", "NOISE_METHODS",
           "noise_parameters", "separate_read_noise"]

#: ``--cte-noise`` choices: ``separate`` (the read-noise estimate is held out of the
#: correction) or ``amplify`` (the whole image is corrected, read noise included).
NOISE_METHODS = ("separate", "amplify")
#: Side of the neighbourhood whose mean (the pixel itself left out) a pixel's deviation is
#: measured from (pixels).
NEIGHBOUR_PX = 5
#: Side of the blocks in which the sky's deviation variance is measured (pixels).
BLOCK_PX = 32
#: Side of the neighbourhood whose deviation variance marks structure (pixels).
LOCAL_PX = 5
#: How many times the block's variance the neighbourhood's must reach to count as structure.
STRUCTURE_FACTOR = 4.0
#: Largest read-noise estimate of a pixel, in read noises.
CLIP_READ_NOISE = 3.0
#: Median of a chi-square variable with one degree of freedom.
_CHI2_1_MEDIAN = 0.4549364231195724


def noise_parameters() -> dict:
    """The separation's parameters, for the FLC headers and the run record."""
    return {"noise_block_px": BLOCK_PX, "noise_local_px": LOCAL_PX,
            "noise_structure_factor": STRUCTURE_FACTOR, "noise_clip": CLIP_READ_NOISE}


def _block_variance(d2: np.ndarray) -> np.ndarray:
    """Median of ``d2`` in BLOCK_PX blocks (edge blocks padded by reflection), spread back
    over the pixels of each block, divided by the chi-square median."""
    ny, nx = d2.shape
    by, bx = -(-ny // BLOCK_PX), -(-nx // BLOCK_PX)
    padded = np.pad(d2, ((0, by * BLOCK_PX - ny), (0, bx * BLOCK_PX - nx)), mode="reflect")
    blocks = padded.reshape(by, BLOCK_PX, bx, BLOCK_PX).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(by, bx, BLOCK_PX * BLOCK_PX)
    half = BLOCK_PX * BLOCK_PX // 2
    middle = np.partition(blocks, (half - 1, half), axis=2)[..., half - 1:half + 1]
    med = middle.mean(axis=2) / _CHI2_1_MEDIAN
    return np.repeat(np.repeat(med, BLOCK_PX, axis=0), BLOCK_PX, axis=1)[:ny, :nx]


def separate_read_noise(image: np.ndarray, read_noise_e: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, noise)``: the rest and the read-noise estimate, ``rest + noise = image``.

    ``image``: a bias-subtracted quadrant in electrons (any orientation: the filters are
    symmetric); ``read_noise_e``: its amplifier's read noise (e-). Returns float64 arrays.
    """
    image = np.asarray(image, dtype=np.float64)
    if read_noise_e <= 0 or min(image.shape) < 3:
        return image.copy(), np.zeros_like(image)
    # float32 is ample for an estimate of a few electrons, and twice as fast
    single = image.astype(np.float32)
    n = NEIGHBOUR_PX * NEIGHBOUR_PX
    neighbours = (ndimage.uniform_filter(single, NEIGHBOUR_PX, mode="nearest") * n
                  - single) / (n - 1)
    d = single - neighbours
    d2 = d * d
    variance = _block_variance(d2)
    local = ndimage.uniform_filter(d2, LOCAL_PX, mode="nearest")
    variance = np.where(local > STRUCTURE_FACTOR * variance, local, variance)
    rn2 = float(read_noise_e) ** 2
    gain = np.clip(rn2 / np.maximum(variance, 1e-12), 0.0, 1.0)
    limit = CLIP_READ_NOISE * float(read_noise_e)
    noise = np.clip(gain * d, -limit, limit).astype(np.float64)
    return image - noise, noise
