"""Distractor elimination: black borders cropped, blank frames weighted 0."""

from __future__ import annotations

import numpy as np

from pipeline.describe.decode import decode_video
from pipeline.describe.suppress import border_box, crop_borders, frame_weights


def test_letterbox_and_pillarbox_are_cropped():
    rng = np.random.default_rng(0)
    frames = np.zeros((5, 100, 160, 3), np.uint8)
    frames[:, 20:80, 30:130] = rng.integers(40, 255, size=(5, 60, 100, 3))
    assert border_box(frames) == (20, 80, 30, 130)
    assert crop_borders(frames).shape == (5, 60, 100, 3)


def test_dark_scene_without_borders_is_not_cropped_away():
    frames = np.full((3, 50, 80, 3), 10, np.uint8)  # a dark shot: no bright row anywhere
    assert crop_borders(frames).shape == frames.shape


def test_blank_frames_get_zero_weight(clips, config):
    frames = decode_video(clips["bikes"], config.decode).frames.copy()
    frames[2] = 0  # a black frame
    frames[5] = 128  # a flat grey card
    weights = frame_weights(frames)
    assert weights[2] == 0 and weights[5] == 0 and weights.sum() == len(frames) - 2


def test_real_padded_copy_is_cropped_to_its_picture(tmp_path, clips, config):
    from benchmarks.edits import Part, compose

    path = compose(
        [Part(clips["bikes"], 3.0, start=1.0, vf="pad=iw:ih*1.6:0:(oh-ih)/2")], tmp_path / "p.mp4"
    )
    frames = decode_video(path, config.decode).frames
    cropped = crop_borders(frames)
    aspect = cropped.shape[2] / cropped.shape[1]
    assert abs(aspect - 640 / 272) < 0.15  # bikes is 640x272 under the bars


def test_generic_weights_fall_with_background_similarity():
    from pipeline.describe.suppress import generic_weights

    rng = np.random.default_rng(0)
    background = rng.normal(size=(10, 32)).astype(np.float32)
    background /= np.linalg.norm(background, axis=1, keepdims=True)
    unrelated = rng.normal(size=(1, 32)).astype(np.float32)
    unrelated /= np.linalg.norm(unrelated)
    frames = np.concatenate([background[:1], unrelated])
    weights = generic_weights(frames, background, k=1, low=0.5, high=0.7)
    assert weights.tolist() == [0.0, 1.0]  # a background frame itself; a frame unlike any
    assert generic_weights(frames, None, 1, 0.5, 0.7).tolist() == [1.0, 1.0]


def test_borders_and_blank_weights_match_plain_numpy():
    """The OpenCV reductions behind border_box and frame_weights give numpy's answers: row and
    column sums exactly, grey-level spread to rounding (uniform, near-threshold and busy frames)."""
    from pipeline.describe.suppress import _rgb_line_sums

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 90, 160, 3), dtype=np.uint8)
    frames[0] = 17  # uniform
    frames[1] = rng.integers(100, 121, (90, 160, 3))  # std near the 6-level threshold
    frames[2, :20] = 0  # a black band
    rows, cols = _rgb_line_sums(frames)
    wide = frames.astype(np.int64).sum(axis=3)
    assert (rows == wide.sum(axis=2)).all() and (cols == wide.sum(axis=1)).all()
    std = frames.reshape(4, -1).astype(np.float64).std(axis=1)
    assert (frame_weights(frames) == (std >= 6.0)).all()
    assert frame_weights(frames)[0] == 0 and frame_weights(frames)[3] == 1
