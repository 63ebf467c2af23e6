"""Keyframe selection: one descriptor per run of near-identical consecutive sampled frames.

Static shots, slides and held frames repeat the same picture for seconds; storing, searching
and aligning every sampled frame of them costs index space and time and adds no evidence. Runs
are found on the frames' descriptors (consecutive descriptors that stay this similar to the
run's first): descriptors, not pixels, because what must not change is what alignment sees. A
pixel test (thumbnail correlation) merged frames whose descriptors still differed and cost
0.02-0.04 F1 on the benchmark (benchmarks/RESULTS.md). The kept frame stands for the whole run:
its span is the union of the run's spans, so reported times stay true, and alignment puts it
back on the sampling grid (``expand``). Query views (pipeline/describe/views.py) are embedded
for kept frames only.

Before any of that, ``repeated_frames`` finds the frames that need no model call at all: a frame
whose every thumbnail block is within ``embed.reuse_diff`` grey levels of the last frame embedded
takes that frame's descriptor (a held shot, a still, a slide). The test is on absolute block
levels, not correlation, so fades, flashes and a small moving inset all count as changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import KeyframesConfig
from pipeline.describe.views import Blocks, block_means


@dataclass(frozen=True)
class Keyframes:
    kept: np.ndarray  # [K] indexes of the sampled frames that are kept
    starts: np.ndarray  # [K] start of the span each kept frame stands for
    ends: np.ndarray  # [K] end of that span
    run: np.ndarray  # [N] the kept frame (0..K-1) each sampled frame is represented by


def select_keyframes(
    embeddings: np.ndarray, starts: np.ndarray, ends: np.ndarray, config: KeyframesConfig
) -> Keyframes:
    """Collapse runs of consecutive frames whose descriptors stay within ``min_corr`` cosine
    similarity of the run's first (at most ``max_run`` long); keep each run's middle frame."""
    n = len(embeddings)
    if not config.enabled or n < 2:
        return Keyframes(np.arange(n), starts.copy(), ends.copy(), np.arange(n))
    runs: list[tuple[int, int]] = []
    first = 0
    for i in range(1, n + 1):
        joins = (
            i < n
            and i - first < config.max_run
            and float(embeddings[i] @ embeddings[first]) >= config.min_corr
        )
        if not joins:
            runs.append((first, i))
            first = i
    kept = np.array([(a + b - 1) // 2 for a, b in runs], dtype=np.int64)
    run_starts = np.array([starts[a] for a, _ in runs], dtype=np.float64)
    run_ends = np.array([ends[b - 1] for _, b in runs], dtype=np.float64)
    run = np.repeat(np.arange(len(runs)), [b - a for a, b in runs])
    return Keyframes(kept, run_starts, run_ends, run)


def repeated_frames(
    frames: np.ndarray, max_diff: float, blocks: Blocks | None = None
) -> np.ndarray:
    """[N] for each frame, the frame whose descriptor it takes: itself (embedded), or the last
    embedded frame before it when no block of their 18 x 32 grey thumbnails differs by more than
    ``max_diff`` grey levels (0 embeds every frame). Compared with the last embedded frame, not
    the previous one, so a slow drift is embedded again once it adds up (``blocks``: the
    frames' ``block_sums`` when already known)."""
    source = np.arange(len(frames))
    if max_diff <= 0 or len(frames) < 2:
        return source
    means = block_means(frames, blocks)
    anchor = 0
    for i in range(1, len(frames)):
        if float(np.abs(means[i] - means[anchor]).max()) <= max_diff:
            source[i] = anchor
        else:
            anchor = i
    return source


def expand(starts: np.ndarray, ends: np.ndarray, fps: float):
    """Back to the sampling grid: (row of each grid frame, grid starts, grid ends).

    A kept frame standing for a run of ``n`` sampled frames becomes ``n`` grid frames that share
    its descriptor, so alignment sees the timeline it would have seen without keyframes (steps,
    lengths and speeds stay in sampled frames)."""
    counts = np.maximum(1, np.rint((ends - starts) * fps)).astype(np.int64)
    rows = np.repeat(np.arange(len(starts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    part = (np.arange(len(rows)) - first) / counts[rows]
    width = (ends - starts)[rows]
    grid_starts = starts[rows] + part * width
    grid_ends = grid_starts + width / counts[rows]
    return rows, grid_starts, grid_ends
