"""The report's pictures: timelines (SVG), similarity heatmaps and thumbnails (data: URIs)."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

THUMB_WIDTH = 176
HEATMAP_SIDE = 220  # heatmaps are pooled down to at most this many pixels a side
TIMELINE_WIDTH = 640


def clock(seconds: float) -> str:
    """``h:mm:ss.s``."""
    seconds = max(0.0, float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{rest:04.1f}"


def data_uri(image: np.ndarray, kind: str = ".png") -> str:
    """An RGB uint8 image as a data: URI."""
    ok, encoded = cv2.imencode(kind, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode an image")
    mime = "image/png" if kind == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(encoded.tobytes()).decode()}"


def timeline_svg(segments: list[dict], query_s: float, reference_s: float) -> str:
    """The query (top) and reference (bottom) as bars; each copied span drawn on both, joined.
    Between them, the sound lane marks the upload spans the soundtrack matched (a segment's
    ``modality`` ``audio`` or ``both``; a span the picture alone found leaves it empty)."""
    width, left, right = TIMELINE_WIDTH, 90, 60
    span = width - left - right

    def x(t: float, total: float) -> float:
        return left + span * min(max(t, 0.0), total) / max(total, 1e-6)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="98" '
        f'viewBox="0 0 {width} 98" role="img" aria-label="copied spans">',
        '<text x="4" y="20" class="lab">upload</text>',
        '<text x="4" y="37" class="lab">sound</text>',
        '<text x="4" y="86" class="lab">reference</text>',
        f'<rect x="{left}" y="10" width="{span}" height="14" class="bar"/>',
        f'<rect x="{left}" y="30" width="{span}" height="8" class="bar"/>',
        f'<rect x="{left}" y="74" width="{span}" height="14" class="bar"/>',
        f'<text x="{left + span + 4}" y="21" class="lab">{clock(query_s)}</text>',
        f'<text x="{left + span + 4}" y="85" class="lab">{clock(reference_s)}</text>',
    ]
    for s in segments:
        q0, q1 = x(s["query_start"], query_s), x(s["query_end"], query_s)
        r0, r1 = x(s["reference_start"], reference_s), x(s["reference_end"], reference_s)
        modality = s.get("modality", "video")
        tip = html.escape(
            f"{clock(s['query_start'])}-{clock(s['query_end'])} copies "
            f"{clock(s['reference_start'])}-{clock(s['reference_end'])} ({modality})"
        )
        parts += [
            f'<polygon points="{q0:.1f},24 {q1:.1f},24 {r1:.1f},74 {r0:.1f},74" class="join">'
            f"<title>{tip}</title></polygon>",
            f'<rect x="{q0:.1f}" y="10" width="{max(q1 - q0, 1):.1f}" height="14" class="span"/>',
            f'<rect x="{r0:.1f}" y="74" width="{max(r1 - r0, 1):.1f}" height="14" class="span"/>',
        ]
        if modality in ("audio", "both"):
            parts.append(
                f'<rect x="{q0:.1f}" y="30" width="{max(q1 - q0, 1):.1f}" height="8" '
                f'class="sound"><title>{tip}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    query: np.ndarray,
    query_starts: np.ndarray,
    reference: np.ndarray,
    reference_starts: np.ndarray,
    segments: list[dict],
) -> np.ndarray:
    """RGB image of the query (rows) x reference (columns) cosine similarity, max-pooled to at
    most ``HEATMAP_SIDE`` pixels a side, with each aligned segment drawn as a white line."""
    sim = query.astype(np.float32) @ reference.astype(np.float32).T
    rows, cols = _pool_factor(len(query)), _pool_factor(len(reference))
    pooled = _max_pool(sim, rows, cols)
    scaled = np.clip((pooled - 0.1) / 0.8, 0, 1)
    gray = (scaled * 255).astype(np.uint8)
    image = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    # At least ~120 px a side so that a short match stays visible.
    zoom = max(1, int(np.ceil(120 / max(1, min(image.shape[:2])))))
    image = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)

    def at(t: float, starts: np.ndarray, factor: int) -> int:
        index = int(np.searchsorted(starts, t, side="right")) - 1
        return int(max(index, 0) / factor * zoom + zoom / 2)

    for s in segments:
        p0 = (at(s["reference_start"], reference_starts, cols),
              at(s["query_start"], query_starts, rows))  # fmt: skip
        p1 = (at(max(s["reference_end"] - 1e-3, 0), reference_starts, cols),
              at(max(s["query_end"] - 1e-3, 0), query_starts, rows))  # fmt: skip
        cv2.line(image, p0, p1, (255, 255, 255), 2, cv2.LINE_AA)
    return np.ascontiguousarray(image)


def _pool_factor(n: int) -> int:
    return max(1, int(np.ceil(n / HEATMAP_SIDE)))


def _max_pool(sim: np.ndarray, rows: int, cols: int) -> np.ndarray:
    h, w = sim.shape
    padded = np.full((-(-h // rows) * rows, -(-w // cols) * cols), -1.0, np.float32)
    padded[:h, :w] = sim
    return padded.reshape(padded.shape[0] // rows, rows, -1, cols).max(axis=(1, 3))


def frames_at(path: str | Path, times: list[float]) -> list[np.ndarray | None]:
    """The frames on screen at ``times`` seconds, as RGB thumbnails (None where unreadable), in
    one threaded, forward read of the file: a seek only where the next time lies behind the read
    or more than ``SEEK_AHEAD_S`` past it. A seek per thumbnail decoded from the keyframe before
    each (up to 10 s of frames): the review page of a 59-video audit took 13.7 s, 40 ms a frame."""
    import av

    found: list[np.ndarray | None] = [None] * len(times)
    order = sorted(range(len(times)), key=lambda k: times[k])
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames, latest = iter(()), None
            for k in order:
                t = times[k]
                if latest is None or t < latest.time or t > latest.time + SEEK_AHEAD_S:
                    container.seek(max(0, int((t - 1.0) / stream.time_base)), stream=stream)
                    frames, latest = container.decode(stream), None
                for frame in frames:  # the last frame starting at or before t
                    if frame.time is None:
                        continue
                    if latest is not None and frame.time > t + 1e-3:
                        found[k], latest = _thumb(latest), frame
                        break
                    latest = frame
                else:  # the video ends before the next frame: its last frame is on screen
                    found[k] = _thumb(latest) if latest is not None else None
    except Exception as exc:  # a moved or unreadable file: the report says so instead
        log.warning("no thumbnails of %s: %s", path, exc)
    return found


SEEK_AHEAD_S = 5.0  # decoding this far forward costs less than a seek and a keyframe's GOP


def _thumb(frame) -> np.ndarray:
    height = round(THUMB_WIDTH * frame.height / frame.width / 2) * 2
    return frame.to_ndarray(width=THUMB_WIDTH, height=max(2, height), format="rgb24")


def placeholder(text: str) -> np.ndarray:
    image = np.full((100, THUMB_WIDTH, 3), 60, np.uint8)
    cv2.putText(image, text, (8, 56), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (220, 220, 220), 1)
    return image
