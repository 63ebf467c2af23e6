"""A small slice of the benchmark, end to end on real footage, and the peers' output parser."""

from __future__ import annotations

import json

import pytest

from benchmarks.build_dataset import build
from benchmarks.run import (
    MethodRun,
    at_target_strength,
    decode_only,
    parse_provena_lookup,
    render,
    run_copyspan,
    videos,
)
from pipeline.metric import Box, evaluate, read_segments


@pytest.fixture(scope="module")
def slice_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    summary = build(11, out, per_edit=1, doubles=1, negatives=2, edits=["crop", "hflip", "speed"])
    return out, summary


def test_builder_writes_consistent_truth(slice_data):
    data, summary = slice_data
    truth = read_segments(data / "gt.csv")
    assert summary["negative_queries"] == 2 and summary["positive_queries"] == 6
    names = {p.stem for p in videos(data / "queries")}
    assert {b.query_id for b in truth} <= names
    assert {b.reference_id for b in truth} <= {p.stem for p in videos(data / "references")}
    for b in truth:
        assert b.q1 > b.q0 and b.r1 > b.r0
        assert b.edit == "natural" or 1.9 <= b.q1 - b.q0 <= 20.1
    assert {b.edit for b in truth} == {"crop", "hflip", "speed", "natural"}


def test_builder_is_deterministic(tmp_path, slice_data):
    data, _ = slice_data
    build(11, tmp_path, per_edit=1, doubles=1, negatives=2, edits=["crop", "hflip", "speed"])
    assert (tmp_path / "gt.csv").read_text() == (data / "gt.csv").read_text()


def test_copyspan_on_the_slice(slice_data, config, tmp_path):
    data, summary = slice_data
    runs, info = run_copyspan(data, config, tmp_path)
    truth = read_segments(data / "gt.csv")
    for run in runs:
        run.figures = evaluate(truth, run.boxes)
    figures = runs[0].figures
    assert figures["false_alarm_pairs_on_negative_queries"] == 0
    assert figures["pair_recall"] >= 0.8 and figures["f1"] >= 0.5, json.dumps(figures)
    decode = decode_only(videos(data / "queries"), config)
    info["decode_backend"] = "decord"
    table = render("slice", "pytest", summary, runs, info, decode)
    assert "| copyspan (SSCD + temporal network) |" in table and "decode only" in table
    assert "Hough voting" in table and "dynamic programming" in table


def test_parse_provena_lookup():
    text = (
        "/q/a.mp4: 1 match\n"
        "  [send] movie.avi  0.00-11.25s  (clip 1.50-9.00s, 35 votes)\n"
        "/q/b.mp4: 0 matches\n"
    )
    (box,) = parse_provena_lookup(text)
    assert (box.query_id, box.reference_id) == ("a", "movie")
    assert (box.q0, box.q1, box.r0, box.r1) == (1.5, 9.0, 0.0, 11.25)


def test_ablation_descriptor_cache_returns_what_the_model_gave(detector, tmp_path):
    """The ablation harness's cache must change no result: same descriptors after reopening,
    and the model is not asked again for frames it already described."""
    import numpy as np

    from benchmarks.ablation import CachedEmbedder

    class Counting:
        def __init__(self, inner):
            self.inner, self.model_id, self.dim, self.frames = inner, inner.model_id, inner.dim, 0

        def embed(self, frames):
            self.frames += len(frames)
            return self.inner.embed(frames)

    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 96, 3), dtype=np.uint8)
    first = CachedEmbedder(Counting(detector.embedder), tmp_path / "cache.npz")
    described = first.embed(frames)
    first.save()
    counting = Counting(detector.embedder)
    again = CachedEmbedder(counting, tmp_path / "cache.npz")
    np.testing.assert_array_equal(again.embed(frames[::-1]), described[::-1])
    assert counting.frames == 0 and again.pixels == frames[..., 0].size


def test_pair_recall_at_target_strength_counts_only_strong_enough_copies():
    """Weaker insets and zooms than the issue's targets are built too: they count in the
    family's row but not in the target line."""
    truth = [
        Box("q1", "a", 0, 5, 0, 5, edit="pip_small"),
        Box("q2", "b", 0, 5, 0, 5, edit="pip_small"),
        Box("q3", "c", 0, 5, 0, 5, edit="pip_small"),  # 4%: under the target
        Box("q4", "a", 0, 5, 0, 5, edit="zoom"),
    ]
    strengths = {"q1": 0.07, "q2": 0.12, "q3": 0.04, "q4": 0.35}
    boxes = [Box("q1", "a", 0, 5, 0, 5), Box("q3", "c", 0, 5, 0, 5)]
    found = MethodRun("copyspan (x)", boxes, seconds=1.0)
    lines = at_target_strength({"strengths": strengths}, truth, [found])
    assert "* pip_small from 0.06: copyspan 1/2" in lines
    assert not any("zoom" in line for line in lines)  # no zoom copy is strong enough
    assert at_target_strength({}, truth, [found]) == []  # base profile: no strengths
