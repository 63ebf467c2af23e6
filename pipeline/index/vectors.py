"""Per-reference descriptors on disk: ``vectors/<num>.npz``, float16, no pickle.

Alignment needs a candidate's own frame descriptors; they are read from here for candidates
only, never for the whole catalog, and kept in a cache bounded in bytes. Float16 halves the disk
and cache of float32 for a similarity error below 1e-3 (benchmarks/RESULTS.md, "Catalog at
scale"). Files of indexes written before float16 (float32) read the same way.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.records import VideoFeatures

log = logging.getLogger(__name__)

STORED_DTYPE = np.float16


def vector_path(root: Path, num: int) -> Path:
    return root / "vectors" / f"{num}.npz"


def write_vectors(root: Path, num: int, features: VideoFeatures) -> Path:
    path = vector_path(root, num)
    sound = {}
    if features.audio is not None:  # the soundtrack's landmark hashes (pipeline/audio/)
        sound = {"audio_hashes": features.audio.hashes, "audio_times": features.audio.times}
    atomic.write_npz(
        path,
        embeddings=features.embeddings.astype(STORED_DTYPE),
        starts=features.starts,
        ends=features.ends,
        weights=features.weights,
        **sound,
    )
    return path


def read_embeddings(root: Path, num: int) -> np.ndarray:
    """[N, D] float32 frame descriptors of one reference."""
    return read_member(root, num)[0]


def read_member(root: Path, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One reference's [N, D] float32 frame descriptors and its soundtrack's landmark hashes
    and their columns ([M] int32 each; empty for a reference without sound)."""
    with np.load(vector_path(root, num), allow_pickle=False) as data:
        empty = np.zeros(0, np.int32)
        return (
            data["embeddings"].astype(np.float32),
            data["audio_hashes"] if "audio_hashes" in data.files else empty,
            data["audio_times"] if "audio_times" in data.files else empty,
        )


class VectorCache:
    """Recently used references' descriptor files, at most ``max_bytes`` of arrays (LRU)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, num: int) -> dict[str, np.ndarray]:
        with self._lock:
            if num in self._items:
                self._items.move_to_end(num)
                return self._items[num]
        data = atomic.read_npz(vector_path(self.root, num))
        size = sum(a.nbytes for a in data.values())
        with self._lock:
            if num not in self._items:
                self._items[num] = data
                self.bytes += size
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= sum(a.nbytes for a in dropped.values())
        return data

    def forget(self, num: int) -> None:
        with self._lock:
            dropped = self._items.pop(num, None)
            if dropped is not None:
                self.bytes -= sum(a.nbytes for a in dropped.values())


def sample_vectors(
    root: Path, nums: np.ndarray, frames: np.ndarray, limit: int, seed: int = 0
) -> tuple[np.ndarray, int]:
    """At most ``limit`` frame descriptors [M, D] float32 drawn from the references ``nums``
    (with ``frames`` frames each), and how many frames the sample stands for.

    Whole references are drawn at random (each file is read once), then rows at random down
    to ``limit``; a fixed seed makes the same catalog give the same sample."""
    total = int(frames.sum())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(nums)) if total > limit else np.arange(len(nums))
    chosen, taken = [], 0
    for i in order:
        chosen.append(int(nums[i]))
        taken += int(frames[i])
        if taken >= limit:
            break
    parts = [read_embeddings(root, num) for num in sorted(chosen)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    if len(vectors) > limit:
        vectors = vectors[np.sort(rng.choice(len(vectors), limit, replace=False))]
    return np.ascontiguousarray(vectors), total
