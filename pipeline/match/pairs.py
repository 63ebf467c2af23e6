"""Alignment of one described query with one described reference: copied segments on the
sampling grid, found on whitened similarities where the index's whitening is usable."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config import Config
from pipeline.describe.keyframes import expand
from pipeline.index import ReferenceIndex
from pipeline.index.whitening import Whitening
from pipeline.match.align import FrameBox, boxes_to_segments, make_aligner
from pipeline.match.ambiguity import reference_alternatives
from pipeline.records import Match, VideoFeatures


def best_view_similarity(query: VideoFeatures, reference: VideoFeatures) -> np.ndarray:
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


class PairAligner:
    def __init__(self, config: Config):
        self.config = config
        self.aligner = make_aligner(config.align)
        cfg = config.whiten
        self.whitened_aligner = make_aligner(
            dataclasses.replace(
                config.align,
                min_sim=cfg.min_sim,
                min_score=cfg.min_score,
                skew_penalty=cfg.skew_penalty,
            )
        )

    def usable_whitening(self, index: ReferenceIndex) -> Whitening | None:
        """The index's whitening when enabled and strong enough to align on (see
        pipeline/index/whitening.py): a near-isotropic catalog's changes too little."""
        if not self.config.whiten.enabled:
            return None
        whitening = index.whitening(self.config.whiten)
        if whitening is not None and (whitening.gain or 0.0) < self.config.whiten.min_gain:
            return None
        return whitening

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
        sim = best_view_similarity(query, reference)[q_rows][:, r_rows]
        boxes = []
        if whitened is not None:
            path_sim = best_view_similarity(*whitened)[q_rows][:, r_rows]
            boxes = [_rescore(box, sim) for box in self.whitened_aligner(path_sim)]
        if not boxes:
            # Whitening sharpens localisation but must not cost a detection: a copy seen only
            # through a small region view can fall under the whitened floors.
            boxes = self.aligner(sim)
        if not boxes:
            return None
        segments = boxes_to_segments(boxes, q_starts, q_ends, r_starts, r_ends)
        cfg = self.config.align
        min_shift = max(1, round(cfg.ambiguity_min_shift_s * reference.fps))
        for i, box in enumerate(boxes):
            shifts = reference_alternatives(box, sim, cfg.ambiguity_margin, min_shift)
            if shifts:
                seg = segments[i]
                spans = tuple((seg.reference_start + s / reference.fps,
                               seg.reference_end + s / reference.fps) for s in shifts)  # fmt: skip
                segments[i] = dataclasses.replace(seg, alternatives=spans)
        segments.sort(key=lambda s: s.query_start)
        return Match(
            reference_id=reference.video_id,
            reference_path=reference.path,
            score=max(s.score for s in segments),
            segments=segments,
        )
