"""Inputs given on the command line or in an audit: files as given, folders expanded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".3gp", ".ogv",
}  # fmt: skip
# Files that are only sound: references and queries matched by their soundtrack (issue 35).
SOUND_SUFFIXES = {".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wav"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | SOUND_SUFFIXES


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders recursively, keeping files with a video or sound suffix."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES
                )
            )
        else:
            found.append(path)  # a missing file is reported by the decoder, in its place
    return found
