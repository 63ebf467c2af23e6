"""Following a live HLS playlist on local disk, segment by segment, as it is written.

A live ``.m3u8`` (as ``ffmpeg -re ... -f hls`` writes it) lists media segments with their
durations (``#EXTINF``) under a media sequence number (``#EXT-X-MEDIA-SEQUENCE``) that counts
the segments the playlist has dropped from its head; ``#EXT-X-ENDLIST`` marks the end. The
follower rereads the playlist every ``poll_s`` and yields each new segment once, in order, with
its start on the stream's own timeline (the sum of the durations before it).

What goes wrong is logged with its reason and the stream goes on: a segment listed but missing
on disk is skipped; a playlist that is rewritten (its sequence numbers go back) or truncated
continues from what it lists next; a playlist that cannot be read is retried; a stream with no
new segment for ``stall_s`` ends cleanly.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HlsSegment:
    sequence: int  # media sequence number
    path: Path
    start: float  # seconds on the stream's timeline
    duration: float


@dataclass(frozen=True)
class Playlist:
    first_sequence: int
    entries: list[tuple[Path, float]]  # (segment file, duration), from first_sequence on
    ended: bool


def parse_playlist(text: str, base: Path) -> Playlist:
    """A media playlist's segments; raises ``ValueError`` for text that is not one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an M3U playlist (no #EXTM3U)")
    first, entries, ended, pending = 0, [], False, None
    for line in lines[1:]:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            first = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            pending = float(line.split(":", 1)[1].split(",", 1)[0])
            if not math.isfinite(pending) or pending < 0:
                raise ValueError(f"bad segment duration {line!r}")
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"segment {line!r} has no #EXTINF")
            entries.append(((base / line), pending))
            pending = None
    return Playlist(first, entries, ended)


class PlaylistFollower:
    """Yields new segments of the playlist at ``path`` as they appear (see module docstring).

    ``after``: the last sequence number already handled (a restart resumes after it);
    ``start``: its end on the stream's timeline."""

    def __init__(
        self,
        path: Path,
        poll_s: float,
        stall_s: float,
        after: int = -1,
        start: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = path
        self.poll_s = poll_s
        self.stall_s = stall_s
        self.last = after
        self.clock = start  # the stream time where the next segment begins
        self.sleep = sleep
        self.reason = ""  # why the stream ended

    def segments(self) -> Iterator[HlsSegment]:
        quiet_since = time.monotonic()
        while True:
            playlist = self._read()
            fresh = []
            if playlist is not None:
                fresh = self._new(playlist)
            for segment in fresh:
                quiet_since = time.monotonic()
                if not segment.path.is_file():
                    log.warning("segment %d listed but missing: %s; skipped", segment.sequence,
                                segment.path)  # fmt: skip
                    continue
                yield segment
            if playlist is not None and playlist.ended and not fresh:
                self.reason = "end of playlist"
                return
            if time.monotonic() - quiet_since > self.stall_s:
                self.reason = f"no new segment for {self.stall_s:.0f}s"
                log.warning("%s: %s; ending the stream", self.path, self.reason)
                return
            if not fresh:
                self.sleep(self.poll_s)

    def _read(self) -> Playlist | None:
        try:
            return parse_playlist(self.path.read_text(), self.path.parent)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("cannot read playlist %s (%s); retrying", self.path, exc)
            return None

    def _new(self, playlist: Playlist) -> list[HlsSegment]:
        last_listed = playlist.first_sequence + len(playlist.entries) - 1
        if playlist.entries and last_listed < self.last:
            # Sequence numbers went back: the playlist was rewritten (a restarted encoder).
            log.warning("playlist %s was rewritten (sequence %d after %d); following it anew",
                        self.path, last_listed, self.last)  # fmt: skip
            self.last = playlist.first_sequence - 1
        fresh = []
        for offset, (path, duration) in enumerate(playlist.entries):
            sequence = playlist.first_sequence + offset
            if sequence <= self.last:
                continue
            fresh.append(HlsSegment(sequence, path, self.clock, duration))
            self.clock += duration
            self.last = sequence
        return fresh
