"""Query views on real footage: layouts found where they are, nowhere else, and copies found."""

from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from benchmarks.edits import Extra, Part, compose
from pipeline.describe.decode import decode_video
from pipeline.describe.suppress import crop_borders
from pipeline.describe.views import query_views, region_proposals
from pipeline.index import ReferenceIndex, file_sha256

PIP_SECONDS = (4.0, 10.0)  # the picture-in-picture part of the query


def _pip_graph(scale: float, x: float, y: float) -> str:
    return (
        "[x1]scale=640:360,setsar=1[bg];"
        f"[main]scale=640*{scale}:360*{scale},setsar=1[fg];"
        f"[bg][fg]overlay=W*{x}:H*{y}:shortest=1[edited]"
    )


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, clips, photos):
    root = tmp_path_factory.mktemp("views")
    pip = Part(
        clips["bikes"], PIP_SECONDS[1] - PIP_SECONDS[0], start=1.0,
        graph=_pip_graph(0.5, 0.3, 0.25), extras=(Extra(photos["gravel"], photo=True),),
    )  # fmt: skip
    compose(
        [Part(clips["Megamind"], PIP_SECONDS[0], start=0.5), pip,
         Part(photos["coffee"], 4.0, photo=True)],
        root / "pip.mp4",
    )  # fmt: skip
    stack = Part(
        clips["cup"], 5.0, start=0.5, extras=(Extra(clips["tree"], start=2.0),),
        graph="[main]scale=-2:360,setsar=1[a];[x1]scale=-2:360,setsar=1[b];[a][b]hstack[edited]",
    )  # fmt: skip
    compose([Part(photos["astronaut"], 3.0, photo=True), stack], root / "stack.mp4")
    # A swaying tree over a still photo: nothing moves along the inset's sides, so no layout
    # line can be found; only the motion inside it shows where it is.
    still = Part(
        clips["tree"], 6.0, start=2.0,
        graph=_pip_graph(0.45, 0.1, 0.4), extras=(Extra(photos["brick"], photo=True),),
    )  # fmt: skip
    compose([still], root / "still_pip.mp4")
    return root


def _frames(path, config):
    sampled = decode_video(path, config.decode)
    return sampled, crop_borders(sampled.frames)


def test_picture_in_picture_is_proposed_where_and_when_it_is(layouts, config):
    sampled, frames = _frames(layouts / "pip.mp4", config)
    proposals = region_proposals(frames, config.views)
    h, w = frames.shape[1:3]
    truth = (0.25 * h, 0.75 * h, 0.3 * w, 0.8 * w)  # top, bottom, left, right
    found = [
        (rect, rows)
        for rect, rows in proposals
        if all(abs(a - b) <= 0.04 * max(h, w) for a, b in zip(rect, truth, strict=True))
    ]
    assert found, f"no proposal near {truth}: {proposals}"
    times = sampled.times[found[0][1]]
    # Found in the picture-in-picture part only (a second of slack at its ends).
    assert times.min() >= PIP_SECONDS[0] - 1 and times.max() <= PIP_SECONDS[1] + 1


def test_both_halves_of_a_stack_are_proposed(layouts, config):
    _, frames = _frames(layouts / "stack.mp4", config)
    rects = [rect for rect, _ in region_proposals(frames, config.views)]
    width = frames.shape[2]
    lefts = [r for r in rects if r[2] <= 0.05 * width and abs(r[3] - width / 2) <= 0.05 * width]
    rights = [r for r in rects if abs(r[2] - width / 2) <= 0.05 * width and r[3] >= 0.95 * width]
    assert lefts and rights, rects


def test_picture_in_picture_over_a_still_photo_is_proposed(layouts, config):
    """The box that holds the motion, which is the inset or most of it (parts of the tree that
    never move are left out: a crop of the copy, which SSCD matches)."""
    from pipeline.describe.views import _iou

    _, frames = _frames(layouts / "still_pip.mp4", config)
    h, w = frames.shape[1:3]
    truth = (round(0.4 * h), round(0.85 * h), round(0.1 * w), round(0.55 * w))
    rects = [rect for rect, _ in region_proposals(frames, config.views)]
    assert any(_iou(rect, truth) >= 0.7 for rect in rects), f"none near {truth}: {rects}"


def _panning(rng, frames: int, height: int, width: int, step: int) -> np.ndarray:
    """[frames, height, width] grey texture panning ``step`` pixels a frame: moving picture
    whose own edges never stay in place."""
    wide = width + step * frames
    coarse = rng.uniform(40, 216, (height // 24 + 2, wide // 24 + 2)).astype(np.float32)
    texture = cv2.resize(coarse, (wide, height), interpolation=cv2.INTER_CUBIC)  # smooth
    texture = np.clip(texture, 0, 255).astype(np.uint8)
    return np.stack([texture[:, i * step : i * step + width] for i in range(frames)])


def test_a_bordered_inset_in_a_letterboxed_background_is_proposed(config):
    """Boxes on persistent lines outrank both ends guessed from a picture's shape alone: ranked
    the other way, a 2.7:1 letterboxed background's two guesses took two of a window's three
    places and pushed a bordered inset out (hard profile, pip_small)."""
    from pipeline.describe.views import _iou

    rng = np.random.default_rng(0)
    frames = np.zeros((8, 288, 512), np.uint8)
    frames[:, 49:239] = _panning(rng, 8, 190, 512, 3)  # the band; black bars above and below
    box = (90, 170, 280, 440)  # top, bottom, left, right, its white border included
    frames[:, box[0] : box[1], box[2] : box[3]] = 255
    frames[:, box[0] + 3 : box[1] - 3, box[2] + 3 : box[3] - 3] = _panning(rng, 8, 74, 154, 2)
    rgb = np.repeat(frames[..., None], 3, axis=3)
    rects = [rect for rect, _ in region_proposals(rgb, config.views)]
    assert any(_iou(rect, box) >= 0.8 for rect in rects), f"none near {box}: {rects}"


def test_a_still_inset_closed_by_lines_beside_one_moving_side_is_proposed(config):
    """An inset whose content holds still for a while over a background that moves on its left
    only: three of its sides have nothing moving beside them, but all four are unbroken
    persistent lines and one has motion, so it is a box (hard profile, pip_small). The still
    texture alone, with no moving side, proposes nothing."""
    from pipeline.describe.views import _iou

    rng = np.random.default_rng(1)
    still = np.repeat(_panning(rng, 1, 288, 512, 0), 8, axis=0)  # a still background ...
    frames = still.copy()
    frames[:, :, :220] = _panning(rng, 8, 288, 220, 4)  # ... moving left of the inset only
    box = (100, 190, 220, 380)  # top, bottom, left, right: a still inset, no border
    inset = rng.uniform(0, 255, (1, 90, 160)).astype(np.uint8)
    frames[:, box[0] : box[1], box[2] : box[3]] = inset  # sharp, unlike the smooth texture
    rects = [rect for rect, _ in region_proposals(np.repeat(frames[..., None], 3, 3), config.views)]
    assert any(_iou(rect, box) >= 0.8 for rect in rects), f"none near {box}: {rects}"
    still[:, box[0] : box[1], box[2] : box[3]] = inset
    assert region_proposals(np.repeat(still[..., None], 3, 3), config.views) == []


def test_blank_region_views_are_not_embedded(config):
    """A region can be blank where its frame is not (a letterbox bar): such view frames carry no
    evidence and are dropped before the model, as blank frames are (one matched the dark
    slate of a title card on the hard profile)."""
    from pipeline.describe.describer import PreparedFrames
    from pipeline.describe.keyframes import select_keyframes
    from pipeline.describe.views import _region
    from pipeline.records import SampledFrames

    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (4, 64, 96, 3), dtype=np.uint8)
    frames[:, :, :16] = 0  # a black bar
    frames[2:, :, 16:40] = 0  # a region that goes dark halfway
    times = np.arange(4, dtype=np.float64)
    sampled = SampledFrames("q.mp4", frames, times, times, times + 1, 4.0, 1.0, 96, 64)
    views = {
        "bar": (np.arange(4), lambda f: _region((0, 64, 0, 16), config.views, f)),
        "half": (np.arange(4), lambda f: _region((0, 64, 16, 40), config.views, f)),
    }
    prepared = PreparedFrames(sampled, frames, np.ones(4, np.float32), views, np.arange(4))
    keys = select_keyframes(np.eye(4), times, times + 1, config.keyframes)
    batches = prepared.view_batches(keys)
    assert "bar" not in batches
    rows, pixels, take = batches["half"]
    assert rows.tolist() == [0, 1] and len(pixels) == 2 and take.tolist() == [0, 1]
    kept = PreparedFrames(sampled, frames, np.ones(4), views, np.arange(4), blank_views=False)
    assert kept.view_batches(keys)["bar"][0].tolist() == [0, 1, 2, 3]


def test_a_picture_shaped_like_two_videos_is_cut_into_both(config):
    """Two videos stacked inside black borders whose divider shows no edge: both ends of the
    picture, at 16:9, are proposed; one video's shape is not cut."""
    from pipeline.describe.views import _stacked_parts

    assert _stacked_parts(112, 63) == [(0, 35, 0, 63), (77, 112, 0, 63)]  # one above the other
    assert _stacked_parts(50, 178) == [(0, 50, 0, 89), (0, 50, 89, 178)]  # side by side
    assert _stacked_parts(112, 199) == []  # 16:9
    assert _stacked_parts(84, 199) == []  # 2.39:1


def test_small_region_views_are_enlarged_to_the_models_scale(config):
    import dataclasses

    from pipeline.describe.views import _region

    frames = np.random.default_rng(0).integers(0, 255, (2, 224, 398, 3), dtype=np.uint8)
    views = dataclasses.replace(config.views, min_short_side=160)
    small = _region((10, 90, 20, 140), views, frames)  # 80 x 120
    assert small.shape == (2, 160, 240, 3)
    large = _region((0, 200, 0, 300), views, frames)
    np.testing.assert_array_equal(large, frames[:, :200, :300])
    off = _region((10, 90, 20, 140), dataclasses.replace(views, min_short_side=0), frames)
    np.testing.assert_array_equal(off, frames[:, 10:90, 20:140])


@pytest.mark.parametrize("name", ["bikes", "vtest"])
def test_plain_camera_footage_gets_no_region_views(clips, config, name):
    _, frames = _frames(clips[name], config)
    assert region_proposals(frames, config.views) == []


@pytest.mark.parametrize("name", ["tree", "Megamind", "cup", "box"])
def test_region_views_of_plain_footage_stay_within_budget(clips, config, name):
    """Scenes with straight edges (windows, doors) can look like a layout; what that costs is
    bounded by views.max_share of the video's pixels, counted as embedded (enlarged)."""
    from pipeline.describe.views import _view_size

    _, frames = _frames(clips[name], config)
    area = frames.shape[1] * frames.shape[2]
    cost = sum(
        len(rows) * np.prod(_view_size(r[1] - r[0], r[3] - r[2], config.views)) / area
        for r, rows in region_proposals(frames, config.views)
    )
    assert cost <= config.views.max_share * len(frames)


def test_flip_view_is_the_mirror_image(config):
    import dataclasses

    frames = np.random.default_rng(0).integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    views = query_views(frames, dataclasses.replace(config.views, flip=True, regions=False))
    rows, make = views["flip"]
    assert rows.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(make(frames)[:, :, 0], frames[:, :, -1])


def test_picture_in_picture_copy_is_found_only_with_views(layouts, clips, config, tmp_path):
    import dataclasses

    from pipeline.detector import CopyDetector

    detector = CopyDetector(config)
    index = ReferenceIndex(tmp_path / "index")
    refs = ["bikes", "vtest", "cup"]
    index.add([(detector.describe(clips[r], views=False), file_sha256(clips[r])) for r in refs])
    result = detector.query(layouts / "pip.mp4", index)
    bikes = [m for m in result.matches if m.reference_id == "bikes"]
    assert bikes, result.to_dict()
    segment = bikes[0].segments[0]
    assert segment.query_start == pytest.approx(PIP_SECONDS[0], abs=1.0)
    assert segment.query_end == pytest.approx(PIP_SECONDS[1], abs=1.0)
    blind = CopyDetector(
        dataclasses.replace(config, views=dataclasses.replace(config.views, enabled=False)),
        embedder=detector.embedder,
    )
    # Without views the inset is at most a faint whole-frame resemblance, nothing the alert
    # policy passes (0.45 at best, on the edge of align.min_score; 0.78 with views).
    unseen = blind.query(layouts / "pip.mp4", index).matches
    assert all(m.score < config.policy.min_score for m in unseen if m.reference_id == "bikes")
    assert bikes[0].score >= config.policy.min_score + 0.2
    index.close()


def test_two_parallel_lines_with_matching_ends_are_a_box(config):
    """A picture-in-picture whose left and right sides are not found (still, low-contrast
    content along them): its top and bottom lines, ending at the same columns, are the box."""
    from pipeline.describe.views import _Line, _parallel_pairs

    top, bottom = _Line(at=30, lo=40, hi=150), _Line(at=90, lo=43, hi=148)
    unrelated = _Line(at=60, lo=0, hi=70)  # ends elsewhere: not a side of the same box
    boxes = _parallel_pairs([bottom, unrelated, top], 200, 112, config.views)
    assert boxes == [(30, 90, 41, 149)]
    assert _parallel_pairs([top, _Line(at=35, lo=40, hi=150)], 200, 112, config.views) == []


def test_two_lines_meeting_at_a_corner_are_a_box(config):
    """An inset whose other two sides are only partly edges (content of its colour along them):
    a vertical and a horizontal line that meet at a corner span it; lines that do not meet,
    or whose box is too small, are no box (hard profile, pip_small, both seeds)."""
    from pipeline.describe.views import _corner_pairs, _Line

    right = _Line(at=171, lo=22, hi=78)  # the inset's right side ...
    top = _Line(at=23, lo=74, hi=171)  # ... and its top, meeting at (23, 171)
    boxes = _corner_pairs([right], [top], 192, 144, config.views)
    assert boxes == [(23, 78, 74, 171, 78, 74)]  # far sides: bottom at 78, left at 74
    apart = _Line(at=100, lo=10, hi=60)  # ends far from the vertical line
    assert _corner_pairs([right], [apart], 192, 144, config.views) == []
    tiny = _corner_pairs([_Line(171, 22, 30)], [_Line(23, 160, 171)], 192, 144, config.views)
    assert tiny == []


@pytest.mark.parametrize("shape", [(3, 288, 512), (2, 251, 433), (2, 1080, 1920), (2, 10, 20)])
def test_block_sums_are_exact_grey_sums(shape):
    """The integral-image path gives the same block sums as summing every pixel in float64:
    on uneven blocks, on white full-HD frames (the largest sums) and on a sliver smaller than
    the grid (empty blocks)."""
    from pipeline.describe.views import THUMB, block_sums

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    frames[-1] = 255
    sums, areas = block_sums(frames)
    grey = frames.astype(np.float64).mean(axis=3)
    rows = np.linspace(0, shape[1], THUMB[0] + 1).astype(int)
    cols = np.linspace(0, shape[2], THUMB[1] + 1).astype(int)
    blocks = [(r, c) for r in itertools.pairwise(rows) for c in itertools.pairwise(cols)]
    expected = np.array([[g[r[0] : r[1], c[0] : c[1]].sum() for r, c in blocks] for g in grey])
    assert np.allclose(sums, expected, rtol=1e-6)
    assert areas.sum() == shape[1] * shape[2]


def test_column_runs_match_a_scan_of_each_column():
    """All columns at once give the runs a scan down each column finds: gaps of up to 2 closed,
    runs shorter than the minimum dropped, columns never joined end to end."""
    from pipeline.describe.views import _column_runs

    rng = np.random.default_rng(3)
    marks = rng.random((60, 40)) < 0.7
    marks[-2:, 5] = marks[:2, 6] = True  # a run at a column's end next to one at the next start

    def scan(column):
        runs, start, last = [], None, None
        for i in np.flatnonzero(column).tolist():
            if start is not None and i - last > 3:
                runs.append((start, last + 1))
                start = None
            start = i if start is None else start
            last = i
        return [*runs, (start, last + 1)] if start is not None else runs

    expected = [(c, lo, hi) for c in range(40) for lo, hi in scan(marks[:, c]) if hi - lo >= 5]
    assert _column_runs(marks, 5).tolist() == [list(run) for run in expected]
    assert _column_runs(np.zeros((10, 3), bool), 2).shape == (0, 3)


@pytest.fixture(scope="module")
def stickered(tmp_path_factory, clips, photos):
    """A still photo pasted over a third of real footage, as the `caption` edits of the hard
    profile do."""
    root = tmp_path_factory.mktemp("sticker")
    graph = ("[main]scale=640:360,setsar=1[m];[x1]scale=640*0.58:360*0.58,setsar=1[s];"
             "[m][s]overlay=W*0.3:H*0.1:shortest=1[edited]")  # fmt: skip
    sticker = Part(clips["bikes"], 8.0, start=1.0, graph=graph,
                   extras=(Extra(photos["astronaut"], photo=True),))  # fmt: skip
    compose([sticker], root / "sticker.mp4")
    return root / "sticker.mp4"


def test_a_still_overlay_is_masked_in_a_view_of_its_own(stickered, config):
    from pipeline.describe.views import still_overlays

    on = dataclasses.replace(config.views, masks=True)
    _, frames = _frames(stickered, config)
    found = still_overlays(frames, on)
    (top, bottom, left, right), _ = found[0]
    h, w = frames.shape[1:3]
    # where the sticker is: x 30-88%, y 10-68% of the frame (to a few pixels)
    assert abs(left / w - 0.30) < 0.03 and abs(right / w - 0.88) < 0.03
    assert abs(top / h - 0.10) < 0.03 and abs(bottom / h - 0.68) < 0.03
    for (t, b, lo, r), _ in found:  # a window may see only part of it, never beyond it
        assert t >= top - 0.03 * h and b <= bottom + 0.03 * h
        assert lo >= left - 0.03 * w and r <= right + 0.03 * w
    rows = set().union(*(rows.tolist() for _, rows in found))
    assert len(rows) >= 0.8 * len(frames)
    # The view is the band below the sticker (32% of the picture: the largest beside it).
    views = query_views(frames, on)
    beside = sorted(n for n in views if n.startswith("beside:"))
    assert f"beside:{bottom},{h},0,{w}" in beside and not [n for n in views if "mask:" in n]
    band = views[f"beside:{bottom},{h},0,{w}"][1](frames[:2])
    assert band.shape[1] == 206 and band.shape[2] == round(w * 206 / (h - bottom))  # enlarged
    expected = cv2.resize(frames[0, bottom:], band.shape[2:0:-1], interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(band[0], expected)
    off = dataclasses.replace(config.views, masks=False)
    assert not [n for n in query_views(frames, off) if n.startswith(("mask:", "beside:"))]


def test_an_overlay_without_a_band_beside_it_is_masked_grey(stickered, config):
    """Where no band beside an overlay holds 30% of the picture, the frame is embedded with
    the overlay painted mid-grey instead."""
    from pipeline.describe.views import _beside, _masked

    assert _beside((40, 250, 100, 450), 288, 512) is None  # 13%, 11%, 20% and 12% beside it
    masked = _masked((40, 250, 100, 450), np.full((2, 288, 512, 3), 7, np.uint8))
    assert (masked[:, 40:250, 100:450] == 128).all() and (masked[:, :40] == 7).all()


def test_a_still_picture_between_black_bars_is_no_overlay(photos, config):
    """Black bars around a still photo leave nothing of a copy beside it: a view of them
    matched a plain title card (hard profile seed 1), so no overlay is proposed there."""
    from pipeline.describe.views import still_overlays

    photo = cv2.imread(str(photos["astronaut"]))[:, :, ::-1]
    frames = np.zeros((8, 288, 512, 3), np.uint8)
    frames[:, :, 112:400] = cv2.resize(photo, (288, 288))
    assert still_overlays(frames, config.views) == []


@pytest.mark.parametrize("name", ["vtest", "tree", "bikes"])
def test_filmed_footage_has_no_still_overlay(clips, config, name):
    from pipeline.describe.views import still_overlays

    _, frames = _frames(clips[name], config)
    assert still_overlays(frames, dataclasses.replace(config.views, masks=True)) == []
