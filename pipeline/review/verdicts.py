"""Reviewer verdicts on matches, kept beside the index (``DIR/verdicts.sqlite``), and what they
change.

* ``copy``: a reviewer confirmed the copy; it is alerted as any match passing the policy.
* ``not_copy``: on a (query content, reference) pair: the same content (by SHA-256; by query id
  when no content hash is known) never alerts on that reference again. The match is still
  reported, carrying the verdict.
* ``licensed``: on a reference (query ``*``), or on one reference span: its matches are reported,
  never alerted (a span verdict covers matches whose reference spans all lie inside it).
* ``quarantined``: on a reference whose frames match too many unrelated uploads (an intro, a
  logo): reported, never alerted, until a later verdict on it says otherwise.

The latest verdict on the same target wins; a pair verdict (``copy``/``not_copy``) outranks a
reference-wide one. Each verdict records who gave it and when, and the bank of its reference
(pipeline/index/banks.py): it acts within that bank only (a reference id removed from one bank
and reused in another does not inherit its verdicts), and a bank's token lists only its own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PermanentError
from pipeline.records import Match, QueryResult

VERDICTS = ("copy", "not_copy", "licensed", "quarantined")
SILENT = {"not_copy", "licensed", "quarantined"}  # reported, never alerted
ANY_QUERY = "*"
COLUMNS = (
    "number, query_id, query_sha256, reference_id, verdict, reference_start, reference_end, "
    "note, by, at, bank"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id TEXT NOT NULL,
    query_sha256 TEXT,
    reference_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reference_start REAL,
    reference_end REAL,
    note TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    bank TEXT
);
CREATE INDEX IF NOT EXISTS verdicts_reference ON verdicts (reference_id);
"""


class VerdictError(PermanentError):
    """A verdict that cannot be recorded as asked."""


@dataclass(frozen=True)
class Verdict:
    number: int
    query_id: str  # "*" for a verdict on the whole reference
    query_sha256: str | None
    reference_id: str
    verdict: str
    reference_start: float | None  # a licensed span of the reference, or None (all of it)
    reference_end: float | None
    note: str
    by: str
    at: str
    bank: str | None = None  # None: recorded before banks (any bank)

    def to_dict(self) -> dict:
        return asdict(self)

    def covers(self, match: Match) -> bool:
        if self.reference_start is None or self.reference_end is None:
            return True
        return all(
            s.reference_start >= self.reference_start - 1e-6
            and s.reference_end <= self.reference_end + 1e-6
            for s in match.segments
        )


class Verdicts:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(verdicts)")}
        if "bank" not in columns:  # recorded before banks
            self.db.execute("ALTER TABLE verdicts ADD COLUMN bank TEXT")

    @classmethod
    def beside(cls, index_root: str | Path) -> Verdicts:
        return cls(Path(index_root) / "verdicts.sqlite")

    def close(self) -> None:
        self.db.close()

    def mark(
        self,
        query_id: str,
        reference_id: str,
        verdict: str,
        note: str = "",
        by: str = "",
        query_sha256: str | None = None,
        reference_span: tuple[float, float] | None = None,
        bank: str | None = None,
    ) -> Verdict:
        if verdict not in VERDICTS:
            raise VerdictError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        if not reference_id:
            raise VerdictError("a verdict needs a reference id")
        if verdict in ("copy", "not_copy") and query_id == ANY_QUERY:
            raise VerdictError(f"{verdict} is about one query: give its id, not '*'")
        if reference_span is not None and not reference_span[0] < reference_span[1]:
            raise VerdictError("a reference span must start before it ends")
        start, end = reference_span if reference_span else (None, None)
        cursor = self.db.execute(
            "INSERT INTO verdicts (query_id, query_sha256, reference_id, verdict, "
            "reference_start, reference_end, note, by, at, bank) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (query_id, query_sha256, reference_id, verdict, start, end, note, by or "unknown",
             datetime.now(UTC).isoformat(timespec="seconds"), bank),
        )  # fmt: skip
        return self._get(int(cursor.lastrowid))

    def _get(self, number: int) -> Verdict:
        sql = f"SELECT {COLUMNS} FROM verdicts WHERE number = ?"
        row = self.db.execute(sql, (number,)).fetchone()
        return Verdict(*row)

    def list(
        self,
        reference_id: str | None = None,
        query_id: str | None = None,
        bank: str | None = None,
    ) -> list[Verdict]:
        """Verdicts, oldest first; on one reference, one query, or of one bank."""
        sql, args = f"SELECT {COLUMNS} FROM verdicts WHERE 1 = 1", []
        if reference_id:
            sql, args = sql + " AND reference_id = ?", [*args, reference_id]
        if query_id:
            sql, args = sql + " AND query_id = ?", [*args, query_id]
        if bank:
            sql, args = sql + " AND bank = ?", [*args, bank]
        return [Verdict(*row) for row in self.db.execute(sql + " ORDER BY number", args)]

    def lookup(self, query_id: str, query_sha256: str | None, match: Match) -> Verdict | None:
        """The verdict that applies to ``match`` of this query, if any."""
        found = [
            v for v in self.list(reference_id=match.reference_id)
            if v.bank is None or match.bank is None or v.bank == match.bank
        ]  # fmt: skip
        pair = [
            v for v in found
            if v.query_id != ANY_QUERY and (
                (query_sha256 and v.query_sha256 == query_sha256)
                or ((v.query_sha256 is None or not query_sha256) and v.query_id == query_id)
            )
        ]  # fmt: skip
        if pair:
            return pair[-1]
        wide = [v for v in found if v.query_id == ANY_QUERY and v.covers(match)]
        return wide[-1] if wide else None

    def apply(self, result: QueryResult) -> QueryResult:
        """Attach the verdict that applies to each match of ``result`` (in place); the query's
        content hash (``result.sha256``) is computed from its file when it is not known yet."""
        if not result.matches:
            return result
        if result.sha256 is None and Path(result.query_path).is_file():
            from pipeline.index import file_sha256

            result.sha256 = file_sha256(result.query_path)
        for match in result.matches:
            verdict = self.lookup(result.query_id, result.sha256, match)
            match.verdict = verdict.to_dict() if verdict else None
        return result


def silenced(match: Match) -> bool:
    """Whether a verdict says this match must not raise an alert."""
    return bool(match.verdict) and match.verdict["verdict"] in SILENT
