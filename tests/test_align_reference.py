"""Unit tests of footprints and the reference choice (hstred.align.reference)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import wcs as fitswcs

from hstred.align.reference import (
    chip_edge_pixels,
    chip_outline,
    choose_reference,
    overlap_scores,
    points_in_footprint,
)

SQUARE = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])


def test_chip_edge_pixels_run_along_the_pixel_edges():
    edge = chip_edge_pixels(4, 2, points_per_side=2)
    assert edge.shape == (8, 2)
    assert edge[:, 0].min() == -0.5 and edge[:, 0].max() == 3.5
    assert edge[:, 1].min() == -0.5 and edge[:, 1].max() == 1.5


def test_chip_outline_in_its_own_frame_is_its_edge():
    w = fitswcs.WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, 20.0]
    w.wcs.crpix = [5.0, 3.0]
    w.wcs.cd = np.diag([-1e-5, 1e-5])
    w.pixel_shape = (10, 6)
    w.wcs.set()
    out = chip_outline(w, w, points_per_side=3)
    assert np.allclose(out, chip_edge_pixels(10, 6, points_per_side=3), atol=1e-8)


def test_points_in_footprint_union():
    other = SQUARE + 20.0
    x = np.array([5.0, 25.0, 15.0])
    y = np.array([5.0, 25.0, 15.0])
    assert list(points_in_footprint(x, y, [SQUARE, other])) == [True, True, False]
    assert points_in_footprint(np.zeros(0), np.zeros(0), [SQUARE]).size == 0


def test_overlap_scores_hand_counted():
    sources = {
        "a": (np.array([1.0, 2.0, 15.0]), np.array([1.0, 2.0, 15.0])),
        "b": (np.array([5.0]), np.array([5.0])),
        "c": (np.array([50.0, 51.0]), np.array([50.0, 51.0])),
    }
    footprints = {"a": [SQUARE], "b": [SQUARE], "c": [SQUARE + 45.0]}
    # a: 2 sources inside b's footprint; b: 1 inside a's; c: none inside a or b.
    assert overlap_scores(sources, footprints) == {"a": 2, "b": 1, "c": 0}


def test_choose_reference_prefers_overlap_not_position_or_size():
    sources = {
        "first": (np.array([50.0, 51.0, 52.0, 53.0]), np.array([50.0, 51.0, 52.0, 53.0])),
        "second": (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),
        "third": (np.array([4.0]), np.array([4.0])),
    }
    footprints = {"first": [SQUARE + 45.0], "second": [SQUARE], "third": [SQUARE]}
    assert choose_reference(sources, footprints) == "second"


def test_choose_reference_ties_go_to_more_sources_then_order():
    sources = {"a": (np.array([1.0]), np.array([1.0])),
               "b": (np.array([2.0, 30.0]), np.array([2.0, 30.0]))}
    footprints = {"a": [SQUARE], "b": [SQUARE]}
    assert choose_reference(sources, footprints) == "b"
    same = {"a": (np.array([1.0]), np.array([1.0])), "b": (np.array([2.0]), np.array([2.0]))}
    assert choose_reference(same, footprints) == "a"
    with pytest.raises(ValueError):
        choose_reference({}, {})
