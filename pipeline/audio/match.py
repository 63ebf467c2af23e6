"""Copied sound as segments: hashes that agree on one time offset, on both axes.

A query's hashes found in a reference vote for the offset between their times there and in
the query. A copy of the soundtrack is a run of votes at one offset (within a column, for a
re-encode's jitter); unrelated sound spreads its chance hits over every offset. Votes are kept
per window only where they gather (``KEEP_VOTES`` at one offset), so memory follows the copies
found, not the length of the query or the size of the catalog. A segment is the query stretch
its votes span (split where none agree for ``audio.max_gap_s``), mapped onto the reference by
the offset: sound plays at the copy's own speed (a sped-up soundtrack changes pitch, and its
hashes, so speed changes are left to the picture).

Scores are made comparable with the picture's (a segment's mean similarity, where the alert
policy's floor is 0.5): ``min_votes`` votes score 0.5 and each ``VOTE_SCALE`` more close half
of what is left to 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.audio.fingerprint import HOP_S
from pipeline.audio.postings import Postings
from pipeline.config import AudioConfig
from pipeline.records import AudioPrint, Segment

KEEP_VOTES = 3  # votes at one offset within one window for its hits to be kept
VOTE_SCALE = 20.0
JITTER = 1  # columns an offset may wander (re-encoding moves peaks by one column)
ALTERNATIVE_SHARE = 0.6  # another offset over the same query stretch with this share of the
# votes is reported as a reference alternative (looping music repeats itself)
TIE_SHARE = 0.9  # offsets with this share of the best one's votes are weighed by their span
TAIL_S = 0.3  # a copy's sound goes on a little past the last anchor that agrees


def audio_score(votes: int, min_votes: int) -> float:
    return 1.0 - 0.5 * math.exp(-max(0, votes - min_votes) / VOTE_SCALE)


@dataclass
class AudioVotes:
    """The query's agreeing hashes per reference number: query and reference columns."""

    hits: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def add(self, query_times: np.ndarray, nums: np.ndarray, ref_times: np.ndarray) -> list[int]:
        """Take one window's hits; returns the references some of whose hits were kept."""
        if not len(nums):
            return []
        offsets = ref_times.astype(np.int64) - query_times
        key = (nums.astype(np.int64) << 32) + offsets
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        keep = _near_counts(unique, counts)[inverse] >= KEEP_VOTES
        kept = []
        for num in np.unique(nums[keep]):
            mine = keep & (nums == num)
            self.hits.setdefault(int(num), []).append(
                (query_times[mine].astype(np.int32), ref_times[mine].astype(np.int32))
            )
            kept.append(int(num))
        return kept

    def segments(self, num: int, config: AudioConfig, query_end_s: float) -> list[Segment]:
        """The copied stretches of sound against reference ``num``, best first."""
        parts = self.hits.get(num)
        if not parts:
            return []
        query = np.concatenate([q for q, _ in parts]).astype(np.int64)
        offsets = np.concatenate([r for _, r in parts]).astype(np.int64) - query
        found: list[tuple[int, Segment]] = []
        gap = config.max_gap_s / HOP_S
        while len(offsets) and len(found) < 4 * config.max_segments:
            values, counts = np.unique(offsets, return_counts=True)
            near = _near_counts(values, counts)
            if near.max() < config.min_votes:
                break
            best = _longest(values[near >= TIE_SHARE * near.max()], query, offsets)
            mine = np.abs(offsets - best) <= JITTER
            times = np.sort(query[mine])
            query, offsets = query[~mine], offsets[~mine]
            breaks = np.flatnonzero(np.diff(times) > gap) + 1
            for run in np.split(times, breaks):
                if len(run) < config.min_votes:
                    continue
                start = float(run[0]) * HOP_S
                end = float(run[-1]) * HOP_S + TAIL_S
                end = min(query_end_s, end) if query_end_s else end
                if end - start < config.min_length_s:
                    continue
                shift = best * HOP_S
                score = audio_score(len(run), config.min_votes)
                segment = Segment(
                    start, end, max(0.0, start + shift), end + shift, score, modality="audio"
                )
                found.append((len(run), segment))
        return _with_alternatives(found, config.max_segments)


def pair_segments(
    query: AudioPrint, reference: AudioPrint, config: AudioConfig, query_end_s: float
) -> list[Segment]:
    """The audio segments of one (query, reference) pair, without an index (``copyspan match``)."""
    positions, nums, times = Postings.build([(0, reference.hashes, reference.times)]).lookup(
        query.hashes
    )
    votes = AudioVotes()
    votes.add(query.times[positions].astype(np.int64), nums, times)
    return votes.segments(0, config, query_end_s)


def _longest(candidates: np.ndarray, query: np.ndarray, offsets: np.ndarray) -> int:
    """Of offsets about as well supported, the one whose votes span the longest stretch of the
    query: music that repeats a phrase agrees at the repeat too, but only the true offset
    agrees from the copy's first second to its last."""
    spans = [np.ptp(query[np.abs(offsets - c) <= JITTER]) for c in candidates[:16]]
    return int(candidates[int(np.argmax(spans))])


def _near_counts(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each sorted unique offset's votes with those of the offsets within ``JITTER`` of it."""
    near = counts.copy()
    last = len(values) - 1
    for shift in [s for step in range(1, JITTER + 1) for s in (-step, step)]:
        at = np.minimum(np.searchsorted(values, values + shift), last)
        near += np.where(values[at] == values + shift, counts[at], 0)
    return near


def _with_alternatives(found: list[tuple[int, Segment]], limit: int) -> list[Segment]:
    """Segments over the same query stretch are one copy: the first found (best supported,
    ties to the longest) gives the span, the others close to it in votes are its reference
    alternatives."""
    kept: list[tuple[int, Segment]] = []
    for votes, segment in found:
        same = next((i for i, (_, k) in enumerate(kept) if k.overlaps(segment)), None)
        if same is None:
            kept.append((votes, segment))
        elif votes >= ALTERNATIVE_SHARE * kept[same][0]:
            first_votes, first = kept[same]
            alternative = (round(segment.reference_start, 3), round(segment.reference_end, 3))
            kept[same] = (first_votes, _add_alternative(first, alternative))
    return sorted((s for _, s in kept[:limit]), key=lambda s: s.query_start)


def _add_alternative(segment: Segment, alternative: tuple[float, float]) -> Segment:
    return dataclasses.replace(segment, alternatives=(*segment.alternatives, alternative))
