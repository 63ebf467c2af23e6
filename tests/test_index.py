"""The reference index: persistence, idempotent adds, conflicts, removal, model checks, recovery."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.describe.embed import l2_normalise
from pipeline.errors import IdConflictError, ModelMismatchError, UnknownReferenceError
from pipeline.index import ReferenceIndex
from pipeline.records import VideoFeatures


def _features(video_id: str, n: int, seed: int, model: str = "sscd") -> VideoFeatures:
    rng = np.random.default_rng(seed)
    starts = np.arange(n, dtype=np.float64)
    return VideoFeatures(
        video_id=video_id,
        path=f"/refs/{video_id}.mp4",
        duration=float(n),
        embeddings=l2_normalise(rng.normal(size=(n, 512))),
        starts=starts,
        ends=starts + 1,
        model=model,
    )


def _nearest(index: ReferenceIndex, vector: np.ndarray) -> tuple[str, int]:
    _sims, nums, frames = index.search(vector[None, :], 1)
    return index.by_num(int(nums[0, 0])).id, int(frames[0, 0])


def test_round_trip_through_disk(tmp_path):
    a, b = _features("a", 30, 1), _features("b", 12, 2)
    with ReferenceIndex(tmp_path / "idx") as index:
        assert index.add([(a, "sha-a"), (b, "sha-b")]) == ["add", "add"]
    with ReferenceIndex(tmp_path / "idx", create=False) as index:
        assert index.info()["references"] == 2 and index.info()["frames"] == 42
        assert index.model == "sscd"
        assert _nearest(index, a.embeddings[17]) == ("a", 17)
        assert _nearest(index, b.embeddings[3]) == ("b", 3)
        loaded = index.features(index.get("b"))
        # Stored as float16: half the disk, an error far below any threshold that matters.
        np.testing.assert_allclose(loaded.embeddings, b.embeddings, atol=1e-3)
        assert np.array_equal(loaded.starts, b.starts)
    with np.load(tmp_path / "idx" / "vectors" / "2.npz") as stored:
        assert stored["embeddings"].dtype == np.float16


def test_no_pickle_in_descriptor_files(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 5, 1), "x")])
    (npz,) = (tmp_path / "vectors").glob("*.npz")
    with np.load(npz, allow_pickle=False) as data:
        assert set(data.files) == {"embeddings", "starts", "ends", "weights"}


def test_same_content_twice_is_a_no_op(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 5, 1), "sha")])
        assert index.add([(_features("a", 5, 1), "sha")]) == ["unchanged"]
        assert index.add([(_features("copy-of-a", 5, 1), "sha")]) == ["duplicate"]
        assert len(index) == 1 and index.info()["frames"] == 5


def test_id_clash_needs_replace(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 5, 1), "old")])
        new = _features("a", 8, 9)
        with pytest.raises(IdConflictError):
            index.add([(new, "new")])
        assert index.get("a").sha256 == "old"
        assert index.add([(new, "new")], replace=True) == ["replace"]
        assert index.get("a").sha256 == "new" and index.info()["frames"] == 8
        assert _nearest(index, new.embeddings[6]) == ("a", 6)


def test_failed_batch_changes_nothing(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 5, 1), "a")])
        with pytest.raises(IdConflictError):
            index.add([(_features("b", 5, 2), "b"), (_features("a", 5, 3), "other")])
        assert [r.id for r in index.references()] == ["a"]
        assert index.search(_features("b", 5, 2).embeddings, 1)[1].ravel().tolist() == [1] * 5


def test_remove(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        a, b = _features("a", 5, 1), _features("b", 6, 2)
        index.add([(a, "a"), (b, "b")])
        index.remove(["a"])
        assert [r.id for r in index.references()] == ["b"]
        assert _nearest(index, a.embeddings[0])[0] == "b"  # a's frames are gone
        assert len(list((tmp_path / "vectors").glob("*.npz"))) == 1
        with pytest.raises(UnknownReferenceError):
            index.remove(["missing"])
    with ReferenceIndex(tmp_path) as index:
        assert index.info()["frames"] == 6


def test_other_model_is_refused(tmp_path):
    with ReferenceIndex(tmp_path) as index:
        index.add([(_features("a", 5, 1), "a")])
        with pytest.raises(ModelMismatchError):
            index.add([(_features("b", 5, 2, model="sscd_distilled"), "b")])
        # an index of the earlier default (sscd) names the profile that reads it
        with pytest.raises(ModelMismatchError, match=r"configs/sscd\.yaml"):
            index.check_model("sscd_distilled")


def _write_format_1(root, refs: list[VideoFeatures]) -> None:
    """An index as format 1 wrote it: one FAISS file, float32 vector files, no segments."""
    import sqlite3

    import faiss

    (root / "vectors").mkdir(parents=True)
    db = sqlite3.connect(root / "catalog.sqlite")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE videos (num INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " path TEXT NOT NULL, sha256 TEXT NOT NULL, duration REAL NOT NULL, fps REAL NOT NULL,"
        " frames INTEGER NOT NULL, model TEXT NOT NULL, added_at TEXT NOT NULL);"
    )
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(512))
    for num, f in enumerate(refs, start=1):
        db.execute(
            "INSERT INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (num, f.video_id, f.path, f.video_id, f.duration, f.fps, len(f), f.model, "then"),
        )
        np.savez(root / "vectors" / f"{num}.npz", embeddings=f.embeddings, starts=f.starts,
                 ends=f.ends, weights=f.weights)  # fmt: skip
        flat.add_with_ids(f.embeddings, (num << 24) + np.arange(len(f)))
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("model", "sscd"), ("dim", "512"),
                                                      ("generation", str(len(refs)))])  # fmt: skip
    db.commit()
    faiss.write_index(flat, str(root / "frames.faiss"))
    (root / "frames.json").write_text("{}")


def test_format_1_index_is_upgraded_to_segments(tmp_path):
    a, b = _features("a", 7, 1), _features("b", 5, 2)
    _write_format_1(tmp_path, [a, b])
    with ReferenceIndex(tmp_path) as index:
        assert _nearest(index, a.embeddings[4]) == ("a", 4)
        assert _nearest(index, b.embeddings[2]) == ("b", 2)
        assert _nearest_video(index, a)[0] == "a"  # video-level descriptors computed
        assert index.info()["segments"]["flat"] == 1 and index.info()["frames"] == 12
        assert index.add([(_features("c", 4, 3), "c")]) == ["add"]
    assert not (tmp_path / "frames.faiss").exists() and not (tmp_path / "frames.json").exists()


def test_opening_a_missing_index_for_reading_fails(tmp_path):
    from pipeline.errors import ReferenceIndexError

    with pytest.raises(ReferenceIndexError):
        ReferenceIndex(tmp_path / "nothing", create=False)


def test_weights_round_trip_and_default(tmp_path):
    a = _features("a", 4, 1)
    a.weights = np.array([1, 0, 1, 1], np.float32)
    with ReferenceIndex(tmp_path) as index:
        index.add([(a, "a")])
        assert index.features(index.get("a")).weights.tolist() == [1, 0, 1, 1]
    assert _features("b", 3, 2).weights.tolist() == [1, 1, 1]


def test_other_frame_preparation_is_refused(tmp_path):
    a = _features("a", 5, 1)
    a.preprocess = "short_side=224;crop_borders=1"
    with ReferenceIndex(tmp_path) as index:
        index.add([(a, "a")])
        assert index.info()["preprocess"] == a.preprocess
        index.check_model("sscd", a.preprocess)
        with pytest.raises(ModelMismatchError, match="rebuild the index"):
            index.check_model("sscd", "short_side=288;crop_borders=1")


def _nearest_video(index: ReferenceIndex, features: VideoFeatures) -> list[str]:
    from pipeline.index.pooling import video_descriptor

    _sims, nums = index.search_videos(video_descriptor(features)[None], 3)
    return [index.by_num(int(n)).id for n in nums[0] if n >= 0]


def test_video_level_index_follows_adds_removes_and_reopening(tmp_path):
    a, b, c = _features("a", 6, 1), _features("b", 6, 2), _features("c", 6, 3)
    with ReferenceIndex(tmp_path) as index:
        index.add([(a, "a"), (b, "b"), (c, "c")])
        assert _nearest_video(index, b)[0] == "b"
        index.remove(["b"])
        assert "b" not in _nearest_video(index, b)
    with ReferenceIndex(tmp_path) as index:  # from disk
        assert _nearest_video(index, c)[0] == "c" and len(_nearest_video(index, c)) == 2


def test_video_descriptor_ignores_frames_without_weight():
    from pipeline.index.pooling import video_descriptor

    a = _features("a", 4, 1)
    a.weights[:] = [1, 1, 0, 0]
    expected = a.embeddings[:2].sum(axis=0)
    np.testing.assert_allclose(video_descriptor(a), expected / np.linalg.norm(expected), atol=1e-6)


def test_background_set_round_trip_and_checks(tmp_path):
    from pipeline.errors import ReferenceIndexError

    with ReferenceIndex(tmp_path) as index:
        with pytest.raises(ReferenceIndexError):  # nothing to check the model against yet
            index.set_background(np.zeros((2, 512), np.float32), ["x"])
        index.add([(_features("a", 4, 1), "a")])
        assert index.background() is None
        background = _features("bg", 3, 9).embeddings
        index.set_background(background, ["/footage/intro.mp4"])
        np.testing.assert_array_equal(index.background(), background)
        with pytest.raises(ReferenceIndexError):
            index.set_background(np.zeros((2, 64), np.float32), ["x"])


def test_descriptor_files_carry_a_reference_s_crops(tmp_path):
    from pipeline.index.descriptor_file import (
        DescriptorFileError,
        read_descriptor_file,
        write_descriptor_file,
    )
    from pipeline.records import crop_id

    whole = _features("a", 12, 1)
    whole.crops = [_features(crop_id("a", k), 2, 10 + k) for k in range(4)]
    path = write_descriptor_file(tmp_path / "a.npz", whole, "sha")
    read = read_descriptor_file(path).features
    assert [c.video_id for c in read.crops] == [crop_id("a", k) for k in range(4)]
    for got, made in zip(read.crops, whole.crops, strict=True):
        np.testing.assert_allclose(got.embeddings, made.embeddings, atol=1e-3)
        assert np.array_equal(got.starts, made.starts)
    with ReferenceIndex(tmp_path / "idx") as index:  # imported with them
        index.add([(read, "sha")])
        assert index.info()["crop_references"] == 4
    with np.load(path) as data:
        broken = {k: data[k] for k in data.files}
    broken["crop2_starts"] = broken["crop2_starts"][:1]
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(DescriptorFileError, match="crop2_starts must be"):
        read_descriptor_file(tmp_path / "broken.npz")
