"""API tokens scoped to a bank, or to everything (admin), kept beside the index.

``DIR/tokens.sqlite`` holds only a SHA-256 of each token, with its name, scope and times: a
token is shown once, when it is created, and cannot be read back. A token is ``cs_`` and 43
URL-safe characters (256 random bits), so its hash can be looked up directly (no salt is
needed against guessing a random 256-bit secret, and the lookup leaks nothing useful). A
revoked token stops working at its next request; removing a bank revokes its tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import PermanentError

PREFIX = "cs_"
SHAPE = re.compile(r"^cs_[A-Za-z0-9_-]{43}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    bank TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""
COLUMNS = "number, name, scope, bank, created_at, revoked_at"


class TokenError(PermanentError):
    """A token that cannot be created or revoked as asked."""


@dataclass(frozen=True)
class Grant:
    """What a request's token may see and change: everything (admin) or one bank."""

    name: str
    bank: str | None  # None: admin

    @property
    def admin(self) -> bool:
        return self.bank is None

    def sees(self, bank: str | None) -> bool:
        return self.admin or bank == self.bank


ADMIN = Grant("admin", None)


@dataclass(frozen=True)
class TokenRecord:
    number: int
    name: str
    scope: str  # "admin" | "bank"
    bank: str | None
    created_at: str
    revoked_at: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TokenStore:
    def __init__(self, path: str | Path):
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(SCHEMA)

    @classmethod
    def beside(cls, index_root: str | Path) -> TokenStore:
        return cls(Path(index_root) / "tokens.sqlite")

    def close(self) -> None:
        self.db.close()

    def create(self, bank: str | None, name: str | None = None) -> tuple[str, TokenRecord]:
        """A new token for ``bank`` (None: admin): the token itself (shown once) and its
        record."""
        if name is not None and not name.strip():
            raise TokenError("a token's name must not be empty")
        token = PREFIX + secrets.token_urlsafe(32)
        next_number = self.db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM tokens")
        number = int(next_number.fetchone()[0])
        label = name or f"{bank or 'admin'}-{number}"
        try:
            cursor = self.db.execute(
                "INSERT INTO tokens (name, sha256, scope, bank, created_at) VALUES (?, ?, ?, ?, ?)",
                (label, digest(token), "admin" if bank is None else "bank", bank, _now()),
            )
        except sqlite3.IntegrityError as exc:
            raise TokenError(f"a token named {label!r} exists already") from exc
        return token, self._get(int(cursor.lastrowid))

    def _get(self, number: int) -> TokenRecord:
        row = self.db.execute(f"SELECT {COLUMNS} FROM tokens WHERE number = ?", (number,))
        return TokenRecord(*row.fetchone())

    def list(self) -> list[TokenRecord]:
        rows = self.db.execute(f"SELECT {COLUMNS} FROM tokens ORDER BY number")
        return [TokenRecord(*row) for row in rows]

    def revoke(self, name_or_number: str) -> TokenRecord:
        """Revoke the token of this name (or number); revoking twice is refused."""
        found = [t for t in self.list() if name_or_number in (t.name, str(t.number))]
        if not found:
            raise TokenError(f"no token {name_or_number!r}")
        record = found[0]
        if record.revoked_at is not None:
            raise TokenError(f"token {record.name!r} was revoked at {record.revoked_at}")
        sql = "UPDATE tokens SET revoked_at = ? WHERE number = ?"
        self.db.execute(sql, (_now(), record.number))
        return self._get(record.number)

    def revoke_bank(self, bank: str) -> int:
        """Revoke every live token of ``bank``; returns how many."""
        cursor = self.db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE bank = ? AND revoked_at IS NULL", (_now(), bank)
        )
        return cursor.rowcount

    def grant(self, token: str) -> Grant | None:
        """What ``token`` may do; None for a malformed, unknown or revoked token."""
        if not SHAPE.match(token or ""):
            return None
        sql = "SELECT name, bank FROM tokens WHERE sha256 = ? AND revoked_at IS NULL"
        row = self.db.execute(sql, (digest(token),)).fetchone()
        return Grant(row[0], row[1]) if row else None
