"""The match stage: candidates, alignment, span refinement, in that order along a query.

candidates.py (frame-level kNN with max aggregation, the video-level stage), pairs.py (one
query against one reference: similarity matrix, whitening, align.py's temporal network or
baselines), spans.py (segment ends refined on native frames: refine.py, sync.py).
``MatchStages`` bundles the three for whoever drives a query (pipeline/streaming/matcher.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Config
from pipeline.match.candidates import CandidateSearch
from pipeline.match.pairs import PairAligner
from pipeline.match.spans import SpanRefiner


@dataclass(frozen=True)
class MatchStages:
    config: Config
    candidates: CandidateSearch
    aligner: PairAligner
    refiner: SpanRefiner

    @classmethod
    def from_config(cls, config: Config) -> MatchStages:
        return cls(config, CandidateSearch(config), PairAligner(config), SpanRefiner(config))


__all__ = ["CandidateSearch", "MatchStages", "PairAligner", "SpanRefiner"]
