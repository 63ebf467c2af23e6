"""The library's facade: describe, query and match videos with one object.

``CopyDetector`` holds one loaded model and hands each stage its part: the describe stage
(pipeline/describe) turns a video into windows of descriptors, and the streaming matcher
(pipeline/streaming/matcher.py) drives those windows through the match stages
(pipeline/match: candidates, alignment, span refinement). Nothing below calls back into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from pipeline.audio.fuse import fuse
from pipeline.audio.match import pair_segments
from pipeline.config import Config
from pipeline.describe.describer import Describer
from pipeline.describe.embed import Embedder
from pipeline.index import Reference, ReferenceIndex
from pipeline.index.whitening import Whitening
from pipeline.match import MatchStages
from pipeline.records import Match, QueryResult, SampledFrames, VideoFeatures
from pipeline.streaming.matcher import query_in_windows


class CopyDetector:
    """Stateless apart from the loaded model; one per process (or per Ray actor)."""

    def __init__(self, config: Config, embedder: Embedder | None = None):
        self.config = config
        self.describer = Describer(config, embedder)
        self.stages = MatchStages.from_config(config)

    @property
    def embedder(self) -> Embedder:
        return self.describer.embedder

    @property
    def preprocess(self) -> str:
        return self.describer.preprocess

    # ---- describing ----------------------------------------------------------------------

    def describe(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> VideoFeatures:
        return self.describer.describe(path, video_id, views)

    def describe_windows(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> Iterator[VideoFeatures]:
        return self.describer.describe_windows(path, video_id, views)

    def describe_with_edits(
        self, path: str | Path, video_id: str | None = None
    ) -> tuple[VideoFeatures, VideoFeatures]:
        """A reference's descriptors and those of copy-like edits of its frames (an index
        upgrade's calibration)."""
        return self.describer.describe_with_edits(path, video_id)

    def describe_sampled(
        self, sampled: SampledFrames, video_id: str, views: bool = True, decode_s: float = 0.0
    ) -> VideoFeatures:
        return self.describer.describe_sampled(sampled, video_id, views, decode_s)

    # ---- matching ------------------------------------------------------------------------

    def align_pair(
        self, query: VideoFeatures, reference: VideoFeatures, whitening: Whitening | None = None
    ) -> Match | None:
        return self.stages.aligner.align_pair(query, reference, whitening)

    def weigh_generic(self, query: VideoFeatures, index: ReferenceIndex) -> VideoFeatures:
        return self.stages.candidates.weigh_generic(query, index)

    def similar_videos(
        self, query: VideoFeatures, index: ReferenceIndex, k: int = 10
    ) -> list[tuple[Reference, float]]:
        return self.stages.candidates.similar_videos(query, index, k)

    def query_windows(
        self, windows, index: ReferenceIndex, on_window=None, on_final=None, banks=None
    ) -> QueryResult:
        """Match a query from its described windows (a service's or a live stream's) against
        ``banks`` (default: every enabled bank); ``on_window(streaming, changed)`` after each,
        ``on_final(match)`` per final match."""
        return query_in_windows(self.stages, index, windows, on_window, on_final, banks)

    def query_features(
        self, query: VideoFeatures, index: ReferenceIndex, banks: list[str] | None = None
    ) -> QueryResult:
        """Match a described query, ``streaming.window_s`` of it at a time (a short query is
        one window: the whole video at once)."""
        frames = max(1, round(self.config.streaming.window_s * query.fps))
        return self.query_windows(query.windows(frames), index, banks=banks)

    def query(
        self, path: str | Path, index: ReferenceIndex, on_window=None, banks=None
    ) -> QueryResult:
        """Describe and match a video window by window: memory holds one window of frames;
        ``on_window(streaming, changed)`` runs after each."""
        return self.query_windows(self.describe_windows(path), index, on_window, banks=banks)

    def match(self, query_path: str | Path, reference_path: str | Path) -> QueryResult:
        """Compare two files directly, without an index: their pictures, then their sound."""
        query = self.describe(query_path)
        reference = self.describe(reference_path, views=False)
        pictured = len(query) > 0 and len(reference) > 0  # a file may be only sound
        match = self.align_pair(query, reference) if pictured else None
        durations = {reference.video_id: reference.duration}
        matches = self.stages.refiner.refine([match], query, durations) if match else []
        if query.audio is not None and reference.audio is not None:
            heard = pair_segments(query.audio, reference.audio, self.config.audio, query.duration)
            if heard:
                found = matches[0] if matches else Match(reference.video_id, reference.path, 0, [])
                segments = fuse(found.segments, heard, reference.duration)
                best = max(s.score for s in segments)
                matches = [dataclasses.replace(found, segments=segments, score=best)]
        return QueryResult(
            query_id=query.video_id,
            query_path=query.path,
            duration=round(query.duration, 3),
            matches=matches,
            timings=query.timings,
            audio=query.audio.status if query.audio is not None else None,
        )
