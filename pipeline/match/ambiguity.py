"""Ambiguous reference times: where else in the reference a copied segment fits as well.

A copy of near-static footage (a fixed camera on a tree in wind, a slowly turning Earth, a held
slide) matches many stretches of its reference almost equally: the aligner picks the best, but
the best by a hair is a guess. For each segment found at the reference's own speed, the mean
similarity of its query frames to the reference frames along every shifted diagonal says how
well the same copy would fit elsewhere; shifts at least ``align.ambiguity_min_shift_s`` and half
the segment away that come within ``margin`` of the chosen one are reported as alternative
reference spans (best first; nearer ones are localisation, not another place), so a reviewer
sees "this copies 0:40 or 1:10 of the reference" instead of a confident wrong answer.
"""

from __future__ import annotations

import numpy as np

from pipeline.match.align import FrameBox

MAX_ALTERNATIVES = 3


def reference_alternatives(
    box: FrameBox, sim: np.ndarray, margin: float, min_shift: int
) -> list[int]:
    """Frame shifts of ``box``'s reference span (best first, at most ``MAX_ALTERNATIVES``)
    whose diagonal mean similarity in ``sim`` ([Nq, Nr], on the sampling grid) is within
    ``margin`` of the box's own, at least ``min_shift`` and half the box's length away: the
    best of each run of such shifts, and the far ends of the run around the box itself when it
    reaches that far (a plateau: the copy fits anywhere along it). None for a box that does not
    play at the reference's speed, or when ``margin`` is 0."""
    length = box.q1 - box.q0 + 1
    if margin <= 0 or abs((box.r1 - box.r0 + 1) - length) > max(1, length // 10):
        return []
    length = min(length, box.r1 - box.r0 + 1)  # the diagonal the box itself covers
    shifts = np.arange(-box.r0, sim.shape[1] - (box.r0 + length) + 1)
    steps = np.arange(length)
    means = sim[box.q0 + steps[None, :], box.r0 + shifts[:, None] + steps[None, :]].mean(axis=1)
    own = means[shifts == 0][0]
    close = np.flatnonzero(means >= own - margin)
    far = max(min_shift, length // 2)
    found: list[tuple[float, int]] = []
    for run in np.split(close, np.flatnonzero(np.diff(close) > 1) + 1):
        if 0 in shifts[run]:  # the box's own neighbourhood: only how far it reaches
            ends = [shifts[run[0]], shifts[run[-1]]]
            found += [(float(means[shifts == e][0]), int(e)) for e in ends if abs(e) >= far]
            continue
        best = run[np.argmax(means[run])]
        if abs(shifts[best]) >= far:
            found.append((float(means[best]), int(shifts[best])))
    found.sort(key=lambda item: -item[0])
    return [shift for _, shift in found[:MAX_ALTERNATIVES]]
