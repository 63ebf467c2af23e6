"""Boundary refinement: move a segment's query ends from the sampling grid onto the cut.

Alignment sees one frame per 1/fps seconds, so a segment's query start is only known to lie
between the last sampled frame outside the copy and the first one inside it (up to 0.5 s at
2 fps, on both ends and, through the segment's speed, on the reference axis too). The frames
between those two are taken as small thumbnails (kept by the query's decode, ``native_frames``,
or decoded again, ``read_frames``), and the boundary is put where the
sequence stops resembling the outside frame and starts resembling the inside one. Thumbnails
of the same video need no learned descriptor: both neighbours went through the same edit.

On continuous footage (no cut between the two frames) the split falls near the middle, which
is where the grid puts it anyway, so the stage never moves a boundary outside the interval
between the two sampled frames.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.describe.decode import THUMB_SIDE, Scaler, pick_frames
from pipeline.records import Match, NativeFrames, Segment

log = logging.getLogger(__name__)

MAX_WINDOW_FRAMES = 120  # a window with more native frames (very high frame rate) is skipped
MAX_READ_FRAMES = 8000  # native frames read per window at most (bounds memory: 32x32 thumbnails)
Window = tuple[float, float]  # centre times of the sampled frames either side of a boundary


def split_time(thumbs: np.ndarray, times: np.ndarray, guess: float) -> float:
    """Start time of the first frame on the far side of a boundary.

    ``thumbs[0]`` is the frame on the near side, ``thumbs[-1]`` the one on the far side and
    ``times`` their start times. Each split into a near part and a far part costs the distance
    of every frame to its side's end frame; the cheapest split wins, ties going to the split
    nearest ``guess`` (the grid's own boundary).
    """
    seq = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    if len(seq) < 2:
        return guess
    to_near = np.linalg.norm(seq - seq[0], axis=1)
    to_far = np.linalg.norm(seq - seq[-1], axis=1)
    # Split k (frames k.. are far, 1 <= k <= n-1): near cost of frames [0, k), far of [k, n).
    cost = np.cumsum(to_near)[:-1] + np.cumsum(to_far[::-1])[::-1][1:]
    splits = np.arange(1, len(seq))
    tied = splits[cost <= cost.min() + 1e-6 * max(float(cost.max()), 1e-9)]
    return float(times[tied[np.argmin(np.abs(times[tied] - guess))]])


def read_windows(
    path: str | Path, windows: list[Window], backend: str, max_frames: int = MAX_WINDOW_FRAMES
) -> dict[Window, tuple]:
    """(start times, thumbnails) of the native frames from the one on screen at each window's
    first time to the one on screen at its second; windows that cannot be read, or hold more
    than ``max_frames`` frames, are left out."""
    if not windows:
        return {}
    if backend == "decord":
        try:
            return _read_decord(Path(path), windows, max_frames)
        except Exception as exc:  # decord raises its own types; PyAV may cope
            log.info("decord cannot reread %s (%s); using PyAV", path, exc)
    return _read_pyav(Path(path), windows, max_frames)


def _read_decord(path: Path, windows: list[Window], max_frames: int) -> dict[Window, tuple]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=THUMB_SIDE, height=THUMB_SIDE)
    starts = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))), np.float64)[:, 0]
    spans = _spans(starts, windows, max_frames)
    wanted = sorted({int(i) for rows in spans.values() for i in rows})
    if not wanted:
        return {}
    frames = dict(zip(wanted, reader.get_batch(wanted).asnumpy(), strict=True))
    return {w: (starts[r], np.stack([frames[int(i)] for i in r])) for w, r in spans.items()}


def _spans(starts: np.ndarray, windows: list[Window], max_frames: int) -> dict[Window, np.ndarray]:
    """Rows of the frames from the one on screen at each window's first time to the one on
    screen at its second (frames starting at ``starts``); longer windows are left out."""
    spans = {}
    for window in windows:
        first, last = pick_frames(starts, np.asarray(window))
        if 0 < last - first + 1 <= max_frames:
            spans[window] = np.arange(first, last + 1)
    return spans


def _read_pyav(path: Path, windows: list[Window], max_frames: int) -> dict[Window, tuple]:
    import av

    found, rgb = {}, Scaler()
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        for window in windows:
            # Seek to a keyframe before the window, then decode forward through it.
            container.seek(max(0, int((window[0] - 1.0) / stream.time_base)), stream=stream)
            times, thumbs = [], []
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time > window[1]:
                    break
                if frame.time <= window[0]:  # only the latest frame at or before the centre
                    times, thumbs = [], []
                times.append(frame.time)
                thumbs.append(rgb(frame, THUMB_SIDE, THUMB_SIDE))
            # A window starting before the first frame gets that frame, as pick_frames does.
            if 1 < len(times) <= max_frames:
                found[window] = (np.asarray(times), np.stack(thumbs))
    return found


@dataclass(frozen=True)
class Frames:
    """Thumbnails of native frames reread in windows, merged in time order (one read of a
    video serves every stage that needs its frames)."""

    times: np.ndarray  # [N] start times
    thumbs: np.ndarray  # [N, THUMB_SIDE, THUMB_SIDE, 3] float32

    def between(self, window: Window, max_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The frames from the one on screen at ``window[0]`` to the one on screen at
        ``window[1]`` (a window that was read); None when fewer than two or too many."""
        if len(self.times) == 0:
            return None
        first, last = pick_frames(self.times, np.asarray(window))
        if not 2 <= last - first + 1 <= max_frames:
            return None
        return self.times[first : last + 1], self.thumbs[first : last + 1]


def read_frames(path: str | Path, windows: list[Window], backend: str) -> Frames:
    """The native frames of ``windows`` of ``path`` as thumbnails, in one read."""
    read = read_windows(path, sorted(set(windows)), backend, MAX_READ_FRAMES)
    if not read:
        return Frames(np.zeros(0), np.zeros((0, THUMB_SIDE, THUMB_SIDE, 3), np.float32))
    times = np.concatenate([t for t, _ in read.values()])
    thumbs = np.concatenate([f for _, f in read.values()]).astype(np.float32)
    times, unique = np.unique(times, return_index=True)  # overlapping windows share frames
    return Frames(times, thumbs[unique])


def native_frames(native: NativeFrames, windows: list[Window]) -> Frames:
    """What ``read_frames`` would read, taken from the thumbnails the decode kept."""
    spans = _spans(native.times, sorted(set(windows)), MAX_READ_FRAMES)
    rows = np.unique(np.concatenate([np.zeros(0, np.int64), *spans.values()]))
    return Frames(native.times[rows], native.thumbs[rows].astype(np.float32))


def boundary_windows(matches: list[Match], fps: float, duration: float) -> list[Window]:
    """The windows refine_matches reads: around every segment's query ends."""
    return [w for m in matches for s in m.segments for w in _windows(s, fps, duration) if w]


def _windows(segment: Segment, fps: float, duration: float) -> tuple[Window | None, ...]:
    """The windows around a segment's query start and end (None at the video's ends)."""
    step = 1.0 / fps
    start, end = segment.query_start, segment.query_end
    before = (start - step / 2, start + step / 2) if start > 1e-6 else None
    # The last sampled span may be shorter than a step (it ends at the video's end).
    after = (end - step / 2, min(end + step / 2, (end + duration) / 2))
    return before, (after if end < duration - 1e-6 else None)


def refine_matches(
    matches: list[Match],
    frames: Frames,
    fps: float,
    duration: float,
    reference_durations: dict[str, float],
) -> list[Match]:
    """``matches`` with every segment's query ends moved onto the cut nearest the grid's
    boundary, and its reference ends moved with them along the segment's own speed.
    ``frames`` holds the query's frames in ``boundary_windows``."""

    def moved(window: Window | None, grid: float) -> float:
        found = frames.between(window, MAX_WINDOW_FRAMES) if window else None
        return grid if found is None else split_time(found[1], found[0], grid)

    refined = []
    for match in matches:
        segments = []
        limit = reference_durations.get(match.reference_id, math.inf)
        for s in match.segments:
            before, after = _windows(s, fps, duration)
            q0, q1 = moved(before, s.query_start), moved(after, s.query_end)
            if q1 <= q0:
                segments.append(s)
                continue
            speed = s.speed
            segments.append(
                dataclasses.replace(
                    s,
                    query_start=q0,
                    query_end=q1,
                    reference_start=max(0.0, s.reference_start + (q0 - s.query_start) * speed),
                    reference_end=min(limit, s.reference_end + (q1 - s.query_end) * speed),
                )
            )
        refined.append(dataclasses.replace(match, segments=segments))
    return refined
