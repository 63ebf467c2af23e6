"""Segments as a searcher holds them in memory, and the search over them.

A segment is immutable once written, except that a flat segment takes new members while it is
open: a reader appends only the members numbered above the last one it loaded. A coded
segment is a FAISS file written once by compaction. Removed references are tombstones: their
frame ids are skipped by a FAISS ``IDSelector`` until compaction drops them.

Results of segments (and of shards, on Ray) are merged by ``merge_topk`` with one total order,
similarity then id, so a search split any way returns exactly what one search of everything
returns.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from pipeline.audio.postings import Postings, postings_path
from pipeline.index.catalog import Catalog, Segment, Snapshot, Tombstone
from pipeline.index.structure import default_nprobe
from pipeline.index.vectors import read_member

log = logging.getLogger(__name__)

FRAME_BITS = 24  # id = num << 24 | frame: up to 16.7M frames per video (97 days at 2 fps)
FRAME_MASK = (1 << FRAME_BITS) - 1
# Up to this many cells an exact scan of the centroids beats the HNSW graph over them, and
# finds every best cell (at 4096 cells: 7.6 against 12.8 ms per 100 query vectors, the graph
# finding 95% of the cells; benchmarks/RESULTS.md).
EXACT_CELLS = 8192
QUERY_BATCH = 256  # query vectors per coded search call (bounds its lookup tables)


def frame_ids(num: int, count: int) -> np.ndarray:
    return (np.int64(num) << FRAME_BITS) + np.arange(count, dtype=np.int64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference numbers and frame indexes of search ids (-1 for a missing neighbour)."""
    return np.where(ids >= 0, ids >> FRAME_BITS, -1), np.where(ids >= 0, ids & FRAME_MASK, -1)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several [N, k_i] (similarities, ids) results, per row, ordered by
    similarity (descending) then id (ascending); missing neighbours (id -1) last."""
    sims = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    sims = np.where(ids < 0, -np.inf, sims)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -sims), axis=1)[:, :k]
    sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    if sims.shape[1] < k:  # fewer candidates than k: pad as FAISS does
        pad = k - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return np.where(ids < 0, -np.inf, sims).astype(np.float32), ids


class Searcher(Protocol):
    """Frame-level kNN over a catalog's segments, in this process or on shard actors."""

    approximate: bool  # whether some similarities come from compressed codes

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[N, D] float32 -> (similarities, ids), each [N, k], best first."""
        ...

    def search_audio(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored posting of each landmark hash (pipeline/audio/postings.py): query
        positions, reference numbers, reference columns."""
        ...


class LoadedSegment:
    def __init__(
        self, segment: Segment, index: faiss.Index, last_num: int = 0, audio: Postings | None = None
    ):
        self.segment = segment
        self.index = index
        self.audio = audio or Postings()  # the members' soundtrack hashes
        self.last_num = last_num  # flat: the highest member number loaded
        self.skip: set[int] = set()  # tombstoned reference numbers
        self._selector = None

    def set_tombstones(self, nums: list[Tombstone]) -> None:
        wanted = {t.num for t in nums}
        if wanted == self.skip:
            return
        self.skip = wanted
        if not nums:
            self._selector = None
            return
        ids = np.concatenate([frame_ids(t.num, t.frames) for t in nums])
        # Keep the inner selector alive with the outer one (SWIG does not own it).
        batch = faiss.IDSelectorBatch(ids)
        self._selector = (faiss.IDSelectorNot(batch), batch)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat segments: exact kNN. (Coded segments search through ``search_assigned``.)"""
        if self.index.ntotal == 0:
            return _empty(len(x))
        params = faiss.SearchParameters(sel=self._selector[0]) if self._selector else None
        return self.index.search(x, min(k, int(self.index.ntotal)), params=params)

    def search_assigned(
        self, x: np.ndarray, k: int, cells: np.ndarray, cell_sims: np.ndarray, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """kNN in a coded segment, the query vectors' cells already found (``cells``,
        ``cell_sims`` [N, nprobe]): segments trained alike share one coarse search."""
        if self.index.ntotal == 0:
            return _empty(len(x))
        k = min(k, int(self.index.ntotal))
        selector = self._selector[0] if self._selector else None
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        sims = np.empty((len(x), k), np.float32)
        ids = np.empty((len(x), k), np.int64)
        faiss.extract_index_ivf(self.index).search_preassigned_c(
            len(x), faiss.swig_ptr(x), k, faiss.swig_ptr(cells), faiss.swig_ptr(cell_sims),
            faiss.swig_ptr(sims), faiss.swig_ptr(ids), False, params,
        )  # fmt: skip
        return sims, ids

    @functools.cached_property
    def quantizer_key(self) -> str:
        """Which trained quantizer the segment's cells come from (equal: the same cells)."""
        quantizer = faiss.extract_index_ivf(self.index).quantizer
        return hashlib.sha1(faiss.serialize_index(quantizer).tobytes()).hexdigest()

    def cells(self, x: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``nprobe`` best cells of each query vector: similarities and cell numbers."""
        quantizer = faiss.downcast_index(faiss.extract_index_ivf(self.index).quantizer)
        params = None
        if isinstance(quantizer, faiss.IndexHNSW):
            if quantizer.ntotal <= EXACT_CELLS:  # scanning the centroids is faster here
                return faiss.downcast_index(quantizer.storage).search(x, nprobe)
            params = faiss.SearchParametersHNSW(efSearch=max(64, 2 * nprobe))
        return quantizer.search(x, nprobe, params=params)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system. glibc keeps them otherwise: a reader that
    dropped 1 GB of flat segments for their compacted codes stayed at 1.08 GB RSS (0.14 GB
    after trimming; 47 segments of 10,700 vectors)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, 1), -np.inf, np.float32), np.full((n, 1), -1, np.int64)


def load_flat(root: Path, catalog: Catalog, segment: Segment, dim: int) -> LoadedSegment:
    loaded = LoadedSegment(segment, faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))
    append_members(root, catalog, loaded)
    return loaded


def append_members(root: Path, catalog: Catalog, loaded: LoadedSegment) -> None:
    """Add the flat segment's members numbered above the last one loaded."""
    sounds = []
    for ref in catalog.members(loaded.segment.seg, after=loaded.last_num):
        try:
            vectors, hashes, times = read_member(root, ref.num)
        except FileNotFoundError:  # removed since the snapshot: its tombstone follows
            log.warning("descriptors of %s (#%d) are gone; skipped", ref.id, ref.num)
            continue
        if len(vectors):  # a reference that is only sound has no frames
            loaded.index.add_with_ids(vectors, frame_ids(ref.num, len(vectors)))
        sounds.append((ref.num, hashes, times))
        loaded.last_num = ref.num
    if any(len(h) for _, h, _ in sounds):
        loaded.audio = Postings.merge([loaded.audio, Postings.build(sounds)])


def load_coded(root: Path, segment: Segment) -> LoadedSegment:
    assert segment.file is not None
    path = root / "segments" / segment.file
    sound = postings_path(path)  # absent in segments written before audio
    audio = Postings.load(sound) if sound.exists() else None
    return LoadedSegment(segment, faiss.read_index(str(path)), audio=audio)


class LocalSearcher:
    """Holds the segments of the given shards (all of them by default) in this process and
    follows the catalog: each search first catches up with the last committed generation."""

    def __init__(self, root: Path, catalog: Catalog, nprobe: int = 0, shards=None):
        self.root = root
        self.catalog = catalog
        self.nprobe = nprobe
        self.shards = None if shards is None else set(shards)
        self.loaded: dict[int, LoadedSegment] = {}
        self.generation = -1
        self.trained_nprobe = 16  # the structure's own, read with each new generation

    @property
    def approximate(self) -> bool:
        self.refresh()
        return any(s.segment.coded for s in self.loaded.values())

    @property
    def vectors(self) -> int:
        self.refresh()
        return sum(int(s.index.ntotal) for s in self.loaded.values())

    def memory_bytes(self) -> int:
        """Bytes the loaded search structures hold (codes, ids, vectors)."""
        total = 0
        for s in self.loaded.values():
            if s.segment.coded:
                ivf = faiss.extract_index_ivf(s.index)
                total += int(ivf.ntotal) * (ivf.code_size + 8)
            else:
                total += int(s.index.ntotal) * (s.index.d * 4 + 8) + s.audio.nbytes
        return total

    def refresh(self) -> None:
        if self.catalog.generation == self.generation:
            return
        snapshot = self.catalog.snapshot()
        self._apply(snapshot)

    def _apply(self, snapshot: Snapshot) -> None:
        dim = int(self.catalog.meta("dim") or 512)
        wanted = {
            s.seg: s for s in snapshot.segments if self.shards is None or s.shard in self.shards
        }
        dropped = [seg for seg in self.loaded if seg not in wanted]
        for seg in dropped:  # replaced by compaction, or emptied by removals
            del self.loaded[seg]
        for seg, segment in wanted.items():
            loaded = self.loaded.get(seg)
            if loaded is None:
                try:
                    loaded = (
                        load_coded(self.root, segment)
                        if segment.coded
                        else load_flat(self.root, self.catalog, segment, dim)
                    )
                except FileNotFoundError:  # replaced by a compaction since the snapshot
                    log.info("segment %d was replaced while loading; reloading", seg)
                    return self._apply(self.catalog.snapshot())
                self.loaded[seg] = loaded
            elif not segment.coded:
                append_members(self.root, self.catalog, loaded)
            loaded.segment = segment
        by_segment: dict[int, list[Tombstone]] = {}
        for stone in snapshot.tombstones:
            by_segment.setdefault(stone.segment, []).append(stone)
        for seg, loaded in self.loaded.items():
            loaded.set_tombstones(by_segment.get(seg, []))
        trained = self.catalog.meta_json("training") or {}
        self.trained_nprobe = default_nprobe(int(trained.get("structure", {}).get("nlist", 0)))
        self.generation = snapshot.generation
        if dropped:
            release_freed_memory()

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.refresh()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.loaded:
            return np.full((len(x), k), -np.inf, np.float32), np.full((len(x), k), -1, np.int64)
        nprobe = self.nprobe or self.trained_nprobe
        flat = [s for s in self.loaded.values() if not s.segment.coded]
        groups: dict[str, list[LoadedSegment]] = {}
        for s in self.loaded.values():
            if s.segment.coded:
                groups.setdefault(s.quantizer_key, []).append(s)
        merged = []
        for lo in range(0, len(x), QUERY_BATCH):
            chunk = x[lo : lo + QUERY_BATCH]
            parts = [s.search(chunk, k) for s in flat]
            for group in groups.values():
                # One coarse search serves every segment made from the same quantizer: a
                # small fresh segment would otherwise cost as much as the big one.
                cell_sims, cells = group[0].cells(chunk, nprobe)
                parts += [s.search_assigned(chunk, k, cells, cell_sims, nprobe) for s in group]
            merged.append(merge_topk(parts, k))
        return np.concatenate([m[0] for m in merged]), np.concatenate([m[1] for m in merged])

    def search_audio(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.refresh()
        parts = [s.audio.lookup(hashes, s.skip) for s in self.loaded.values() if len(s.audio)]
        if not parts:
            return Postings().lookup(hashes)
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
