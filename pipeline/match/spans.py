"""Span refinement: segment ends read off the videos' native frames rather than the sampling
grid (query ends onto the query's cuts: refine.py; reference spans shifted onto the query's
motion: sync.py), from one read of the query's frames."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.config import Config
from pipeline.describe.decode import backend_for
from pipeline.match.refine import (
    Frames,
    boundary_windows,
    native_frames,
    read_frames,
    refine_matches,
)
from pipeline.match.sync import sync_matches, sync_windows, tell_each
from pipeline.records import Match, VideoFeatures

log = logging.getLogger(__name__)


class SpanRefiner:
    def __init__(self, config: Config):
        self.config = config

    def refine(
        self,
        matches: list[Match],
        query: VideoFeatures,
        durations: dict[str, float],
        on_final: Callable[[Match], None] | None = None,
    ) -> list[Match]:
        """The matches with refined spans. ``on_final(match)`` sees each returned match, in
        order, as soon as its spans are final (a service alerts on it at once)."""
        cfg = self.config.align
        frames = self._span_frames(matches, query) if matches and cfg.refines_spans else None
        if frames is None:  # nothing to refine with: every match is final as it is
            return tell_each(on_final, matches)
        if cfg.refine_boundaries:
            matches = refine_matches(matches, frames, query.fps, query.duration, durations)
        if not cfg.sync_reference:
            return tell_each(on_final, matches)
        # Matches arrive best first: the cap keeps the strongest ones synced.
        limit = cfg.sync_max_matches
        return sync_matches(matches, frames, durations, self.config.decode, limit, on_final)

    def _span_frames(self, matches: list[Match], query: VideoFeatures) -> Frames | None:
        """The query's native frames both refinement stages need, from one read of the file
        (none when the decode kept them); None when they cannot be read."""
        cfg, fps = self.config.align, query.fps
        windows = boundary_windows(matches, fps, query.duration) if cfg.refine_boundaries else []
        if cfg.sync_reference:
            windows += sync_windows(matches, fps, cfg.sync_max_matches)
        try:
            if query.native is not None:
                return native_frames(query.native, windows)
            backend = backend_for(query.duration, self.config.decode)
            return read_frames(query.path, windows, backend)
        except Exception as exc:  # both stages are optional: keep the grid's spans
            log.warning("span refinement skipped for %s: %s", query.path, exc)
            return None
