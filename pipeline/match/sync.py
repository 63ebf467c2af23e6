"""Reference offset below the sampling period, from the rhythm of motion in both videos.

Frames sampled every 0.5 s in both videos can only place a copy's reference span to within a
quarter second: both grids tick in step, so every matched frame pair carries the same rounding
and no fit through them averages it away. How much the picture changes from moment to moment
(mean absolute difference of small thumbnails ``LAG_S`` apart, on a 25 Hz clock) survives the
edits copies go through (crop, flip, colour, blur, overlays, re-encoding, a new frame rate) and
is the same function of time in the copy as in its source. The query segment's motion signal is
correlated with the reference's at shifts of up to ``MAX_SHIFT_S`` along the segment's own
speed, and the reference span moves by the best shift when the correlation is clear. Near-static
footage has no rhythm to lock on and keeps its span.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np

from pipeline.config import DecodeConfig
from pipeline.describe.decode import backend_for, pick_frames
from pipeline.match.refine import MAX_READ_FRAMES, Frames, read_frames
from pipeline.records import Match, Segment

log = logging.getLogger(__name__)

SIGNAL_HZ = 25.0  # the common clock both motion signals are read on
LAG_S = 0.2  # motion = change between the frames on screen this far apart
MAX_SHIFT_S = 0.5  # a shift further than this is not a rounding of the grid
MAX_SIGNAL_S = 10.0  # the first this many seconds of a segment find its shift (as well as 30)
READ_THREADS = 2  # references reread at once
MIN_SIGNAL_S = 2.0  # shorter segments keep their span
MIN_CORR = 0.7  # the best shift's correlation must reach this (below 0.6 shifts did harm)
# A shift beyond MAX_SHIFT_S (a segment with reference_slack_s) must also beat every shift more
# than a second from it by this much: a swaying tree's motion found a zoom's place at 0.88
# against 0.47 elsewhere, while a street scene's people gave 0.80 against 0.76 (hard seed 1).
WIDE_MARGIN = 0.15


def motion(times: np.ndarray, thumbs: np.ndarray, at: np.ndarray, lag: float) -> np.ndarray:
    """Mean absolute change between the frames on screen at ``at`` and at ``at + lag`` (``at``
    of any shape). Each distinct pair of frames is compared once: the shifted signals of one
    segment share nearly all their pairs, and comparing them per shift was a quarter of a
    streamed upload's refinement time."""
    count = len(times)
    pairs = pick_frames(times, at) * count + pick_frames(times, at + lag)
    distinct, inverse = np.unique(pairs, return_inverse=True)
    first, second = thumbs[distinct // count], thumbs[distinct % count]
    change = np.abs(first - second).mean(axis=tuple(range(1, first.ndim)))
    return change[inverse].reshape(np.shape(at))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 1e-9 else 0.0


def best_shift(
    query: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    segment: Segment,
) -> tuple[float, float]:
    """(shift in seconds to add to the reference span, its correlation); (0, 0) when the
    segment is too short or too still to tell."""
    q0 = segment.query_start
    q1 = min(segment.query_end, q0 + MAX_SIGNAL_S)
    speed = segment.speed
    at = np.arange(q0, q1 - LAG_S, 1.0 / SIGNAL_HZ)
    if len(at) < MIN_SIGNAL_S * SIGNAL_HZ:
        return 0.0, 0.0
    q_signal = motion(*query, at, LAG_S)
    if np.ptp(q_signal) < 1e-3:  # nothing moves: every shift fits equally
        return 0.0, 0.0
    reach = _reach(segment)
    shifts = np.arange(-reach, reach + 1e-9, 1.0 / SIGNAL_HZ)
    on_reference = segment.reference_start + (at - q0) * speed
    signals = motion(*reference, on_reference[None, :] + shifts[:, None], LAG_S * speed)
    corrs = np.array([_pearson(q_signal, signal) for signal in signals])
    best = int(np.argmax(corrs))
    if abs(shifts[best]) > MAX_SHIFT_S + 1e-9:
        elsewhere = np.abs(shifts - shifts[best]) > 1.0
        if elsewhere.any() and corrs[best] - corrs[elsewhere].max() < WIDE_MARGIN:
            near = np.flatnonzero(np.abs(shifts) <= MAX_SHIFT_S + 1e-9)  # not clear: nearby only
            best = int(near[np.argmax(corrs[near])])
    return float(shifts[best]), float(corrs[best])


def _reach(segment: Segment) -> float:
    """How far sync looks: a rounding of the grid, or the span's slack (crop frames)."""
    return max(MAX_SHIFT_S, segment.reference_slack_s)


def _query_window(s: Segment) -> tuple[float, float]:
    return s.query_start, min(s.query_end, s.query_start + MAX_SIGNAL_S)


def _reference_window(s: Segment) -> tuple[float, float]:
    q0, q1 = _query_window(s)
    r1 = s.reference_start + (q1 - q0) * s.speed
    return max(0.0, s.reference_start - _reach(s)), r1 + _reach(s) + LAG_S * s.speed


def sync_windows(matches: list[Match], fps: float, max_matches: int) -> list[tuple[float, float]]:
    """Query windows that hold every window sync_matches will need, whether or not boundary
    refinement moves the segments' ends first (it moves them at most half a step)."""
    half = 0.5 / fps
    windows = [_query_window(s) for m in matches[:max_matches] for s in m.segments]
    return [(q0 - half, q1 + half) for q0, q1 in windows]


def sync_matches(
    matches: list[Match],
    query: Frames,
    reference_durations: dict[str, float],
    decode: DecodeConfig,
    max_matches: int,
    on_final: Callable[[Match], None] | None = None,
) -> list[Match]:
    """``matches`` with each segment's reference span shifted onto the query's motion.
    ``query`` holds the query's frames in ``sync_windows``; only the first ``max_matches``
    matches are synced (each rereads its reference file, with the decoder ``decode`` picks for
    its length), the rest keep their spans. ``on_final(match)`` sees each match, in order, as
    soon as it is synced: the best one need not wait for the others' rereads."""
    matches, unsynced = matches[:max_matches], matches[max_matches:]

    def read(match: Match) -> Frames:
        windows = [_reference_window(s) for s in match.segments]
        backend = backend_for(reference_durations.get(match.reference_id, math.inf), decode)
        return read_frames(match.reference_path, windows, backend)

    synced = []
    # The decoders release the GIL: references are reread READ_THREADS at a time, and each
    # match is finished as soon as its own reread is in.
    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        reads = [pool.submit(read, match) for match in matches]
        for match, reading in zip(matches, reads, strict=True):
            limit = reference_durations.get(match.reference_id, math.inf)
            try:
                reference = reading.result()
            except Exception as exc:  # a reference file this process cannot read
                log.warning("reference sync skipped for %s: %s", match.reference_path, exc)
                synced.append(match)
            else:
                synced.append(_shifted(match, query, reference, limit))
            tell_each(on_final, synced[-1:])
    return synced + tell_each(on_final, unsynced)


def _shifted(match: Match, query: Frames, reference: Frames, limit: float) -> Match:
    """``match`` with each segment's reference span moved by its best clear shift."""
    segments = []
    for s in match.segments:
        q = query.between(_query_window(s), MAX_READ_FRAMES)
        r = reference.between(_reference_window(s), MAX_READ_FRAMES)
        shift, corr = best_shift(q, r, s) if q is not None and r is not None else (0.0, 0.0)
        if corr < MIN_CORR:
            shift = 0.0
        segments.append(
            dataclasses.replace(
                s,
                reference_start=max(0.0, s.reference_start + shift),
                reference_end=min(limit, s.reference_end + shift),
            )
        )
    return dataclasses.replace(match, segments=segments)


def tell_each(on_final: Callable[[Match], None] | None, matches: list[Match]) -> list[Match]:
    """Hand each of ``matches``, in order, to ``on_final`` (when given): its spans are final."""
    for match in matches if on_final is not None else ():
        on_final(match)
    return matches
