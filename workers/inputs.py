"""Inputs given on the command line or in an audit: files as given, folders expanded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".3gp", ".ogv",
}  # fmt: skip


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders recursively, keeping files with a video suffix."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                )
            )
        else:
            found.append(path)  # a missing file is reported by the decoder, in its place
    return found
