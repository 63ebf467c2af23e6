"""Synthetic distractor references whose SSCD descriptors behave like unrelated real videos.

A catalog of 10 M frame descriptors (1,400 hours at 2 fps) cannot be embedded on this machine
(SSCD costs ~20 ms a frame: 55 hours), and no such footage can be fetched. The scale benchmark
therefore fills the catalog with descriptors drawn from a model fitted to real SSCD
descriptors of the real footage, and checks the model against what it must imitate:

* **against real frames** their cosine similarity must follow the distribution of similarities
  between unrelated real videos (mean, p99, max over the same number of pairs): not closer
  (mixtures of real descriptors easily become near-copies) and not farther;
* **in time** they move as video does: shots of near-identical consecutive frames (similarity
  ~0.9 at 2 fps), cuts every few seconds, shots of one video more alike than two videos.

The model: directions are drawn from a Gaussian with the covariance of real (centred)
descriptors shrunk toward the identity by ``shrink`` (fitted so the p99 of distractor-to-real
similarity matches the p99 between unrelated real videos), then normalised. A video has an
anchor direction; each shot mixes the video's anchor (share ``video_share``) with a fresh
direction; each frame mixes its shot's direction with an AR(1) drift (``drift``, correlation
``drift_corr`` from frame to frame). Shot lengths are geometric with mean ``shot_s`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def similarity_stats(a: np.ndarray, b: np.ndarray, pairs: int, seed: int = 0) -> dict:
    """Mean, p99 and max cosine similarity over ``pairs`` random (row of a, row of b) pairs."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(a), pairs), rng.integers(0, len(b), pairs)
    sims = np.einsum("nd,nd->n", a[i], b[j])
    return _stats(sims)


def _stats(sims: np.ndarray) -> dict:
    return {
        "pairs": len(sims),
        "mean": round(float(sims.mean()), 4),
        "p99": round(float(np.percentile(sims, 99)), 4),
        "max": round(float(sims.max()), 4),
    }


def unrelated_pairs(videos: dict[str, np.ndarray], related: set[frozenset]) -> np.ndarray:
    """Every frame-pair similarity between two different, unrelated real videos."""
    names = list(videos)
    parts = [
        (videos[a] @ videos[b].T).ravel()
        for n, a in enumerate(names)
        for b in names[n + 1 :]
        if frozenset((a, b)) not in related
    ]
    return np.concatenate(parts)


def temporal_stats(videos: list[np.ndarray], fps: float) -> dict:
    """Consecutive-frame similarity, cuts (consecutive similarity below 0.5) per minute and
    the mean similarity of two frames of the same video."""
    consecutive = np.concatenate([(v[1:] * v[:-1]).sum(1) for v in videos])
    within = np.concatenate([(v @ v.T)[np.triu_indices(len(v), 1)] for v in videos])
    minutes = sum(len(v) for v in videos) / fps / 60
    return {
        "consecutive_median": round(float(np.median(consecutive)), 3),
        "consecutive_p10": round(float(np.percentile(consecutive, 10)), 3),
        "cuts_per_min": round(float((consecutive < 0.5).sum() / minutes), 2),
        "within_video_mean": round(float(within.mean()), 3),
    }


@dataclass
class DistractorModel:
    root: np.ndarray  # [D, D] square root of the shrunk covariance
    shrink: float
    fps: float = 2.0
    shot_s: float = 12.0
    video_share: float = 0.5
    drift: float = 0.15
    drift_corr: float = 0.7

    @classmethod
    def fit(cls, real: np.ndarray, shrink: float, **kwargs) -> DistractorModel:
        centred = real - real.mean(axis=0)
        cov = centred.T @ centred / max(1, len(real) - 1)
        dim = cov.shape[0]
        cov = (1 - shrink) * cov + shrink * (np.trace(cov) / dim) * np.eye(dim)
        values, vectors = np.linalg.eigh(cov)
        root = vectors * np.sqrt(np.maximum(values, 0))
        return cls(root.astype(np.float32), shrink, **kwargs)

    def directions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, self.root.shape[0]), dtype=np.float32)
        return _unit(z @ self.root.T)

    def video(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        """[frames, D] float32 descriptors of one synthetic video."""
        shots = []
        anchor = self.directions(rng, 1)[0]
        left = frames
        while left > 0:
            length = min(left, int(rng.geometric(1 / (self.shot_s * self.fps))))
            fresh = self.directions(rng, 1)[0]
            shot = _unit(np.sqrt(self.video_share) * anchor + np.sqrt(1 - self.video_share) * fresh)
            noise = self.directions(rng, length)
            drift = np.empty_like(noise)
            drift[0] = noise[0]
            for t in range(1, length):  # AR(1): the picture drifts, it does not jump
                c = self.drift_corr
                drift[t] = c * drift[t - 1] + np.sqrt(1 - c * c) * noise[t]
            shots.append(_unit(np.sqrt(1 - self.drift) * shot + np.sqrt(self.drift) * drift))
            left -= length
        return np.concatenate(shots)


def calibrate(
    real: np.ndarray, target_p99: float, seed: int = 0, frames: int = 6000, **kwargs
) -> DistractorModel:
    """The model whose distractor-to-real similarity p99 matches ``target_p99``: bisection on
    the shrinkage (more shrinkage, more isotropic, farther from the real frames)."""
    lo, hi = 0.0, 1.0
    for _ in range(14):
        model = DistractorModel.fit(real, (lo + hi) / 2, **kwargs)
        rng = np.random.default_rng(seed)
        fake = np.concatenate([model.video(rng, 600) for _ in range(frames // 600)])
        p99 = float(np.percentile((fake @ real.T).ravel(), 99))
        lo, hi = (model.shrink, hi) if p99 > target_p99 else (lo, model.shrink)
    return DistractorModel.fit(real, (lo + hi) / 2, **kwargs)
