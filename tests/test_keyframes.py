"""Keyframe selection on descriptors and its round trip back to the sampling grid; frames that
repeat a picture already embedded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import KeyframesConfig
from pipeline.describe.keyframes import expand, repeated_frames, select_keyframes
from pipeline.detector import CopyDetector


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


# ---- frames that need no model call ---------------------------------------------------------


def _still(photo: Path, n: int, size=(224, 398)) -> np.ndarray:
    frame = cv2.resize(cv2.imread(str(photo))[..., ::-1], (size[1], size[0]))
    return np.repeat(frame[None], n, axis=0)


def test_a_held_picture_is_embedded_once_and_zero_embeds_every_frame(photos):
    frames = _still(photos["chelsea"], 6)
    noisy = np.clip(frames + np.random.default_rng(0).normal(0, 3, frames.shape), 0, 255)
    noisy = noisy.astype(np.uint8)  # re-encoding noise on a still
    assert repeated_frames(noisy, 2.0).tolist() == [0] * 6
    assert repeated_frames(noisy, 0.0).tolist() == list(range(6))


def test_a_small_moving_inset_on_a_still_picture_is_embedded_every_time(photos):
    """Picture-in-picture over a still background: the copy is the small part that moves."""
    frames = _still(photos["chelsea"], 5)
    inset = cv2.resize(cv2.imread(str(photos["astronaut"])), (48, 40))
    for i, frame in enumerate(frames):
        frame[20 : 20 + 40, 10 + 30 * i : 10 + 30 * i + 48] = inset  # moves 30 px a frame
    assert repeated_frames(frames, 2.0).tolist() == [0, 1, 2, 3, 4]


def test_a_slow_fade_is_embedded_again_once_it_adds_up(photos):
    frames = _still(photos["chelsea"], 8).astype(np.int16)
    faded = np.clip(frames - np.arange(8)[:, None, None, None] * 1, 0, 255).astype(np.uint8)
    source = repeated_frames(faded, 2.5)  # one grey level a frame against the last embedded
    assert source.tolist() == [0, 0, 0, 3, 3, 3, 6, 6]


def test_reused_descriptors_match_what_the_model_says(detector, photos, clips, tmp_path):
    """Described with and without reuse, a video of a held still then motion gets the same
    descriptors to within what the model itself varies between repeats; fewer model calls."""
    from benchmarks.edits import run_ffmpeg

    still, moving, video = tmp_path / "still.mp4", tmp_path / "moving.mp4", tmp_path / "v.mp4"
    scale = "scale=640:360,setsar=1,fps=25,format=yuv420p"
    run_ffmpeg(["-loop", "1", "-i", str(photos["coffee"]), "-t", "6", "-vf", scale, str(still)])
    run_ffmpeg(["-i", str(clips["bikes"]), "-t", "4", "-an", "-vf", scale, str(moving)])
    (tmp_path / "list.txt").write_text(f"file '{still}'\nfile '{moving}'\n")
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy",
                str(video)])  # fmt: skip
    counted = []
    inner = detector.embedder

    class Counting:
        model_id, dim = inner.model_id, inner.dim

        def embed(self, frames):
            counted.append(len(frames))
            return inner.embed(frames)

    views = dataclasses.replace(detector.config.views, reference_grid=0)  # whole frames only
    config = dataclasses.replace(detector.config, views=views)
    reusing = CopyDetector(config, embedder=Counting()).describe(video, views=False)
    spent = sum(counted)
    off = dataclasses.replace(config, embed=dataclasses.replace(config.embed, reuse_diff=0.0))
    counted.clear()
    every = CopyDetector(off, embedder=Counting()).describe(video, views=False)
    assert sum(counted) == len(every) == len(reusing) == 20
    assert spent <= 10, spent  # the still's 12 frames need a call or two, the clip's 8 their own
    sims = (reusing.embeddings * every.embeddings).sum(axis=1)
    assert sims.min() > 0.97, sims.min()
