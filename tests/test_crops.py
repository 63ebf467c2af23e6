"""Reference crops (views.reference_grid): strong zooms found, reported against the reference."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.edits import Part, compose
from pipeline.describe.crops import crop_boxes
from pipeline.errors import IdConflictError
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.records import crop_id, crop_parent

ZOOM_SECONDS = (3.0, 11.0)  # the zoomed copy inside the query
ZOOM_REFERENCE_START = 4.0


def test_the_grid_covers_the_frame_with_overlapping_crops():
    boxes = crop_boxes(288, 512, 3, 0.5)
    assert boxes[0] == (0, 144, 0, 256) and boxes[-1] == (144, 288, 256, 512)
    assert boxes[4] == (72, 216, 128, 384)  # the middle one
    assert len(boxes) == 9 and crop_boxes(288, 512, 1, 0.5) == [(72, 216, 128, 384)]
    default = crop_boxes(288, 512, 2, 0.6)  # 60% of each side from each corner
    assert default[0] == (0, 173, 0, 307) and default[-1] == (115, 288, 205, 512)
    for y in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):  # a zoom keeping 40% of each side, anywhere:
        for x in (0.0, 0.15, 0.3, 0.45, 0.6):  # three quarters of each side inside one crop
            y0, y1, x0, x1 = y * 288, (y + 0.4) * 288, x * 512, (x + 0.4) * 512
            inside = [
                (min(y1, b) - max(y0, t)) / (y1 - y0) * (min(x1, r) - max(x0, lo)) / (x1 - x0)
                for t, b, lo, r in default
            ]
            assert max(inside) >= 0.74**2


def test_crop_ids_name_their_parent_and_nothing_else():
    assert crop_parent(crop_id("match#crop-4", 7)) == "match#crop-4"
    assert crop_parent("clip#crop") is None and crop_parent("#crop3") is None
    assert crop_parent("clip") is None and crop_parent("clip#cropx") is None


@pytest.fixture(scope="module")
def zoomed(tmp_path_factory, clips):
    """A copy of ``tree`` (a fixed camera on a tree in wind) zoomed in to keep 45% of each
    side, off centre, between unrelated footage: the issue's near-static zoom."""
    path = tmp_path_factory.mktemp("zoom") / "zoomed.mp4"
    compose(
        [
            Part(clips["Megamind"], ZOOM_SECONDS[0], start=0.5),
            Part(clips["tree"], ZOOM_SECONDS[1] - ZOOM_SECONDS[0], start=ZOOM_REFERENCE_START,
                 vf="crop=iw*0.45:ih*0.45:iw*0.1:ih*0.5"),
            Part(clips["Megamind"], 3.0, start=6.0),
        ],
        path,
    )  # fmt: skip
    return path


def test_a_strong_zoom_is_found_only_with_reference_crops(zoomed, clips, config, tmp_path):
    from pipeline.detector import CopyDetector

    refs = ["tree", "bikes", "cup"]
    detector = CopyDetector(config)  # the default indexes crops
    no_grid = dataclasses.replace(config.views, reference_grid=0)
    plain = CopyDetector(dataclasses.replace(config, views=no_grid), embedder=detector.embedder)
    with ReferenceIndex(tmp_path / "plain") as index:
        index.add([(plain.describe(clips[r], views=False), file_sha256(clips[r])) for r in refs])
        assert index.info()["crop_references"] == 0
        assert plain.query(zoomed, index).matches == []  # missed entirely

    with ReferenceIndex(tmp_path / "crops") as index:
        index.add([(detector.describe(clips[r], views=False), file_sha256(clips[r])) for r in refs])
        info = index.info()
        assert (info["references"], info["crop_references"]) == (3, 12)  # a 2 x 2 grid each
        assert [r.id for r in index.references()] == refs
        result = detector.query(zoomed, index)
        (tree,) = result.matches  # one match, against the reference, not a crop
        assert tree.reference_id == "tree" and tree.score >= config.policy.min_score
        (segment,) = tree.segments
        assert segment.query_start == pytest.approx(ZOOM_SECONDS[0], abs=1.0)
        assert segment.query_end == pytest.approx(ZOOM_SECONDS[1], abs=1.0)
        # The crop frames are 7.5 s apart here; the tree's motion places the copy among them.
        assert segment.reference_start == pytest.approx(ZOOM_REFERENCE_START, abs=0.5)

        index.remove(["tree"])  # its crops go with it
        assert index.info()["crop_references"] == 8 and index.get(crop_id("tree", 0)) is None
        with pytest.raises(IdConflictError, match="crops"):
            index.plan_add(crop_id("tree", 2), "0" * 64)


def test_a_span_found_through_sparse_crop_frames_plays_at_the_copy_s_speed():
    from pipeline.records import Segment
    from pipeline.streaming.matcher import _sparse

    found = Segment(5.6, 19.0, 0.3, 8.2, 0.6)  # crop frames 7.5 s apart: no speed to read
    placed = _sparse(found, 7.5)
    assert placed.reference_end - placed.reference_start == pytest.approx(13.4)
    assert placed.reference_start == pytest.approx(0.0) and placed.reference_slack_s == 7.5
    assert _sparse(Segment(2.0, 6.0, 20.0, 26.0, 0.6), 8.0).reference_start == pytest.approx(21.0)


def test_a_crops_reference_is_aligned_with_it(config):
    """Crops can fill every query frame's neighbours and leave their reference out of the
    frame search's hits; the reference is made a candidate with them (its spans win)."""
    import numpy as np

    from pipeline.index import Reference
    from pipeline.match.candidates import CandidateSearch
    from pipeline.records import VideoFeatures

    ids = ["tree", crop_id("tree", 0), crop_id("tree", 4), "cup"]
    refs = {n: Reference(n, i, "", "", 10.0, 2.0, 20, "m", "") for n, i in enumerate(ids, 1)}

    class Index:  # the frame search answers with crops of "tree" only
        def search(self, vectors, k):
            shape = (len(vectors), 2)
            return np.full(shape, 0.9, np.float32), np.tile([2, 3], (len(vectors), 1)), None

        def similarity_margin(self):
            return 0.0

        def lookup(self, num):
            return refs.get(num)

        def get(self, video_id):
            return next((r for r in refs.values() if r.id == video_id), None)

    search = dataclasses.replace(config.search, video_candidates=0)
    candidates = CandidateSearch(dataclasses.replace(config, search=search))
    times = np.arange(3, dtype=np.float64)
    query = VideoFeatures("q", "", 3.0, np.eye(3, 8, dtype=np.float32), times, times + 1, "m")
    found = [r.id for r in candidates.candidates(query, Index())]
    assert found == [crop_id("tree", 0), crop_id("tree", 4), "tree"]


def test_one_match_per_reference_from_its_crops_and_itself():
    """The whole reference gives the spans unless a crop beats it clearly; the others add only
    query time it does not cover."""
    from pipeline.records import Match, Segment
    from pipeline.streaming.matcher import merge_crops

    def match(score: float, *spans: tuple[float, float, float]) -> Match:
        segments = [Segment(q0, q1, r0, r0 + q1 - q0, score) for q0, q1, r0 in spans]
        return Match("tree", "tree.mp4", score, segments)

    in_place, astray = match(0.61, (3.5, 8.0, 0.5)), match(0.76, (3.5, 8.0, 9.5))
    (kept,) = merge_crops([("tree", in_place), (crop_id("tree", 3), astray)])
    assert kept.segments == in_place.segments and kept.score == 0.76  # the best evidence

    lost = match(0.50, (4.5, 15.0, 69.0))
    zoomed = match(0.88, (4.5, 16.5, 24.5), (30.0, 34.0, 50.0))
    (kept,) = merge_crops([("tree", lost), (crop_id("tree", 0), zoomed)])
    assert kept.segments == zoomed.segments and kept.score == 0.88

    later = match(0.7, (20.0, 25.0, 40.0))
    other = Match("cup", "cup.mp4", 0.9, later.segments)
    merged = merge_crops([("tree", in_place), (crop_id("tree", 1), later), ("cup", other)])
    assert [m.reference_id for m in merged] == ["cup", "tree"]
    assert merged[1].segments == in_place.segments + later.segments
