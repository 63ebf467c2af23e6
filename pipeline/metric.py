"""The segment metric (VCSL-style, Jiang et al. CVPR 2022) applied in a retrieval setting.

Per (query, reference) pair, boxes are spans on two axes (query time, reference time). A
predicted box *hits* a GT box when they overlap on both axes. On each axis, precision = length of
the predicted boxes covered by the GT boxes they hit / total predicted length; recall = GT length
covered by the predictions that hit it / total GT length. Pair precision = P_query * P_ref, pair
recall = R_query * R_ref. A pair with predictions and no GT has P = 0; a pair with GT and no
prediction has R = 0. Overall P = mean over pairs with predictions, R = mean over pairs with GT.

``segment_ap`` is Meta's VSC 2022 matching-track metric beside it: predictions ranked by score,
precision and recall accumulated over every pair, averaged along the ranking.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PermanentError

COLUMNS = (
    "query_id",
    "reference_id",
    "query_start",
    "query_end",
    "reference_start",
    "reference_end",
)


@dataclass(frozen=True)
class Box:
    query_id: str
    reference_id: str
    q0: float
    q1: float
    r0: float
    r1: float
    score: float | None = None
    edit: str | None = None  # an edit label carried by ground truth (optional)

    @property
    def pair(self) -> tuple[str, str]:
        return self.query_id, self.reference_id


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_segments(path: str | Path) -> list[Box]:
    """Read a segment CSV. A header row is optional; after the six fixed columns, a numeric
    column is the score and a text column is an edit label (or use header names ``score``
    and ``edit``)."""
    try:
        rows = list(csv.reader(Path(path).read_text().splitlines()))
    except OSError as exc:
        raise PermanentError(f"cannot read {path}: {exc}") from exc
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    names: list[str] | None = None
    if rows and not _is_number(rows[0][2] if len(rows[0]) > 2 else "x"):
        names = [cell.strip() for cell in rows.pop(0)]
    boxes = []
    for number, row in enumerate(rows, start=2 if names else 1):
        if len(row) < 6:
            raise PermanentError(f"{path}:{number}: expected at least 6 columns, got {len(row)}")
        try:
            q0, q1, r0, r1 = (float(x) for x in row[2:6])
        except ValueError as exc:
            raise PermanentError(f"{path}:{number}: times must be numbers: {row}") from exc
        score = edit = None
        for index, cell in enumerate(row[6:], start=6):
            name = names[index] if names and index < len(names) else None
            if name == "score" or (name is None and _is_number(cell) and score is None):
                score = float(cell) if cell.strip() else None
            elif cell.strip():
                edit = cell.strip()
        boxes.append(Box(row[0].strip(), row[1].strip(), q0, q1, r0, r1, score, edit))
    return boxes


def write_segments(path: str | Path, boxes: Iterable[Box]) -> None:
    from pipeline.atomic import write_text

    lines = [",".join((*COLUMNS, "score"))]
    for b in boxes:
        score = "" if b.score is None else f"{b.score:.4f}"
        lines.append(
            f"{b.query_id},{b.reference_id},{b.q0:.3f},{b.q1:.3f},{b.r0:.3f},{b.r1:.3f},{score}"
        )
    write_text(path, "\n".join(lines) + "\n")


def _overlap(a0: float, a1: float, b0: float, b1: float) -> bool:
    return min(a1, b1) > max(a0, b0)


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``spans``."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        start = max(start, end)
        if stop > start:
            total += stop - start
            end = stop
    return total


def _covered(lo: float, hi: float, intervals: list[tuple[float, float]]) -> float:
    """Length of [lo, hi] covered by the union of ``intervals``."""
    return covered_seconds([(max(lo, a), min(hi, b)) for a, b in intervals])


def _axis_ratio(sources: list[Box], targets: list[Box], axis: str) -> float:
    """Sum over ``sources`` of their length covered by the targets they hit, over their length."""
    total = covered = 0.0
    for s in sources:
        lo, hi = (s.q0, s.q1) if axis == "q" else (s.r0, s.r1)
        total += hi - lo
        hits = [
            (t.q0, t.q1) if axis == "q" else (t.r0, t.r1)
            for t in targets
            if _overlap(s.q0, s.q1, t.q0, t.q1) and _overlap(s.r0, s.r1, t.r0, t.r1)
        ]
        covered += _covered(lo, hi, hits)
    return covered / total if total > 0 else 0.0


def pair_scores(predicted: list[Box], truth: list[Box]) -> tuple[float, float]:
    """(precision, recall) of one (query, reference) pair."""
    precision = _axis_ratio(predicted, truth, "q") * _axis_ratio(predicted, truth, "r")
    recall = _axis_ratio(truth, predicted, "q") * _axis_ratio(truth, predicted, "r")
    return precision, recall


def _span(box: Box, axis: str) -> tuple[float, float]:
    return (box.q0, box.q1) if axis == "q" else (box.r0, box.r1)


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of (union of ``a``) ∩ (union of ``b``): |A| + |B| - |A ∪ B|."""
    return covered_seconds(a) + covered_seconds(b) - covered_seconds(a + b)


def segment_ap(truth: list[Box], predicted: list[Box]) -> float:
    """Segment µAP of the VSC 2022 matching track (``match_metric`` in facebookresearch/vsc2022
    vsc/metrics.py, reimplemented; benchmarks/results/accuracy.md records the agreement).

    Predictions are ranked by score over all pairs (a missing score counts as 0) and taken in
    groups of equal score. After each group, per axis: the intersection of each pair's
    predicted intervals with the GT intervals of that pair that some prediction overlaps on both
    axes, summed over pairs; recall = that / total GT length, precision = that / total predicted
    length (each pair's intervals merged). P and R are geometric means over the two axes and
    AP = Σ P·ΔR. False alarms on pairs without GT lower P for every later prediction."""
    gts: dict[tuple[str, str], list[Box]] = defaultdict(list)
    for box in truth:
        gts[box.pair].append(box)
    gt_length = {
        axis: sum(covered_seconds([_span(b, axis) for b in boxes]) for boxes in gts.values())
        for axis in "qr"
    }
    if not all(gt_length.values()):
        return 0.0
    mine: dict[tuple[str, str], list[Box]] = defaultdict(list)
    pair_hit: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"q": 0.0, "r": 0.0})
    pair_len: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"q": 0.0, "r": 0.0})
    hit, length = {"q": 0.0, "r": 0.0}, {"q": 0.0, "r": 0.0}
    ap = recall = 0.0
    ranked = sorted(predicted, key=lambda b: -(b.score or 0.0))
    for _, group in itertools.groupby(ranked, key=lambda b: b.score or 0.0):
        for box in group:
            pair = box.pair
            mine[pair].append(box)
            found = [
                g for g in gts.get(pair, [])
                if any(_overlap(g.q0, g.q1, p.q0, p.q1) and _overlap(g.r0, g.r1, p.r0, p.r1)
                       for p in mine[pair])
            ]  # fmt: skip
            for axis in "qr":
                spans = [_span(p, axis) for p in mine[pair]]
                now_hit = _intersection(spans, [_span(g, axis) for g in found])
                now_len = covered_seconds(spans)
                hit[axis] += now_hit - pair_hit[pair][axis]
                length[axis] += now_len - pair_len[pair][axis]
                pair_hit[pair][axis], pair_len[pair][axis] = now_hit, now_len
        new_recall = math.sqrt(hit["q"] / gt_length["q"] * hit["r"] / gt_length["r"])
        precision = (
            math.sqrt(hit["q"] / length["q"] * hit["r"] / length["r"])
            if length["q"] > 0 and length["r"] > 0
            else 0.0
        )
        ap += precision * (new_recall - recall)
        recall = new_recall
    return ap


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate(truth: list[Box], predicted: list[Box]) -> dict:
    """Segment P/R/F1, pair-level detection P/R, and per-edit figures when GT has labels."""
    gt_pairs: dict[tuple[str, str], list[Box]] = defaultdict(list)
    pred_pairs: dict[tuple[str, str], list[Box]] = defaultdict(list)
    for box in truth:
        gt_pairs[box.pair].append(box)
    for box in predicted:
        pred_pairs[box.pair].append(box)
    precisions: dict[tuple[str, str], float] = {}
    recalls: dict[tuple[str, str], float] = {}
    for pair in set(gt_pairs) | set(pred_pairs):
        p, r = pair_scores(pred_pairs.get(pair, []), gt_pairs.get(pair, []))
        if pair in pred_pairs:
            precisions[pair] = p
        if pair in gt_pairs:
            recalls[pair] = r
    precision, recall = _mean(list(precisions.values())), _mean(list(recalls.values()))
    hit_pairs = set(gt_pairs) & set(pred_pairs)
    gt_queries = {q for q, _ in gt_pairs}
    result = {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "pair_precision": len(hit_pairs) / len(pred_pairs) if pred_pairs else 0.0,
        "pair_recall": len(hit_pairs) / len(gt_pairs) if gt_pairs else 0.0,
        "gt_pairs": len(gt_pairs),
        "predicted_pairs": len(pred_pairs),
        "false_alarm_pairs": len(set(pred_pairs) - set(gt_pairs)),
        "false_alarm_pairs_on_negative_queries": sum(q not in gt_queries for q, _ in pred_pairs),
        "segment_ap": segment_ap(truth, predicted),  # VSC 2022 matching track
    }
    edits: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for box in truth:
        if box.edit:
            edits[box.edit].add(box.pair)
    if edits:
        per_edit = {}
        for edit, pairs in sorted(edits.items()):
            p = _mean([precisions[x] for x in pairs if x in precisions])
            r = _mean([recalls[x] for x in pairs])
            found = sum(x in pred_pairs for x in pairs)
            queries = {q for q, _ in pairs}
            per_edit[edit] = {
                "segment_ap": segment_ap(
                    [b for b in truth if b.query_id in queries],
                    [b for b in predicted if b.query_id in queries],
                ),
                "precision": p,
                "recall": r,
                "f1": _f1(p, r),
                "pairs": len(pairs),
                "pair_recall": found / len(pairs),
            }
        result["per_edit"] = per_edit
    return result
