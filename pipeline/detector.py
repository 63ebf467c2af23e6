"""The copy detector: describe videos, find candidate references, localize copied segments."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.align import boxes_to_segments, make_aligner
from pipeline.config import Config, SuppressConfig
from pipeline.decode import decode_video
from pipeline.embed import Embedder, make_embedder
from pipeline.index import Reference, ReferenceIndex
from pipeline.records import Match, QueryResult, SampledFrames, VideoFeatures
from pipeline.suppress import crop_borders, frame_weights

log = logging.getLogger(__name__)


def preprocess_id(config: Config) -> str:
    """What, besides the model, makes two descriptors comparable: an index refuses others."""
    return f"short_side={config.decode.short_side};crop_borders={int(config.suppress.crop_borders)}"


def prepare_frames(sampled: SampledFrames, config: SuppressConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frames to embed (borders cropped) and the evidence weight of each."""
    frames = crop_borders(sampled.frames) if config.crop_borders else sampled.frames
    ones = np.ones(len(frames), np.float32)
    return frames, frame_weights(frames) if config.blank_frames else ones


def build_features(
    sampled: SampledFrames,
    embeddings: np.ndarray,
    weights: np.ndarray,
    video_id: str,
    model: str,
    fps: float,
    timings: dict[str, float],
    preprocess: str = "",
) -> VideoFeatures:
    return VideoFeatures(
        video_id=video_id,
        path=sampled.path,
        duration=sampled.duration,
        embeddings=embeddings,
        starts=sampled.starts,
        ends=sampled.ends,
        model=model,
        fps=fps,
        timings=timings,
        weights=weights,
        preprocess=preprocess,
    )


def video_id_for(path: str | Path) -> str:
    """A reference or query id is the file name without its extension."""
    return Path(path).stem


class CopyDetector:
    """Stateless apart from the loaded model; one per process (or per Ray actor)."""

    def __init__(self, config: Config, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or make_embedder(config.embed)
        self.aligner = make_aligner(config.align)
        self.preprocess = preprocess_id(config)

    # ---- describing ----------------------------------------------------------------------

    def describe(self, path: str | Path, video_id: str | None = None) -> VideoFeatures:
        """Decode and embed one video. Raises ``VideoDecodeError`` for unusable input."""
        started = time.perf_counter()
        sampled = decode_video(path, self.config.decode)
        decoded = time.perf_counter()
        frames, weights = prepare_frames(sampled, self.config.suppress)
        embeddings = self.embedder.embed(frames)
        log.debug("described %s: %d frames", path, len(embeddings))
        timings = {"decode": decoded - started, "embed": time.perf_counter() - decoded}
        return build_features(
            sampled, embeddings, weights, video_id or video_id_for(path), self.embedder.model_id,
            self.config.decode.fps, timings, self.preprocess,
        )  # fmt: skip

    # ---- matching ------------------------------------------------------------------------

    def align_pair(self, query: VideoFeatures, reference: VideoFeatures) -> Match | None:
        """Localize copied segments between two described videos; None when there are none."""
        sim = query.embeddings @ reference.embeddings.T
        sim *= query.weights[:, None] * reference.weights[None, :]  # no evidence from blanks
        boxes = self.aligner(sim)
        if not boxes:
            return None
        segments = boxes_to_segments(
            boxes, query.starts, query.ends, reference.starts, reference.ends
        )
        segments.sort(key=lambda s: s.query_start)
        return Match(
            reference_id=reference.video_id,
            reference_path=reference.path,
            score=max(s.score for s in segments),
            segments=segments,
        )

    def candidates(self, query: VideoFeatures, index: ReferenceIndex) -> list[Reference]:
        """References worth aligning: frame-level kNN, max similarity per reference."""
        cfg = self.config.search
        sims, nums, _ = index.search(query.embeddings, cfg.knn_k)
        sims = sims * query.weights[:, None]
        best: dict[int, float] = {}
        for num, sim in zip(nums.ravel().tolist(), sims.ravel().tolist(), strict=True):
            if num >= 0 and sim >= cfg.candidate_min_sim and sim > best.get(num, -1.0):
                best[num] = sim
        ranked = sorted(best, key=best.__getitem__, reverse=True)[: cfg.max_candidates]
        return [index.by_num(num) for num in ranked]

    def query_features(self, query: VideoFeatures, index: ReferenceIndex) -> QueryResult:
        index.check_model(query.model, query.preprocess)
        started = time.perf_counter()
        candidates = self.candidates(query, index) if len(query) else []
        searched = time.perf_counter()
        matches = []
        for ref in candidates:
            match = self.align_pair(query, index.features(ref))
            if match is not None:
                matches.append(match)
        matches.sort(key=lambda m: -m.score)
        timings = dict(query.timings)
        timings.update(search=searched - started, align=time.perf_counter() - searched)
        return QueryResult(
            query_id=query.video_id,
            query_path=query.path,
            duration=round(query.duration, 3),
            matches=matches,
            timings=timings,
        )

    def query(self, path: str | Path, index: ReferenceIndex) -> QueryResult:
        return self.query_features(self.describe(path), index)

    def match(self, query_path: str | Path, reference_path: str | Path) -> QueryResult:
        """Compare two files directly, without an index."""
        query = self.describe(query_path)
        reference = self.describe(reference_path)
        match = self.align_pair(query, reference)
        return QueryResult(
            query_id=query.video_id,
            query_path=query.path,
            duration=round(query.duration, 3),
            matches=[match] if match else [],
            timings=query.timings,
        )
