"""Temporal alignment: turn a query x reference frame-similarity matrix into copied segments.

The default is a temporal network (Tan et al., "Scalable detection of partial near-duplicate
videos by visual-temporal consistency", ACM MM 2009): the strongest frame matches become graph
nodes, edges join nodes that move forward in time on both axes within ``max_step`` frames, and
the heaviest path is one copied segment. Paths are taken greedily, heaviest first. Allowing the
reference to advance 0..max_step frames per query frame handles slow-downs, speed-ups up to
``max_step``x and short gaps (dropped, inserted or unmatched frames).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np

from pipeline.config import AlignConfig
from pipeline.records import Segment


@dataclass(frozen=True)
class FrameBox:
    """A copied segment in frame indexes (inclusive) with its mean similarity."""

    q0: int
    q1: int
    r0: int
    r1: int
    score: float
    length: int  # matched query frames on the path
    # The reference span as fractional grid positions [start, end) from a line fitted to the
    # path (None: the whole frames r0..r1).
    ref_span: tuple[float, float] | None = None


class Aligner(Protocol):
    def __call__(self, sim: np.ndarray) -> list[FrameBox]:
        """``sim`` is [Nq, Nr] float32; boxes are returned best first."""
        ...


class TemporalNetwork:
    def __init__(self, config: AlignConfig):
        self.config = config
        _warm_up()  # compile (or load) the path kernel now, not during the first query

    def __call__(self, sim: np.ndarray) -> list[FrameBox]:
        cfg = self.config
        rows, cols, weights = _top_nodes(sim, cfg.top_k, cfg.min_sim)
        alive = np.ones(len(rows), dtype=bool)
        boxes: list[FrameBox] = []
        by_row = _row_starts(rows, sim.shape[0])
        score = np.zeros(len(rows), np.float64)
        parent = np.zeros(len(rows), np.int64)
        changed_from = 0  # query frames before this one keep their paths from the last round
        for _ in range(4 * cfg.max_segments):
            if len(boxes) >= cfg.max_segments or not alive.any():
                break
            _longest_paths(
                rows, cols, weights, alive, by_row, cfg.max_step, cfg.skew_penalty,
                score, parent, changed_from,
            )  # fmt: skip
            end = int(np.argmax(score))
            if score[end] < cfg.min_length * cfg.min_score:
                break  # no remaining path can satisfy both the length and the score floor
            path = _backtrack(parent, end)
            q0, q1 = int(rows[path[0]]), int(rows[path[-1]])
            r0, r1 = int(cols[path].min()), int(cols[path].max())
            # Retire every node inside the box, not just the path: parallel near-duplicate
            # paths (static shots, repeated frames) would otherwise come back as extra segments.
            inside = (rows >= q0) & (rows <= q1) & (cols >= r0) & (cols <= r1)
            alive[inside] = False
            alive[path] = False
            # Paths run forward in query time: only those through or after q0 can change.
            changed_from = q0
            box = FrameBox(q0, q1, r0, r1, float(weights[path].mean()), len(path))
            if not _acceptable(box, boxes, cfg):
                continue
            # Rejected paths need no span.
            span = None
            if cfg.span_fit_slack > 0:
                span = fit_reference_span(rows[path], cols[path], cfg.max_speed, cfg.span_fit_slack)
            if cfg.unit_speed_margin >= 0:
                span = unit_speed_span(sim, box, span, cfg.max_step, cfg.unit_speed_margin)
            box = dataclasses.replace(box, ref_span=span)
            boxes.append(box)
        return sorted(boxes, key=lambda b: -b.score * b.length)


def _acceptable(box: FrameBox, accepted: list[FrameBox], cfg: AlignConfig) -> bool:
    """Long enough, similar enough, at a playback speed a copy can have (a path that stays on a
    few reference frames for many query frames is a static shot, not a copy), and not half
    explained already by a stronger segment."""
    if box.length < cfg.min_length or box.score < cfg.min_score:
        return False
    q_len, r_len = box.q1 - box.q0 + 1, box.r1 - box.r0 + 1
    # One frame of slack on each axis: spans are whole sampled frames.
    if (r_len + 1) * cfg.max_speed < q_len or (q_len + 1) * cfg.max_speed < r_len:
        return False
    covered = sum(max(0, min(box.q1, b.q1) - max(box.q0, b.q0) + 1) for b in accepted)
    return covered < 0.5 * q_len


def _top_nodes(sim: np.ndarray, top_k: int, min_sim: float):
    """The ``top_k`` most similar reference frames of each query frame, above ``min_sim``."""
    nq, nr = sim.shape
    k = min(top_k, nr)
    if nq == 0 or nr == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(nq), k)
    cols = top.reshape(-1)
    weights = sim[rows, cols]
    keep = weights >= min_sim
    rows, cols, weights = rows[keep], cols[keep], weights[keep]
    order = np.lexsort((cols, rows))  # by query frame, then reference frame
    return rows[order], cols[order], weights[order].astype(np.float32)


def _row_starts(rows: np.ndarray, nq: int) -> np.ndarray:
    """``starts[i]:starts[i+1]`` are the nodes of query frame ``i``."""
    return np.searchsorted(rows, np.arange(nq + 1))


@numba.njit(cache=True)
def _longest_paths(
    rows, cols, weights, alive, by_row, max_step, skew_penalty, score, parent, first_row
):  # pragma: no cover - compiled
    """Heaviest path ending at each live node, into ``score`` and ``parent``, for the nodes of
    query frames ``first_row`` on (those before keep what an earlier call found). A
    predecessor is 1..max_step query frames back and 0..max_step reference frames back; dead
    nodes have score -inf.

    Compiled: the loop runs a few dozen times per candidate reference and each pass visits
    every node, which in numpy cost a dozen small-array calls per query frame (a tenth of a
    streamed upload's time at 22 candidates)."""
    start = by_row[first_row]
    for node in range(start, len(rows)):
        score[node] = weights[node] if alive[node] else -np.inf
        parent[node] = -1
    for i in range(max(1, first_row), len(by_row) - 1):
        plo, lo, hi = by_row[max(0, i - max_step)], by_row[i], by_row[i + 1]
        for node in range(lo, hi):
            if not alive[node]:
                continue
            best, best_pred = -np.inf, -1
            for pred in range(plo, lo):
                dj = cols[node] - cols[pred]
                if dj < 0 or dj > max_step or score[pred] == -np.inf:
                    continue
                # Between equally good predecessors prefer the one on the diagonal (playback at
                # the original speed): static shots and merged keyframes repeat a similarity
                # along a row, and without a preference the path would idle on the first of
                # equal reference frames. The first best one wins ties.
                candidate = score[pred] - abs(dj - (i - rows[pred])) * skew_penalty
                if candidate > best:
                    best, best_pred = candidate, pred
            if best > 0:
                score[node] += best
                parent[node] = best_pred


def _warm_up() -> None:
    one = np.zeros(1, np.int64)
    score, parent = np.zeros(1, np.float64), np.zeros(1, np.int64)
    by_row = np.array([0, 1], np.int64)
    weights, alive = np.ones(1, np.float32), np.ones(1, bool)
    _longest_paths(one, one, weights, alive, by_row, 1, 0.0, score, parent, 0)


def _backtrack(parent: np.ndarray, end: int) -> np.ndarray:
    path = [end]
    while parent[path[-1]] >= 0:
        path.append(int(parent[path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


class HoughVoting:
    """Baseline: matched frames vote for a time offset (reference - query); the strongest
    offsets, split where matches stop for more than ``max_step`` frames, are segments. Cheap,
    but assumes the copy plays at the original speed."""

    def __init__(self, config: AlignConfig):
        self.config = config

    def __call__(self, sim: np.ndarray) -> list[FrameBox]:
        cfg = self.config
        rows, cols, weights = _top_nodes(sim, cfg.top_k, cfg.min_sim)
        offsets = cols - rows
        alive = np.ones(len(rows), dtype=bool)
        boxes: list[FrameBox] = []
        while alive.any() and len(boxes) < cfg.max_segments:
            lo = offsets[alive].min()
            votes = np.bincount(offsets[alive] - lo, weights=weights[alive])
            smoothed = np.convolve(votes, np.ones(3), mode="same")  # a frame of jitter
            best = int(np.argmax(smoothed)) + lo
            members = np.flatnonzero(alive & (np.abs(offsets - best) <= 1))
            alive[members] = False
            for run in _runs(members[np.argsort(rows[members], kind="stable")], rows, cfg.max_step):
                box = _box(rows, cols, weights, run)
                if _acceptable(box, boxes, cfg):
                    boxes.append(box)
        return sorted(boxes, key=lambda b: -b.score * b.length)


class DynamicProgramming:
    """Baseline: local alignment (Smith-Waterman) of the similarity matrix with gap penalties,
    repeated with found boxes masked. Monotone paths only; speed changes cost gaps."""

    gap = 0.1

    def __init__(self, config: AlignConfig):
        self.config = config

    def __call__(self, sim: np.ndarray) -> list[FrameBox]:
        cfg = self.config
        gain = (sim - cfg.min_sim).astype(np.float64)
        boxes: list[FrameBox] = []
        for _ in range(4 * cfg.max_segments):
            if len(boxes) >= cfg.max_segments or gain.size == 0:
                break
            table = self._table(gain)
            i, j = np.unravel_index(int(np.argmax(table)), table.shape)
            if table[i, j] <= 0:
                break
            path = self._trace(table, gain, i, j)
            q = np.array([p[0] for p in path])
            r = np.array([p[1] for p in path])
            box = FrameBox(
                int(q.min()), int(q.max()), int(r.min()), int(r.max()),
                float(sim[q, r].mean()), len(set(q.tolist())),
            )  # fmt: skip
            gain[box.q0 : box.q1 + 1, box.r0 : box.r1 + 1] = -1.0
            if _acceptable(box, boxes, cfg):
                boxes.append(box)
        return sorted(boxes, key=lambda b: -b.score * b.length)

    def _table(self, gain: np.ndarray) -> np.ndarray:
        nq, nr = gain.shape
        table = np.zeros((nq + 1, nr + 1))
        ramp = self.gap * np.arange(nr + 1)
        for i in range(1, nq + 1):
            best = np.zeros(nr + 1)
            best[1:] = np.maximum(table[i - 1, :-1] + gain[i - 1], table[i - 1, 1:] - self.gap)
            best = np.maximum(best, 0.0)
            # A horizontal gap run: table[i, j] = max_k best[k] - gap * (j - k).
            table[i] = np.maximum.accumulate(best + ramp) - ramp
        return table[1:, 1:]

    def _trace(self, table: np.ndarray, gain: np.ndarray, i: int, j: int) -> list[tuple[int, int]]:
        path = []
        while i >= 0 and j >= 0 and table[i, j] > 0:
            diagonal = (table[i - 1, j - 1] if i and j else 0.0) + gain[i, j]
            if np.isclose(table[i, j], diagonal):
                path.append((i, j))
                i, j = i - 1, j - 1
            elif i and np.isclose(table[i, j], table[i - 1, j] - self.gap):
                i -= 1
            else:
                j -= 1
        return path[::-1]


def _runs(members: np.ndarray, rows: np.ndarray, max_step: int) -> list[np.ndarray]:
    """Split nodes (sorted by query frame) where the query jumps more than ``max_step``."""
    if len(members) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows[members]) > max_step) + 1
    return np.split(members, breaks)


def _box(rows, cols, weights, nodes) -> FrameBox:
    return FrameBox(
        int(rows[nodes].min()), int(rows[nodes].max()),
        int(cols[nodes].min()), int(cols[nodes].max()),
        float(weights[nodes].mean()), len(set(rows[nodes].tolist())),
    )  # fmt: skip


ALIGNERS = {"tn": TemporalNetwork, "hv": HoughVoting, "dp": DynamicProgramming}


def make_aligner(config: AlignConfig) -> Aligner:
    return ALIGNERS[config.method](config)


SLOPE_SAMPLE = 256  # path nodes used for the span fit's pairwise slopes


def fit_reference_span(
    rows: np.ndarray, cols: np.ndarray, max_speed: float, slack: float
) -> tuple[float, float]:
    """The reference span a path stands for, as fractional grid positions [start, end).

    A copy maps query time to reference time linearly, but the extreme reference frames of a
    path overstate or understate its span whenever an end node sits a frame off the diagonal
    (neighbouring frames match nearly as well). The span is read off a Theil-Sen line (median
    pairwise slope, median intercept) at the path's first query frame and one frame past its
    last, moved at most ``slack`` frames from the path's own extremes: in a near-static
    reference the path idles and the line's slope means little, so it may only nudge.
    """
    q, r = rows.astype(np.float64), cols.astype(np.float64)
    slope = 1.0
    if len(q) >= 2:
        # Pairwise slopes grow with the square of the path: an evenly spaced sample of nodes
        # bounds the memory of a long copy (an hour at 2 fps) and keeps the median robust.
        pick = np.linspace(0, len(q) - 1, min(len(q), SLOPE_SAMPLE)).astype(np.int64)
        sq, sr = q[pick], r[pick]
        dq = sq[None, :] - sq[:, None]
        later = dq > 0
        slope = float(np.median((sr[None, :] - sr[:, None])[later] / dq[later]))
        slope = float(np.clip(slope, 1 / max_speed, max_speed))
    intercept = float(np.median(r - slope * q))
    first, last = float(r.min()), float(r.max()) + 1
    start = float(np.clip(intercept + slope * q[0], first - slack, first + slack))
    end = float(np.clip(intercept + slope * (q[-1] + 1), last - slack, last + slack))
    return start, max(end, start + 1)


def _line_similarity(
    sim: np.ndarray, q0: int, q1: int, slope: float, starts: np.ndarray
) -> np.ndarray:
    """Mean similarity of query frames ``q0..q1`` along the lines that map query position
    ``q0`` to each of ``starts`` (fractional reference positions) at ``slope``; a frame's
    similarity is interpolated between the two reference frames around where its centre lands."""
    q = np.arange(q0, q1 + 1)
    centres = starts[:, None] + slope * (q - q0 + 0.5)[None, :] - 0.5  # in reference frames
    centres = np.clip(centres, 0, sim.shape[1] - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, sim.shape[1] - 1)
    frac = centres - lo
    return ((1 - frac) * sim[q, lo] + frac * sim[q, hi]).mean(axis=1)


def unit_speed_span(
    sim: np.ndarray,
    box: FrameBox,
    span: tuple[float, float] | None,
    max_step: int,
    margin: float,
) -> tuple[float, float] | None:
    """The reference span at the original playback speed when the similarity cannot tell it
    from the path's own speed.

    In near-static footage every reference frame of a shot matches a query frame about as well,
    so a path can idle or hurry and its speed means little: such paths reported a reference
    span half as long as the query's. A copy plays at the original speed unless edited, so the
    best unit-speed line (its offset searched within ``max_step`` frames of the span's centre)
    replaces the span when its mean similarity is within ``margin`` of the best line at the
    span's own speed. Where the content moves, the wrong speed loses similarity quickly and the
    fitted speed stands. Spans that do not fit in the reference at unit speed are kept.
    """
    start, end = span if span is not None else (float(box.r0), float(box.r1 + 1))
    frames = box.q1 - box.q0 + 1
    slope = (end - start) / frames
    if abs(slope - 1) < 1e-3:
        return span
    offsets = np.arange(-max_step, max_step + 0.125, 0.25)
    fitted = _line_similarity(sim, box.q0, box.q1, slope, start + offsets).max()
    unit_starts = (start + end) / 2 - frames / 2 + offsets
    unit_starts = unit_starts[(unit_starts >= 0) & (unit_starts + frames <= sim.shape[1])]
    if len(unit_starts) == 0:
        return span
    scores = _line_similarity(sim, box.q0, box.q1, 1.0, unit_starts)
    if scores.max() < fitted - margin:
        return span
    best = float(unit_starts[int(np.argmax(scores))])
    return best, best + frames


def _grid_time(starts: np.ndarray, ends: np.ndarray, position: float) -> float:
    """Time of a fractional position on the sampling grid (frame k starts at position k)."""
    k = int(np.clip(np.floor(position), 0, len(starts) - 1))
    return float(starts[k] + (position - k) * (ends[k] - starts[k]))


def boxes_to_segments(
    boxes: list[FrameBox],
    q_starts: np.ndarray,
    q_ends: np.ndarray,
    r_starts: np.ndarray,
    r_ends: np.ndarray,
) -> list[Segment]:
    """Frame boxes to seconds, using the span each frame stands for."""
    segments = []
    for b in boxes:
        r0, r1 = float(r_starts[b.r0]), float(r_ends[b.r1])
        if b.ref_span is not None:
            r0 = max(float(r_starts[0]), _grid_time(r_starts, r_ends, b.ref_span[0]))
            r1 = min(float(r_ends[-1]), _grid_time(r_starts, r_ends, b.ref_span[1]))
        segments.append(
            Segment(
                query_start=float(q_starts[b.q0]),
                query_end=float(q_ends[b.q1]),
                reference_start=r0,
                reference_end=r1,
                score=b.score,
            )
        )
    return segments
