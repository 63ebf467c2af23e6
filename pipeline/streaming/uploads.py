"""Upload messages: parse and validate them, and resolve their URI inside the allowed roots.

Everything here raises ``PermanentError`` subclasses: a malformed message or a path outside
the allowed roots never becomes valid by retrying, so the service dead-letters it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipeline.errors import PermanentError

SCHEMA_VERSION = 1


class MessageError(PermanentError):
    """The message is not a valid upload message."""


class PathNotAllowedError(PermanentError):
    """The upload's path is outside every allowed root, or its URI scheme is not allowed."""


@dataclass(frozen=True)
class Upload:
    upload_id: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    banks: list[str] | None = None  # the banks to match against (None: every enabled one)


def parse_upload(raw: bytes | None) -> Upload:
    """``{"schema_version": 1, "upload_id": "...", "uri": "...", "metadata": {...}}``, and
    optionally ``"banks": ["name", ...]`` (match only these); unknown fields are ignored."""
    if raw is None:
        raise MessageError("empty message (tombstone)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageError("message must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
    for key in ("upload_id", "uri"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise MessageError(f"missing or empty string field {key!r}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise MessageError("metadata must be a JSON object")
    banks = data.get("banks")
    if banks is not None and (
        not isinstance(banks, list) or not banks
        or not all(isinstance(b, str) and b.strip() for b in banks)
    ):  # fmt: skip
        raise MessageError("banks must be a non-empty list of bank names")
    return Upload(data["upload_id"], data["uri"], metadata, banks)


def resolve_uri(uri: str, allowed_roots: list[str | Path]) -> Path:
    """The local path of ``file:///abs/path`` or ``/abs/path``, after resolving symlinks, if it
    lies inside an allowed root. ``..`` segments and other schemes are refused outright."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise PathNotAllowedError(f"file URI with a remote host: {uri}")
        raw = unquote(parsed.path)
    elif "://" in uri or uri.startswith("file:"):
        raise PathNotAllowedError(f"URI scheme not allowed: {uri.split(':', 1)[0]}")
    else:
        raw = uri
    if "\x00" in raw:
        raise PathNotAllowedError("path contains a NUL byte")
    path = Path(raw)
    if not path.is_absolute():
        raise PathNotAllowedError(f"path must be absolute: {raw}")
    if ".." in path.parts:
        raise PathNotAllowedError(f"path must not contain '..': {raw}")
    resolved = path.resolve()  # follows symlinks: a link out of the roots is refused below
    for root in allowed_roots:
        if resolved.is_relative_to(Path(root).resolve()):
            return resolved
    raise PathNotAllowedError(f"path outside the allowed roots: {raw}")
