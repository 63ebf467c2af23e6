"""The soundtrack as evidence, on real recorded music (Debian hyperrogue-music) and real
footage: fingerprints, the catalog's postings, fusion with the picture, the policy, streaming
and live streams, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.edits import run_ffmpeg
from pipeline.audio.decode import AudioReader, read_audio
from pipeline.audio.fingerprint import (
    HOP_S,
    QUERY,
    SAMPLE_RATE,
    AudioPrint,
    StreamingFingerprinter,
    fingerprint,
)
from pipeline.audio.fuse import fuse
from pipeline.audio.match import AudioVotes
from pipeline.audio.postings import Postings
from pipeline.config import load_config
from pipeline.detector import CopyDetector
from pipeline.errors import VideoDecodeError
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.index.descriptor_file import (
    DescriptorFileError,
    read_descriptor_file,
    write_descriptor_file,
)
from pipeline.records import Match, Segment
from pipeline.review.policy import passes

REFERENCE_S = 40.0


def _excerpt(track: Path, start: float, seconds: float, out: Path, *codec: str) -> Path:
    run_ffmpeg(["-ss", str(start), "-t", str(seconds), "-i", str(track), *codec, str(out)])
    return out


def _with_sound(picture: Path, sound: Path, out: Path, seconds: float, *codec: str) -> Path:
    """``picture``'s frames (looped) under ``sound``, ``seconds`` long."""
    run_ffmpeg(["-stream_loop", "-1", "-i", str(picture), "-i", str(sound), "-map", "0:v",
                "-map", "1:a", "-t", str(seconds), "-vf", "scale=320:-2,fps=25", "-c:v",
                "libx264", "-preset", "ultrafast", *(codec or ("-c:a", "aac")), str(out)],
               )  # fmt: skip
    return out


def _votes(reference: AudioPrint, query: AudioPrint, num: int = 7) -> AudioVotes:
    postings = Postings.build([(num, reference.hashes, reference.times)])
    positions, nums, times = postings.lookup(query.hashes)
    votes = AudioVotes()
    votes.add(query.times[positions].astype(np.int64), nums, times)
    return votes


def test_a_low_bitrate_mono_excerpt_is_found_at_its_offset_and_other_music_is_not(
    tracks, tmp_path, config
):
    reference = read_audio(tracks["hr3-caves"])
    copy = _excerpt(tracks["hr3-caves"], 30.0, 15.0, tmp_path / "copy.m4a",
                    "-ac", "1", "-ar", "22050", "-c:a", "aac", "-b:a", "24k")  # fmt: skip
    found = _votes(reference, read_audio(copy, density=QUERY)).segments(7, config.audio, 15.0)
    assert len(found) == 1
    (segment,) = found
    assert segment.modality == "audio" and segment.score > 0.9
    assert abs(segment.reference_start - segment.query_start - 30.0) < 0.1  # the offset
    assert segment.query_start < 0.5 and segment.query_end > 14.0
    for name in ("hr3-desert", "hr3-jungle", "hr-savino-palace"):
        other = _excerpt(tracks[name], 30.0, 15.0, tmp_path / f"{name}.mp3")
        heard = read_audio(other, density=QUERY)
        assert _votes(reference, heard).segments(7, config.audio, 15.0) == []


def test_a_soundtrack_fingerprinted_in_pieces_gives_the_hashes_of_the_whole(tracks):
    reader = AudioReader(tracks["hr3-icyland"], density=QUERY)
    samples = reader.samples(None)[: 50 * SAMPLE_RATE]
    whole = fingerprint(samples, density=QUERY)
    pieces, streaming = [], StreamingFingerprinter(QUERY)
    cuts = np.sort(np.random.default_rng(3).integers(0, len(samples), 7))
    for part in np.split(samples, cuts):
        pieces.append(streaming.push(part))
    pieces.append(streaming.push(np.zeros(0, np.float32), last=True))
    joined = AudioPrint.concat(pieces)
    assert len(whole) > 1000
    assert np.array_equal(np.sort(joined.times), np.sort(whole.times))
    assert np.array_equal(np.sort(joined.hashes), np.sort(whole.hashes))


def test_postings_look_up_skip_merge_and_survive_a_round_trip(tmp_path):
    a = Postings.build([(1, np.array([5, 3, 9], np.int32), np.array([0, 1, 2], np.int32))])
    b = Postings.build([(2, np.array([3, 3], np.int32), np.array([7, 8], np.int32))])
    merged = Postings.merge([a, b])
    positions, nums, times = merged.lookup(np.array([3, 4, 9], np.int32))
    assert sorted(zip(positions.tolist(), nums.tolist(), times.tolist(), strict=True)) == [
        (0, 1, 1), (0, 2, 7), (0, 2, 8), (2, 1, 2),
    ]  # fmt: skip
    assert merged.lookup(np.array([3], np.int32), skip={2})[1].tolist() == [1]
    assert merged.without({1}).lookup(np.array([9], np.int32))[0].size == 0
    merged.save(tmp_path / "p.audio.npy")
    loaded = Postings.load(tmp_path / "p.audio.npy")
    assert isinstance(loaded.table, np.memmap) and np.array_equal(loaded.table, merged.table)


def test_votes_break_at_silence_and_a_repeated_phrase_is_an_alternative(config):
    cols = np.arange(0, round(10 / HOP_S), 2)  # 10 s of agreeing hashes, twice, 20 s apart
    query = np.concatenate([cols, cols + round(30 / HOP_S)]).astype(np.int64)
    votes = AudioVotes()
    votes.add(query, np.full(len(query), 4, np.int32), (query + round(50 / HOP_S)).astype(np.int32))
    first, second = votes.segments(4, config.audio, 45.0)
    assert first.query_start == 0 and abs(first.query_end - 10.3) < 0.1
    assert abs(second.query_start - 30) < 0.1 and abs(first.reference_start - 50) < 0.1
    # The same 10 s also heard 12 s later in the reference (music that repeats a phrase).
    repeat = AudioVotes()
    for shift in (50, 62):
        repeat.add(cols.astype(np.int64), np.full(len(cols), 4, np.int32),
                   (cols + round(shift / HOP_S)).astype(np.int32))  # fmt: skip
    (only,) = repeat.segments(4, config.audio, 10.0)
    assert len(only.alternatives) == 1


def test_the_sound_joins_the_picture_where_they_agree_and_stands_alone_elsewhere():
    picture = Segment(10, 20, 110.5, 120.5, 0.62)
    sound = Segment(8, 24, 108, 124, 0.9, modality="audio")
    elsewhere = Segment(40, 50, 300, 310, 0.8, modality="audio")
    (joined, alone) = fuse([picture], [sound, elsewhere])
    assert joined.modality == "both" and (joined.query_start, joined.query_end) == (8, 24)
    assert (joined.reference_start, joined.reference_end) == (108, 124) and joined.score == 0.9
    assert alone == elsewhere
    # A looping picture placed a period off: the better-scored sound gives the place.
    off = Segment(10, 20, 60, 70, 0.6)
    (kept,) = fuse([off], [Segment(10, 20, 110, 120, 0.95, modality="audio")])
    assert kept.reference_start == 110 and kept.modality == "audio"
    assert fuse([picture], [], 100.0) == [picture]


def test_the_policy_can_require_or_weigh_either_kind_of_evidence(config):
    heard = Match("r", "/r.mp4", 0.6, [Segment(0, 20, 0, 20, 0.6, modality="audio")])
    seen = Match("r", "/r.mp4", 0.6, [Segment(0, 20, 0, 20, 0.6)])
    amounts = {"copied_s": 20.0, "upload_share": 1.0, "reference_share": 0.5}
    policy = config.policy
    assert passes(policy, heard, amounts) and passes(policy, seen, amounts)
    video_only = dataclasses.replace(policy, require="video")
    assert not passes(video_only, heard, amounts) and passes(video_only, seen, amounts)
    assert not passes(dataclasses.replace(policy, require="both"), seen, amounts)
    halved = dataclasses.replace(policy, audio_weight=0.5)
    assert not passes(halved, heard, amounts) and passes(halved, seen, amounts)


# ---- the whole path: real files, a real index ----------------------------------------------


@pytest.fixture(scope="module")
def sounded(tmp_path_factory, clips, tracks):
    """An index of a clip under music and a reference that is only sound, and queries."""
    root = tmp_path_factory.mktemp("sound")
    music = _excerpt(tracks["hr3-mirror"], 20.0, REFERENCE_S, root / "music.wav")
    refs = root / "refs"
    refs.mkdir()
    _with_sound(clips["tree"], music, refs / "treemusic.mp4", REFERENCE_S)
    song = tracks["hr3-laboratory"]
    _excerpt(song, 10.0, REFERENCE_S, refs / "song.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    detector = CopyDetector(load_config())
    index = ReferenceIndex(root / "index")
    for path in sorted(refs.iterdir()):
        index.add([(detector.describe(path, views=False), file_sha256(path))])
    return root, detector, index


def test_the_soundtrack_under_other_pictures_is_found_by_its_sound(sounded, clips):
    root, detector, index = sounded
    sound = _excerpt(root / "refs" / "treemusic.mp4", 8.0, 15.0, root / "cut.wav")
    query = _with_sound(clips["bikes"], sound, root / "q_bikes.mp4", 15.0,
                        "-ac", "1", "-ar", "22050", "-c:a", "aac", "-b:a", "32k")  # fmt: skip
    result = detector.query(query, index)
    assert result.audio == "ok" and result.to_dict()["query"]["audio"] == "ok"
    (match,) = result.matches
    (segment,) = match.segments
    assert match.reference_id == "treemusic" and segment.modality == "audio"
    assert abs(segment.query_start - 0.0) < 0.5 and abs(segment.query_end - 15.0) < 1.0
    assert abs(segment.reference_start - 8.0) < 0.5
    assert result.to_dict()["matches"][0]["segments"][0]["modality"] == "audio"
    # `copyspan match` compares the two files, sound included, with no index.
    (direct,) = detector.match(query, root / "refs" / "treemusic.mp4").matches
    assert direct.segments[0].modality == "audio"
    assert abs(direct.segments[0].reference_start - 8.0) < 0.5
    # The picture alone finds nothing: it is the sound that carries this copy.
    picture_only = CopyDetector(
        load_config(overrides={"audio": {"enabled": False}}), embedder=detector.embedder
    )
    silent_result = picture_only.query(query, index)
    assert silent_result.matches == [] and silent_result.audio is None


def test_a_file_that_is_only_sound_is_a_reference_and_a_query(sounded):
    root, detector, index = sounded
    assert index.get("song").frames == 0
    query = _excerpt(root / "refs" / "song.mp3", 12.0, 10.0, root / "q_song.m4a", "-c:a", "aac")
    (match,) = detector.query(query, index).matches
    assert match.reference_id == "song" and abs(match.segments[0].reference_start - 12.0) < 0.5
    hush = root / "hush.m4a"  # silence gives no landmark: nothing to match it by
    run_ffmpeg(
        ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "3", "-c:a", "aac", str(hush)]
    )
    with pytest.raises(VideoDecodeError, match=r"audio-only file.*no fingerprint: silent"):
        detector.describe(hush)
    short = CopyDetector(
        load_config(overrides={"decode": {"max_duration_s": 5.0}}), embedder=detector.embedder
    )
    with pytest.raises(VideoDecodeError, match="duration over limit"):  # as a long video is
        short.describe(query)


def test_no_audio_silence_and_corrupt_packets_leave_the_picture_path_alone(sounded, clips):
    root, detector, index = sounded
    assert detector.query(clips["bikes"], index).audio == "no audio"
    hushed = root / "hushed.mp4"
    run_ffmpeg(["-i", str(clips["bikes"]), "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
                "-t", "5", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                str(hushed)])  # fmt: skip
    result = detector.query(hushed, index)
    assert result.audio == "silent" and result.matches == []
    # The reference itself with damaged sound packets: the picture still finds it.
    damaged = root / "damaged.mp4"
    run_ffmpeg(["-i", str(root / "refs" / "treemusic.mp4"), "-t", "20", "-c:v", "copy",
                "-c:a", "copy", "-bsf:a", "noise=amount=2000", str(damaged)])  # fmt: skip
    result = detector.query(damaged, index)
    assert "corrupt packets" in result.audio
    (match,) = result.matches
    assert match.reference_id == "treemusic" and match.segments[0].modality in ("video", "both")


def test_descriptor_files_carry_the_sound_and_refuse_another_fingerprint(sounded, tmp_path):
    root, detector, _ = sounded
    song = detector.describe(root / "refs" / "song.mp3", views=False)
    path = write_descriptor_file(tmp_path / "song.npz", song, "abc")
    back = read_descriptor_file(path).features
    assert len(back) == 0 and np.array_equal(back.audio.hashes, song.audio.hashes)
    data = dict(np.load(path))
    data["audio_fingerprint"] = np.array("landmarks-v0")
    np.savez(tmp_path / "old.npz", **data)
    with pytest.raises(DescriptorFileError, match="audio fingerprint"):
        read_descriptor_file(tmp_path / "old.npz")


def test_a_long_upload_alerts_on_its_sound_before_it_ends(sounded, clips):
    root, _, index = sounded
    config = load_config(overrides={"streaming": {"window_s": 10.0}})
    detector = CopyDetector(config)
    sound = _excerpt(root / "refs" / "treemusic.mp4", 2.0, 12.0, root / "early.wav")
    other = _excerpt(root / "refs" / "song.mp3", 0.0, 0.1, root / "blip.wav")  # not a copy
    long_sound = root / "long.wav"
    run_ffmpeg(["-i", str(sound), "-i", str(other), "-filter_complex",
                "[0][1]concat=n=2:v=0:a=1,apad=whole_dur=40", str(long_sound)])  # fmt: skip
    query = _with_sound(clips["bikes"], long_sound, root / "q_long.mp4", 40.0)
    early: list[tuple[float, str]] = []

    def on_window(streaming, changed):
        for match, _ in streaming.matches_of(changed):
            early.append((float(streaming.last.ends[-1]), match.segments[0].modality))

    result = detector.query(query, index, on_window=on_window)
    assert early and early[0][0] <= 20.0 + 0.5 and early[0][1] == "audio"
    assert [m.reference_id for m in result.matches] == ["treemusic"]


def test_a_live_stream_matches_its_sound(sounded, clips, tmp_path):
    from pipeline.streaming.live import LiveStream

    root, detector, index = sounded
    sound = _excerpt(root / "refs" / "treemusic.mp4", 5.0, 14.0, tmp_path / "aired.wav")
    source = _with_sound(clips["bikes"], sound, tmp_path / "aired.mp4", 14.0)
    hls = tmp_path / "hls"
    hls.mkdir()
    run_ffmpeg(["-i", str(source), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
                "-c:a", "aac", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0",
                "-hls_playlist_type", "vod", str(hls / "live.m3u8")])  # fmt: skip
    config = load_config(overrides={"streaming": {"live_window_s": 4.0, "live_stall_s": 5.0}})
    live_detector = CopyDetector(config, embedder=detector.embedder)
    stream = LiveStream(live_detector.describer, live_detector.stages, index,
                        hls / "live.m3u8", tmp_path / "state.json")  # fmt: skip
    alerts: list[dict] = []
    stream.run(alerts.append)
    assert alerts and alerts[-1]["reference_id"] == "treemusic"
    segment = alerts[-1]["segments"][0]
    assert segment["modality"] == "audio" and abs(segment["reference_start"] - 5.0) < 0.6
    assert json.loads((tmp_path / "state.json").read_text())["last_sequence"] >= 6


def test_compaction_and_removal_keep_the_sound_searchable_and_forget_the_removed(tmp_path):
    config = load_config(overrides={"index": {"kind": "ivfpq", "min_train_vectors": 256,
                                              "segment_vectors": 1500}}).index  # fmt: skip
    from tests.helpers import synthetic_features

    index = ReferenceIndex(tmp_path, config=config)
    rng = np.random.default_rng(5)
    prints = {}
    for i in range(8):
        ref = synthetic_features(f"r{i}", 300, seed=i)
        ref.audio = AudioPrint(rng.integers(0, 1 << 22, 2000).astype(np.int32),
                               np.arange(2000, dtype=np.int32) * 3)  # fmt: skip
        prints[ref.video_id] = ref.audio
        index.add([(ref, ref.video_id)])
    index.compact()
    assert any(s.coded for s in index.catalog.segments())
    assert list((tmp_path / "segments").glob("*.audio.npy"))

    def heard(video_id: str) -> set[int]:
        _, nums, _ = index.search_audio(prints[video_id].hashes[:200])
        return set(nums.tolist())

    gone = index.get("r3").num
    assert gone in heard("r3")
    index.remove(["r3"])
    assert gone not in heard("r3")  # its tombstone hides its postings at once
    assert index.info()["audio"]["postings_bytes"] > 0
    index.compact()  # the tombstone goes, and with it r3's postings
    assert gone not in heard("r3") and index.get("r5").num in heard("r5")


def test_the_report_timeline_has_a_sound_lane_for_what_the_sound_found():
    from pipeline.review.report.figures import timeline_svg

    seen = {"query_start": 0, "query_end": 5, "reference_start": 3, "reference_end": 8}
    heard = {**seen, "modality": "audio"}
    assert 'class="sound"' in timeline_svg([heard], 10.0, 20.0)
    assert 'class="sound"' in timeline_svg([{**seen, "modality": "both"}], 10.0, 20.0)
    assert 'class="sound"' not in timeline_svg([seen], 10.0, 20.0)  # the picture's alone
