"""Reference-side crops for strong zooms.

A copy zoomed in to keep 30-50% of each side shows a part of the reference at a scale the
whole-frame descriptor never saw it at; no query-side view can restore what the crop cut
away. Indexing each reference also as a grid of crops (``views.reference_grid``), each crop
scaled to the frame's size, puts a version of every such part in the index: a fixed zoom falls
inside one crop for its whole length, so it aligns with that crop as an ordinary copy would.
The default grid's four crops keep 60% of each side from each corner, so a zoom keeping 40% of
each side anywhere in the frame has at least three quarters of each side inside one. They are
of one sampled frame in 16 (every 8 s): four crops cost a quarter of an embedding per sampled
frame (catalog and ingest embedding +25%). That finds zooms of near-static footage, whose
frames all look like the nearest crop frame (what the whole frame misses: a 45% zoom of a tree
in wind); a zoom of moving footage needs crops every 2 s (``reference_every: 4``, +100%) to
be found through them, and is otherwise found, weaker, by the whole frame. Sparse crop frames
place a copy only to within their spacing: its span is placed by the footage's motion
(``Segment.reference_slack_s``, pipeline/match/sync.py).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from pipeline.config import ViewsConfig
from pipeline.records import SampledFrames


def crop_count(config: ViewsConfig) -> int:
    """How many crops a reference is described with (a descriptor file or an index entry
    made under other settings may hold another number)."""
    return config.reference_grid**2


def crop_boxes(height: int, width: int, grid: int, side: float) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of the grid x grid crops keeping ``side`` of each side,
    evenly spaced from one edge to the other, row by row."""
    starts = np.linspace(0.0, 1.0 - side, grid) if grid > 1 else np.array([(1.0 - side) / 2])
    return [
        (round(y * height), round((y + side) * height), round(x * width), round((x + side) * width))
        for y in starts
        for x in starts
    ]


def reference_crops(
    sampled: SampledFrames, frames: np.ndarray, config: ViewsConfig
) -> list[SampledFrames]:
    """Each crop of the grid as frames of its own (from ``frames``, the sampled frames with
    their borders cropped), of every ``reference_every``-th sampled frame, each standing for
    the span up to the next one kept."""
    if not config.reference_grid or len(frames) == 0:
        return []
    keep = np.arange(0, len(frames), config.reference_every)
    starts = sampled.starts[keep]
    ends = np.r_[starts[1:], sampled.ends[-1]]
    height, width = frames.shape[1:3]
    crops = []
    for top, bottom, left, right in crop_boxes(
        height, width, config.reference_grid, config.reference_side
    ):
        pixels = np.stack([
            cv2.resize(f[top:bottom, left:right], (width, height), interpolation=cv2.INTER_LINEAR)
            for f in frames[keep]
        ])  # fmt: skip
        times = sampled.times[keep]
        crops.append(
            dataclasses.replace(
                sampled, frames=pixels, times=times, starts=starts, ends=ends, native=None
            )
        )
    return crops
