"""The reference index: a directory with a FAISS frame index, descriptors and a SQLite catalog.

Layout of ``DIR``::

    catalog.sqlite     videos (id, path, sha256, duration, fps, frames, model, added_at) + meta
    vectors/<num>.npz  per-video descriptors and frame spans (no pickle)
    frames.faiss       FAISS IndexIDMap2 over IndexFlatIP; id = num << 24 | frame
    videos.faiss       FAISS IndexIDMap2 over IndexFlatIP of video-level descriptors; id = num
    frames.json        sidecar: model, dim, vector count, catalog generation it was built at
    background.npz     optional: descriptors of background footage (generic-frame weights)
    whitening.npz      optional: PCA whitening fitted on the reference frames, refitted when
                       their count has changed materially (``whitening``)

The catalog is the source of truth and the FAISS files are derived from the npz files. Every
change bumps the catalog's generation; the FAISS file is written (atomically) before the
catalog commits, so after a crash the generations disagree and the FAISS index is rebuilt from
the descriptors. Writers hold an exclusive lock on ``DIR/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import faiss
import numpy as np

from pipeline import atomic
from pipeline.config import WhitenConfig
from pipeline.errors import (
    IdConflictError,
    ModelMismatchError,
    ReferenceIndexError,
    UnknownReferenceError,
)
from pipeline.pooling import video_descriptor
from pipeline.records import VideoFeatures
from pipeline.whitening import Whitening, fit_whitening

log = logging.getLogger(__name__)

FRAME_BITS = 24  # up to 16.7M frames per video: 194 days at 1 fps
FRAME_MASK = (1 << FRAME_BITS) - 1
FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    duration REAL NOT NULL,
    fps REAL NOT NULL,
    frames INTEGER NOT NULL,
    model TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_sha ON videos (sha256);
"""


@dataclass(frozen=True)
class Reference:
    num: int
    id: str
    path: str
    sha256: str
    duration: float
    fps: float
    frames: int
    model: str
    added_at: str


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ReferenceIndex:
    """Open (or create) the index in ``root``. Searching needs no lock; writing takes one."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        if not (self.root / "catalog.sqlite").exists() and not create:
            raise ReferenceIndexError(f"no index at {self.root}")
        (self.root / "vectors").mkdir(parents=True, exist_ok=True)
        # Callers serialise access; the service uses the index from its worker thread.
        self.db = sqlite3.connect(
            self.root / "catalog.sqlite", isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._faiss: faiss.Index | None = None
        self._videos: faiss.Index | None = None
        self._background: np.ndarray | None = None
        self._background_key: int | None = None
        self._whitening: Whitening | None = None
        self._whitening_key: int | None = None
        self._faiss_generation = -1
        self._unlink_after_commit: list[Path] = []

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReferenceIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- catalog -------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def model(self) -> str | None:
        return self._meta("model")

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def references(self) -> list[Reference]:
        rows = self.db.execute("SELECT * FROM videos ORDER BY num").fetchall()
        return [Reference(*row) for row in rows]

    def get(self, video_id: str) -> Reference | None:
        row = self.db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        return Reference(*row) if row else None

    def by_sha256(self, sha256: str) -> Reference | None:
        row = self.db.execute("SELECT * FROM videos WHERE sha256 = ?", (sha256,)).fetchone()
        return Reference(*row) if row else None

    def by_num(self, num: int) -> Reference:
        row = self.db.execute("SELECT * FROM videos WHERE num = ?", (num,)).fetchone()
        if row is None:
            raise UnknownReferenceError(f"no reference number {num}")
        return Reference(*row)

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]

    def info(self) -> dict:
        refs = self.references()
        whitening = self._read_whitening(self.root / "whitening.npz")
        return {
            "path": str(self.root),
            "model": self.model,
            "preprocess": self._meta("preprocess"),
            "references": len(refs),
            "frames": sum(r.frames for r in refs),
            "duration_s": round(sum(r.duration for r in refs), 3),
            "generation": self.generation,
            "whitening_frames": whitening.frames if whitening else None,  # frames it was fitted on
        }

    def check_model(self, model: str, preprocess: str = "") -> None:
        """Refuse descriptors of another model, or of other frame preparation, than the ones
        that built the index (an empty ``preprocess`` skips that part of the check)."""
        if self.model is not None and self.model != model:
            raise ModelMismatchError(
                f"index {self.root} was built with model {self.model!r}, not {model!r}"
            )
        built = self._meta("preprocess")
        if preprocess and built and built != preprocess:
            raise ModelMismatchError(
                f"index {self.root} was built with frame preparation {built!r}, not "
                f"{preprocess!r}: rebuild the index or use the same decode/suppress settings"
            )

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def plan_add(self, video_id: str, sha256: str, replace: bool = False) -> str:
        """What adding this content under this id would do, without decoding anything:
        ``add``, ``replace``, ``unchanged`` (same id, same content) or ``duplicate`` (the
        content is already indexed under another id). Raises ``IdConflictError``."""
        existing = self.get(video_id)
        if existing is not None:
            if existing.sha256 == sha256:
                return "unchanged"
            if not replace:
                raise IdConflictError(
                    f"reference id {video_id!r} already holds different content "
                    f"({existing.path}); pass --replace to replace it"
                )
            return "replace"
        if self.by_sha256(sha256) is not None:
            return "duplicate"
        return "add"

    def add(self, items: list[tuple[VideoFeatures, str]], replace: bool = False) -> list[str]:
        """Add ``(features, sha256)`` pairs in one transaction; returns each item's outcome."""
        if not items:
            return []
        with self._write_lock():
            index = self._load_faiss()
            outcomes = []
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for features, sha256 in items:
                    self.check_model(features.model, features.preprocess)
                    outcome = self.plan_add(features.video_id, sha256, replace)
                    outcomes.append(outcome)
                    if outcome in ("unchanged", "duplicate"):
                        continue
                    if outcome == "replace":
                        self._remove_locked(index, self.get(features.video_id))
                    self._add_locked(index, features, sha256)
                self._commit(index)
            except BaseException:
                self._rollback()
                raise
        return outcomes

    def _add_locked(self, index: faiss.Index, features: VideoFeatures, sha256: str) -> None:
        if self.model is None:
            self._set_meta("model", features.model)
            self._set_meta("dim", str(features.embeddings.shape[1]))
        if features.preprocess and self._meta("preprocess") is None:
            self._set_meta("preprocess", features.preprocess)
        cursor = self.db.execute(
            "INSERT INTO videos (id, path, sha256, duration, fps, frames, model, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                features.video_id,
                str(Path(features.path).resolve()),
                sha256,
                features.duration,
                features.fps,
                len(features),
                features.model,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )
        num = int(cursor.lastrowid)
        atomic.write_npz(
            self._vector_path(num),
            embeddings=features.embeddings,
            starts=features.starts,
            ends=features.ends,
            weights=features.weights,
        )
        index.add_with_ids(features.embeddings, _frame_ids(num, len(features)))
        self._videos.add_with_ids(video_descriptor(features)[None], np.array([num], np.int64))
        log.info("indexed %s (%d frames) as #%d", features.video_id, len(features), num)

    def remove(self, video_ids: list[str]) -> list[str]:
        """Remove references by id; raises ``UnknownReferenceError`` naming any unknown id."""
        with self._write_lock():
            refs = [self.get(v) for v in video_ids]
            missing = [v for v, r in zip(video_ids, refs, strict=True) if r is None]
            if missing:
                raise UnknownReferenceError(f"not in the index: {', '.join(missing)}")
            index = self._load_faiss()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for ref in refs:
                    self._remove_locked(index, ref)
                self._commit(index)
            except BaseException:
                self._rollback()
                raise
        return video_ids

    def _remove_locked(self, index: faiss.Index, ref: Reference | None) -> None:
        assert ref is not None
        lo, hi = ref.num << FRAME_BITS, (ref.num + 1) << FRAME_BITS
        index.remove_ids(faiss.IDSelectorRange(lo, hi))
        self._videos.remove_ids(faiss.IDSelectorRange(ref.num, ref.num + 1))
        self.db.execute("DELETE FROM videos WHERE num = ?", (ref.num,))
        self._unlink_after_commit.append(self._vector_path(ref.num))
        log.info("removed %s (#%d)", ref.id, ref.num)

    def _rollback(self) -> None:
        self.db.execute("ROLLBACK")
        self._faiss = self._videos = None  # the in-memory indexes may hold uncommitted changes
        self._unlink_after_commit.clear()

    def _commit(self, index: faiss.Index) -> None:
        generation = self.generation + 1
        self._set_meta("generation", str(generation))
        self._save_faiss(index, generation)
        self.db.execute("COMMIT")
        self._faiss, self._faiss_generation = index, generation
        for path in self._unlink_after_commit:  # descriptors of removed references
            path.unlink(missing_ok=True)
        self._unlink_after_commit.clear()
        self._load_vectors.cache_clear()

    # ---- FAISS ---------------------------------------------------------------------------

    def _vector_path(self, num: int) -> Path:
        return self.root / "vectors" / f"{num}.npz"

    def _save_faiss(self, index: faiss.Index, generation: int) -> None:
        with atomic.atomic_path(self.root / "frames.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        with atomic.atomic_path(self.root / "videos.faiss") as tmp:
            faiss.write_index(self._videos, str(tmp))
        atomic.write_json(
            self.root / "frames.json",
            {
                "format": FORMAT_VERSION,
                "kind": "IndexIDMap2(IndexFlatIP)",
                "model": self.model,
                "dim": index.d,
                "vectors": int(index.ntotal),
                "videos": int(self._videos.ntotal),
                "generation": generation,
            },
        )

    def _empty_faiss(self) -> faiss.Index:
        dim = int(self._meta("dim") or 512)
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def _load_faiss(self) -> faiss.Index:
        generation = self.generation
        if self._faiss is not None and self._faiss_generation == generation:
            return self._faiss
        sidecar = self.root / "frames.json"
        built_at = json.loads(sidecar.read_text())["generation"] if sidecar.exists() else -1
        files = [self.root / "frames.faiss", self.root / "videos.faiss"]
        if built_at == generation and all(f.exists() for f in files):
            index = faiss.read_index(str(files[0]))
            self._videos = faiss.read_index(str(files[1]))
        elif generation == 0:  # a new, empty index
            index, self._videos = self._empty_faiss(), self._empty_faiss()
        else:
            index = self._rebuild_faiss()
        self._faiss, self._faiss_generation = index, generation
        return index

    def _rebuild_faiss(self) -> faiss.Index:
        """Recreate the FAISS indexes from the catalog's descriptors (after a crash, or for an
        index written before video-level descriptors existed)."""
        log.warning("rebuilding the FAISS indexes of %s from its descriptors", self.root)
        index, self._videos = self._empty_faiss(), self._empty_faiss()
        for ref in self.references():
            vectors = self._load_vectors(ref.num)
            index.add_with_ids(vectors["embeddings"], _frame_ids(ref.num, ref.frames))
            pooled = video_descriptor(self.features(ref))[None]
            self._videos.add_with_ids(pooled, np.array([ref.num], np.int64))
        return index

    # ---- reading -------------------------------------------------------------------------

    @lru_cache(maxsize=256)  # noqa: B019  (one index object per process; bounded)
    def _load_vectors(self, num: int) -> dict[str, np.ndarray]:
        return atomic.read_npz(self._vector_path(num))

    def features(self, ref: Reference) -> VideoFeatures:
        data = self._load_vectors(ref.num)
        return VideoFeatures(
            video_id=ref.id,
            path=ref.path,
            duration=ref.duration,
            embeddings=data["embeddings"],
            starts=data["starts"],
            ends=data["ends"],
            model=ref.model,
            fps=ref.fps,
            weights=data.get("weights"),  # absent in indexes written before weights existed
        )

    def search(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """kNN over every reference frame: similarities, reference numbers and frame indexes,
        each [N, k]; missing neighbours have reference number -1."""
        index = self._load_faiss()
        k = max(1, min(k, int(index.ntotal)))
        if index.ntotal == 0:
            empty = np.full((len(embeddings), 1), -1, np.int64)
            return np.zeros(empty.shape, np.float32), empty, empty
        sims, ids = index.search(np.ascontiguousarray(embeddings, dtype=np.float32), k)
        nums = np.where(ids >= 0, ids >> FRAME_BITS, -1)
        frames = np.where(ids >= 0, ids & FRAME_MASK, -1)
        return sims, nums, frames

    def search_videos(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """kNN over video-level descriptors: similarities and reference numbers, each [M, k];
        missing neighbours have reference number -1."""
        self._load_faiss()
        videos = self._videos
        if videos is None or videos.ntotal == 0:
            return np.zeros((len(descriptors), 1), np.float32), np.full((len(descriptors), 1), -1)
        k = max(1, min(k, int(videos.ntotal)))
        return videos.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)

    # ---- background footage (generic-frame weights) ---------------------------------------

    def set_background(self, embeddings: np.ndarray, sources: list[str]) -> None:
        """Replace the background set: descriptors of footage that is not a reference (stock
        intros, studio logos, common b-roll). Query frames that resemble it carry less weight."""
        with self._write_lock():
            if self.model is None:
                raise ReferenceIndexError("add references before a background set")
            if embeddings.ndim != 2 or embeddings.shape[1] != int(self._meta("dim") or 0):
                raise ReferenceIndexError(
                    f"background descriptors must be [N, {self._meta('dim')}]"
                )
            atomic.write_npz(
                self.root / "background.npz",
                embeddings=np.ascontiguousarray(embeddings, np.float32),
                sources=np.array(sources, dtype=str),
            )
        self._background_key = None

    def background(self) -> np.ndarray | None:
        """The background descriptors, or None when the index has none."""
        path = self.root / "background.npz"
        if not path.exists():
            return None
        key = path.stat().st_mtime_ns
        if self._background_key != key:
            self._background = atomic.read_npz(path)["embeddings"]
            self._background_key = key
        return self._background

    # ---- whitening -------------------------------------------------------------------------

    def whitening(self, config: WhitenConfig) -> Whitening | None:
        """The whitening fitted on this index's reference frames, fitted (and stored) now when
        there is none or the frame count has changed by more than ``refit_change`` since; None
        when the index has fewer than ``min_frames`` frames."""
        frames = int(self._load_faiss().ntotal)
        if frames < config.min_frames:
            return None
        path = self.root / "whitening.npz"
        current = self._read_whitening(path)
        if current is None or current.stale(frames, config.refit_change, config.shrinkage):
            try:
                with self._write_lock():
                    current = self._read_whitening(path)  # another process may have refitted
                    if current is None or current.stale(
                        frames, config.refit_change, config.shrinkage
                    ):
                        current = self._fit_whitening(config)
                        atomic.write_npz(path, **current.arrays())
                        self._whitening_key = None
            except OSError as exc:  # a read-only index: use the fit without storing it
                log.warning(
                    "cannot store the whitening of %s (%s); refitting per process", path, exc
                )
                current = self._whitening = self._fit_whitening(config)
                self._whitening_key = -1
        return current

    def _read_whitening(self, path: Path) -> Whitening | None:
        if self._whitening_key == -1:  # fitted in memory for an index we cannot write
            return self._whitening
        if not path.exists():
            return None
        key = path.stat().st_mtime_ns
        if self._whitening_key != key:
            try:
                self._whitening = Whitening.from_arrays(atomic.read_npz(path))
            except (OSError, ValueError, KeyError) as exc:  # damaged: fit again
                log.warning("ignoring unreadable %s: %s", path, exc)
                return None
            self._whitening_key = key
        return self._whitening

    def _fit_whitening(self, config: WhitenConfig) -> Whitening:
        flat = faiss.downcast_index(self._load_faiss().index)
        total = int(flat.ntotal)
        # A view of the flat index's storage: only the sampled rows are copied.
        stored = faiss.rev_swig_ptr(flat.get_xb(), total * flat.d).reshape(total, flat.d)
        rows = np.arange(total)
        if total > config.max_frames:  # a fixed-seed sample: the same corpus fits the same way
            rows = np.sort(np.random.default_rng(0).choice(total, config.max_frames, replace=False))
        vectors = stored[rows]
        log.info("fitting whitening on %d of %d reference frames", len(vectors), total)
        # Staleness is judged on the corpus size, not the sample's: a large index would otherwise
        # look changed on every query and be refitted each time.
        return fit_whitening(vectors, config.shrinkage, frames=total)


def _frame_ids(num: int, count: int) -> np.ndarray:
    return (np.int64(num) << FRAME_BITS) + np.arange(count, dtype=np.int64)
