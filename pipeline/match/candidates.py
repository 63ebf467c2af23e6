"""Candidate generation: which references are worth aligning with a query.

Frame-level kNN over every reference frame with max aggregation per reference (VSC 2022
baseline), exact re-scoring on a compressed index, and the video-level stage for references
whose whole-video descriptor is close although no frame pair reached the floor.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config import Config
from pipeline.describe.suppress import generic_weights
from pipeline.index import Reference, ReferenceIndex
from pipeline.index.pooling import pool, pooling_weights
from pipeline.records import VideoFeatures, crop_parent


def best_per_reference(nums: np.ndarray, sims: np.ndarray, floor: float) -> dict[int, float]:
    """Best similarity per reference number among search hits at or above ``floor``, most
    similar first (number -1 marks a missing neighbour)."""
    best: dict[int, float] = {}
    for num, sim in zip(nums.ravel().tolist(), sims.ravel().tolist(), strict=True):
        if num >= 0 and sim >= floor and sim > best.get(num, -np.inf):
            best[num] = sim
    return dict(sorted(best.items(), key=lambda item: -item[1]))


SCOPED_OVERFETCH = 4  # neighbours asked for per one kept, when some banks are not searched


def within(nums: np.ndarray, scope: frozenset[str] | None, index: ReferenceIndex) -> np.ndarray:
    """``nums`` with the references outside the banks of ``scope`` marked missing (-1)."""
    if scope is None or nums.size == 0:
        return nums
    unique, inverse = np.unique(nums, return_inverse=True)
    keep = np.array([n >= 0 and index.bank_of(int(n)) in scope for n in unique.tolist()])
    return np.where(keep[inverse].reshape(nums.shape), nums, -1)


class CandidateSearch:
    def __init__(self, config: Config):
        self.config = config

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

    def candidates(
        self, query: VideoFeatures, index: ReferenceIndex, scope: frozenset[str] | None = None
    ) -> list[Reference]:
        """References worth aligning: frame-level kNN, max similarity per reference; only
        references of the banks in ``scope`` (``ReferenceIndex.scope``; None: every bank).

        On a compressed index the kNN similarities are estimates that run low: references are
        shortlisted with the floor lowered by the codes' measured error, then kept and ranked
        by their exact similarity, read off their own descriptors."""
        cfg = self.config.search
        vectors, weights = query.search_vectors()
        # Banks outside the scope are filtered out of the neighbours, so more are asked for:
        # another bank's near-duplicates must not crowd the scope's references out.
        k = cfg.knn_k * (SCOPED_OVERFETCH if scope is not None else 1)
        sims, nums, _ = index.search(vectors, k)
        nums = within(nums, scope, index)
        sims = sims * weights[:, None]
        margin = index.similarity_margin()
        best = best_per_reference(nums, sims, cfg.candidate_min_sim - margin)
        if margin > 0:
            shortlist = list(best)[: 2 * cfg.max_candidates]
            best = self._exact_best(shortlist, nums, vectors, weights, index)
        ranked = list(best)[: cfg.max_candidates]
        # Second stage: references whose whole-video descriptor is close, even when no single
        # frame pair reached the frame-level threshold.
        if cfg.video_candidates:
            for ref, sim in self.similar_videos(query, index, cfg.video_candidates, scope):
                if sim >= cfg.video_min_sim and ref.num not in ranked:
                    ranked.append(ref.num)
        # A reference removed or replaced (index remove, a backfill) since the search is gone
        # from the catalog: skipped (its replacement is searched from the next window on).
        refs = [ref for ref in map(index.lookup, ranked) if ref is not None]
        # A reference's crops (views.reference_grid) can fill a query frame's neighbours and
        # leave the reference itself out; aligned alone, a crop of near-static footage placed a
        # mild copy 9 s off. The reference is aligned with its crops, and its spans win.
        parents = {crop_parent(ref.id) for ref in refs} - {None} - {ref.id for ref in refs}
        return refs + [p for p in map(index.get, sorted(parents)) if p is not None]

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
            ref = index.lookup(num)
            try:
                frames = index.features(ref).embeddings if ref is not None else None
            except FileNotFoundError:  # its descriptors went with it
                frames = None
            if frames is None:  # removed or replaced since the search
                continue
            rows = np.flatnonzero((nums == num).any(axis=1))
            sim = float(((vectors[rows] @ frames.T).max(axis=1) * weights[rows]).max())
            if sim >= self.config.search.candidate_min_sim:
                best[num] = sim
        return dict(sorted(best.items(), key=lambda item: -item[1]))

    def similar_videos(
        self,
        query: VideoFeatures,
        index: ReferenceIndex,
        k: int = 10,
        scope: frozenset[str] | None = None,
    ) -> list[tuple[Reference, float]]:
        """The ``k`` references (of the banks in ``scope``) whose video-level descriptors are
        most similar to the query's (the best over the query's views), most similar first."""
        weights = pooling_weights(query)
        pooled = np.stack([pool(query.embeddings, weights)] + [
            pool(query.embeddings, weights, replace=view) for view in query.views.values()
        ])  # fmt: skip
        sims, nums = index.search_videos(pooled, k * (SCOPED_OVERFETCH if scope is not None else 1))
        best = best_per_reference(within(nums, scope, index), sims, -1.0)
        found = [(index.lookup(num), sim) for num, sim in list(best.items())[:k]]
        return [(ref, sim) for ref, sim in found if ref is not None]  # none removed since
