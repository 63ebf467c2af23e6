"""The segment metric, pinned on hand-computed cases."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.metric import Box, evaluate, read_segments, write_segments
from workers.cli import main


def box(q0, q1, r0, r1, query="q", ref="r", edit=None) -> Box:
    return Box(query, ref, q0, q1, r0, r1, edit=edit)


def test_exact_match():
    m = evaluate([box(0, 10, 5, 15)], [box(0, 10, 5, 15)])
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)


def test_half_overlap_on_both_axes():
    m = evaluate([box(5, 15, 5, 15)], [box(0, 10, 0, 10)])
    assert m["precision"] == pytest.approx(0.25) and m["recall"] == pytest.approx(0.25)
    assert m["pair_precision"] == 1.0


def test_overlap_on_one_axis_only_is_no_hit():
    m = evaluate([box(5, 15, 20, 30)], [box(0, 10, 0, 10)])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_false_alarm_pair_costs_precision_only():
    truth = [box(0, 10, 0, 10)]
    predicted = [box(0, 10, 0, 10), box(0, 10, 0, 10, ref="other")]
    m = evaluate(truth, predicted)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0
    assert m["pair_precision"] == 0.5 and m["false_alarm_pairs"] == 1


def test_two_gt_spans_one_found():
    truth = [box(0, 10, 0, 10), box(20, 30, 20, 30)]
    m = evaluate(truth, [box(0, 10, 0, 10)])
    assert m["precision"] == 1.0
    assert m["recall"] == pytest.approx(0.25)  # half on each axis: 0.5 * 0.5


def test_missed_pair_and_negative_query_false_alarm():
    truth = [box(0, 10, 0, 10, query="a")]
    m = evaluate(truth, [box(0, 5, 0, 5, query="negative")])
    assert m["recall"] == 0.0 and m["precision"] == 0.0
    assert m["false_alarm_pairs_on_negative_queries"] == 1 and m["pair_recall"] == 0.0


def test_per_edit_figures():
    truth = [box(0, 10, 0, 10, query="a", edit="crop"), box(0, 10, 0, 10, query="b", edit="flip")]
    m = evaluate(truth, [box(0, 10, 0, 10, query="a")])
    assert m["per_edit"]["crop"]["f1"] == 1.0 and m["per_edit"]["flip"]["recall"] == 0.0


def test_csv_round_trip_and_cli(tmp_path, capsys):
    gt, pred = tmp_path / "gt.csv", tmp_path / "pred.csv"
    gt.write_text(
        "query_id,reference_id,query_start,query_end,reference_start,reference_end,edit\n"
        "q,r,5,15,5,15,crop\n"
    )
    write_segments(pred, [Box("q", "r", 0, 10, 0, 10, score=0.9)])
    assert read_segments(pred)[0].score == pytest.approx(0.9)
    assert read_segments(gt)[0].edit == "crop"
    assert main(["eval", "--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["precision"] == pytest.approx(0.25) and figures["f1"] == pytest.approx(0.25)
    assert figures["per_edit"]["crop"]["pairs"] == 1


def test_headerless_csv_with_score_and_edit(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("q,r,0,1,2,3,0.5,flip\n")
    (b,) = read_segments(path)
    assert (b.score, b.edit, b.r1) == (0.5, "flip", 3.0)


def test_segment_ap_is_vsc2022s_ranked_metric():
    from pipeline.metric import segment_ap

    truth = [Box("q", "r", 0, 10, 0, 10)]
    assert segment_ap(truth, [Box("q", "r", 0, 10, 0, 10, 1.0)]) == pytest.approx(1.0)
    # half of each axis: R = sqrt(0.5 * 0.5), every predicted second right: P = 1
    assert segment_ap(truth, [Box("q", "r", 0, 5, 0, 5, 0.9)]) == pytest.approx(0.5)
    alarm = Box("q", "other", 0, 10, 0, 10)
    right = Box("q", "r", 0, 10, 0, 10)
    # A false alarm ranked above the copy halves precision at the copy's recall; below, it
    # costs nothing: the ranking is what the metric measures.
    above = [dataclasses.replace(alarm, score=0.9), dataclasses.replace(right, score=0.5)]
    below = [dataclasses.replace(alarm, score=0.5), dataclasses.replace(right, score=0.9)]
    assert segment_ap(truth, above) == pytest.approx(0.5)
    assert segment_ap(truth, below) == pytest.approx(1.0)
    assert segment_ap(truth, []) == 0.0
    assert evaluate(truth, below)["segment_ap"] == pytest.approx(1.0)
