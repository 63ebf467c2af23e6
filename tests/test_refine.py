"""Boundary refinement: segment ends moved from the sampling grid onto the query's cuts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.edits import Part, compose
from pipeline.describe.decode import decode_windows
from pipeline.detector import CopyDetector
from pipeline.match.refine import native_frames, read_frames, read_windows, split_time
from tests.helpers import cfr_times, write_timed_clip


def _thumbs(levels: list[float]) -> np.ndarray:
    return np.stack([np.full((4, 4, 3), level, np.float32) for level in levels])


def test_split_lands_on_the_cut():
    times = np.arange(8) / 16
    thumbs = _thumbs([10, 11, 10, 200, 201, 199, 200, 200])
    assert split_time(thumbs, times, guess=0.25) == times[3]


def test_split_without_a_cut_keeps_the_grid_boundary():
    times = np.arange(9) / 16
    assert split_time(_thumbs([50] * 9), times, guess=0.25) == 0.25
    # Steady change (camera motion, no cut): the split falls in the middle, where the grid has it.
    assert split_time(_thumbs(list(range(0, 90, 10))), times, guess=0.25) == 0.25


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_windows_are_reread_from_the_file(tmp_path, backend):
    # 30 fps, the grey level changes every whole second: the cut at 3 s lies between the
    # sampled frames at 2.75 s and 3.25 s (2 fps).
    clip = write_timed_clip(tmp_path / "timed.mp4", cfr_times(6.0, 30))
    window = (2.75, 3.25)
    times, thumbs = read_windows(clip, [window], backend)[window]
    assert times[0] <= 2.75 < times[1] and abs(times[-1] - 3.25) < 1 / 30
    assert thumbs.shape[1:] == (32, 32, 3)
    assert split_time(thumbs, times, guess=3.0) == pytest.approx(3.0, abs=1e-3)


def test_the_decode_keeps_what_a_reread_would_read(tmp_path, config):
    clip = write_timed_clip(tmp_path / "timed.mp4", cfr_times(6.0, 30))
    (sampled,) = decode_windows(clip, config.decode, native=True)
    assert sampled.native is not None and sampled.native.thumbs.shape == (180, 32, 32, 3)
    windows = [(2.75, 3.25), (0.1, 1.0), (5.2, 5.9)]
    kept, reread = native_frames(sampled.native, windows), read_frames(clip, windows, "pyav")
    assert len(kept.times) > 20
    np.testing.assert_array_equal(kept.times, reread.times)
    np.testing.assert_array_equal(kept.thumbs, reread.thumbs)
    # A video of several windows keeps none: its frames would outgrow a window's memory.
    assert all(w.native is None for w in decode_windows(clip, config.decode, 4, native=True))
    assert next(decode_windows(clip, config.decode)).native is None  # nobody asked


@pytest.fixture(scope="module")
def offgrid_copy(tmp_path_factory, clips, photos):
    """Seconds 2-8 of ``bikes`` copied at 5.3-11.3 s of the query: off the 0.5 s grid."""
    root = tmp_path_factory.mktemp("refine")
    return compose(
        [
            Part(photos["astronaut"], 5.3, photo=True),
            Part(clips["bikes"], 6.0, start=2.0),
            Part(photos["coffee"], 3.7, photo=True),
        ],
        root / "offgrid.mp4",
    )


def test_reported_copy_ends_fall_on_the_cuts(config, detector, offgrid_copy, clips, monkeypatch):
    def no_reread(*args, **kwargs):
        raise AssertionError("the query's frames were kept by its decode")

    monkeypatch.setattr("pipeline.match.spans.read_frames", no_reread)
    grid = dataclasses.replace(
        config, align=dataclasses.replace(config.align, refine_boundaries=False)
    )
    on_grid = CopyDetector(grid, embedder=detector.embedder).match(offgrid_copy, clips["bikes"])
    refined = detector.match(offgrid_copy, clips["bikes"])
    (coarse,) = on_grid.matches[0].segments
    (fine,) = refined.matches[0].segments
    # The grid can only say 5.0 or 5.5 (11.0 or 11.5); the cuts are at 5.3 and 11.3.
    assert abs(coarse.query_start - 5.3) >= 0.15 and abs(coarse.query_end - 11.3) >= 0.15
    assert fine.query_start == pytest.approx(5.3, abs=0.05)
    assert fine.query_end == pytest.approx(11.3, abs=0.05)
    # The reference ends move with the query ends, along the segment's speed.
    assert fine.reference_start == pytest.approx(2.0, abs=0.3)
    assert fine.reference_end == pytest.approx(8.0, abs=0.3)
