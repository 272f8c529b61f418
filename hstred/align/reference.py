"""Footprints, overlap and the choice of the reference visit.

Everything here works in one common plane (any undistorted tangent-plane pixel frame):
footprints are polygons, catalogs are point lists in that frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from astropy.wcs import WCS
from matplotlib.path import Path as PolygonPath

__all__ = [
    "chip_edge_pixels",
    "chip_outline",
    "points_in_footprint",
    "overlap_scores",
    "choose_reference",
]


def chip_edge_pixels(nx: int, ny: int, *, points_per_side: int = 8) -> np.ndarray:
    """Points along the outer edge of an ``nx`` x ``ny`` pixel grid (0-indexed pixel
    coordinates; the edge of pixel ``[0, 0]`` is at -0.5), counter-clockwise."""
    t = np.linspace(0.0, 1.0, points_per_side, endpoint=False)
    x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t,
                         np.full_like(t, x0)])
    ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1),
                         y1 - (y1 - y0) * t])
    return np.column_stack([xs, ys])


def chip_outline(wcs: WCS, frame: WCS, *, points_per_side: int = 8) -> np.ndarray:
    """Outline of a chip (its pixel-grid edge, with distortion) in ``frame`` pixels.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The chip's full WCS (``pixel_shape`` set).
    frame : astropy.wcs.WCS
        The common frame (celestial, no distortion).
    points_per_side : int
        Points along each edge (distortion bends the edges).

    Returns
    -------
    ndarray, shape (4 * points_per_side, 2)
        0-indexed ``frame`` pixel coordinates, counter-clockwise in chip pixels.
    """
    nx, ny = wcs.pixel_shape
    edge = chip_edge_pixels(nx, ny, points_per_side=points_per_side)
    ra, dec = wcs.all_pix2world(edge[:, 0], edge[:, 1], 0)
    fx, fy = frame.all_world2pix(ra, dec, 0)
    return np.column_stack([fx, fy])


def points_in_footprint(x: np.ndarray, y: np.ndarray, outlines: Sequence[np.ndarray]) -> np.ndarray:
    """True where a point lies inside any of the outlines (the footprint is their union)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    inside = np.zeros(x.shape, dtype=bool)
    if x.size == 0:
        return inside
    pts = np.column_stack([x.ravel(), y.ravel()])
    for outline in outlines:
        inside |= PolygonPath(outline).contains_points(pts).reshape(x.shape)
    return inside


def overlap_scores(
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    footprints: Mapping[str, Sequence[np.ndarray]],
) -> dict[str, int]:
    """For each group, how many of its sources fall inside other groups' footprints.

    The sum over all other groups: a group with many sources that overlaps many
    others scores high. Keys of ``sources`` and ``footprints`` must agree.
    """
    scores = {}
    for name, (x, y) in sources.items():
        total = 0
        for other, outlines in footprints.items():
            if other != name:
                total += int(points_in_footprint(x, y, outlines).sum())
        scores[name] = total
    return scores


def choose_reference(
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    footprints: Mapping[str, Sequence[np.ndarray]],
) -> str:
    """The group to align everything to: most sources in overlap with the others.

    Ties go to the group with more sources, then to the first in the given order.
    """
    if not sources:
        raise ValueError("no groups to choose a reference from")
    scores = overlap_scores(sources, footprints)
    names = list(sources)
    return max(names, key=lambda n: (scores[n], len(sources[n][0]), -names.index(n)))
