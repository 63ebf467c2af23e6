"""A live stream matched as it airs: HLS segments -> sampled windows -> streaming matching.

Frames are sampled on the stream's own timeline (segment starts from the playlist's
durations, frame times within a segment from their timestamps) at ``decode.fps``, gathered
into windows of ``streaming.live_window_s`` and matched by ``StreamingQuery``; each copy is
alerted once it has ended (``stage: "live"``), so about a window after it aired. A segment
that cannot be decoded is a gap: what was open before it is finished and alerted, and matching
starts again after it. Progress is kept in a small JSON state file written after every
segment, so a restarted stream resumes after its last segment and never repeats an alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.audio.decode import segment_samples
from pipeline.audio.fingerprint import HOP_S, QUERY, StreamingFingerprinter
from pipeline.config import Config
from pipeline.describe.decode import target_size
from pipeline.describe.describer import Describer
from pipeline.index import ReferenceIndex
from pipeline.match import MatchStages
from pipeline.records import AudioPrint, SampledFrames
from pipeline.review.policy import build_alert
from pipeline.streaming.hls import HlsSegment, PlaylistFollower
from pipeline.streaming.matcher import StreamingQuery

log = logging.getLogger(__name__)

KEEP_ALERT_IDS = 10000  # alert ids remembered across restarts


class LiveStream:
    def __init__(
        self,
        describer: Describer,
        stages: MatchStages,
        index: ReferenceIndex,
        playlist: Path,
        state: Path,
        name: str | None = None,
    ):
        self.describer, self.stages, self.index = describer, stages, index
        self.config: Config = describer.config
        self.playlist = playlist
        self.name = name or playlist.stem
        self.state_path = state
        saved = json.loads(state.read_text()) if state.exists() else {}
        # Where to resume: after the last segment whose every frame was matched.
        self.last_sequence = saved.get("last_sequence", -1)
        self.clock = saved.get("clock", 0.0)
        self.next_span = saved.get("next_span", 0)  # the next sampling span to fill
        self.saved_span = self.next_span
        self.published: list[str] = saved.get("published", [])
        self.stream_key = hashlib.sha256(str(playlist.resolve()).encode()).hexdigest()
        self.buffer: list[np.ndarray] = []
        self.buffer_first = self.next_span  # the sampling span of buffer[0]
        self.pending: list[tuple[HlsSegment, int]] = []  # sampled, not all matched: (seg, end)
        self.streaming = StreamingQuery(stages, index)
        self.alerted: dict[str, dict] = {}
        self.size: tuple[int, int] | None = None
        self.heard: list[AudioPrint] = []  # the sound of segments sampled, not yet matched
        self.listener = self._listener(self.clock)

    # ---- the loop ------------------------------------------------------------------------

    def run(self, emit: Callable[[dict], None]) -> str:
        """Follow the stream until it ends; ``emit`` gets each alert. Returns why it ended."""
        self.emit = emit
        cfg = self.config.streaming
        follower = PlaylistFollower(
            self.playlist, cfg.live_poll_s, cfg.live_stall_s, self.last_sequence, self.clock
        )
        if self.last_sequence >= 0:
            log.info("%s: resuming after segment %d (%.1fs)", self.name, self.last_sequence,
                     self.clock)  # fmt: skip
        for segment in follower.segments():
            try:
                frames = self._sample(segment)
            except Exception as exc:  # a corrupt segment: a gap in the stream
                log.warning("%s: segment %d unreadable (%s); gap of %.1fs", self.name,
                            segment.sequence, exc, segment.duration)  # fmt: skip
                self._gap(segment)
            else:
                self._hear(segment)
                self.buffer.extend(frames)
                window = round(cfg.live_window_s * self.config.decode.fps)
                while len(self.buffer) >= window:
                    self._match(self.buffer[:window])
                    self.buffer = self.buffer[window:]
            self._save()
        self._hear(None)
        if self.buffer:
            self._match(self.buffer)
            self.buffer = []
        self._finish()
        self._save()
        log.info("%s: stream ended (%s)", self.name, follower.reason)
        return follower.reason

    def _sample(self, segment: HlsSegment) -> list[np.ndarray]:
        """The frames on screen at the centres of the sampling spans this segment covers."""
        import av

        fps = self.config.decode.fps
        end = segment.start + segment.duration
        centres = []
        k = self.next_span
        while (k + 0.5) / fps < end:
            centres.append((k + 0.5) / fps)
            k += 1
        picked: list[np.ndarray] = []
        with av.open(str(segment.path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            first_time, best = None, None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first_time = frame.time if first_time is None else first_time
                t = segment.start + frame.time - first_time
                while len(picked) < len(centres) and centres[len(picked)] < t:
                    picked.append(self._rgb(best if best is not None else frame))
                best = frame
            if best is None:
                raise ValueError("no decodable video frames")
            while len(picked) < len(centres):
                picked.append(self._rgb(best))
        self.pending.append((segment, k))  # matched once span k has been
        self.next_span = k
        return picked

    # ---- the sound ---------------------------------------------------------------------------

    def _listener(self, clock: float) -> StreamingFingerprinter | None:
        """The stream's sound fingerprinted on its own clock, from ``clock`` seconds."""
        if not self.config.audio.enabled:
            return None
        return StreamingFingerprinter(QUERY, first_col=round(clock / HOP_S))

    def _hear(self, segment: HlsSegment | None) -> None:
        """Take a segment's sound (None: the stream ended, every hash settles); its hashes
        join the next window matched. A segment without readable sound is silence."""
        if self.listener is None:
            return
        if segment is None:
            self.heard.append(self.listener.push(np.zeros(0, np.float32), last=True))
            return
        samples, status = segment_samples(segment.path, segment.duration)
        heard = self.listener.push(samples)
        heard.status = status
        self.heard.append(heard)

    def _rgb(self, frame) -> np.ndarray:
        if self.size is None:
            self.size = target_size(frame.width, frame.height, self.config.decode.short_side)
        return frame.to_ndarray(width=self.size[0], height=self.size[1], format="rgb24")

    def _match(self, frames: list[np.ndarray]) -> None:
        fps = self.config.decode.fps
        first = self.buffer_first
        starts = (first + np.arange(len(frames), dtype=np.float64)) / fps
        sampled = SampledFrames(
            path=str(self.playlist), frames=np.stack(frames), times=starts + 0.5 / fps,
            starts=starts, ends=starts + 1 / fps, duration=float(starts[-1] + 1 / fps),
            native_fps=0.0, width=self.size[0] if self.size else 0,
            height=self.size[1] if self.size else 0, first=first,
        )  # fmt: skip
        self.buffer_first = first + len(frames)
        window = self.describer.describe_sampled(sampled, self.name)
        if self.listener is not None:
            window.audio = AudioPrint.concat(self.heard)
            self.heard = []
        self._alert(self.streaming.add(window))

    def _gap(self, segment: HlsSegment) -> None:
        """Finish what was open before an unreadable segment; match again after it."""
        self._hear(None)
        if self.buffer:
            self._match(self.buffer)
            self.buffer = []
        self._finish()
        self.streaming = StreamingQuery(self.stages, self.index)
        self.heard = []
        self.listener = self._listener(segment.start + segment.duration)
        fps = self.config.decode.fps
        self.next_span = max(self.next_span, round((segment.start + segment.duration) * fps))
        self.buffer_first = self.next_span
        self.pending.append((segment, self.next_span))

    def _finish(self) -> None:
        if self.streaming.last is None:
            return
        if self.heard:  # the sound of the last segments, settled after the last window
            self._alert(self.streaming.hear(AudioPrint.concat(self.heard)))
            self.heard = []
        before = {num: len(segments) for num, segments in self.streaming.final.items()}
        self.streaming.finish(refine=False)  # no single file to reread on a live stream
        grown = [n for n, s in self.streaming.final.items() if len(s) > before.get(n, 0)]
        self._alert(grown)

    def _alert(self, changed: list[int]) -> None:
        aired = float(self.streaming.last.ends[-1]) if self.streaming.last is not None else 0.0
        query = {"id": self.name, "path": str(self.playlist), "duration": round(aired, 3)}
        for match, ref in self.streaming.matches_of(changed):  # a crop's: merged in its parent's
            previous = self.alerted.get(match.reference_id)
            alert = build_alert(match, self.name, self.stream_key, query, ref.duration,
                                self.config.policy, "live", previous,
                                self.index.bank(ref.bank))  # fmt: skip
            if alert is None or alert["alert_id"] in self.published:
                continue
            self.emit(alert)
            self.alerted[match.reference_id] = alert
            self.published = [*self.published, alert["alert_id"]][-KEEP_ALERT_IDS:]

    def _save(self) -> None:
        """Record the segments whose frames have all been matched (resume after them)."""
        while self.pending and self.pending[0][1] <= self.buffer_first:
            segment, end = self.pending.pop(0)
            self.last_sequence = segment.sequence
            self.clock = segment.start + segment.duration
            self.saved_span = end
        atomic.write_json(self.state_path, {
            "playlist": str(self.playlist), "last_sequence": self.last_sequence,
            "clock": self.clock, "next_span": self.saved_span, "published": self.published,
        })  # fmt: skip
