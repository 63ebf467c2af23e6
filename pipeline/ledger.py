"""A small SQLite ledger of finished work, so that redelivered or re-run items are skipped.

Used by the streaming service (key: upload id + content hash) and by audits (key: input path).
Each ``record`` is its own transaction: once it returns, the item is durably done.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class Ledger:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS done (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "detail TEXT NOT NULL, at TEXT NOT NULL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT status, detail FROM done WHERE key = ?", (key,)).fetchone()
        return {"status": row[0], **json.loads(row[1])} if row else None

    def record(self, key: str, status: str, **detail: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?)",
            (key, status, json.dumps(detail), datetime.now(UTC).isoformat(timespec="seconds")),
        )

    def keys(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM done")}

    def close(self) -> None:
        self.db.close()
