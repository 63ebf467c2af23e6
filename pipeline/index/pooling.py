"""Video-level descriptors: one vector per video for coarse retrieval next to frame-level kNN.

The descriptor is the mean of a video's frame descriptors weighted by the evidence each frame
carries (blank and generic frames weigh nothing, see pipeline/describe/suppress.py) and by the
time it stands for (a keyframe stands for its whole run), L2-normalised. Two videos that share
most of their picture have similar means even when no single frame pair is above the
frame-level threshold, which is what makes it a second, independent way to find candidates.
"""

from __future__ import annotations

import numpy as np

from pipeline.records import VideoFeatures


def pool(
    embeddings: np.ndarray,
    weights: np.ndarray,
    replace: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """[D] weighted, L2-normalised mean; zeros when nothing carries weight. ``replace`` (rows,
    descriptors) pools a query view: those rows seen through the view, the rest as they are."""
    if len(embeddings) == 0 or float(weights.sum()) <= 0:
        return np.zeros(embeddings.shape[1], np.float32)
    mean = (weights[:, None] * embeddings).sum(axis=0)
    if replace is not None:
        rows, vectors = replace
        mean += (weights[rows, None] * (vectors - embeddings[rows])).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def pooling_weights(features: VideoFeatures) -> np.ndarray:
    """[N] each frame's share of the pool: its evidence weight times the time it stands for."""
    return np.maximum(features.ends - features.starts, 0.0) * features.weights


def video_descriptor(features: VideoFeatures) -> np.ndarray:
    return pool(features.embeddings, pooling_weights(features))
