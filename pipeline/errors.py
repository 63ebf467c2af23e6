"""One exception hierarchy for copyspan.

The split decides what an edge does with a failure: a ``PermanentError`` is the input's fault
(record it, dead-letter it, never retry), a ``TransientError`` may succeed on a later attempt
(retry with backoff).
"""

from __future__ import annotations

from pathlib import Path


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 200
    characters: what a recorded failure says about a third-party error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class CopyspanError(Exception):
    """Base class of every error copyspan raises on purpose."""


class PermanentError(CopyspanError):
    """Retrying cannot help: the input or the request is wrong."""


class TransientError(CopyspanError):
    """A later attempt may succeed (a busy resource, a crashed worker)."""


class StorageFullError(TransientError):
    """The device holding an index or output is full; nothing of the change was committed."""


class ConfigError(PermanentError):
    """The configuration is invalid."""


class InputError(PermanentError):
    """A video input is unusable. ``reason`` is a short machine-friendly phrase."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        text = f"{self.path}: {reason}"
        super().__init__(f"{text} ({detail})" if detail else text)


class VideoDecodeError(InputError):
    """The file is missing, empty, not a video, corrupt, truncated or over a limit."""


class ReferenceIndexError(PermanentError):
    """Base class of reference-index errors."""


class ModelMismatchError(ReferenceIndexError):
    """The index was built with another descriptor model; embeddings are not comparable."""


class IdConflictError(ReferenceIndexError):
    """A reference id is already used by different content and replacement was not asked for."""


class UnknownReferenceError(ReferenceIndexError):
    """A reference id is not in the index."""
