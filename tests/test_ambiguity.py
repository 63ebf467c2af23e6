"""Ambiguous reference times: alternatives reported where a copy fits as well, nowhere else."""

from __future__ import annotations

import numpy as np

from pipeline.match.align import FrameBox
from pipeline.match.ambiguity import reference_alternatives
from pipeline.records import Segment


def _box(q0: int, r0: int, length: int) -> FrameBox:
    return FrameBox(q0, q0 + length - 1, r0, r0 + length - 1, 0.9, length)


def test_a_moving_reference_has_one_place():
    sim = np.full((20, 40), 0.1)
    sim[np.arange(20), np.arange(20) + 10] = 0.9  # the copy: query frame i is reference i + 10
    assert reference_alternatives(_box(0, 10, 20), sim, 0.02, 2) == []


def test_a_near_static_reference_fits_elsewhere_and_says_where():
    rng = np.random.default_rng(0)
    sim = 0.1 + 0.01 * rng.random((10, 60))
    sim[np.arange(10), np.arange(10) + 5] = 0.90  # chosen
    sim[np.arange(10), np.arange(10) + 40] = 0.895  # the same picture 35 frames later
    sim[np.arange(10), np.arange(10) + 41] = 0.89  # ... and its neighbour: one run, one answer
    sim[np.arange(10), np.arange(10) + 20] = 0.80  # not close enough
    assert reference_alternatives(_box(0, 5, 10), sim, 0.02, 2) == [35]
    assert reference_alternatives(_box(0, 5, 10), sim, 0.0, 2) == []  # off
    # A segment at another speed has no diagonal to slide.
    box = FrameBox(0, 9, 5, 24, 0.9, 10)
    assert reference_alternatives(box, sim, 0.02, 2) == []
    # A box a frame shorter on the reference side, ending on the reference's last frame.
    sim = np.full((10, 60), 0.1)
    sim[np.arange(9), np.arange(9) + 51] = 0.9
    assert reference_alternatives(FrameBox(0, 9, 51, 59, 0.9, 10), sim, 0.02, 2) == []


def test_alternatives_are_reported_only_when_there_are_some():
    plain = Segment(1.0, 5.0, 10.0, 14.0, 0.8)
    assert "reference_alternatives" not in plain.to_dict()
    ambiguous = Segment(1.0, 5.0, 10.0, 14.0, 0.8, alternatives=((30.0, 34.0),))
    assert ambiguous.to_dict()["reference_alternatives"] == [[30.0, 34.0]]


def test_a_plateau_around_the_copy_reports_how_far_it_reaches():
    """A held picture: every shift fits as well as the chosen one. Neighbours closer than half
    the segment are localisation, not alternatives; the plateau's far ends are reported."""
    sim = np.full((10, 40), 0.85)
    sim[np.arange(10), np.arange(10) + 12] = 0.86
    assert sorted(reference_alternatives(_box(0, 12, 10), sim, 0.02, 2)) == [-12, 18]
    sim[:, 4:8] = 0.1  # the plateau broken 5-8 frames before: its near side is too close
    assert reference_alternatives(_box(0, 12, 10), sim, 0.02, 2) == [18]
