"""Keyframe selection on descriptors and its round trip back to the sampling grid."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import KeyframesConfig
from pipeline.keyframes import expand, select_keyframes


def _unit(rng, n, dim=16):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_runs_of_repeated_descriptors_collapse_and_keep_their_spans():
    rng = np.random.default_rng(0)
    distinct = _unit(rng, 4)
    # frames: a a a b c c d  (1 fps spans)
    embeddings = distinct[[0, 0, 0, 1, 2, 2, 3]]
    starts = np.arange(7.0)
    keys = select_keyframes(embeddings, starts, starts + 1, KeyframesConfig(True, 0.95, 8))
    assert keys.kept.tolist() == [1, 3, 4, 6]  # the middle of each run
    assert keys.starts.tolist() == [0, 3, 4, 6] and keys.ends.tolist() == [3, 4, 6, 7]
    assert keys.run.tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_max_run_bounds_what_one_kept_frame_stands_for():
    embeddings = np.tile(_unit(np.random.default_rng(1), 1), (5, 1))
    starts = np.arange(5.0)
    keys = select_keyframes(embeddings, starts, starts + 1, KeyframesConfig(True, 0.9, 2))
    assert (keys.ends - keys.starts).tolist() == [2, 2, 1]


def test_disabled_keeps_every_frame():
    embeddings = np.tile(_unit(np.random.default_rng(2), 1), (3, 1))
    starts = np.arange(3.0)
    keys = select_keyframes(embeddings, starts, starts + 1, KeyframesConfig(False, 0.9, 4))
    assert keys.kept.tolist() == [0, 1, 2]


def test_expand_restores_the_sampling_grid():
    starts, ends = np.array([0.0, 1.5, 2.0]), np.array([1.5, 2.0, 3.3])  # at 2 fps
    rows, grid_starts, grid_ends = expand(starts, ends, 2.0)
    assert rows.tolist() == [0, 0, 0, 1, 2, 2, 2]  # 3, 1 and 3 sampled frames (1.3 s -> 3)
    np.testing.assert_allclose(grid_starts[:4], [0.0, 0.5, 1.0, 1.5])
    assert grid_ends[-1] == pytest.approx(3.3)
    np.testing.assert_allclose(grid_starts[1:], grid_ends[:-1])  # the grid tiles the video


def test_alignment_is_unchanged_by_merging_identical_frames(config):
    """A reference with a held frame: merged or not, the copy is localised the same."""
    from pipeline.detector import CopyDetector
    from pipeline.records import VideoFeatures

    rng = np.random.default_rng(3)
    ref = _unit(rng, 30, 512)
    ref[10:13] = ref[10]  # a held frame
    query = np.concatenate([_unit(rng, 5, 512), ref[5:20]])
    starts_r, starts_q = np.arange(30) / 2, np.arange(20) / 2
    detector = CopyDetector(config, embedder=object())
    plain = VideoFeatures("r", "r", 15.0, ref, starts_r, starts_r + 0.5, "m", fps=2.0)
    on = KeyframesConfig(True, config.keyframes.min_corr, config.keyframes.max_run)
    keys = select_keyframes(ref, starts_r, starts_r + 0.5, on)
    assert len(keys.kept) < 30
    merged = VideoFeatures("r", "r", 15.0, ref[keys.kept], keys.starts, keys.ends, "m", fps=2.0)
    q = VideoFeatures("q", "q", 10.0, query, starts_q, starts_q + 0.5, "m", fps=2.0)
    a, b = detector.align_pair(q, plain), detector.align_pair(q, merged)
    assert a is not None and b is not None
    assert [s.to_dict() for s in a.segments] == [s.to_dict() for s in b.segments]
    (segment,) = a.segments
    assert (segment.query_start, segment.query_end) == (2.5, 10.0)
    assert (segment.reference_start, segment.reference_end) == (2.5, 10.0)
