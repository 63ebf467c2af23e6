"""The catalog: the index's source of truth, one SQLite file.

Tables::

    meta        key -> value: model, dim, preprocess, generation, format, the trained
                quantizer's record (``training``)
    videos      one row per live reference: its number (``num``, never reused while its frames
                may still be in a segment), id, content hash, segment, video-level descriptor
    segments    one row per segment: kind ``flat`` (exact; built in memory from the members'
                descriptor files, so it has no file of its own) or ``coded`` (a FAISS file of
                compressed codes), the shard that searches it, its vector count, sealed or open
    tombstones  references removed while their frames are still inside a segment; searches
                skip them, compaction drops them
    banks       one row per bank (pipeline/index/banks.py): its action, thresholds, enabled;
                every reference names its bank (``default`` for an index built before banks)

Every committed change bumps ``generation``; readers compare it to reload incrementally.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.index.banks import DEFAULT_BANK, Bank
from pipeline.records import crop_parent

FORMAT_VERSION = 2

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
    added_at TEXT NOT NULL,
    segment INTEGER NOT NULL DEFAULT 0,
    pooled BLOB,
    bank TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX IF NOT EXISTS videos_sha ON videos (sha256);
CREATE TABLE IF NOT EXISTS segments (
    seg INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    shard INTEGER NOT NULL,
    vectors INTEGER NOT NULL,
    sealed INTEGER NOT NULL,
    file TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (
    num INTEGER PRIMARY KEY,
    segment INTEGER NOT NULL,
    frames INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS banks (
    name TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    min_score REAL,
    min_seconds REAL,
    min_share REAL,
    enabled INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
"""
REFERENCE_COLUMNS = "num, id, path, sha256, duration, fps, frames, model, added_at, segment, bank"
BANK_COLUMNS = "name, action, min_score, min_seconds, min_share, enabled, created_at"


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
    segment: int = 0
    bank: str = DEFAULT_BANK


@dataclass(frozen=True)
class Segment:
    seg: int
    kind: str  # "flat" | "coded"
    shard: int
    vectors: int
    sealed: bool
    file: str | None  # coded segments: file name under segments/

    @property
    def coded(self) -> bool:
        return self.kind == "coded"


@dataclass(frozen=True)
class Tombstone:
    num: int
    segment: int
    frames: int


@dataclass(frozen=True)
class Snapshot:
    """What a reader needs to search one committed state."""

    generation: int
    segments: list[Segment]
    tombstones: list[Tombstone]


def _bank(row: tuple) -> Bank:
    name, action, min_score, min_seconds, min_share, enabled, created_at = row
    return Bank(name, action, min_score, min_seconds, min_share, bool(enabled), created_at)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Catalog:
    def __init__(self, path: Path):
        # Callers serialise access; the service uses the index from its worker thread.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def _migrate(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(videos)")}
        if columns and "segment" not in columns:  # format 1: one FAISS file, float32 vectors
            self.db.execute("ALTER TABLE videos ADD COLUMN segment INTEGER NOT NULL DEFAULT 0")
            self.db.execute("ALTER TABLE videos ADD COLUMN pooled BLOB")
        if columns and "bank" not in columns:  # built before banks: all in the default bank
            self.db.execute("ALTER TABLE videos ADD COLUMN bank TEXT NOT NULL DEFAULT 'default'")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- transactions ----------------------------------------------------------------------

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> int:
        """Bump the generation and commit; returns the new generation."""
        generation = self.generation + 1
        self.set_meta("generation", str(generation))
        self.db.execute("COMMIT")
        return generation

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # ---- meta ------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_json(self, key: str) -> dict | None:
        value = self.meta(key)
        return json.loads(value) if value else None

    @property
    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    # ---- references ------------------------------------------------------------------------

    def _references(self, where: str = "", args: tuple = ()) -> list[Reference]:
        sql = f"SELECT {REFERENCE_COLUMNS} FROM videos {where}"
        return [Reference(*row) for row in self.db.execute(sql, args)]

    def references(self) -> list[Reference]:
        return self._references("ORDER BY num")

    def get(self, video_id: str) -> Reference | None:
        found = self._references("WHERE id = ?", (video_id,))
        return found[0] if found else None

    def by_sha256(self, sha256: str, bank: str | None = None) -> Reference | None:
        """A reference holding this content (in ``bank``, when given)."""
        if bank is None:
            found = self._references("WHERE sha256 = ? LIMIT 1", (sha256,))
        else:
            found = self._references("WHERE sha256 = ? AND bank = ? LIMIT 1", (sha256, bank))
        return found[0] if found else None

    def by_num(self, num: int) -> Reference | None:
        found = self._references("WHERE num = ?", (num,))
        return found[0] if found else None

    def members(self, seg: int, after: int = 0) -> list[Reference]:
        """References in segment ``seg`` numbered above ``after``, in number order."""
        return self._references("WHERE segment = ? AND num > ? ORDER BY num", (seg, after))

    def totals(self) -> tuple[int, int, float]:
        """References, frames and seconds of video in the index."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(frames), 0), COALESCE(SUM(duration), 0) FROM videos"
        ).fetchone()
        return int(row[0]), int(row[1]), float(row[2])

    def insert_reference(self, ref: Reference, pooled: np.ndarray) -> int:
        cursor = self.db.execute(
            "INSERT INTO videos (id, path, sha256, duration, fps, frames, model, added_at, "
            "segment, pooled, bank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ref.id, ref.path, ref.sha256, ref.duration, ref.fps, ref.frames, ref.model,
             ref.added_at, ref.segment, pooled.astype(np.float16).tobytes(), ref.bank),
        )  # fmt: skip
        self.db.execute(
            "UPDATE segments SET vectors = vectors + ? WHERE seg = ?", (ref.frames, ref.segment)
        )
        return int(cursor.lastrowid)

    def delete_reference(self, ref: Reference) -> None:
        """Remove the row at once (the id is free again); its frames stay in the segment, as a
        tombstone, until compaction rewrites the segment."""
        self.db.execute("DELETE FROM videos WHERE num = ?", (ref.num,))
        self.db.execute(
            "INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?)", (ref.num, ref.segment, ref.frames)
        )

    def pooled(self, after: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Video-level descriptors of the references numbered above ``after``: nums [M] and
        descriptors [M, D] float32 (M may be 0)."""
        dim = int(self.meta("dim") or 0)
        rows = self.db.execute(
            "SELECT num, pooled FROM videos WHERE num > ? AND pooled IS NOT NULL ORDER BY num",
            (after,),
        ).fetchall()
        nums = np.array([row[0] for row in rows], np.int64)
        if not rows:
            return nums, np.zeros((0, dim), np.float32)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), np.float16)
        return nums, vectors.reshape(len(rows), -1).astype(np.float32)

    def set_pooled(self, num: int, pooled: np.ndarray) -> None:
        self.db.execute(
            "UPDATE videos SET pooled = ? WHERE num = ?", (pooled.astype(np.float16).tobytes(), num)
        )

    def missing_pooled(self) -> list[Reference]:
        return self._references("WHERE pooled IS NULL ORDER BY num")

    # ---- banks -----------------------------------------------------------------------------

    def banks(self) -> list[Bank]:
        """Every bank, the default one included (it exists implicitly until it is set)."""
        rows = self.db.execute(f"SELECT {BANK_COLUMNS} FROM banks ORDER BY name").fetchall()
        banks = [_bank(row) for row in rows]
        if not any(b.name == DEFAULT_BANK for b in banks):
            banks.insert(0, Bank(DEFAULT_BANK))
        return banks

    def bank(self, name: str) -> Bank | None:
        return next((bank for bank in self.banks() if bank.name == name), None)

    def put_bank(self, bank: Bank) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO banks ({BANK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (bank.name, bank.action, bank.min_score, bank.min_seconds, bank.min_share,
             int(bank.enabled), bank.created_at or now()),
        )  # fmt: skip

    def delete_bank(self, name: str) -> None:
        self.db.execute("DELETE FROM banks WHERE name = ?", (name,))

    def bank_counts(self) -> dict[str, tuple[int, int, float]]:
        """Per bank: references (crops apart), frames (crops' included) and seconds of video."""
        counts: dict[str, tuple[int, int, float]] = {}
        for bank, video_id, frames, duration in self.db.execute(
            "SELECT bank, id, frames, duration FROM videos"
        ):
            n, f, d = counts.get(bank, (0, 0, 0.0))
            whole = crop_parent(video_id) is None
            counts[bank] = (n + whole, f + frames, d + (duration if whole else 0.0))
        return counts

    def banks_of(self) -> dict[int, str]:
        """Every live reference number's bank."""
        return dict(self.db.execute("SELECT num, bank FROM videos"))

    # ---- segments --------------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        rows = self.db.execute(
            "SELECT seg, kind, shard, vectors, sealed, file FROM segments ORDER BY seg"
        )
        return [Segment(s, k, sh, v, bool(se), f) for s, k, sh, v, se, f in rows]

    def open_segment(self, shards: int, max_vectors: int) -> int:
        """The flat segment that takes a new reference: the open one of the least-loaded shard
        while it has room, else a new one there (the full one is sealed)."""
        load = dict.fromkeys(range(shards), 0)
        for shard, vectors in self.db.execute(
            "SELECT shard, SUM(vectors) FROM segments GROUP BY shard"
        ):
            if shard in load:
                load[shard] = vectors
        shard = min(load, key=lambda s: (load[s], s))
        row = self.db.execute(
            "SELECT seg, vectors FROM segments WHERE kind = 'flat' AND sealed = 0 AND shard = ? "
            "ORDER BY seg DESC LIMIT 1",
            (shard,),
        ).fetchone()
        if row is not None and row[1] < max_vectors:
            return int(row[0])
        if row is not None:
            self.db.execute("UPDATE segments SET sealed = 1 WHERE seg = ?", (row[0],))
        return self.insert_segment("flat", shard, shards, sealed=False)

    def insert_segment(
        self,
        kind: str,
        shard: int,
        shards: int,
        sealed: bool,
        vectors: int = 0,
        file: str | None = None,
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO segments (kind, shard, vectors, sealed, file, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kind, shard % shards, vectors, int(sealed), file, now()),
        )
        return int(cursor.lastrowid)

    def seal_flat(self) -> None:
        self.db.execute("UPDATE segments SET sealed = 1 WHERE kind = 'flat'")

    def replace_segments(self, old: list[int], moves: dict[int, list[int]]) -> None:
        """Point ``moves`` (new segment -> member nums) at their new segments, drop the old
        segment rows and the tombstones they held (their frames are gone with them)."""
        for seg, nums in moves.items():
            self.db.executemany(
                "UPDATE videos SET segment = ? WHERE num = ?", [(seg, n) for n in nums]
            )
        marks = ",".join("?" * len(old))
        if old:
            self.db.execute(f"DELETE FROM segments WHERE seg IN ({marks})", old)
            self.db.execute(f"DELETE FROM tombstones WHERE segment IN ({marks})", old)

    def move_tombstone(self, num: int, seg: int) -> None:
        self.db.execute("UPDATE tombstones SET segment = ? WHERE num = ?", (seg, num))

    def tombstones(self) -> list[Tombstone]:
        rows = self.db.execute("SELECT num, segment, frames FROM tombstones ORDER BY num")
        return [Tombstone(*row) for row in rows]

    def snapshot(self) -> Snapshot:
        """Segments and tombstones of one committed state, read in one transaction."""
        self.db.execute("BEGIN")
        try:
            return Snapshot(self.generation, self.segments(), self.tombstones())
        finally:
            self.db.execute("COMMIT")
