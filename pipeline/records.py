"""Domain records passed between stages. Shapes are checked on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.metric import Box


# A reference indexed with crops (views.reference_grid: strong zooms) holds each crop as a
# reference of its own, named after its parent: "<parent>#crop<k>". Matches against a crop are
# reported against the parent; an id like that is reserved for crops.
CROP_MARK = "#crop"


def crop_id(parent: str, k: int) -> str:
    return f"{parent}{CROP_MARK}{k}"


def crop_parent(reference_id: str) -> str | None:
    """The parent of a crop reference id; None for any other id."""
    parent, mark, k = reference_id.rpartition(CROP_MARK)
    return parent if mark and parent and k.isdigit() else None


# Audio fingerprints are timed in hops of 32 ms (pipeline/audio/fingerprint.py: 256 samples
# at 8 kHz): the anchor time of each landmark hash.
AUDIO_HOP_S = 0.032


@dataclass
class AudioPrint:
    """Landmark hashes of a soundtrack, or of one window of it (pipeline/audio/fingerprint.py):
    ``hashes`` [M] int32 and the time of each one's anchor peak in ``AUDIO_HOP_S`` hops from the
    start of the file, ``times`` [M] int32, in time order. ``seconds``: audio decoded; ``status``
    says why there are none (``no audio``, ``silent``) or what was skipped (``corrupt packets:
    N``)."""

    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    seconds: float = 0.0
    status: str = "ok"

    def __post_init__(self) -> None:
        self.hashes = np.asarray(self.hashes, np.int32)
        self.times = np.asarray(self.times, np.int32)
        if self.hashes.shape != self.times.shape or self.hashes.ndim != 1:
            raise ValueError("audio hashes and times must be [M] each")

    def __len__(self) -> int:
        return len(self.hashes)

    @classmethod
    def concat(cls, parts: list[AudioPrint]) -> AudioPrint:
        """Consecutive stretches as one; the status is the last one that is not ``ok``."""
        if not parts:
            return cls()
        statuses = [p.status for p in parts if p.status != "ok"]
        return cls(
            np.concatenate([p.hashes for p in parts]),
            np.concatenate([p.times for p in parts]),
            sum(p.seconds for p in parts),
            statuses[-1] if statuses else "ok",
        )

    def between(self, start_s: float, end_s: float) -> AudioPrint:
        """The hashes anchored in [start_s, end_s)."""
        keep = (self.times >= start_s / AUDIO_HOP_S) & (self.times < end_s / AUDIO_HOP_S)
        seconds = max(0.0, min(end_s, self.seconds) - start_s)
        return AudioPrint(self.hashes[keep], self.times[keep], seconds, self.status)


@dataclass(frozen=True)
class NativeFrames:
    """Small thumbnails of every native frame of a video, kept by the decode that sampled it
    so that span refinement need not read the video again."""

    times: np.ndarray  # [M] float64 start times, increasing
    thumbs: np.ndarray  # [M, S, S, 3] uint8 RGB

    def __post_init__(self) -> None:
        if self.thumbs.ndim != 4 or self.thumbs.shape[0] != len(self.times):
            raise ValueError(f"thumbs must be [M, S, S, 3]; got {self.thumbs.shape}")


@dataclass
class SampledFrames:
    """Frames sampled from one video at a fixed rate, by presentation time."""

    path: str
    frames: np.ndarray  # [N, H, W, 3] uint8 RGB
    times: np.ndarray  # [N] float64: the moment each frame was sampled for
    starts: np.ndarray  # [N] float64: start of the span of video each frame stands for
    ends: np.ndarray  # [N] float64: end of that span (spans tile [0, duration])
    duration: float
    native_fps: float
    width: int  # source width and height, before resizing
    height: int
    first: int = 0  # index of the first frame in the whole video (a window of a longer video)
    native: NativeFrames | None = None  # every native frame, when asked for and one window

    def __post_init__(self) -> None:
        n = len(self.times)
        if self.frames.ndim != 4 or self.frames.shape[0] != n or self.frames.shape[3] != 3:
            raise ValueError(f"frames must be [N, H, W, 3]; got {self.frames.shape} for N={n}")
        if self.frames.dtype != np.uint8:
            raise ValueError("frames must be uint8")
        if self.starts.shape != (n,) or self.ends.shape != (n,):
            raise ValueError("starts/ends must be [N]")


@dataclass
class VideoFeatures:
    """Frame descriptors of one video and the time span each descriptor covers."""

    video_id: str
    path: str
    duration: float
    embeddings: np.ndarray  # [N, D] float32, L2-normalised rows
    starts: np.ndarray  # [N] float64 seconds
    ends: np.ndarray  # [N] float64 seconds
    model: str
    fps: float = 1.0  # sampling rate the descriptors were taken at
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    weights: np.ndarray | None = None  # [N] float32 in [0, 1]: evidence each frame carries
    preprocess: str = ""  # frame preparation the descriptors depend on (see preprocess_id)
    # Query-side extra views (pipeline/describe/views.py): name -> (rows [M] of the frames the view
    # covers, their [M, D] descriptors as seen through the view). Sparse: a long video's views
    # cost what they cover, and a frame a view does not cover is described by itself alone.
    views: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    sampled: int = -1  # frames sampled before keyframe selection (-1: same as N)
    native: NativeFrames | None = None  # the whole video's native frames (queries read in one go)
    # Reference-side crops (views.reference_grid), each described as a video of its own: the
    # index stores them as references named crop_id(video_id, k).
    crops: list[VideoFeatures] = field(default_factory=list)
    # The soundtrack's landmark hashes (pipeline/audio/), of this window when a window; None
    # when the sound was not read (audio.enabled off, or a record from before audio).
    audio: AudioPrint | None = None

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0]
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [N, D]; got {self.embeddings.shape}")
        if self.starts.shape != (n,) or self.ends.shape != (n,):
            raise ValueError("starts/ends must be [N] matching embeddings")
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.weights = (
            np.ones(n, np.float32) if self.weights is None else np.asarray(self.weights, np.float32)
        )
        if self.weights.shape != (n,):
            raise ValueError("weights must be [N] matching embeddings")
        for name, (rows, vectors) in self.views.items():
            if rows.ndim != 1 or vectors.shape != (len(rows), self.embeddings.shape[1]):
                raise ValueError(f"view {name}: rows [M] and descriptors [M, D] expected")
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise ValueError(f"view {name}: rows outside the {n} frames")
        if self.sampled < 0:
            self.sampled = n

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @classmethod
    def concat(cls, parts: list[VideoFeatures]) -> VideoFeatures:
        """Consecutive windows of one video as one record (view rows shifted into place)."""
        offsets = np.cumsum([0] + [len(p) for p in parts])
        views: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for offset, part in zip(offsets, parts, strict=False):
            for name, (rows, vectors) in part.views.items():
                views.setdefault(name, []).append((rows + offset, vectors))
        timings: dict[str, float] = {}
        for part in parts:
            for key, value in part.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        last = parts[-1]
        return cls(
            video_id=last.video_id,
            path=last.path,
            duration=last.duration,
            embeddings=np.concatenate([p.embeddings for p in parts]),
            starts=np.concatenate([p.starts for p in parts]),
            ends=np.concatenate([p.ends for p in parts]),
            model=last.model,
            fps=last.fps,
            timings=timings,
            weights=np.concatenate([p.weights for p in parts]),
            preprocess=last.preprocess,
            views={
                name: (np.concatenate([r for r, _ in v]), np.concatenate([x for _, x in v]))
                for name, v in views.items()
            },
            sampled=sum(p.sampled for p in parts),
            crops=[cls.concat([p.crops[k] for p in parts]) for k in range(len(last.crops))],
            audio=_concat_audio([p.audio for p in parts]),
        )

    def slice(self, lo: int, hi: int | None = None) -> VideoFeatures:
        """Frames ``lo`` to ``hi`` (exclusive) as a record of their own (views follow)."""
        hi = len(self) if hi is None else hi
        views = {}
        for name, (rows, vectors) in self.views.items():
            keep = (rows >= lo) & (rows < hi)
            if keep.any():
                views[name] = (rows[keep] - lo, vectors[keep])
        return dataclasses.replace(
            self,
            embeddings=self.embeddings[lo:hi],
            starts=self.starts[lo:hi],
            ends=self.ends[lo:hi],
            weights=self.weights[lo:hi],
            views=views,
            sampled=-1,
            timings={},
            audio=None,
        )

    def windows(self, frames: int) -> list[VideoFeatures]:
        """Consecutive windows of ``frames`` frames (the last keeps the video's timings)."""
        if len(self) <= frames:
            return [self]
        parts = [self.slice(lo, lo + frames) for lo in range(0, len(self), frames)]
        parts[-1] = dataclasses.replace(parts[-1], timings=dict(self.timings))
        if self.audio is not None:  # each window the sound of its own time
            bounds = [float(p.starts[0]) for p in parts[1:]]
            for part, start, end in zip(parts, [0.0, *bounds], [*bounds, math.inf], strict=True):
                part.audio = self.audio.between(start, end)
        return parts

    def search_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every descriptor a query offers (its frames', then each view's) and each one's
        evidence weight (its frame's)."""
        rows = [rows for rows, _ in self.views.values()]
        vectors = np.concatenate([self.embeddings, *(v for _, v in self.views.values())])
        return vectors, np.concatenate([self.weights, *(self.weights[r] for r in rows)])


def _concat_audio(parts: list[AudioPrint | None]) -> AudioPrint | None:
    known = [p for p in parts if p is not None]
    return AudioPrint.concat(known) if known else None


@dataclass(frozen=True)
class Segment:
    """A copied span: [query_start, query_end] of the query copies the reference span."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    score: float
    # Other reference spans the copy fits within align.ambiguity_margin of this one (near-static
    # footage: pipeline/match/ambiguity.py), best first; empty when the time is unambiguous.
    alternatives: tuple[tuple[float, float], ...] = ()
    # Seconds the reference span may be off by: a copy found through a reference's sparse crop
    # frames (views.reference_every) is placed only to within their spacing, and sync looks
    # that far for the motion's match (pipeline/match/sync.py). 0: placed on the sampling grid.
    reference_slack_s: float = 0.0
    # What the segment rests on: "video" (frames), "audio" (soundtrack hashes) or "both".
    modality: str = "video"

    def overlaps(self, other: Segment) -> bool:
        """Whether the two share query time (the same copied stretch of the upload)."""
        return self.query_start < other.query_end and other.query_start < self.query_end

    @property
    def speed(self) -> float:
        """Reference seconds per query second (above 1: the copy plays faster)."""
        return (self.reference_end - self.reference_start) / (self.query_end - self.query_start)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query_start": round(self.query_start, 3),
            "query_end": round(self.query_end, 3),
            "reference_start": round(self.reference_start, 3),
            "reference_end": round(self.reference_end, 3),
            "score": round(self.score, 4),
            "modality": self.modality,
        }
        if self.alternatives:
            out["reference_alternatives"] = [
                [round(a, 3), round(b, 3)] for a, b in self.alternatives
            ]
        return out


@dataclass
class Match:
    reference_id: str
    reference_path: str
    score: float
    segments: list[Segment]
    verdict: dict[str, Any] | None = None  # a reviewer's verdict (pipeline/review/verdicts.py)
    bank: str | None = None  # the reference's bank and what its matches do (index/banks.py)
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference_id": self.reference_id,
            "reference_path": self.reference_path,
            "score": round(self.score, 4),
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.verdict is not None:
            out["verdict"] = self.verdict
        if self.bank is not None:
            out["bank"], out["action"] = self.bank, self.action
        return out


@dataclass
class QueryResult:
    """The product's query result (DESIGN.md contract); ``error`` set when the input failed."""

    query_id: str
    query_path: str
    duration: float | None
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    sha256: str | None = None  # the query file's content hash, where it was computed
    audio: str | None = None  # what its soundtrack gave: ok, no audio, silent, ... (None: not read)

    def segment_boxes(self) -> list[Box]:
        """Every segment as a row of the segment CSV."""
        from pipeline.metric import Box

        return [
            Box(self.query_id, m.reference_id, s.query_start, s.query_end,
                s.reference_start, s.reference_end, s.score)
            for m in self.matches
            for s in m.segments
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": {"id": self.query_id, "path": self.query_path, "duration": self.duration},
            "matches": [m.to_dict() for m in self.matches],
        }
        if self.sha256 is not None:
            out["query"]["sha256"] = self.sha256
        if self.audio is not None:
            out["query"]["audio"] = self.audio
        if self.error is not None:
            out["error"] = self.error
        if self.timings:
            out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return out
