"""Decoding: sample frames at a fixed rate by presentation timestamps.

Two backends share one contract (``VideoReader``): decord (default, fast) and PyAV. decord is
checked for broken timestamps (seen on real AVI files) and any decord failure falls back to
PyAV, so that a file either decodes with true times or fails with one ``VideoDecodeError``.
A video longer than ``decode.pyav_after_s`` (a long upload) is read with PyAV, which reads forward.

Sampling grid: with rate ``fps`` the video is cut into spans ``[k/fps, (k+1)/fps)`` tiling
``[0, duration]``; span k is represented by the frame on screen at its centre. Reported times
are therefore off by at most half a span.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import DecodeConfig
from pipeline.errors import VideoDecodeError, short_reason
from pipeline.records import NativeFrames, SampledFrames

log = logging.getLogger(__name__)

THUMB_SIDE = 32  # native-frame thumbnails are THUMB_SIDE x THUMB_SIDE RGB: layout and colour
MAX_NATIVE_FRAMES = 20000  # a video with more native frames keeps none (bounds memory: 60 MB)


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says, read before any frame is decoded."""

    width: int
    height: int
    duration: float  # seconds the header promises; 0 when it does not say
    fps: float  # average frame rate from the header; 0 when unknown

    def check_complete(self, path: Path, decoded_end: float) -> None:
        """A file whose frames stop well before the header's promise was cut short."""
        if self.duration > 0 and decoded_end < 0.9 * self.duration - 1.0:
            raise VideoDecodeError(
                path,
                "truncated video",
                f"frames end at {decoded_end:.1f}s of {self.duration:.1f}s",
            )


class VideoReader(Protocol):
    """A decoding backend. ``windows`` may raise ``VideoDecodeError`` or any backend error;
    it yields the sampled frames in order, ``size`` at a time, and skips the first ``skip``."""

    name: str

    def windows(
        self, path: Path, info: VideoInfo, config: DecodeConfig, size: int, skip: int = 0
    ) -> Iterator[SampledFrames]: ...


def check_file(path: Path, config: DecodeConfig) -> None:
    """Reject what is plainly not a readable video file before touching a decoder."""
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise VideoDecodeError(path, "empty file")
    if size > config.max_file_bytes:
        raise VideoDecodeError(path, "file too large", f"{size} > {config.max_file_bytes} bytes")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "file not readable")


def probe(path: Path, config: DecodeConfig) -> VideoInfo:
    """Read the header with PyAV and enforce the configured limits."""
    import av

    check_file(path, config)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                kind = "audio-only file" if container.streams.audio else "no video stream"
                raise VideoDecodeError(path, kind)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate) if stream.average_rate else 0.0
            duration = _stream_duration(container, stream)
            if stream.frames and fps:  # AVI headers keep the full frame count after a cut
                duration = max(duration, stream.frames / fps)
    except VideoDecodeError:
        raise
    except Exception as exc:  # PyAV raises many error types for unreadable input
        raise VideoDecodeError(path, "not a video or corrupt", short_reason(exc)) from exc
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, "video has no frame size")
    if width * height > config.max_pixels:
        raise VideoDecodeError(
            path, "resolution over limit", f"{width}x{height} > {config.max_pixels} pixels"
        )
    if duration > config.max_duration_s:
        raise VideoDecodeError(
            path, "duration over limit", f"{duration:.1f}s > {config.max_duration_s:.1f}s"
        )
    return VideoInfo(width=width, height=height, duration=duration, fps=fps)


def _stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Output (width, height) with the shorter side at ``short_side``, aspect kept, even."""
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_grid(duration: float, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, starts and ends of the spans that tile ``[0, duration]`` at rate ``fps``."""
    # A tail under a tenth of a span (rounding of the last frame's duration) joins the span
    # before it rather than getting a frame of its own.
    count = max(1, math.ceil(duration * fps - 0.1))
    starts = np.arange(count, dtype=np.float64) / fps
    ends = np.minimum(starts + 1.0 / fps, duration)
    ends[-1] = max(duration, starts[-1])
    centres = (starts + ends) / 2
    return centres, starts, ends


def pick_frames(frame_times: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each centre: the last frame starting at or before it."""
    order = np.argsort(frame_times, kind="stable")
    sorted_times = frame_times[order]
    pos = np.searchsorted(sorted_times, centres, side="right") - 1
    return order[np.clip(pos, 0, len(order) - 1)]


class DecordReader:
    name = "decord"

    def windows(
        self, path: Path, info: VideoInfo, config: DecodeConfig, size: int, skip: int = 0
    ) -> Iterator[SampledFrames]:
        import decord

        width, height = target_size(info.width, info.height, config.short_side)
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)
        count = len(reader)
        if count == 0:
            raise _Mistimed("decord found no frames")
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        starts_, ends_ = stamps[:, 0], stamps[:, 1]
        if (
            not np.all(np.isfinite(stamps))
            or starts_.min() < -1e-3
            or np.any(np.diff(starts_) < -1e-3)
        ):
            raise _Mistimed("decord returned invalid frame timestamps")
        duration = float(ends_.max())
        info.check_complete(path, duration)
        grid = sample_grid(duration, config.fps)
        indices = pick_frames(starts_, grid[0])
        for first in range(skip, len(indices), size):
            chunks = []
            for lo in range(first, min(first + size, len(indices)), config.batch_frames):
                batch = indices[lo : min(lo + config.batch_frames, first + size)].tolist()
                chunks.append(reader.get_batch(batch).asnumpy())
            # decord goes on decoding ahead of the last frame read while the caller embeds this
            # window, keeping every full-size frame: 2.5 GB in 30 s of a 720p upload
            # (dmlc/decord#157, #208). Parking the reader at the start stops that; the next
            # window's first read seeks to its keyframe, as any window's read does.
            reader.seek(0)
            rows = slice(first, first + sum(len(c) for c in chunks))
            yield _sampled(path, np.concatenate(chunks), duration, info, grid, rows)


class Scaler:
    """PyAV frames as RGB arrays of a given size, one scaler per output size for a whole read:
    ``frame.to_ndarray(width=...)`` builds one per frame, which made 32x32 thumbnails cost
    more than decoding the frames (the pixels are the same)."""

    def __init__(self) -> None:
        self.by_size: dict[tuple[int, int], object] = {}

    def __call__(self, frame, width: int, height: int) -> np.ndarray:
        scaler = self.by_size.get((width, height))
        if scaler is None:
            from av.video.reformatter import VideoReformatter

            scaler = self.by_size[(width, height)] = VideoReformatter()
        return scaler.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()


class PyAVReader:
    name = "pyav"

    def __init__(self) -> None:
        self.rgb = Scaler()

    def windows(
        self,
        path: Path,
        info: VideoInfo,
        config: DecodeConfig,
        size: int,
        skip: int = 0,
        native: bool = False,
    ) -> Iterator[SampledFrames]:
        """As ``VideoReader.windows``; ``native``: also keep a thumbnail of every decoded
        frame, attached to the window when the video is one window of at most
        ``MAX_NATIVE_FRAMES`` frames (it costs a twentieth of the decode)."""
        import av

        width, height = target_size(info.width, info.height, config.short_side)
        # One pass over the stream. Span k takes the latest frame starting at or before its
        # centre (the first frame when none does). Only chosen frames are converted, so memory
        # holds one window of sampled frames, never the decoded stream.
        native_times: list[float] = []
        native_thumbs: list[np.ndarray] = []
        picked: list[np.ndarray] = []
        done = 0  # sampled frames before ``picked`` (yielded or skipped)
        best = best_rgb = None
        best_t = -math.inf
        last_end = 0.0
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            step = 1.0 / float(stream.average_rate) if stream.average_rate else 1 / 25
            for count, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else count * step
                if t > config.max_duration_s:
                    raise VideoDecodeError(path, "duration over limit", f"frames past {t:.0f}s")
                if native:
                    native_times.append(t)
                    native_thumbs.append(self.rgb(frame, THUMB_SIDE, THUMB_SIDE))
                    if len(native_times) > MAX_NATIVE_FRAMES:
                        native, native_times, native_thumbs = False, [], []
                while (done + len(picked) + 0.5) / config.fps < t:
                    if best is None:  # the video starts after this centre: use its first frame
                        best, best_t = frame, t
                    if done + len(picked) < skip:  # delivered before (a decord fallback)
                        done += 1
                        continue
                    if best_rgb is None:
                        best_rgb = self.rgb(best, width, height)
                    picked.append(best_rgb)
                    if len(picked) == size:  # times are known: spans end at the next centre
                        yield _sampled_open(path, np.stack(picked), done, info, config.fps)
                        done, picked = done + size, []
                        native, native_times, native_thumbs = False, [], []  # not one window
                if t >= best_t:  # slightly out-of-order timestamps never move backwards
                    best, best_t, best_rgb = frame, t, None
                last_end = max(last_end, t + step)
        if best is None:
            raise VideoDecodeError(path, "no decodable video frames")
        info.check_complete(path, last_end)
        grid = sample_grid(last_end, config.fps)
        count = len(grid[0])
        picked = picked[: max(0, count - done)]
        while done + len(picked) < count:
            if best_rgb is None:
                best_rgb = self.rgb(best, width, height)
            picked.append(best_rgb)
        if picked:
            sampled = _sampled(path, np.stack(picked), last_end, info, grid, slice(done, count))
            if native and done == 0 and native_times:
                times = np.asarray(native_times, np.float64)
                order = np.argsort(times, kind="stable")  # slightly out-of-order timestamps
                thumbs = np.stack(native_thumbs)[order]
                sampled = dataclasses.replace(sampled, native=NativeFrames(times[order], thumbs))
            yield sampled


def _sampled(
    path: Path, frames: np.ndarray, duration: float, info: VideoInfo, grid, rows: slice
) -> SampledFrames:
    """Frames picked for the spans ``rows`` of the sampling ``grid``, with their times."""
    centres, starts, ends = (part[rows] for part in grid)
    return SampledFrames(
        path=str(path),
        frames=frames,
        times=centres,
        starts=starts,
        ends=ends,
        duration=duration,
        native_fps=info.fps,
        width=info.width,
        height=info.height,
        first=rows.start,
    )


def _sampled_open(path: Path, frames: np.ndarray, first: int, info: VideoInfo, fps: float):
    """A window before the end of the video (PyAV learns the duration only at the end): its
    spans are whole sampling periods, its duration the header's (at least what it covers), so
    a window is known not to be the last one."""
    starts = (first + np.arange(len(frames), dtype=np.float64)) / fps
    ends = starts + 1.0 / fps
    return SampledFrames(
        path=str(path), frames=frames, times=(starts + ends) / 2, starts=starts, ends=ends,
        duration=max(float(ends[-1]), info.duration), native_fps=info.fps, width=info.width,
        height=info.height, first=first,
    )  # fmt: skip


class _Mistimed(Exception):
    """decord opened the file but its timing cannot be trusted."""


READERS: dict[str, type[VideoReader]] = {"decord": DecordReader, "pyav": PyAVReader}


def backend_for(duration: float, config: DecodeConfig) -> str:
    """The decoder that reads a video of ``duration`` seconds: PyAV past ``pyav_after_s``.

    A long video is read forward with PyAV: decord holds state for the whole file from the
    first read (0.2 GB more for a 4-hour 720p file than a 15-minute one) and seeks at every
    window; PyAV read the same windows in 150 MB and half the time (benchmarks/RESULTS.md,
    "Long uploads"). Chosen by length, not by how the video is read, so whole and windowed
    decoding of one file see the same pixels; rereads for span refinement follow the same rule.
    """
    return "pyav" if duration > config.pyav_after_s else config.backend


def decode_windows(
    path: str | Path, config: DecodeConfig, size: int | None = None, native: bool = False
) -> Iterator[SampledFrames]:
    """Sample ``path`` at ``config.fps``, ``size`` sampled frames at a time (default: all in
    one), so memory holds one window of pixels whatever the duration; a video longer than
    ``config.pyav_after_s`` is read with PyAV whatever ``config.backend`` says. Raises
    ``VideoDecodeError`` with a reason on failure; a decord failure falls back to PyAV, which
    goes on after the frames decord already delivered.

    ``native``: a video of one window is read with PyAV, which also keeps a thumbnail of every
    native frame (``SampledFrames.native``) in the same pass, so refining a query's spans reads
    nothing again (a reread cost as much as the decode; the thumbnails a twentieth of it)."""
    path = Path(path)
    info = probe(path, config)
    size = size or math.ceil(config.max_duration_s * config.fps) + 1
    native = native and info.duration * config.fps <= size  # 0: unknown, the reader decides
    delivered = 0
    reader = READERS["pyav" if native else backend_for(info.duration, config)]()
    if reader.name != PyAVReader.name:
        try:
            for window in reader.windows(path, info, config, size):
                delivered += len(window.frames)
                yield window
            return
        except VideoDecodeError:
            raise
        except Exception as exc:  # decord raises its own error types, or mistimes: use PyAV
            log.info(
                "%s cannot be trusted on %s (%s); using PyAV", reader.name, path, short_reason(exc)
            )
    try:
        yield from PyAVReader().windows(path, info, config, size, skip=delivered, native=native)
    except VideoDecodeError:
        raise
    except Exception as exc:
        raise VideoDecodeError(path, "corrupt video", short_reason(exc)) from exc


def decode_video(path: str | Path, config: DecodeConfig) -> SampledFrames:
    """Sample ``path`` at ``config.fps`` in one piece (short videos and tests; long ones go
    through ``decode_windows``)."""
    windows = list(decode_windows(path, config))
    if len(windows) == 1:
        return windows[0]
    return concat_sampled(windows)


def concat_sampled(windows: list[SampledFrames]) -> SampledFrames:
    last = windows[-1]
    return SampledFrames(
        path=last.path,
        frames=np.concatenate([w.frames for w in windows]),
        times=np.concatenate([w.times for w in windows]),
        starts=np.concatenate([w.starts for w in windows]),
        ends=np.concatenate([w.ends for w in windows]),
        duration=last.duration,
        native_fps=last.native_fps,
        width=last.width,
        height=last.height,
        first=windows[0].first,
    )
