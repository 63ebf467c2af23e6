"""Temporal-network alignment on synthetic similarity matrices with planted copies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.match.align import (
    FrameBox,
    TemporalNetwork,
    boxes_to_segments,
    fit_reference_span,
    unit_speed_span,
)


def _noise(nq: int, nr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.05, 0.25, size=(nq, nr)).astype(np.float32)


def _plant(sim: np.ndarray, q0: int, r0: int, length: int, speed: float = 1.0, level=0.8):
    """Query frame q0+i copies reference frame r0 + i*speed (speed > 1: the query is faster)."""
    for i in range(length):
        j = r0 + round(i * speed)
        sim[q0 + i, j] = level
        if j + 1 < sim.shape[1]:
            sim[q0 + i, j + 1] = max(sim[q0 + i, j + 1], level - 0.25)
    return sim


@pytest.fixture
def tn(config):
    return TemporalNetwork(config.align)


def _only(boxes: list[FrameBox]) -> FrameBox:
    assert len(boxes) == 1, boxes
    return boxes[0]


def test_identity_speed(tn):
    box = _only(tn(_plant(_noise(60, 80), 10, 30, 20)))
    assert (box.q0, box.q1, box.r0, box.r1) == (10, 29, 30, 49)
    assert box.score > 0.7


@pytest.mark.parametrize("speed", [0.5, 1.5, 2.0])
def test_speed_changes(tn, speed):
    box = _only(tn(_plant(_noise(60, 120), 5, 20, 24, speed=speed)))
    assert (box.q0, box.q1) == (5, 28)
    assert box.r0 == 20
    assert abs(box.r1 - (20 + round(23 * speed))) <= 1


def test_gap_inside_copy_is_bridged(tn):
    sim = _plant(_noise(60, 80), 10, 20, 20)
    sim[18:20, :] = _noise(2, 80, seed=3)  # two unmatched query frames (an inserted shot)
    box = _only(tn(sim))
    assert (box.q0, box.q1, box.r0, box.r1) == (10, 29, 20, 39)


def test_two_segments(tn):
    sim = _plant(_plant(_noise(80, 100), 5, 60, 15), 40, 10, 20)
    boxes = sorted(tn(sim), key=lambda b: b.q0)
    assert [(b.q0, b.q1, b.r0, b.r1) for b in boxes] == [(5, 19, 60, 74), (40, 59, 10, 29)]


def test_no_copy(tn):
    assert tn(_noise(50, 70)) == []


def test_too_short_copy_is_ignored(config):
    tn = TemporalNetwork(dataclasses.replace(config.align, min_length=5))
    assert tn(_plant(_noise(40, 40), 3, 3, 3)) == []


def test_empty_inputs(tn):
    assert tn(np.zeros((0, 10), np.float32)) == []
    assert tn(np.zeros((10, 0), np.float32)) == []


def test_boxes_to_seconds_use_frame_spans():
    starts, ends = np.arange(10.0), np.arange(10.0) + 1
    (segment,) = boxes_to_segments([FrameBox(2, 5, 3, 6, 0.9, 4)], starts, ends, starts, ends)
    assert (segment.query_start, segment.query_end) == (2.0, 6.0)
    assert (segment.reference_start, segment.reference_end) == (3.0, 7.0)


def test_span_fit_ignores_an_end_node_off_the_diagonal():
    """A copy of reference frames 5..14 whose last query frame matched frame 15 (a near-identical
    neighbour): the extremes say 5..16, the fitted line says 5..15, moved at most the slack."""
    rows = np.arange(10)
    cols = rows + 5
    cols[-1] += 1
    assert fit_reference_span(rows, cols, 2.5, slack=0.5) == (5.0, 15.5)
    assert fit_reference_span(rows, cols, 2.5, slack=2.0) == (5.0, 15.0)


def test_span_fit_follows_the_speed():
    """At 2x, query frame 4 covers reference frames 8 and 9: the span ends at 10, not 9."""
    rows, cols = np.arange(5), np.arange(5) * 2
    assert fit_reference_span(rows, cols, 2.5, slack=1.0) == (0.0, 10.0)


def test_span_fit_of_an_hour_long_path():
    """An hour-long copy at 2 fps (7200 nodes; all pairwise slopes would take 400 MB) is fitted
    on a sample of nodes and still gets its span right."""
    rows = np.arange(7200)
    cols = rows // 2 + 100  # played at half speed
    start, end = fit_reference_span(rows, cols, 2.5, slack=0.5)
    assert abs(start - 100) <= 0.25 and abs(end - 3700) <= 0.25  # a staircase: half a frame


def test_temporal_network_reports_the_fitted_span(config):
    sim = _plant(_noise(60, 80), 10, 30, 20)
    sim[29, 50] = 0.95  # the last query frame prefers the next reference frame
    align = dataclasses.replace(config.align, unit_speed_margin=-1)  # the fit alone
    fitted = _only(TemporalNetwork(align)(sim))
    extremes = _only(TemporalNetwork(dataclasses.replace(align, span_fit_slack=0))(sim))
    assert extremes.ref_span is None and extremes.r1 == 50
    assert fitted.ref_span == (30.0, 50.5)
    starts, ends = np.arange(80.0) / 2, np.arange(80.0) / 2 + 0.5
    (segment,) = boxes_to_segments([fitted], starts, ends, starts, ends)
    assert (segment.reference_start, segment.reference_end) == (15.0, 25.25)


def _span_frames(box: FrameBox) -> float:
    return box.ref_span[1] - box.ref_span[0]


def test_near_static_reference_is_read_at_the_original_speed(config):
    """A near-static reference matches every query frame of a shot about equally well, so the
    path may idle at half speed; the unit-speed line is as similar and wins."""
    rng = np.random.default_rng(1)
    sim = _noise(60, 80)
    sim[10:30, 20:60] = 0.6 + rng.uniform(-0.005, 0.005, size=(20, 40))
    sim = _plant(sim, 10, 30, 20, speed=0.5, level=0.61)  # the path idles here
    off = TemporalNetwork(dataclasses.replace(config.align, unit_speed_margin=-1))
    assert _span_frames(_only(off(sim))) < 14
    box = _only(TemporalNetwork(config.align)(sim))
    assert _span_frames(box) == pytest.approx(20)
    assert box.ref_span[0] >= 20 and box.ref_span[1] <= 60


@pytest.mark.parametrize("speed", [0.5, 1.5, 2.0])
def test_moving_copies_keep_their_speed(tn, speed):
    """Where the content moves, a unit-speed line loses similarity: the fitted speed stands."""
    box = _only(tn(_plant(_noise(60, 120), 5, 20, 24, speed=speed)))
    assert abs(_span_frames(box) - 24 * speed) <= 1


def test_unit_speed_span_keeps_a_span_longer_than_the_reference():
    sim = np.full((40, 10), 0.6, np.float32)
    box = FrameBox(0, 29, 0, 9, 0.6, 30)
    assert unit_speed_span(sim, box, (0.0, 10.0), 6, 0.01) == (0.0, 10.0)


def test_static_shot_is_not_a_copy(tn):
    """Many query frames on one or two reference frames (a still shot) is not a copy."""
    sim = _noise(40, 60)
    sim[5:25, 30] = 0.85
    sim[5:25, 31] = 0.8
    assert tn(sim) == []


def test_parallel_duplicate_paths_are_reported_once(tn):
    sim = _plant(_noise(60, 80), 10, 20, 20)
    sim = _plant(sim, 10, 22, 20, level=0.7)  # a near-copy offset by two frames (slow pan)
    box = _only(tn(sim))
    assert (box.q0, box.q1) == (10, 29)


@pytest.mark.parametrize("method", ["hv", "dp"])
def test_baselines_find_planted_copies(config, method):
    from pipeline.match.align import make_aligner

    aligner = make_aligner(dataclasses.replace(config.align, method=method))
    sim = _plant(_plant(_noise(80, 100), 5, 60, 15), 40, 10, 20)
    boxes = sorted(aligner(sim), key=lambda b: b.q0)
    found = np.array([(b.q0, b.q1, b.r0, b.r1) for b in boxes])
    assert found.shape == (2, 4)
    assert np.abs(found - [(5, 19, 60, 74), (40, 59, 10, 29)]).max() <= 1  # baselines: +-1 frame
    assert aligner(_noise(50, 70)) == []


def test_skew_penalty_keeps_a_flat_match_on_the_diagonal(config):
    """A copy of a near-static reference: every frame pair in the block is about as similar,
    the true diagonal a little more on average. Without a preference for playback at the
    original speed the path follows the per-frame noise; with it, it stays on the diagonal."""
    rng = np.random.default_rng(3)
    sim = _noise(40, 60)
    sim[10:30, 20:40] = 0.80 + rng.uniform(-0.03, 0.03, size=(20, 20))
    sim[np.arange(10, 30), np.arange(20, 40)] = 0.81
    flat = _only(TemporalNetwork(dataclasses.replace(config.align, skew_penalty=0.0))(sim))
    kept = _only(TemporalNetwork(dataclasses.replace(config.align, skew_penalty=0.02))(sim))
    assert (kept.q0, kept.q1, kept.r0, kept.r1) == (10, 29, 20, 39)
    assert (flat.r0, flat.r1) != (20, 39)
