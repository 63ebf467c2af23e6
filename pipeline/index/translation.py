"""A fitted translation of descriptors from an index's former model into a new model's space.

An index holds the descriptors of the model (and frame preparation) that built it. When the
default model changes, describing every reference again takes days for a large catalog and is
impossible for one loaded from descriptor files. Instead, ``copyspan index upgrade`` describes
some footage with both models, pairs the descriptors of the same frames, and fits a map from
the former space into the new one (as FCT, Ramanujan et al., CVPR 2022, maps an old gallery;
here the models are fixed and the map is linear). The catalog's descriptors are translated in
place, so the index becomes an index of the new model whose references are "translated" until
``copyspan index backfill`` describes them again; queries of the new model search it natively,
and queries or imports of the former model are translated on the way in.

Methods (``fit_translation``): ``lstsq``, ridge least squares with a bias (any dimensions; pulled
toward the identity when they are equal), and ``procrustes``, a rotation after centring (equal
dimensions only). Which one serves is chosen by
measurement (benchmarks/results/upgrade.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.records import VideoFeatures

METHODS = ("identity", "lstsq", "procrustes")
FOLDS = 4  # cross-validation folds of whole videos
# Least squares: ridge strength, relative to the mean eigenvalue of the source. The penalty pulls
# toward the identity where the dimensions agree: a distilled student was trained to reproduce
# its teacher, so the identity is a good start (held-out cosine 0.65 as it is, 0.78 fitted
# toward it on 1.3 k frames, 0.61 at best fitted toward zero; benchmarks/results/upgrade.md).
RIDGE = 0.3
RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0)  # tried by ``fit_on_videos``


@dataclass(frozen=True)
class Translation:
    source_model: str  # the model (and preparation) queries come described with
    source_preprocess: str
    target_model: str  # the index's
    target_preprocess: str
    matrix: np.ndarray  # [Ds, Dt] float32
    bias: np.ndarray  # [Dt] float32
    method: str
    report: dict = field(default_factory=dict)  # the fit: sample, errors, agreement
    # Similarities across the two models run lower than within the new one (x1.48 for weak
    # copies of the hard profile's references): translated references are stored this much
    # longer than unit length, so an inner product with a new query estimates the new model's
    # similarity (calibrate_on_copies(); calibrate() without copies).
    scale: float = 1.0

    def apply(self, embeddings: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Translated descriptors: rows of length ``scale`` (a zero row stays zero)."""
        out = embeddings.astype(np.float32) @ self.matrix + self.bias
        norms = np.linalg.norm(out, axis=1, keepdims=True) / np.float32(scale)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def translates(self, model: str, preprocess: str) -> bool:
        """Whether descriptors of ``model`` with ``preprocess`` are this translation's input
        (an empty ``preprocess`` is not checked)."""
        return model == self.source_model and preprocess in ("", self.source_preprocess)

    def translate(self, features: VideoFeatures, query: bool = False) -> VideoFeatures:
        """``features`` as the index's model would describe them: every frame, every query
        view and every reference crop mapped. A reference is calibrated (``scale``) against
        the new model's queries; a query of the former model the other way, so that against
        a translated reference it scores as the former model did (never higher)."""
        scale = 1 / self.scale if query else self.scale
        views = {name: (rows, self.apply(v, scale)) for name, (rows, v) in features.views.items()}
        return dataclasses.replace(
            features,
            embeddings=self.apply(features.embeddings, scale),
            views=views,
            model=self.target_model,
            preprocess=self.target_preprocess,
            crops=[self.translate(crop, query) for crop in features.crops],
        )

    def header(self) -> dict:
        return {
            "source_model": self.source_model,
            "source_preprocess": self.source_preprocess,
            "target_model": self.target_model,
            "target_preprocess": self.target_preprocess,
            "method": self.method,
            "report": self.report,
            "scale": self.scale,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        header = json.dumps(self.header())
        return {"matrix": self.matrix, "bias": self.bias, "header": np.array(header)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Translation:
        header = json.loads(str(arrays["header"]))
        return cls(matrix=arrays["matrix"], bias=arrays["bias"], **header)


def pair_frames(source: VideoFeatures, target: VideoFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``source`` and ``target`` that describe the same moment of one video: the
    frames whose time spans contain each other's middle (both describers sample by timestamp,
    but each may collapse repeated pictures into one longer span)."""
    middles = (source.starts + source.ends) / 2
    at = np.searchsorted(target.starts, middles, side="right") - 1
    ok = (at >= 0) & (middles < target.ends[np.maximum(at, 0)])
    rows = np.flatnonzero(ok)
    return rows, at[rows]


def fit_translation(
    source: np.ndarray, target: np.ndarray, method: str = "lstsq", ridge: float = RIDGE
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, bias) mapping ``source`` rows onto the paired ``target`` rows (``identity``:
    none, for a model distilled from the index's that describes in its space already)."""
    if method not in METHODS:
        raise ValueError(f"unknown translation method {method!r} (one of {', '.join(METHODS)})")
    if len(source) != len(target) or len(source) < 2:
        raise ValueError("at least two paired descriptors are needed")
    if method == "identity":
        if source.shape[1] != target.shape[1]:
            raise ValueError("the identity needs descriptors of equal dimensions")
        dim = source.shape[1]
        return np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32)
    source = source.astype(np.float64)
    target = target.astype(np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    if method == "procrustes":
        if source.shape[1] != target.shape[1]:
            raise ValueError("procrustes needs descriptors of equal dimensions")
        u, _, vt = np.linalg.svd(s.T @ t)
        matrix = u @ vt
    else:
        gram = s.T @ s
        ridge = ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
        prior = ridge if source.shape[1] == target.shape[1] else 0.0  # toward the identity
        matrix = np.linalg.solve(gram + ridge, s.T @ t + prior)
    bias = mu_t - mu_s @ matrix
    return matrix.astype(np.float32), bias.astype(np.float32)


def agreement(translated: np.ndarray, target: np.ndarray, limit: int = 2000) -> dict:
    """How well translated descriptors stand in for the target model's, on held-out frames:
    the cosine of each frame to its own target descriptor, how the similarities between frames
    agree (Pearson r, mean absolute difference) and how often a translated frame's nearest
    target descriptor is its own (ties to a repeated picture count as found)."""
    rng = np.random.default_rng(0)
    if len(translated) > limit:
        keep = np.sort(rng.choice(len(translated), limit, replace=False))
        translated, target = translated[keep], target[keep]
    cross = translated @ target.T
    native = target @ target.T
    own = np.diag(cross)
    upper = np.triu_indices(len(target), k=1)
    found = cross.max(axis=1) <= own + 1e-6
    return {
        "frames": len(target),
        "own_cosine": round(float(own.mean()), 4),
        "own_cosine_p5": round(float(np.percentile(own, 5)), 4),
        "similarity_r": round(float(np.corrcoef(cross[upper], native[upper])[0, 1]), 4),
        "similarity_abs_diff": round(float(np.abs(cross[upper] - native[upper]).mean()), 4),
        "top1": round(float(found.mean()), 4),
    }


def calibrate(translated: np.ndarray, target: np.ndarray, limit: int = 2000) -> float:
    """How much longer translated reference descriptors must be for an inner product with the
    new model's query descriptors to estimate the new model's own similarity: the slope of the
    new model's similarities on the cross-model ones, between different held-out frames."""
    rng = np.random.default_rng(1)
    if len(target) > limit:
        keep = rng.choice(len(target), limit, replace=False)
        translated, target = translated[keep], target[keep]
    upper = np.triu_indices(len(target), k=1)
    cross, native = (target @ translated.T)[upper], (target @ target.T)[upper]
    slope = float(cross @ native / max(float(cross @ cross), 1e-9))  # through the origin
    return round(min(max(slope, 1.0), 2.0), 4)  # never shrink; a wild fit is capped


def calibrate_on_copies(translated: np.ndarray, target: np.ndarray, copies: np.ndarray) -> float:
    """How much longer translated references must be for weak copies to stay as strong as the
    new model finds them: the ratio, at the ``COPY_TAIL`` percentile, of each frame's similarity
    to an edited copy of itself (``copies``, new model) natively and through the translation.
    The slope over all frame pairs (``calibrate``) follows the bulk of similar frames, while the
    cross-model noise weighs most on the weak copies, the ones a threshold decides."""
    native = np.sum(copies * target, axis=1)
    cross = np.sum(copies * translated, axis=1)
    ratio = float(np.percentile(native, COPY_TAIL) / max(np.percentile(cross, COPY_TAIL), 1e-6))
    return round(min(max(ratio, 1.0), 2.0), 4)


# The percentile of copies the calibration preserves. On the hard profile's references (seed 2)
# the ratio is 1.26 at the median and 1.48 at the 10th percentile, against 1.22 for the slope
# over all pairs; benchmarks/results/upgrade.md.
COPY_TAIL = 10
# Calibrated only under a map that keeps how similar frames are (held-out Pearson r): a map
# fitted on too few pairs (Procrustes on 187: r -0.95) scaled by its copies' ratio (capped at 2)
# let 1133 false alarms through on the hard profile.
CALIBRATE_MIN_R = 0.9


def fit_on_videos(
    videos: list[tuple[VideoFeatures, VideoFeatures]],
    method: str = "auto",
    copies: list[VideoFeatures] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(matrix, bias, report) from videos each described by both models (source, target), and
    optionally copy-like edits of each video's frames described by the target model
    (``copies``, parallel to ``videos``: ``Describer.describe_with_edits``), which calibrate the
    similarities on copies (``calibrate_on_copies``) instead of on all frame pairs.

    Each candidate (the identity where the dimensions agree, least squares at several ridge
    strengths, Procrustes) is measured on footage it was not fitted on: folds of whole videos
    (with a single video, its last quarter). ``auto`` keeps the one under which similarities
    between frames agree best with the target model's; the map stored is then fitted on every
    frame. A small sample fits a 512 x 512 map badly, and the chosen ridge then stays close to
    the identity."""
    paired = []  # (source, target, copies or None) descriptors of the same frames
    for k, (source, target) in enumerate(videos):
        rows, at = pair_frames(source, target)
        edited = None
        if copies is not None:  # keep the frames whose edited copy was described too
            at_copy, copy_rows = pair_frames(target, copies[k])
            where = dict(zip(at_copy.tolist(), copy_rows.tolist(), strict=True))
            keep = np.array([a in where for a in at.tolist()], bool)
            rows, at = rows[keep], at[keep]
            edited = copies[k].embeddings[[where[a] for a in at.tolist()]]
        if len(rows):
            paired.append((source.embeddings[rows], target.embeddings[at], edited))
    if not paired:
        raise ValueError("no frame was described by both models")
    if len(paired) >= 2:
        folds = [[i for i in range(len(paired)) if i % FOLDS == k] for k in range(FOLDS)]
        splits = [
            ([p for i, p in enumerate(paired) if i not in fold], [paired[i] for i in fold])
            for fold in folds
            if fold
        ]
        split = "videos"
    else:
        ((s, t, e),) = paired
        cut = max(1, len(s) * 3 // 4)
        head = (s[:cut], t[:cut], None if e is None else e[:cut])
        tail = (s[cut:], t[cut:], None if e is None else e[cut:])
        splits, split = [([head], [tail])], "time"
    same_dim = paired[0][0].shape[1] == paired[0][1].shape[1]
    candidates = [
        (name, ridge)
        for name, ridge in [("identity", 0.0), *(("lstsq", r) for r in RIDGES), ("procrustes", 0.0)]
        if same_dim or name == "lstsq"
    ]
    if method != "auto":
        if not any(name == method for name, _ in candidates):
            raise ValueError(f"method {method!r} cannot map these dimensions")
        candidates = [(method, RIDGE if method == "lstsq" else 0.0)]
    trials = {}
    for name, ridge in candidates:
        moved, wanted, edited = [], [], []
        for fit, test in splits:
            fit_s = np.concatenate([s for s, _, _ in fit])
            fit_t = np.concatenate([t for _, t, _ in fit])
            matrix, bias = fit_translation(fit_s, fit_t, name, ridge or RIDGE)
            probe = Translation("", "", "", "", matrix, bias, name)
            moved += [probe.apply(s) for s, _, _ in test]
            wanted += [t for _, t, _ in test]
            edited += [e for _, _, e in test]
        moved_all, wanted_all = np.concatenate(moved), np.concatenate(wanted)
        trials[(name, ridge)] = agreement(moved_all, wanted_all)
        # Calibrated only where the map has no offset: least squares adds the target's mean to
        # every frame, which raises every similarity alike, and scaled that too it let 8 false
        # alarms through on the hard profile (identity and Procrustes: none).
        if name == "lstsq" or trials[(name, ridge)]["similarity_r"] < CALIBRATE_MIN_R:
            scale = 1.0  # a map that loses the similarity structure is not worth calibrating
        elif all(e is not None for e in edited):
            scale = calibrate_on_copies(moved_all, wanted_all, np.concatenate(edited))
        else:
            scale = calibrate(moved_all, wanted_all)
        trials[(name, ridge)]["scale"] = scale
    # Matching compares query frames with reference frames: what must carry over is how
    # similar frames are to one another. Closeness to their own target descriptors is not
    # it: least squares raised it (0.67 -> 0.76 held out) and lost 0.02 F1 on seed 2.
    chosen = max(trials, key=lambda key: trials[key]["similarity_r"])
    all_s = np.concatenate([s for s, _, _ in paired])
    all_t = np.concatenate([t for _, t, _ in paired])
    matrix, bias = fit_translation(all_s, all_t, chosen[0], chosen[1] or RIDGE)
    report = {
        "videos": len(paired),
        "frames": len(all_s),
        "method": chosen[0],
        "ridge": chosen[1] or None,
        "scale": trials[chosen]["scale"],  # similarity calibration, measured held out
        "calibrated_on": "copies" if copies is not None else "frame pairs",
        "held_out_by": split,
        "held_out": trials[chosen],
        "tried": {  # similarity agreement (Pearson r) held out
            f"{name}{f' {ridge:g}' if ridge else ''}": trial["similarity_r"]
            for (name, ridge), trial in trials.items()
        },
    }
    return matrix, bias, report
