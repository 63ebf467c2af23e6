"""An inverted index of landmark hashes: which references hold each hash, and when.

One table per catalog segment, beside its frame index: an open flat segment's is built in
memory from its members' descriptor files, a coded segment's is written once by compaction as
``segments/<name>.audio.npy`` (rows: hashes sorted, reference numbers, anchor columns; int32,
memory-mapped when read, so a large catalog's postings stay on disk until looked up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import atomic

# A hash held this many times in one table is noise (a steady tone, a tick) and looked over:
# its hits would spread over every offset and cost more than they tell.
MAX_POSTINGS = 2000


class Postings:
    """``table`` [3, M] int32: hashes in ascending order, reference numbers, anchor columns."""

    def __init__(self, table: np.ndarray | None = None):
        self.table = np.zeros((3, 0), np.int32) if table is None else table

    def __len__(self) -> int:
        return self.table.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    @classmethod
    def build(cls, items: list[tuple[int, np.ndarray, np.ndarray]]) -> Postings:
        """From (reference number, hashes, times) per reference."""
        items = [item for item in items if len(item[1])]
        if not items:
            return cls()
        hashes = np.concatenate([h for _, h, _ in items])
        nums = np.concatenate([np.full(len(h), num, np.int32) for num, h, _ in items])
        times = np.concatenate([t for _, _, t in items])
        order = np.argsort(hashes, kind="stable")
        return cls(np.ascontiguousarray(np.stack([hashes, nums, times])[:, order], np.int32))

    @classmethod
    def merge(cls, parts: list[Postings]) -> Postings:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        table = np.concatenate([p.table for p in parts], axis=1)
        order = np.argsort(table[0], kind="stable")
        return cls(np.ascontiguousarray(table[:, order]))

    def without(self, nums: set[int]) -> Postings:
        if not nums or not len(self):
            return self
        keep = ~np.isin(self.table[1], np.fromiter(nums, np.int32))
        return Postings(np.ascontiguousarray(self.table[:, keep]))

    def lookup(
        self, hashes: np.ndarray, skip: set[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of each query hash: (query positions, reference numbers, reference
        columns), skipping the references of ``skip`` (tombstones)."""
        if not len(self) or not len(hashes):
            empty = np.zeros(0, np.int64)
            return empty, empty.astype(np.int32), empty.astype(np.int32)
        keys = self.table[0]
        lo = np.searchsorted(keys, hashes, "left")
        hi = np.searchsorted(keys, hashes, "right")
        counts = np.where(hi - lo > MAX_POSTINGS, 0, hi - lo)
        total = int(counts.sum())
        positions = np.repeat(np.arange(len(hashes)), counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        rows = starts + np.arange(total)
        nums, times = self.table[1][rows], self.table[2][rows]
        if skip:
            keep = ~np.isin(nums, np.fromiter(skip, np.int32))
            positions, nums, times = positions[keep], nums[keep], times[keep]
        return positions, nums, times

    def save(self, path: Path) -> None:
        atomic.write_npy(path, self.table)

    @classmethod
    def load(cls, path: Path) -> Postings:
        return cls(np.load(path, mmap_mode="r", allow_pickle=False))


def postings_path(index_file: Path) -> Path:
    """Where a coded segment's postings live, beside its FAISS file."""
    return index_file.with_name(index_file.stem + ".audio.npy")
