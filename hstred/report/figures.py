"""Figures of the QA report (matplotlib, Agg): pure functions from arrays to PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_image", "plot_alignment", "plot_cte_profile", "plot_trails", "downsample",
           "plot_noise_check"]


def downsample(image: np.ndarray, *, max_size: int = 1200,
               chunk_pixels: int = 2**22) -> np.ndarray:
    """Block-average ``image`` (NaN-aware) so its longer side is at most ``max_size``.

    ``image`` may be a memory map or an astropy section: it is read in whole blocks of
    rows of about ``chunk_pixels`` pixels (16 MB as float32) at a time, so a mosaic's
    product never sits in memory as floats (a 26 000-pixel-wide one: 150 rows at a time).
    Blocks with no finite pixel are NaN.
    """
    factor = max(1, int(np.ceil(max(image.shape) / max_size)))
    if factor == 1:
        return np.asarray(image[:, :], dtype=float)
    ny, nx = (s // factor * factor for s in image.shape)
    step = max(1, chunk_pixels // max(nx, 1) // factor) * factor
    out = np.empty((ny // factor, nx // factor))
    for y0 in range(0, ny, step):
        # a single-precision copy of the rows (the image itself is never written to)
        chunk = np.array(image[y0:min(y0 + step, ny), :nx], dtype=np.float32)
        shape = (chunk.shape[0] // factor, factor, nx // factor, factor)
        finite = np.isfinite(chunk)
        counts = finite.reshape(shape).sum(axis=(1, 3))
        chunk[~finite] = 0.0
        sums = chunk.reshape(shape).sum(axis=(1, 3), dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[y0 // factor:(y0 + chunk.shape[0]) // factor] = np.where(
                counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def plot_image(image: np.ndarray, path: Path, *, title: str, label: str,
               stretch: str = "asinh") -> Path:
    """A preview PNG of a science or weight image (origin lower left)."""
    data = downsample(image)
    finite = data[np.isfinite(data)]
    fig, ax = plt.subplots(figsize=(7, 6.5), dpi=110)
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99.7]) if stretch == "asinh" else (
            np.percentile(finite, 0.5), np.percentile(finite, 99.5))
        if stretch == "asinh":
            norm = matplotlib.colors.AsinhNorm(linear_width=max((hi - lo) / 30, 1e-12),
                                               vmin=lo, vmax=hi)
        else:
            norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi)
        shown = ax.imshow(data, origin="lower", cmap="gray_r" if stretch == "asinh" else
                          "viridis", norm=norm, interpolation="nearest")
        fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
    ax.set_title(title)
    ax.set_xlabel("x (downsampled pixels)")
    ax.set_ylabel("y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_alignment(solutions: Sequence[dict], path: Path, *, pixel_scale_arcsec: float) -> Path:
    """Per visit group: applied shift (arrows), rotation, matches and fit RMS."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    names = [f"{s['visit']} {s['filter']}" for s in solutions]
    for s, name in zip(solutions, names, strict=True):
        ax1.annotate("", xy=(s["shift_x_arcsec"], s["shift_y_arcsec"]), xytext=(0, 0),
                     arrowprops={"arrowstyle": "->"})
        ax1.plot(s["shift_x_arcsec"], s["shift_y_arcsec"], "o", label=f"{name} "
                 f"({s['rotation_deg'] * 3600:+.1f}\" rot)")
    lim = max([0.1] + [abs(v) for s in solutions
                       for v in (s["shift_x_arcsec"], s["shift_y_arcsec"])]) * 1.3
    ax1.set_xlim(-lim, lim)
    ax1.set_ylim(-lim, lim)
    ax1.set_aspect("equal")
    ax1.axhline(0, color="0.8")
    ax1.axvline(0, color="0.8")
    ax1.set_xlabel("shift east [arcsec]")
    ax1.set_ylabel("shift north [arcsec]")
    ax1.set_title("header WCS correction per visit")
    ax1.legend(fontsize=7)
    rms_px = [s["rms_arcsec"] / pixel_scale_arcsec for s in solutions]
    x = np.arange(len(solutions))
    ax2.bar(x, rms_px, color=["0.6" if s["status"] == "REFERENCE" else
                              ("tab:red" if s["status"] == "DROPPED" else "tab:blue")
                              for s in solutions])
    for xi, s in zip(x, solutions, strict=True):
        ax2.text(xi, rms_px[xi], f"{s['n_matches']}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("fit RMS [output pixels]")
    ax2.set_title("alignment residual RMS (numbers: matched sources)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_catalog_residuals(residuals: dict, path: Path, *, title: str) -> Path:
    """Residuals of the absolute tie across the field: arrows (corrected source minus
    catalog star, mas) at each matched star's position, and their distribution."""
    ra = np.asarray(residuals.get("ra_deg", []), dtype=float)
    dec = np.asarray(residuals.get("dec_deg", []), dtype=float)
    dx = np.asarray(residuals.get("dx_mas", []), dtype=float)
    dy = np.asarray(residuals.get("dy_mas", []), dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
    if ra.size:
        ra0, dec0 = float(np.mean(ra)), float(np.mean(dec))
        east = (ra - ra0) * np.cos(np.radians(dec0)) * 3600.0
        north = (dec - dec0) * 3600.0
        size = max(float(np.percentile(np.hypot(dx, dy), 90)), 1.0)
        arrows = ax1.quiver(east, north, dx, dy, angles="xy", scale_units="xy",
                            scale=size / 20.0, color="tab:blue")
        ax1.quiverkey(arrows, 0.85, 1.03, size, f"{size:.1f} mas", labelpos="E")
        ax2.plot(dx, dy, ".", color="tab:blue")
        lim = max(float(np.max(np.abs(np.concatenate([dx, dy])))), 1.0) * 1.2
        ax2.set_xlim(-lim, lim)
        ax2.set_ylim(-lim, lim)
    ax1.invert_xaxis()  # east to the left, as on the sky
    ax1.set_aspect("equal")
    ax1.set_xlabel("east of the field centre [arcsec]")
    ax1.set_ylabel("north [arcsec]")
    ax1.set_title(title, fontsize=9)
    ax2.set_aspect("equal")
    ax2.axhline(0, color="0.8")
    ax2.axvline(0, color="0.8")
    ax2.set_xlabel("residual east [mas]")
    ax2.set_ylabel("residual north [mas]")
    ax2.set_title(f"{dx.size} matches")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cte_profile(offsets: np.ndarray, before: np.ndarray, after: np.ndarray, path: Path, *,
                     title: str) -> Path:
    """Charge along the parallel direction through a star, before and after CTE correction.

    ``offsets`` are pixels from the star's peak, positive away from the readout
    amplifier (where trails go).
    """
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.step(offsets, before, where="mid", label="corrected image re-trailed by the arCTIc model")
    ax.step(offsets, after, where="mid", label="after arCTIc correction")
    ax.set_yscale("symlog", linthresh=max(1.0, float(np.nanmax(np.abs(after))) / 1e3))
    ax.set_xlabel("pixels from the star, away from the readout amplifier")
    ax.set_ylabel("electrons above sky")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_trails(chips: dict[int, np.ndarray], trails: Sequence[dict], path: Path, *,
                title: str) -> Path:
    """A preview of one exposure, its chips stacked as on the detector (SCI,1, WFC2, at
    the bottom), with each trail found drawn as its centre line (full-resolution pixel
    end points, by EXTVER)."""
    order = sorted(chips)
    factor = 8
    small = [downsample(chips[k], max_size=max(chips[k].shape) // factor) for k in order]
    data = np.vstack(small)
    finite = data[np.isfinite(data)]
    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99.5])
        ax.imshow(data, origin="lower", cmap="gray_r", interpolation="nearest",
                  norm=matplotlib.colors.AsinhNorm(linear_width=max((hi - lo) / 30, 1e-12),
                                                   vmin=lo, vmax=hi))
    offsets = dict(zip(order, np.cumsum([0] + [s.shape[0] for s in small[:-1]]), strict=True))
    for t in trails:
        scale = data.shape[1] / chips[t["extver"]].shape[1]
        dy = offsets.get(t["extver"], 0)
        ax.plot([t["x0"] * scale, t["x1"] * scale], [t["y0"] * scale + dy, t["y1"] * scale + dy],
                color="tab:red", lw=1.2, alpha=0.8)
    ax.set_xlim(-0.5, data.shape[1] - 0.5)
    ax.set_ylim(-0.5, data.shape[0] - 0.5)
    ax.set_title(title)
    ax.set_xlabel(f"x (pixels / {factor})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_noise_check(products: Sequence[dict], path: Path) -> Path:
    """Blank-sky noise measured in each product over the RMS image's prediction, against
    the block side: with the correlation factors (should be 1) and without them (what
    treating the pixels as independent would predict)."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for k, product in enumerate(products):
        noise = product.get("noise") or {}
        measured = {int(n): v for n, v in (noise.get("blank_sky") or {}).items()}
        factors = {int(n): v for n, v in (noise.get("correlation") or {}).items()}
        sides = sorted(measured)
        if not sides:
            continue
        color = f"C{k}"
        ax.plot(sides, [measured[n] for n in sides], "o-", color=color,
                label=f"{product['filter']}: RMS map with RMSCORn")
        ax.plot(sides, [measured[n] * factors.get(n, 1.0) for n in sides], "s--", color=color,
                alpha=0.6, label=f"{product['filter']}: pixels taken as independent")
    ax.axhline(1.0, color="0.5", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block side n (output pixels)")
    ax.set_ylabel("measured / predicted noise of n x n means")
    ax.set_title("Blank-sky noise against the RMS images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
