"""Long uploads and live streams: decoding and describing in windows, copies known before the
end, a live HLS stream followed as ffmpeg writes it in real time."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.edits import Part, compose
from benchmarks.footage import ffmpeg_exe
from pipeline.config import load_config
from pipeline.describe.decode import concat_sampled, decode_video, decode_windows
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.streaming.hls import PlaylistFollower, parse_playlist
from tests.helpers import vfr_times, write_timed_clip

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_windows_put_together_are_the_whole_video(tmp_path, config, clips, backend):
    timing = write_timed_clip(tmp_path / "vfr.mp4", vfr_times())
    decode = dataclasses.replace(config.decode, backend=backend)
    for path in (clips["bikes"], timing):
        whole = decode_video(path, decode)
        parts = list(decode_windows(path, decode, size=5))
        assert len(parts) > 1 and all(len(p.frames) <= 5 for p in parts)
        assert [p.first for p in parts] == list(range(0, len(whole.frames), 5))
        joined = concat_sampled(parts)
        np.testing.assert_array_equal(joined.frames, whole.frames)
        np.testing.assert_allclose(joined.times, whole.times)
        np.testing.assert_allclose(joined.starts, whole.starts)
        np.testing.assert_allclose(joined.ends[-1], whole.ends[-1])


@pytest.fixture(scope="module")
def scene(tmp_path_factory, clips, photos, detector):
    """An index of real references and a 40 s query whose copy of ``tree`` ends at 14 s."""
    root = tmp_path_factory.mktemp("streaming")
    index = ReferenceIndex(root / "index")
    refs = [clips[n] for n in ("bikes", "tree", "cup")]
    index.add([(detector.describe(p, views=False), file_sha256(p)) for p in refs])
    index.close()
    compose(
        [
            Part(photos["coffee"], 6.0, photo=True),
            Part(clips["tree"], 8.0, start=4.0),
            Part(photos["astronaut"], 14.0, photo=True),
            Part(photos["rocket"], 12.0, photo=True),
        ],
        root / "query.mp4",
    )
    return root


def test_describing_in_windows_gives_the_same_descriptors(config, clips):
    from pipeline.detector import CopyDetector

    small = load_config(overrides={"streaming": {"window_s": 4.0}})
    windowed = CopyDetector(small).describe_windows(clips["bikes"], views=False)
    parts = list(windowed)
    assert len(parts) == 3 and all(len(p) <= 8 for p in parts)  # 2 fps: 8 frames a window
    whole = CopyDetector(config).describe(clips["bikes"], views=False)
    joined = type(whole).concat(parts)
    np.testing.assert_allclose(joined.embeddings, whole.embeddings, atol=2e-3)
    np.testing.assert_allclose(joined.starts, whole.starts)


def test_a_copy_is_known_before_the_upload_ends(scene, config, detector):
    from pipeline.detector import CopyDetector

    small = CopyDetector(
        load_config(overrides={"streaming": {"window_s": 6.0}}), embedder=detector.embedder
    )
    seen: list[tuple[float, list[str]]] = []

    def on_window(streaming, changed) -> None:
        aired = float(streaming.last.ends[-1])
        seen.append((aired, [streaming.refs[n].id for n in changed]))

    with ReferenceIndex(scene / "index", create=False) as index:
        streamed = small.query(scene / "query.mp4", index, on_window)
        whole = detector.query(scene / "query.mp4", index)
    first = next(aired for aired, ids in seen if "tree" in ids)
    assert first <= 24.0 < seen[-1][0]  # final within two windows of the copy's end (14 s)
    assert [m.reference_id for m in streamed.matches] == ["tree"]
    assert [m.reference_id for m in whole.matches] == ["tree"]
    (a,), (b,) = streamed.matches[0].segments, whole.matches[0].segments
    assert abs(a.query_start - b.query_start) <= 0.5 and abs(a.query_end - b.query_end) <= 0.5
    assert abs(a.reference_start - 4.0) <= 1.0 and abs(a.query_start - 6.0) <= 1.0


def _write_playlist(path: Path, first: int, segments: list[str], ended: bool) -> None:
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for name in segments:
        lines += ["#EXTINF:2.000,", name]
    path.write_text("\n".join([*lines, *(["#EXT-X-ENDLIST"] if ended else [])]) + "\n")


def test_playlist_follower_survives_rewrites_gaps_and_stalls(tmp_path):
    playlist = tmp_path / "live.m3u8"
    for n in range(6):
        (tmp_path / f"s{n}.ts").write_bytes(b"x")
    _write_playlist(playlist, 0, ["s0.ts", "s1.ts"], ended=False)
    steps = iter([
        lambda: _write_playlist(playlist, 0, ["s0.ts", "s1.ts", "gone.ts", "s3.ts"], False),
        lambda: playlist.write_text("garbage"),  # half-written: retried
        lambda: _write_playlist(playlist, 0, ["s4.ts"], False),  # rewritten from 0
        lambda: None,
    ])  # fmt: skip

    def sleep(_seconds) -> None:
        next(steps, lambda: None)()

    follower = PlaylistFollower(playlist, poll_s=0.01, stall_s=0.3, sleep=sleep)
    got = [(s.sequence, s.path.name, s.start) for s in follower.segments()]
    assert got == [(0, "s0.ts", 0.0), (1, "s1.ts", 2.0), (3, "s3.ts", 6.0), (0, "s4.ts", 8.0)]
    assert follower.reason.startswith("no new segment")
    assert parse_playlist("#EXTM3U\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n", tmp_path).ended
    with pytest.raises(ValueError):
        parse_playlist("not a playlist", tmp_path)


def test_a_live_stream_alerts_while_it_airs_and_resumes(scene, tmp_path):
    """ffmpeg writes a real-time HLS stream of the query; `copyspan live` follows it."""
    out = tmp_path / "hls"
    out.mkdir()
    ffmpeg = subprocess.Popen(
        [ffmpeg_exe(), "-loglevel", "error", "-re", "-i", str(scene / "query.mp4"), "-an",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "hls", "-hls_time", "2",
         "-hls_list_size", "0", str(out / "live.m3u8")]
    )  # fmt: skip
    config = tmp_path / "live.yaml"
    config.write_text("streaming:\n  live_window_s: 6.0\n  live_poll_s: 0.5\n  live_stall_s: 20\n")
    command = [sys.executable, "-m", "workers.cli", "live", str(out / "live.m3u8"), "--index",
               str(scene / "index"), "--config", str(config), "--json"]  # fmt: skip
    try:
        while not (out / "live.m3u8").exists():
            time.sleep(0.1)
        started = time.monotonic()
        live = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        line = live.stdout.readline()
        alerted = time.monotonic() - started
        rest, _ = live.communicate(timeout=120)
    finally:
        ffmpeg.wait(timeout=120)
    alert = json.loads(line)
    assert alert["reference_id"] == "tree" and alert["stage"] == "live"
    (segment,) = alert["segments"]
    assert abs(segment["query_start"] - 6.0) <= 1.0 and abs(segment["query_end"] - 14.0) <= 1.5
    assert alerted <= 14.0 + 30.0  # within 30 s of media time after the copy aired
    assert live.returncode == 0 and not rest.strip()  # one copy, one alert
    # Restarted on the finished stream: it resumes after its last segment; nothing new.
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == ""
    state = json.loads((out / ".copyspan-live-live.json").read_text())
    assert state["last_sequence"] >= 18 and alert["alert_id"] in state["published"]


def test_a_corrupt_live_segment_is_a_gap_and_the_stream_goes_on(scene, tmp_path):
    out = tmp_path / "hls"
    out.mkdir()
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(scene / "query.mp4"), "-an", "-c:v",
         "libx264", "-preset", "ultrafast", "-g", "25", "-f", "hls", "-hls_time", "2",
         "-hls_list_size", "0", str(out / "done.m3u8")],
        check=True,
    )  # fmt: skip
    segments = sorted(out.glob("done*.ts"))
    segments[-2].write_bytes(b"\x00" * 100)  # well after the copy
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "live", str(out / "done.m3u8"), "--index",
         str(scene / "index"), "--json", "-v"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unreadable" in result.stderr
    # One alert: the copy also aligns with the tree's crops, merged into the tree's match.
    (alert,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert alert["reference_id"] == "tree"
