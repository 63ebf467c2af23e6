"""Reference sync: reference spans shifted below the sampling period by the rhythm of motion."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from benchmarks.edits import Part, compose
from pipeline.detector import CopyDetector
from pipeline.match.refine import read_frames
from pipeline.match.sync import best_shift, sync_matches
from pipeline.records import Match, Segment
from tests.helpers import cfr_times, write_timed_clip


def _footage(times: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Thumbnails of footage whose picture jumps at ``cuts`` (seconds) and drifts between."""
    level = np.searchsorted(cuts, times) * 37 % 200 + 10 * np.sin(times)
    return np.broadcast_to(level[:, None, None, None], (len(times), 4, 4, 3)).astype(np.float32)


def test_shift_found_across_frame_rates():
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.uniform(0, 20, 30))
    ref_times = np.arange(0, 20, 1 / 25)
    # The query copies reference seconds 4.2-14.2 at 3.0-13.0 s, at 30 fps.
    q_times = np.arange(0, 16, 1 / 30)
    query = (q_times, _footage(q_times + 1.2, cuts))
    reference = (ref_times, _footage(ref_times, cuts))
    # The aligner's grid said the copy starts at reference second 4.0: 0.2 s early.
    segment = Segment(3.0, 13.0, 4.0, 14.0, 0.9)
    shift, corr = best_shift(query, reference, segment)
    assert shift == pytest.approx(0.2, abs=0.045) and corr > 0.9


def test_a_segment_with_slack_is_searched_as_far_and_moved_only_where_clear():
    """A span found through crop frames 8 s apart may be off by seconds: sync looks that
    far (``reference_slack_s``), and moves it beyond half a second only to a clear best."""
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.uniform(0, 40, 60))
    ref_times = np.arange(0, 40, 1 / 25)
    q_times = np.arange(0, 16, 1 / 25)
    query = (q_times, _footage(q_times + 6.0, cuts))  # copies reference 9-19 s at 3-13 s
    reference = (ref_times, _footage(ref_times, cuts))
    sparse = Segment(3.0, 13.0, 14.0, 24.0, 0.6, reference_slack_s=7.5)  # 5 s late
    shift, corr = best_shift(query, reference, sparse)
    assert shift == pytest.approx(-5.0, abs=0.05) and corr > 0.9
    plain = dataclasses.replace(sparse, reference_slack_s=0.0)
    assert abs(best_shift(query, reference, plain)[0]) <= 0.5  # the grid's rounding only
    # Periodic footage fits every period alike: no clear best, the span stays near.
    periodic = (ref_times, _footage(ref_times % 4.0, cuts[cuts < 4.0]))
    copy = (q_times, _footage((q_times + 6.0) % 4.0, cuts[cuts < 4.0]))
    assert abs(best_shift(copy, periodic, sparse)[0]) <= 0.5


def test_still_footage_gives_no_shift():
    times = np.arange(0, 20, 1 / 25)
    still = (times, np.full((len(times), 4, 4, 3), 80, np.float32))
    assert best_shift(still, still, Segment(3.0, 13.0, 4.0, 14.0, 0.9)) == (0.0, 0.0)


@pytest.mark.parametrize("pyav_after_s", [120.0, 1.0])
def test_reference_span_lands_within_a_frame(
    config, detector, clips, photos, tmp_path, monkeypatch, pyav_after_s
):
    """Also with both videos counted as long (``pyav_after_s`` 1 s): then the rereads go
    through PyAV too, since decord would hold state for a whole long file (a 4-hour upload's
    refinement took its peak from 0.74 to 0.94 GiB)."""
    from pipeline.match import refine

    decord_reads = []
    real_read = refine._read_decord
    monkeypatch.setattr(
        refine, "_read_decord", lambda path, *a: decord_reads.append(path) or real_read(path, *a)
    )
    decode = dataclasses.replace(config.decode, pyav_after_s=pyav_after_s)
    config = dataclasses.replace(config, decode=decode)
    detector = CopyDetector(config, embedder=detector.embedder)
    # Seconds 2.13-8.13 of ``bikes``: the 2 fps grid puts the copy's start 0.19 s late.
    query = compose(
        [
            Part(photos["astronaut"], 5.3, photo=True),
            Part(clips["bikes"], 6.0, start=2.13),
            Part(photos["coffee"], 3.7, photo=True),
        ],
        tmp_path / "offset.mp4",
    )
    align = dataclasses.replace(config.align, sync_reference=False)
    unsynced = CopyDetector(dataclasses.replace(config, align=align), embedder=detector.embedder)
    (coarse,) = unsynced.match(query, clips["bikes"]).matches[0].segments
    (fine,) = detector.match(query, clips["bikes"]).matches[0].segments
    assert abs(coarse.reference_start - 2.13) > 0.12
    assert fine.reference_start == pytest.approx(2.13, abs=0.06)
    assert fine.reference_end - fine.reference_start == pytest.approx(6.0, abs=0.1)
    assert (len(decord_reads) > 0) == (pyav_after_s > 15.0)


def test_unreadable_reference_or_cap_keeps_spans(config, tmp_path, caplog):
    clip = write_timed_clip(tmp_path / "q.mp4", cfr_times(6.0, 30))
    query = read_frames(clip, [(1.0, 5.0)], "decord")
    decode = config.decode
    segment = Segment(1.0, 5.0, 1.0, 5.0, 0.9)
    gone = Match("gone", str(tmp_path / "missing.mp4"), 0.9, [segment])
    assert sync_matches([gone], query, {}, decode, max_matches=0) == [gone]
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert sync_matches([gone], query, {}, decode, max_matches=1) == [gone]
    assert "missing.mp4" in caplog.text


def test_motion_of_many_shifts_at_once_equals_one_shift_at_a_time():
    """best_shift reads every shifted signal in one call; each must be exactly the signal a
    call for that shift alone gives (distinct frame pairs are compared once)."""
    from pipeline.match.sync import motion

    rng = np.random.default_rng(5)
    times = np.sort(rng.uniform(0, 12, 250))
    thumbs = rng.uniform(0, 255, (len(times), 4, 4, 3)).astype(np.float32)
    at = np.arange(2.0, 9.0, 1 / 25)
    shifts = np.arange(-0.5, 0.5 + 1e-9, 1 / 25)
    together = motion(times, thumbs, at[None, :] + shifts[:, None], 0.2)
    assert together.shape == (len(shifts), len(at))
    for row, shift in zip(together, shifts, strict=True):
        np.testing.assert_array_equal(row, motion(times, thumbs, at + shift, 0.2))
    first, second = (
        thumbs[np.searchsorted(times, at, "right") - 1],
        thumbs[np.searchsorted(times, at + 0.2, "right") - 1],
    )
    np.testing.assert_allclose(
        motion(times, thumbs, at, 0.2), np.abs(first - second).mean((1, 2, 3))
    )
