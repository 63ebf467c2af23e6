"""PCA whitening of frame descriptors, fitted on the reference corpus.

Descriptors of one corpus share directions (the look of its footage, its encoder's artefacts);
two unrelated frames are similar along them. Whitening (subtract the corpus mean, rescale every
principal direction to unit variance) removes that shared part, so what is left to match is what
tells frames apart: it separates a static reference's own frames from one another and lifts
copies seen through heavy edits. The covariance is shrunk toward the identity (Ledoit-Wolf style,
fixed ``shrinkage``) because a corpus can have fewer frames than the descriptor has dimensions.

Whitened cosine similarities sit on a lower scale than raw ones, so alignment uses its own floors
(``whiten.min_sim``, ``whiten.min_score``); reported scores stay raw cosine similarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Whitening:
    mean: np.ndarray  # [D] float32
    projection: np.ndarray  # [D, D] float32
    frames: int  # reference frames in the corpus when fitted (decides when a refit is due)
    shrinkage: float

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised descriptors (a zero row stays zero)."""
        out = (embeddings.astype(np.float32) - self.mean) @ self.projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-6)

    def stale(self, frames: int, refit_change: float, shrinkage: float) -> bool:
        """Whether the corpus grew or shrank enough (a share of the fitted size) for a refit."""
        changed = abs(frames - self.frames) > refit_change * max(1, self.frames)
        return changed or shrinkage != self.shrinkage

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "projection": self.projection,
            "frames": np.array(self.frames),
            "shrinkage": np.array(self.shrinkage),
        }

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> Whitening:
        return cls(data["mean"], data["projection"], int(data["frames"]), float(data["shrinkage"]))


def fit_whitening(embeddings: np.ndarray, shrinkage: float, frames: int | None = None) -> Whitening:
    """Fit on ``embeddings`` [N, D] (a corpus of ``frames`` frames, or a sample of it):
    covariance shrunk toward its mean variance, inverse root."""
    x = embeddings.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(1, len(x) - 1)
    dim = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / dim) * np.eye(dim)
    values, vectors = np.linalg.eigh(cov)
    projection = vectors / np.sqrt(np.maximum(values, 1e-12))
    return Whitening(
        mean.astype(np.float32),
        projection.astype(np.float32),
        len(x) if frames is None else frames,
        float(shrinkage),
    )
