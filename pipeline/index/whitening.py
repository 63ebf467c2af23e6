"""PCA whitening of frame descriptors, fitted on the reference corpus.

Descriptors of one corpus share directions (the look of its footage, its encoder's artefacts);
two unrelated frames are similar along them. Whitening (subtract the corpus mean, rescale every
principal direction to unit variance) removes that shared part, so what is left to match is what
tells frames apart: it separates a static reference's own frames from one another and lifts
copies seen through heavy edits. The covariance is shrunk toward the identity (Ledoit-Wolf style,
fixed ``shrinkage``) because a corpus can have fewer frames than the descriptor has dimensions.

Whitened cosine similarities sit on a lower scale than raw ones, so alignment uses its own floors
(``whiten.min_sim``, ``whiten.min_score``); reported scores stay raw cosine similarities.

Those floors only hold where whitening changes much. A large, diverse catalog is close to
isotropic already, its whitening close to a rescaling, and whitened similarities are then raw
ones judged by floors made for whitened ones (F1 0.974 -> 0.956 on the 0.1 M-frame benchmark
catalog). ``gain`` measures the change: how much closer to orthogonal random corpus frames are
after whitening (root-mean-square similarity, raw over whitened: 2.7 on the 14-reference
benchmark, 1.2 on 0.1 M frames); below ``whiten.min_gain`` a query aligns on raw similarity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Whitening:
    mean: np.ndarray  # [D] float32
    projection: np.ndarray  # [D, D] float32
    frames: int  # reference frames in the corpus when fitted (decides when a refit is due)
    shrinkage: float
    gain: float | None = None  # random-pair RMS similarity, raw / whitened (None: unknown)

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised descriptors (a zero row stays zero). Rows are directions:
        a translated reference stored longer than unit length (Translation.scale, which
        calibrates raw similarities) is whitened as the unit descriptor it points along."""
        out = (_unit(embeddings) - self.mean) @ self.projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-6)

    def stale(self, frames: int, refit_change: float, shrinkage: float) -> bool:
        """Whether the corpus grew or shrank enough (a share of the fitted size) for a refit."""
        changed = abs(frames - self.frames) > refit_change * max(1, self.frames)
        return changed or shrinkage != self.shrinkage or self.gain is None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "projection": self.projection,
            "frames": np.array(self.frames),
            "shrinkage": np.array(self.shrinkage),
            "gain": np.array(self.gain if self.gain is not None else np.nan),
        }

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> Whitening:
        gain = float(data["gain"]) if "gain" in data else float("nan")  # absent: fitted earlier
        return cls(
            data["mean"], data["projection"], int(data["frames"]), float(data["shrinkage"]),
            None if np.isnan(gain) else gain,
        )  # fmt: skip


def _unit(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; a zero row stays zero)."""
    x = embeddings.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def fit_whitening(embeddings: np.ndarray, shrinkage: float, frames: int | None = None) -> Whitening:
    """Fit on ``embeddings`` [N, D] (a corpus of ``frames`` frames, or a sample of it):
    covariance shrunk toward its mean variance, inverse root."""
    embeddings = _unit(embeddings)
    x = embeddings.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(1, len(x) - 1)
    dim = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / dim) * np.eye(dim)
    values, vectors = np.linalg.eigh(cov)
    projection = vectors / np.sqrt(np.maximum(values, 1e-12))
    fitted = Whitening(
        mean.astype(np.float32),
        projection.astype(np.float32),
        len(x) if frames is None else frames,
        float(shrinkage),
    )
    return dataclasses.replace(fitted, gain=_gain(embeddings, fitted))


def _gain(embeddings: np.ndarray, whitening: Whitening, pairs: int = 20000) -> float:
    """Root-mean-square cosine similarity of random frame pairs, raw over whitened: how much
    closer to orthogonal whitening makes unrelated frames (their shared look included)."""
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(embeddings), (2, pairs))
    x = embeddings.astype(np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    raw = np.einsum("nd,nd->n", x[i], x[j])
    white = whitening.apply(embeddings)
    whitened = np.einsum("nd,nd->n", white[i], white[j])
    return float(np.sqrt((raw**2).mean() / max((whitened**2).mean(), 1e-12)))
