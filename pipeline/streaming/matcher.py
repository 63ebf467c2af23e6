"""Matching a query as it arrives: search and alignment advance window by window.

``StreamingQuery`` takes a video's described windows in order (``Describer.describe_windows``,
or the windows of a live stream) and drives them through the match stages it is handed
(pipeline/match: candidates, alignment, span refinement), each entered once per window, in
that order. After each window it searches the window's
descriptors, aligns every candidate reference over a bounded stretch of the query (the
window, the one before it, and any segment still open), and keeps the segments that have
ended: a segment is **final** once the query has moved ``align.max_step`` sampled frames past
it, because no later frame can extend it. ``add`` returns the references whose final
segments grew, so a service can alert while the upload is still being read; ``finish``
aligns what is still open and refines every span as the whole-video path does.

Each window's soundtrack hashes (``VideoFeatures.audio``) are searched too: their votes gather
per reference (pipeline/audio/match.py) and the audio segments they make are fused into the
picture's matches (pipeline/audio/fuse.py), or stand as matches of their own, early and final
alike.

Only the windows an alignment may still need are kept, so memory stays flat however long the
query. A video of one window goes through exactly the whole-video path: the same candidates,
one alignment over all its frames, the same refinement.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from pipeline.audio.fuse import fuse
from pipeline.audio.match import AudioVotes
from pipeline.index import Reference, ReferenceIndex
from pipeline.match import MatchStages
from pipeline.match.sync import tell_each
from pipeline.records import AudioPrint, Match, QueryResult, Segment, VideoFeatures, crop_parent

log = logging.getLogger(__name__)


class StreamingQuery:
    """``banks``: the banks to match against (default: every enabled one; an unknown name
    raises ``BankError``)."""

    def __init__(self, stages: MatchStages, index: ReferenceIndex, banks: list[str] | None = None):
        self.stages = stages
        self.index = index
        self.scope = index.scope(banks)
        self.actions: dict[str, str] = {}  # bank -> its action, read once per query
        self.whitening = None
        self.parts: list[tuple[int, VideoFeatures]] = []  # (first frame, window), oldest first
        self.frames = 0  # frames received so far
        self.window_starts: list[int] = []
        self.refs: dict[int, Reference] = {}
        self.open: dict[int, int] = {}  # reference -> first frame its open segments may need
        self.final: dict[int, list[Segment]] = {}
        self.timings: dict[str, float] = {"search": 0.0, "align": 0.0}
        self.last: VideoFeatures | None = None
        self.votes = AudioVotes()  # the soundtrack's agreeing hashes per reference
        self.sound: dict[int, list[Segment]] = {}  # reference -> audio segments so far
        self.heard_s = 0.0  # seconds of the query's sound received
        self.sound_status: str | None = None

    # ---- windows ---------------------------------------------------------------------------

    def add(self, window: VideoFeatures) -> list[int]:
        """Take the next window; returns the reference numbers whose final segments grew."""
        if not self.parts and not self.window_starts:
            self.whitening = self.stages.aligner.usable_whitening(self.index)
        started = time.perf_counter()
        window = self.index.as_indexed(window, query=True)  # the former model's (index upgrade)
        window = self.stages.candidates.weigh_generic(window, self.index)
        first = self.frames
        self.parts.append((first, window))
        self.window_starts.append(first)
        self.frames += len(window)
        self.last = window
        for key, value in window.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        candidates = (
            self.stages.candidates.candidates(window, self.index, self.scope) if len(window) else []
        )
        searched = time.perf_counter()
        self.timings["search"] += searched - started
        previous = self.window_starts[-2] if len(self.window_starts) > 1 else 0
        todo = {ref.num: ref for ref in candidates}
        todo.update({num: self.refs[num] for num in self.open})
        changed = []
        for num, ref in todo.items():
            self.refs[num] = ref
            lo = min(self.open.get(num, previous), previous)
            if self._align(ref, lo, last=False):
                changed.append(num)
        self._forget_old()
        self.timings["align"] += time.perf_counter() - searched
        if window.audio is not None:
            changed += [num for num in self.hear(window.audio) if num not in changed]
        return changed

    # ---- the soundtrack ----------------------------------------------------------------------

    def hear(self, sound: AudioPrint) -> list[int]:
        """Search the next stretch of the query's sound (a window's, or what a live stream's
        last segments left); returns the references whose audio segments changed."""
        started = time.perf_counter()
        self.heard_s += sound.seconds
        self.sound_status = sound.status
        if not len(sound) or not self.stages.config.audio.enabled:
            return []
        positions, nums, times = self.index.search_audio(sound.hashes)
        inside = self._in_scope(nums)
        positions, nums, times = positions[inside], nums[inside], times[inside]
        heard = self.votes.add(sound.times[positions].astype(np.int64), nums, times)
        changed = []
        for num in heard:
            found = self.votes.segments(num, self.stages.config.audio, self.heard_s)
            if found != self.sound.get(num, []):
                self.sound[num] = found
                changed.append(num)
        self.timings["audio_search"] = (
            self.timings.get("audio_search", 0.0) + time.perf_counter() - started
        )
        return changed

    def _in_scope(self, nums: np.ndarray) -> np.ndarray:
        """Which hits are of references this query may match (in scope, still indexed)."""
        allowed = {}
        for num in np.unique(nums).tolist():
            ref = self.refs.get(num) or self.index.lookup(num)
            ok = ref is not None and (self.scope is None or ref.bank in self.scope)
            if ok:
                self.refs[num] = ref
            allowed[num] = ok
        return np.array([allowed[n] for n in nums.tolist()], bool)

    def _sounded(self, match: Match) -> Match:
        """``match`` with its reference's audio segments fused in (pipeline/audio/fuse.py)."""
        num = self._parent_num(match.reference_id)
        heard = self.sound.get(num, []) if num is not None else []
        if not heard:
            return match
        segments = fuse(match.segments, heard, self.refs[num].duration)
        return dataclasses.replace(match, segments=segments, score=max(s.score for s in segments))

    def _parent_num(self, reference_id: str) -> int | None:
        return next((n for n, r in self.refs.items() if r.id == reference_id), None)

    def _heard_only(self, reported: set[str], wanted: set[int] | None = None) -> list[Match]:
        """Matches on sound alone: references the picture did not find."""
        found = []
        for num, segments in self.sound.items():
            ref = self.refs[num]
            if not segments or ref.id in reported or (wanted is not None and num not in wanted):
                continue
            match = self._empty_match(ref)
            found.append(self._sounded(match))
        return [m for m in found if m.segments]

    def finish(self, refine: bool = True, on_final=None) -> QueryResult:
        """Align what is still open, refine every span (``refine``: from the query's native
        frames); the query's result. ``on_final(match)`` sees each match as soon as its spans
        are final, best first (``SpanRefiner.refine``)."""
        started = time.perf_counter()
        for num in list(self.open):
            self._align(self.refs[num], self.open[num], last=True)
        found = [num for num in self.final if self.final[num]]
        matches = merge_crops([(self.refs[num].id, self.match(num)) for num in found])
        aligned = time.perf_counter()
        self.timings["align"] += aligned - started
        query = self.last
        if query is None:
            raise ValueError("finish() before any window")
        durations = {reported_id(self.refs[n].id): self.refs[n].duration for n in self.final}
        # Spans are refined on the picture; the sound joins each match as it is final.
        told = None if on_final is None else (lambda m: on_final(self._sounded(m)))
        if refine:
            matches = self.stages.refiner.refine(matches, query, durations, told)
        else:
            tell_each(told, matches)
        matches = [self._sounded(m) for m in matches]
        heard = self._heard_only({m.reference_id for m in matches})
        tell_each(on_final, heard)
        matches = sorted(matches + heard, key=lambda m: -m.score)
        self.timings["refine"] = time.perf_counter() - aligned
        return QueryResult(
            query_id=query.video_id,
            query_path=query.path,
            duration=round(query.duration, 3),
            matches=matches,
            timings=dict(self.timings),
            audio=self.sound_status,
        )

    def match(self, num: int) -> Match:
        """The final segments the picture found so far against one reference, as a match."""
        ref = self.refs[num]
        segments = sorted(self.final[num], key=lambda s: s.query_start)
        if crop_parent(ref.id) is not None:
            segments = [_sparse(s, ref.duration / max(1, ref.frames)) for s in segments]
        return dataclasses.replace(
            self._empty_match(ref), score=max(s.score for s in segments), segments=segments
        )

    def _empty_match(self, ref: Reference) -> Match:
        if ref.bank not in self.actions:
            bank = self.index.bank(ref.bank)
            self.actions[ref.bank] = bank.action if bank else "alert"
        return Match(reported_id(ref.id), ref.path, 0.0, [], bank=ref.bank,
                     action=self.actions[ref.bank])  # fmt: skip

    def matches_of(self, nums: list[int]) -> list[tuple[Match, Reference]]:
        """The final matches so far of the references of ``nums`` (a crop's: its parent's,
        merged with the parent's and its other crops' as ``finish`` merges them), each with
        one of its indexed references (the same duration and bank): early and live alerts."""
        wanted = {reported_id(self.refs[num].id) for num in nums}
        found: dict[str, list[int]] = {}
        for num, segments in self.final.items():
            if segments and (parent := reported_id(self.refs[num].id)) in wanted:
                found.setdefault(parent, []).append(num)
        seen = [
            (self._sounded(merged), self.refs[group[0]])
            for group in found.values()
            for merged in merge_crops([(self.refs[n].id, self.match(n)) for n in group])
        ]
        heard = self._heard_only(set(found), {n for n in nums if n in self.sound})
        return seen + [(m, self.refs[self._parent_num(m.reference_id)]) for m in heard]

    # ---- alignment over a stretch of the query -----------------------------------------------

    def _align(self, ref: Reference, lo: int, last: bool) -> bool:
        """Align frames ``lo`` onwards with ``ref``; keep the segments that have ended (all of
        them when ``last``). Returns whether final segments were added."""
        query = self._stretch(lo)
        try:
            reference = self.index.features(ref)
        except FileNotFoundError:  # removed or replaced since it was found: nothing to align
            log.info("reference %s (#%d) left the index during the query", ref.id, ref.num)
            self.open.pop(ref.num, None)
            return False
        match = self.stages.aligner.align_pair(query, reference, self.whitening)
        fps = query.fps
        horizon = float(query.ends[-1]) - (self.stages.config.align.max_step + 1) / fps
        kept = self.final.setdefault(ref.num, [])
        grew, still_open = False, False
        for segment in match.segments if match else []:
            if not last and segment.query_end > horizon:
                still_open = True  # later frames may extend it
                continue
            if any(segment.overlaps(known) for known in kept):
                continue  # found again by an overlapping stretch
            kept.append(segment)
            grew = True
        if still_open:
            self.open[ref.num] = lo
        else:
            self.open.pop(ref.num, None)
        return grew

    def _stretch(self, lo: int) -> VideoFeatures:
        parts = [part for first, part in self.parts if first + len(part) > lo]
        stretch = parts[0] if len(parts) == 1 else VideoFeatures.concat(parts)
        first = next(first for first, part in self.parts if first + len(part) > lo)
        return stretch.slice(lo - first) if lo > first else stretch

    def _forget_old(self) -> None:
        """Windows no alignment can need again: before the previous window and every open
        segment's stretch."""
        keep_from = min([self.window_starts[-1], *self.open.values()])
        self.parts = [(f, p) for f, p in self.parts if f + len(p) > keep_from]


def query_in_windows(
    stages: MatchStages,
    index: ReferenceIndex,
    windows,
    on_window=None,
    on_final=None,
    banks: list[str] | None = None,
) -> QueryResult:
    """Match a query from its described windows (against ``banks``: default every enabled
    one); ``on_window(query, changed)`` after each, ``on_final(match)`` for each match as soon
    as its spans are final."""
    streaming = StreamingQuery(stages, index, banks)
    for window in windows:
        changed = streaming.add(window)
        if on_window is not None:
            on_window(streaming, changed)
    return streaming.finish(on_final=on_final)


def _sparse(segment: Segment, spacing: float) -> Segment:
    """A segment found through crop frames ``spacing`` seconds apart: they place it only to
    within that (sync looks that far, ``reference_slack_s``) and cannot tell its speed, so its
    reference span is the query span's length, around the middle of the one found."""
    length = segment.query_end - segment.query_start
    start = max(0.0, (segment.reference_start + segment.reference_end - length) / 2)
    return dataclasses.replace(
        segment, reference_start=start, reference_end=start + length, reference_slack_s=spacing
    )


def reported_id(reference_id: str) -> str:
    """The id a match is reported under: a crop's parent (records.crop_id), else itself."""
    return crop_parent(reference_id) or reference_id


def merge_crops(found: list[tuple[str, Match]]) -> list[Match]:
    """One match per reported reference, best first, from (indexed id, match) pairs: a zoomed
    or partly covered copy aligns with the reference itself and with one or more of its crops
    (records.crop_id), and is one copy of one reference. The best variant gives the segments,
    a crop only when it beats the whole reference by ``CROP_MARGIN``, and the others add the
    query time it does not cover; the score is the best variant's (each is evidence that the
    reference is copied: a zoom's whole-frame match in place scored 0.44, under the alert
    floor, and its crop more)."""
    by_reference: dict[str, list[tuple[float, Match]]] = {}
    for indexed_id, match in found:
        rank = match.score - (CROP_MARGIN if indexed_id != match.reference_id else 0.0)
        by_reference.setdefault(match.reference_id, []).append((rank, match))
    merged = []
    for variants in by_reference.values():
        variants.sort(key=lambda v: -v[0])
        first = variants[0][1]
        segments = list(first.segments)
        for _, match in variants[1:]:
            segments += [s for s in match.segments if not any(s.overlaps(k) for k in segments)]
        best = max(match.score for _, match in variants)
        merged.append(dataclasses.replace(first, score=best, segments=sorted(segments, key=_start)))
    return sorted(merged, key=lambda m: -m.score)


# A crop's match must beat its whole reference's by this much to give the spans: crops of
# near-static footage match anywhere in it (a mild copy of a swaying tree, 0.76 at 9 s off
# against 0.61 in place; a sticker 0.69 off against 0.60), while a zoom's crop beats a whole
# reference that went astray by more (0.88 against 0.50). Hard profile seed 1 (development);
# the gap there was 0.15-0.38.
CROP_MARGIN = 0.25


def _start(segment: Segment) -> float:
    return segment.query_start
