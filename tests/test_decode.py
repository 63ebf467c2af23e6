"""Decoding: frames sampled by presentation time on CFR and VFR files; bad input rejected."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.describe.decode import (
    DecordReader,
    PyAVReader,
    concat_sampled,
    decode_video,
    pick_frames,
    probe,
    sample_grid,
    target_size,
)
from pipeline.errors import InputError, VideoDecodeError
from tests.helpers import cfr_times, level_for, vfr_times, write_audio_only, write_timed_clip


def test_sample_grid_tiles_the_video():
    centres, starts, ends = sample_grid(3.4, 1.0)
    assert starts.tolist() == [0, 1, 2, 3]
    assert ends.tolist() == pytest.approx([1, 2, 3, 3.4])
    assert centres.tolist() == pytest.approx([0.5, 1.5, 2.5, 3.2])


def test_pick_frames_takes_frame_on_screen_even_out_of_order():
    times = np.array([0.0, 0.1, 0.067, 0.5, 2.0])
    assert pick_frames(times, np.array([0.08, 0.3, 1.0, 5.0])).tolist() == [2, 1, 3, 4]


def test_target_size_keeps_aspect_with_short_side():
    assert target_size(1280, 720, 224) == (398, 224)
    assert target_size(144, 176, 224) == (224, 274)


def _levels(sampled) -> list[int]:
    return [round(f.mean()) for f in sampled.frames]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("fps", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_frames_are_timed_by_presentation_time(tmp_path, config, backend, fps, kind):
    times = cfr_times(8.0, 25) if kind == "cfr" else vfr_times()
    clip = write_timed_clip(tmp_path / f"{kind}.mp4", times)
    cfg = dataclasses.replace(config.decode, backend=backend, fps=fps)
    sampled = decode_video(clip, cfg)
    assert sampled.duration == pytest.approx(8.0, abs=0.05)
    assert len(sampled.frames) == round(8 * fps)
    expected = [level_for(c) for c in sampled.times]
    assert np.allclose(_levels(sampled), expected, atol=4), (_levels(sampled), expected)
    assert sampled.starts[0] == 0 and sampled.ends[-1] == pytest.approx(8.0, abs=0.05)


def test_decord_reader_itself_times_vfr_correctly(tmp_path, config):
    """decord (not the fallback) must get VFR right: we search its timestamps, not indexes."""
    clip = write_timed_clip(tmp_path / "vfr.mp4", vfr_times())
    info = probe(clip, config.decode)
    (sampled,) = DecordReader().windows(clip, info, config.decode, size=10**6)
    assert _levels(sampled) == pytest.approx([level_for(c) for c in sampled.times], abs=4)


def test_average_fps_indexing_would_be_wrong_on_the_vfr_clip():
    """Guards the VFR fixture: it must defeat index = t * average_fps sampling."""
    times = np.array(vfr_times())
    average_fps = len(times) / 8.0
    wrong = [level_for(times[min(len(times) - 1, round(t * average_fps))]) for t in (3.5, 4.5)]
    assert wrong != [level_for(3.5), level_for(4.5)]


def test_real_avi_with_broken_decord_timestamps_falls_back(clips, config):
    """decord returns garbage timestamps on Megamind.avi; the result must still be true."""
    sampled = decode_video(clips["Megamind"], config.decode)
    info = probe(clips["Megamind"], config.decode)
    (reference,) = PyAVReader().windows(clips["Megamind"], info, config.decode, size=10**6)
    assert sampled.duration == pytest.approx(11.3, abs=0.1)
    assert np.array_equal(sampled.frames, reference.frames)


def test_backends_agree_on_real_footage(clips, config):
    for name in ("bikes", "box", "vtest"):
        a = decode_video(clips[name], config.decode)
        b = decode_video(clips[name], dataclasses.replace(config.decode, backend="pyav"))
        assert len(a.frames) == len(b.frames)
        diff = np.abs(a.frames.astype(int) - b.frames.astype(int)).mean()
        assert diff < 12, (name, diff)


# ---- bad input ---------------------------------------------------------------------------


def _reason(path, cfg) -> str:
    with pytest.raises(VideoDecodeError) as info:
        decode_video(path, cfg)
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError)
    return info.value.reason


def test_missing_and_empty_and_directory(tmp_path, config):
    assert _reason(tmp_path / "nope.mp4", config.decode) == "file not found"
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _reason(tmp_path / "empty.mp4", config.decode) == "empty file"
    assert _reason(tmp_path, config.decode) == "not a regular file"


def test_non_video_and_random_bytes(tmp_path, config):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    assert _reason(tmp_path / "notes.mp4", config.decode) == "not a video or corrupt"
    (tmp_path / "noise.avi").write_bytes(np.random.default_rng(0).bytes(100_000))  # seeded
    assert _reason(tmp_path / "noise.avi", config.decode) == "not a video or corrupt"


def test_audio_only(tmp_path, config):
    path = write_audio_only(tmp_path / "tone.m4a")
    assert _reason(path, config.decode) == "audio-only file"


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_real_clip(tmp_path, clips, config, backend):
    data = clips["vtest"].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) // 2])
    cfg = dataclasses.replace(config.decode, backend=backend)
    assert _reason(path, cfg) in ("truncated video", "not a video or corrupt", "corrupt video")


def test_truncated_mp4_without_index(tmp_path, clips, config):
    data = clips["bikes"].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 3])
    assert _reason(path, config.decode) in ("truncated video", "not a video or corrupt")


def test_limits(tmp_path, config):
    clip = write_timed_clip(tmp_path / "c.mp4", cfr_times(3.0, 10))
    short = dataclasses.replace(config.decode, max_duration_s=1.0)
    assert _reason(clip, short) == "duration over limit"
    small = dataclasses.replace(config.decode, max_pixels=100 * 100)
    assert _reason(clip, small) == "resolution over limit"
    tiny = dataclasses.replace(config.decode, max_file_bytes=10)
    assert _reason(clip, tiny) == "file too large"


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]) / 1024


def test_decord_does_not_decode_ahead_while_a_window_is_embedded(tmp_path, photos, config):
    """decord keeps decoding full-size frames past the last one read while the caller is busy
    (dmlc/decord#157): on a long 720p upload that was gigabytes per window. The reader must be
    parked between windows, so a pause costs no memory."""
    from benchmarks.edits import Part, compose

    upload = compose([Part(photos["astronaut"], 40.0, photo=True)], tmp_path / "hd.mp4",
                     canvas=(1280, 720))  # fmt: skip
    cfg = dataclasses.replace(config.decode, fps=1.0)
    windows = DecordReader().windows(upload, probe(upload, cfg), cfg, size=5)
    next(windows)
    before = _rss_mb()
    time.sleep(4)  # the caller embeds the window; unparked, decord reads ~200 MB ahead by now
    grown = _rss_mb() - before
    assert grown < 80, f"{grown:.0f} MB decoded ahead during the pause"
    assert sum(len(w.frames) for w in windows) == 35  # and the rest still reads in order


def test_a_long_video_is_read_forward_with_pyav(tmp_path, photos, config, monkeypatch):
    """decord's whole-file state and per-window seeks cost memory and time on long videos: past
    ``decode.pyav_after_s`` PyAV reads, whether whole or in windows (the same pixels either
    way); shorter videos keep the configured backend (and the benchmark's results)."""
    from benchmarks.edits import Part, compose
    from pipeline.describe import decode

    video = compose([Part(photos["astronaut"], 12.0, photo=True)], tmp_path / "v.mp4")
    used = []
    for cls in (DecordReader, PyAVReader):
        real = cls.windows

        def spy(self, *args, _real=real, **kwargs):
            used.append(self.name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "windows", spy)
    long = dataclasses.replace(config.decode, fps=1.0, pyav_after_s=10.0)
    windows = list(decode.decode_windows(video, long, size=5))
    whole = decode.decode_video(video, long)
    assert used == ["pyav", "pyav"] and [len(w.frames) for w in windows] == [5, 5, 2]
    # a window before the end says how long the video is: it is not taken for the last one
    assert all(abs(w.duration - 12.0) < 0.1 for w in windows)
    np.testing.assert_array_equal(concat_sampled(windows).frames, whole.frames)
    used.clear()
    short = dataclasses.replace(long, pyav_after_s=20.0)
    assert len(decode.decode_video(video, short).frames) == 12 and used == ["decord"]
