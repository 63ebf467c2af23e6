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


def test_the_grid_covers_the_frame_with_overlapping_crops():
    boxes = crop_boxes(288, 512, 3, 0.5)
    assert boxes[0] == (0, 144, 0, 256) and boxes[-1] == (144, 288, 256, 512)
    assert boxes[4] == (72, 216, 128, 384)  # the middle one
    assert len(boxes) == 9 and crop_boxes(288, 512, 1, 0.5) == [(72, 216, 128, 384)]


def test_crop_ids_name_their_parent_and_nothing_else():
    assert crop_parent(crop_id("match#crop-4", 7)) == "match#crop-4"
    assert crop_parent("clip#crop") is None and crop_parent("#crop3") is None
    assert crop_parent("clip") is None and crop_parent("clip#cropx") is None


@pytest.fixture(scope="module")
def zoomed(tmp_path_factory, clips):
    """A copy of ``bikes`` zoomed in to keep 40% of each side, off centre, between unrelated
    footage."""
    path = tmp_path_factory.mktemp("zoom") / "zoomed.mp4"
    compose(
        [
            Part(clips["Megamind"], ZOOM_SECONDS[0], start=0.5),
            Part(clips["bikes"], ZOOM_SECONDS[1] - ZOOM_SECONDS[0], start=2.0,
                 vf="crop=iw*0.4:ih*0.4:iw*0.55:ih*0.1"),
            Part(clips["Megamind"], 3.0, start=6.0),
        ],
        path,
    )  # fmt: skip
    return path


def test_a_strong_zoom_passes_the_alert_policy_only_with_reference_crops(
    zoomed, clips, config, tmp_path
):
    from pipeline.detector import CopyDetector

    refs = ["bikes", "vtest", "cup"]
    plain = CopyDetector(config)
    with ReferenceIndex(tmp_path / "plain") as index:
        index.add([(plain.describe(clips[r], views=False), file_sha256(clips[r])) for r in refs])
        missed = plain.query(zoomed, index).matches
    # Without crops the zoom is at most a weak match (0.44 since the segment floor is 0.40),
    # under the alert policy; with them it is a strong one.
    weak = [m.score for m in missed if m.reference_id == "bikes"]
    assert all(score < config.policy.min_score for score in weak), weak

    grid = dataclasses.replace(config.views, reference_grid=3)
    detector = CopyDetector(dataclasses.replace(config, views=grid), embedder=plain.embedder)
    with ReferenceIndex(tmp_path / "crops") as index:
        index.add([(detector.describe(clips[r], views=False), file_sha256(clips[r])) for r in refs])
        info = index.info()
        assert (info["references"], info["crop_references"]) == (3, 27)
        assert [r.id for r in index.references()] == refs
        result = plain.query(zoomed, index)  # any profile queries it
        bikes = [m for m in result.matches if m.reference_id == "bikes"]
        assert len(bikes) == 1, result.to_dict()  # one match, against the reference, not a crop
        assert not [m for m in result.matches if m.reference_id != "bikes"]
        assert bikes[0].score >= config.policy.min_score
        segment = bikes[0].segments[0]
        assert segment.query_start == pytest.approx(ZOOM_SECONDS[0], abs=1.0)
        assert segment.query_end == pytest.approx(ZOOM_SECONDS[1], abs=1.0)
        assert segment.reference_start == pytest.approx(2.0, abs=1.0)

        index.remove(["bikes"])  # its crops go with it
        assert index.info()["crop_references"] == 18 and index.get(crop_id("bikes", 0)) is None
        with pytest.raises(IdConflictError, match="crops"):
            index.plan_add(crop_id("bikes", 2), "0" * 64)


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


def test_the_ray_ingest_refuses_a_profile_with_crops(tmp_path, clips, capsys):
    """The Ray ingest describes references on its own actors, without crops: it says so rather
    than building an index the profile did not ask for."""
    from workers.cli import main

    profile = tmp_path / "zoom.yaml"
    profile.write_text("views:\n  reference_grid: 3\n")
    args = ["index", "add", "--index", str(tmp_path / "index"), "--config", str(profile), "--ray"]
    assert main([*args, str(clips["cup"])]) == 2
    assert "views.reference_grid" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()
