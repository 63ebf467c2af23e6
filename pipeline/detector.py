"""The copy detector: describe videos, find candidate references, localize copied segments."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.align import FrameBox, boxes_to_segments, make_aligner
from pipeline.config import Config
from pipeline.decode import backend_for, decode_windows
from pipeline.embed import Embedder, make_embedder
from pipeline.index import Reference, ReferenceIndex
from pipeline.keyframes import Keyframes, expand, repeated_frames, select_keyframes
from pipeline.pooling import pool, pooling_weights
from pipeline.records import Match, QueryResult, SampledFrames, VideoFeatures
from pipeline.refine import (
    Frames,
    boundary_windows,
    native_frames,
    read_frames,
    refine_matches,
)
from pipeline.streaming.matcher import query_in_windows
from pipeline.suppress import crop_borders, frame_weights, generic_weights
from pipeline.sync import sync_matches, sync_windows, tell_each
from pipeline.views import View, block_sums, query_views
from pipeline.whitening import Whitening

log = logging.getLogger(__name__)


def preprocess_id(config: Config) -> str:
    """What, besides the model, makes two descriptors comparable: an index refuses others."""
    return f"short_side={config.decode.short_side};crop_borders={int(config.suppress.crop_borders)}"


@dataclass
class PreparedFrames:
    """One video's frames ready for the embedder, and the query views found in them."""

    sampled: SampledFrames
    frames: np.ndarray  # [N, H, W, 3] sampled frames, borders cropped: embedded first
    weights: np.ndarray  # [N] evidence weight of each frame
    views: dict[str, View]  # name -> (sampled frames it applies to, pixels from frames)
    source: np.ndarray  # [N] the frame whose descriptor each frame takes (repeated_frames)

    def unique_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(the frames the model must see, take): frame i's descriptor is the model's output
        row ``take[i]``; a repeated picture is embedded once."""
        embedded, take = np.unique(self.source, return_inverse=True)
        frames = self.frames if len(embedded) == len(self.frames) else self.frames[embedded]
        return frames, take

    def view_batches(self, keys: Keyframes) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pixels to embed for each view, only for kept frames whose runs the view covers and
        once per repeated picture: name -> (rows, pixels, take); row ``rows[i]``'s view
        descriptor is the model's output row ``take[i]``."""
        batches = {}
        for name, (sampled_rows, crop) in self.views.items():
            rows = np.unique(keys.run[sampled_rows])
            _, first, take = np.unique(
                self.source[keys.kept[rows]], return_index=True, return_inverse=True
            )
            pixels = crop(self.frames[keys.kept[rows[first]]])
            batches[name] = (rows, np.ascontiguousarray(pixels), take)
        return batches


def keeps_native(config: Config, views: bool) -> bool:
    """Whether a video's decode keeps thumbnails of its native frames: queries (``views``)
    whose spans are refined, so refinement need not read the file again."""
    return views and config.decode.query_thumbnails and config.align.refines_spans


def prepare_frames(sampled: SampledFrames, config: Config, views: bool = True) -> PreparedFrames:
    """Borders cropped, evidence weights, repeated pictures and (for queries) extra views."""
    frames = crop_borders(sampled.frames) if config.suppress.crop_borders else sampled.frames
    weights = frame_weights(frames) if config.suppress.blank_frames else np.ones(len(frames))
    blocks = block_sums(frames) if len(frames) else None
    found = query_views(frames, config.views, blocks) if views else {}
    source = repeated_frames(frames, config.embed.reuse_diff, blocks)
    return PreparedFrames(sampled, frames, weights.astype(np.float32), found, source)


def build_features(
    prepared: PreparedFrames,
    keys: Keyframes,
    embeddings: np.ndarray,
    view_embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
    video_id: str,
    model: str,
    fps: float,
    timings: dict[str, float],
    preprocess: str = "",
) -> VideoFeatures:
    """``embeddings`` are of every sampled frame; the features keep the keyframes'."""
    kept = embeddings[keys.kept]
    views = {name: (rows, described) for name, (rows, described) in view_embeddings.items()}
    sampled = prepared.sampled
    return VideoFeatures(
        video_id=video_id,
        path=sampled.path,
        duration=sampled.duration,
        embeddings=kept,
        starts=keys.starts,
        ends=keys.ends,
        model=model,
        fps=fps,
        timings=timings,
        weights=prepared.weights[keys.kept],
        preprocess=preprocess,
        views=views,
        sampled=len(sampled.frames),
        native=sampled.native,
    )


def _best_per_reference(nums: np.ndarray, sims: np.ndarray, floor: float) -> dict[int, float]:
    """Best similarity per reference number among search hits at or above ``floor``, most
    similar first (number -1 marks a missing neighbour)."""
    best: dict[int, float] = {}
    for num, sim in zip(nums.ravel().tolist(), sims.ravel().tolist(), strict=True):
        if num >= 0 and sim >= floor and sim > best.get(num, -np.inf):
            best[num] = sim
    return dict(sorted(best.items(), key=lambda item: -item[1]))


def _best_view_similarity(query: VideoFeatures, reference: VideoFeatures) -> np.ndarray:
    """[Nq, Nr] cosine similarity of each query frame's best view, zero for blank frames."""
    sim = query.embeddings @ reference.embeddings.T
    for rows, vectors in query.views.values():
        sim[rows] = np.maximum(sim[rows], vectors @ reference.embeddings.T)
    sim *= query.weights[:, None] * reference.weights[None, :]  # no evidence from blanks
    return sim


def whiten(features: VideoFeatures, whitening: Whitening) -> VideoFeatures:
    return dataclasses.replace(
        features,
        embeddings=whitening.apply(features.embeddings),
        views={name: (rows, whitening.apply(v)) for name, (rows, v) in features.views.items()},
    )


def _rescore(box: FrameBox, sim: np.ndarray) -> FrameBox:
    """The box with its raw score: the mean over its query frames of the best raw similarity
    inside its reference span."""
    inside = sim[box.q0 : box.q1 + 1, box.r0 : box.r1 + 1]
    return dataclasses.replace(box, score=float(inside.max(axis=1).mean()))


def video_id_for(path: str | Path) -> str:
    """A reference or query id is the file name without its extension."""
    return Path(path).stem


class CopyDetector:
    """Stateless apart from the loaded model; one per process (or per Ray actor)."""

    def __init__(self, config: Config, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or make_embedder(config.embed)
        self.aligner = make_aligner(config.align)
        whiten = config.whiten
        self.whitened_aligner = make_aligner(
            dataclasses.replace(
                config.align,
                min_sim=whiten.min_sim,
                min_score=whiten.min_score,
                skew_penalty=whiten.skew_penalty,
            )
        )
        self.preprocess = preprocess_id(config)

    # ---- describing ----------------------------------------------------------------------

    def describe(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> VideoFeatures:
        """Decode and embed one video (``views=False`` for references: no query views).
        Raises ``VideoDecodeError`` for unusable input. Memory holds one window of frames."""
        parts = list(self.describe_windows(path, video_id, views))
        return parts[0] if len(parts) == 1 else VideoFeatures.concat(parts)

    def describe_windows(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> Iterator[VideoFeatures]:
        """The video described ``streaming.window_s`` at a time: decode, frame preparation
        (borders, weights, query views: each window on its own) and embedding per window, so
        only descriptors outlive a window. A video shorter than one window is one window."""
        video_id = video_id or video_id_for(path)
        window = max(1, round(self.config.streaming.window_s * self.config.decode.fps))
        started = time.perf_counter()
        native = keeps_native(self.config, views)
        for sampled in decode_windows(path, self.config.decode, window, native):
            decode_s = time.perf_counter() - started
            yield self.describe_sampled(sampled, video_id, views, decode_s)
            started = time.perf_counter()

    def describe_sampled(
        self, sampled: SampledFrames, video_id: str, views: bool = True, decode_s: float = 0.0
    ) -> VideoFeatures:
        started = time.perf_counter()
        prepared = prepare_frames(sampled, self.config, views)
        pixels, take = prepared.unique_frames()
        embeddings = self.embedder.embed(pixels)[take]
        keys = select_keyframes(embeddings, sampled.starts, sampled.ends, self.config.keyframes)
        view_embeddings = {
            name: (rows, self.embedder.embed(pixels)[take])
            for name, (rows, pixels, take) in prepared.view_batches(keys).items()
        }
        log.debug("described %s: embedded %d, kept %d of %d frames", video_id, len(pixels),
                  len(keys.kept), len(embeddings))  # fmt: skip
        timings = {"decode": decode_s, "embed": time.perf_counter() - started}
        return build_features(
            prepared, keys, embeddings, view_embeddings, video_id, self.embedder.model_id,
            self.config.decode.fps, timings, self.preprocess,
        )  # fmt: skip

    # ---- matching ------------------------------------------------------------------------

    def align_pair(
        self, query: VideoFeatures, reference: VideoFeatures, whitening: Whitening | None = None
    ) -> Match | None:
        """Localize copied segments between two described videos; None when there are none.
        With ``whitening`` the segments are found on whitened similarities (on raw ones when
        that finds none); scores are raw cosine similarities either way, so policies and
        outputs keep one scale."""
        whitened = None
        if whitening is not None:
            whitened = whiten(query, whitening), whiten(reference, whitening)
        return self.align_features(query, reference, whitened)

    def align_features(
        self,
        query: VideoFeatures,
        reference: VideoFeatures,
        whitened: tuple[VideoFeatures, VideoFeatures] | None,
    ) -> Match | None:
        """Copied segments between two described videos (``whitened``: the same two whitened,
        to find the segments on), or None."""
        # Kept keyframes back on the sampling grid: alignment counts sampled frames.
        q_rows, q_starts, q_ends = expand(query.starts, query.ends, query.fps)
        r_rows, r_starts, r_ends = expand(reference.starts, reference.ends, reference.fps)
        sim = _best_view_similarity(query, reference)[q_rows][:, r_rows]
        boxes = []
        if whitened is not None:
            path_sim = _best_view_similarity(*whitened)[q_rows][:, r_rows]
            boxes = [_rescore(box, sim) for box in self.whitened_aligner(path_sim)]
        if not boxes:
            # Whitening sharpens localisation but must not cost a detection: a copy seen only
            # through a small region view can fall under the whitened floors.
            boxes = self.aligner(sim)
        if not boxes:
            return None
        segments = boxes_to_segments(boxes, q_starts, q_ends, r_starts, r_ends)
        segments.sort(key=lambda s: s.query_start)
        return Match(
            reference_id=reference.video_id,
            reference_path=reference.path,
            score=max(s.score for s in segments),
            segments=segments,
        )

    def refine(
        self,
        matches: list[Match],
        query: VideoFeatures,
        durations: dict[str, float],
        on_final: Callable[[Match], None] | None = None,
    ) -> list[Match]:
        """Segment spans read off the videos' native frames rather than the sampling grid:
        query ends onto the query's cuts (pipeline/refine.py), then reference spans shifted
        onto the query's motion (pipeline/sync.py). ``on_final(match)`` sees each returned
        match, in order, as soon as its spans are final (a service alerts on it at once)."""
        cfg = self.config.align
        frames = self._span_frames(matches, query) if matches and cfg.refines_spans else None
        if frames is None:  # nothing to refine with: every match is final as it is
            return tell_each(on_final, matches)
        if cfg.refine_boundaries:
            matches = refine_matches(matches, frames, query.fps, query.duration, durations)
        if not cfg.sync_reference:
            return tell_each(on_final, matches)
        # Matches arrive best first: the cap keeps the strongest ones synced.
        limit = cfg.sync_max_matches
        return sync_matches(matches, frames, durations, self.config.decode, limit, on_final)

    def _span_frames(self, matches: list[Match], query: VideoFeatures) -> Frames | None:
        """The query's native frames both refinement stages need, from one read of the file
        (none when the decode kept them); None when they cannot be read."""
        cfg, fps = self.config.align, query.fps
        windows = boundary_windows(matches, fps, query.duration) if cfg.refine_boundaries else []
        if cfg.sync_reference:
            windows += sync_windows(matches, fps, cfg.sync_max_matches)
        try:
            if query.native is not None:
                return native_frames(query.native, windows)
            backend = backend_for(query.duration, self.config.decode)
            return read_frames(query.path, windows, backend)
        except Exception as exc:  # both stages are optional: keep the grid's spans
            log.warning("span refinement skipped for %s: %s", query.path, exc)
            return None

    def candidates(self, query: VideoFeatures, index: ReferenceIndex) -> list[Reference]:
        """References worth aligning: frame-level kNN, max similarity per reference.

        On a compressed index the kNN similarities are estimates that run low: references are
        shortlisted with the floor lowered by the codes' measured error, then kept and ranked
        by their exact similarity, read off their own descriptors."""
        cfg = self.config.search
        vectors, weights = query.search_vectors()
        sims, nums, _ = index.search(vectors, cfg.knn_k)
        sims = sims * weights[:, None]
        margin = index.similarity_margin()
        best = _best_per_reference(nums, sims, cfg.candidate_min_sim - margin)
        if margin > 0:
            shortlist = list(best)[: 2 * cfg.max_candidates]
            best = self._exact_best(shortlist, nums, vectors, weights, index)
        ranked = list(best)[: cfg.max_candidates]
        # Second stage: references whose whole-video descriptor is close, even when no single
        # frame pair reached the frame-level threshold.
        if cfg.video_candidates:
            for ref, sim in self.similar_videos(query, index, cfg.video_candidates):
                if sim >= cfg.video_min_sim and ref.num not in ranked:
                    ranked.append(ref.num)
        return [index.by_num(num) for num in ranked]

    def _exact_best(
        self,
        shortlist: list[int],
        nums: np.ndarray,
        vectors: np.ndarray,
        weights: np.ndarray,
        index: ReferenceIndex,
    ) -> dict[int, float]:
        """Exact best weighted similarity of each shortlisted reference to the query vectors
        whose neighbours included it, at or above the candidate floor, most similar first."""
        best = {}
        for num in shortlist:
            ref = index.catalog.by_num(num)
            if ref is None:  # removed since the search
                continue
            rows = np.flatnonzero((nums == num).any(axis=1))
            frames = index.features(ref).embeddings
            sim = float(((vectors[rows] @ frames.T).max(axis=1) * weights[rows]).max())
            if sim >= self.config.search.candidate_min_sim:
                best[num] = sim
        return dict(sorted(best.items(), key=lambda item: -item[1]))

    def similar_videos(
        self, query: VideoFeatures, index: ReferenceIndex, k: int = 10
    ) -> list[tuple[Reference, float]]:
        """The ``k`` references whose video-level descriptors are most similar to the query's
        (the best over the query's views), most similar first."""
        weights = pooling_weights(query)
        pooled = np.stack([pool(query.embeddings, weights)] + [
            pool(query.embeddings, weights, replace=view) for view in query.views.values()
        ])  # fmt: skip
        sims, nums = index.search_videos(pooled, k)
        best = _best_per_reference(nums, sims, -1.0)
        return [(index.by_num(num), sim) for num, sim in list(best.items())[:k]]

    def weigh_generic(self, query: VideoFeatures, index: ReferenceIndex) -> VideoFeatures:
        """The query with frames that resemble the index's background set weighed down."""
        cfg = self.config.suppress
        background = index.background() if cfg.generic else None
        if background is None:
            return query
        weights = generic_weights(
            query.embeddings, background, cfg.background_k, cfg.generic_low, cfg.generic_high
        )
        return dataclasses.replace(query, weights=query.weights * weights)

    def usable_whitening(self, index: ReferenceIndex) -> Whitening | None:
        """The index's whitening when enabled and strong enough to align on (see
        pipeline/whitening.py): a near-isotropic catalog's changes too little."""
        if not self.config.whiten.enabled:
            return None
        whitening = index.whitening(self.config.whiten)
        if whitening is not None and (whitening.gain or 0.0) < self.config.whiten.min_gain:
            return None
        return whitening

    def query_features(self, query: VideoFeatures, index: ReferenceIndex) -> QueryResult:
        """Match a described query, ``streaming.window_s`` of it at a time (a short query is
        one window: the whole video at once)."""
        frames = max(1, round(self.config.streaming.window_s * query.fps))
        return query_in_windows(self, index, query.windows(frames))

    def query(self, path: str | Path, index: ReferenceIndex, on_window=None) -> QueryResult:
        """Describe and match a video window by window (pipeline/streaming/matcher.py): memory
        holds one window of frames; ``on_window(streaming, changed)`` runs after each."""
        return query_in_windows(self, index, self.describe_windows(path), on_window)

    def match(self, query_path: str | Path, reference_path: str | Path) -> QueryResult:
        """Compare two files directly, without an index."""
        query = self.describe(query_path)
        reference = self.describe(reference_path, views=False)
        match = self.align_pair(query, reference)
        durations = {reference.video_id: reference.duration}
        matches = self.refine([match], query, durations) if match else []
        return QueryResult(
            query_id=query.video_id,
            query_path=query.path,
            duration=round(query.duration, 3),
            matches=matches,
            timings=query.timings,
        )
