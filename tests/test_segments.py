"""The index at scale: append-only segments, tombstones, compressed segments, compaction."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.index import ReferenceIndex
from pipeline.index.segments import merge_topk
from tests.helpers import synthetic_features


def _config(**index):
    return load_config(overrides={"index": index}).index


# Compressed indexes need a few thousand vectors to train on; tests keep them that small.
SMALL_CODED = {"kind": "ivfpq", "min_train_vectors": 256, "segment_vectors": 1500}


def _fill(index: ReferenceIndex, count: int, frames: int = 300, start: int = 0) -> list:
    refs = [synthetic_features(f"r{i}", frames, seed=i) for i in range(start, start + count)]
    for ref in refs:
        index.add([(ref, ref.video_id)])
    return refs


def _top_ref(index: ReferenceIndex, vectors: np.ndarray) -> list[str]:
    _, nums, _ = index.search(vectors, 5)
    return [index.by_num(int(n)).id if n >= 0 else "" for n in nums[:, 0]]


def test_adding_writes_only_the_new_reference(tmp_path):
    with ReferenceIndex(tmp_path, config=_config(segment_vectors=500)) as index:
        _fill(index, 2)
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        _fill(index, 1, start=2)
        after = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        new = set(after) - set(before)
        changed = {n for n in before if after.get(n) != before[n]}
        assert new == {"3.npz"}  # the new reference's own descriptors, nothing else
        assert changed <= {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", ".lock"}
        assert not list((tmp_path / "segments").iterdir())  # flat segments have no file
        assert index.info()["segments"]["flat"] == 2  # the first filled up at 500 vectors


def test_a_reader_follows_adds_and_removals(tmp_path):
    writer = ReferenceIndex(tmp_path)
    (a,) = _fill(writer, 1)
    reader = ReferenceIndex(tmp_path, create=False)
    assert _top_ref(reader, a.embeddings[:3]) == ["r0"] * 3  # loads a
    (b,) = _fill(writer, 1, start=1)
    assert _top_ref(reader, b.embeddings[:3]) == ["r1"] * 3  # b appended, a kept
    writer.remove(["r0"])
    # the reader still holds a's vectors in memory: its tombstone hides them
    assert "r0" not in _top_ref(reader, a.embeddings[:10])
    assert not (tmp_path / "vectors" / "1.npz").exists()
    writer.close(), reader.close()


def test_compressed_segments_search_and_compaction(tmp_path):
    with ReferenceIndex(tmp_path, config=_config(**SMALL_CODED)) as index:
        refs = _fill(index, 12)
        assert not index.approximate
        report = index.compact()
        assert report["trained"] and report["segments_built"] == 1
        info = index.info()
        assert info["structure"]["kind"] == "ivfpq" and info["segments"]["coded"] == 1
        assert info["segments"]["flat"] == 0 and info["training"]["sample_vectors"] == 3600
        assert -0.3 < info["training"]["similarity_error"]["mean"] < 0.05
        assert index.approximate and 0 <= index.similarity_margin() < 0.3
        probes = np.concatenate([r.embeddings[::30] for r in refs])
        truth = [r.video_id for r in refs for _ in r.embeddings[::30]]
        found = _top_ref(index, probes)
        assert np.mean([f == t for f, t in zip(found, truth, strict=True)]) >= 0.95

        index.remove(["r3"])
        assert "r3" not in _top_ref(index, refs[3].embeddings)  # tombstone, codes still there
        assert index.info()["segments"]["tombstones"] == 1
        _fill(index, 2, start=12)  # new references go to a flat segment beside the codes
        assert _top_ref(index, refs[-1].embeddings[:1]) == ["r11"]
        index.compact()
        info = index.info()
        assert info["segments"] == {
            "flat": 0, "coded": 1, "flat_vectors": 0, "coded_vectors": 13 * 300, "tombstones": 0,
        }  # fmt: skip
        assert not info["training"]["seconds"] < 0  # trained once, not again
        assert len(list((tmp_path / "segments").iterdir())) == 1  # the old file is gone
    with ReferenceIndex(tmp_path, create=False, config=_config(**SMALL_CODED)) as index:
        assert _top_ref(index, refs[5].embeddings[:5]) == ["r5"] * 5  # from disk


def test_every_stored_frame_is_found_right_after_training(tmp_path):
    """Regression: FAISS 1.13-1.15.1 fast-scan searches, run after the training's error
    measurement in the same process, returned no neighbour at all for the first query."""
    with ReferenceIndex(tmp_path, config=_config(**SMALL_CODED)) as index:
        refs = _fill(index, 12)
        index.compact()
    with ReferenceIndex(tmp_path, config=_config(**SMALL_CODED)) as index:
        for ref in refs:
            _, nums, _ = index.search(ref.embeddings[:2], 3)
            assert (nums >= 0).all() and index.by_num(int(nums[0, 0])).id == ref.video_id


def test_auto_kind_stays_exact_while_small(tmp_path):
    config = _config(kind="auto", min_train_vectors=256, flat_max_vectors=2500)
    with ReferenceIndex(tmp_path, config=config) as index:
        _fill(index, 8)  # 2400 vectors
        assert index.compact()["structure"]["kind"] == "flat"
        assert not index.approximate and not index.compaction_due()
        _fill(index, 2, start=8)  # 3000: past the threshold
        assert index.compaction_due()
        index.compact()
        assert index.approximate and index.info()["structure"]["kind"] == "ivfpq"


def test_background_compaction_merges_when_a_shard_has_too_many_segments(tmp_path):
    config = _config(**{**SMALL_CODED, "merge_factor": 2, "segment_vectors": 600})
    with ReferenceIndex(tmp_path, config=config) as index:
        _fill(index, 6)
        index.compact()
        for start in (6, 8, 10):
            _fill(index, 2, start=start)
            index.compact(full=False)  # encodes the sealed flat segment beside the others
            assert index.info()["segments"]["coded"] <= 2
        assert not index.compaction_due() or index.info()["segments"]["flat_vectors"] > 0


@pytest.mark.parametrize("stage", ["_build_coded", "_commit"])
def test_a_removal_during_compaction_stays_removed(tmp_path, monkeypatch, stage):
    """Removed before its frames are encoded: left out; after: its tombstone moves along."""
    from pipeline.index import compaction

    config = _config(**SMALL_CODED)
    with ReferenceIndex(tmp_path, config=config) as index:
        refs = _fill(index, 10)
        original = getattr(compaction, stage)

        def remove_meanwhile(*args, **kwargs):
            with ReferenceIndex(tmp_path, config=config) as other:
                other.remove(["r4"])
            return original(*args, **kwargs)

        monkeypatch.setattr(compaction, stage, remove_meanwhile)
        index.compact()
        assert "r4" not in _top_ref(index, refs[4].embeddings)
        assert index.info()["segments"]["tombstones"] == (stage == "_commit")
        monkeypatch.undo()
        index.compact()
        assert index.info()["segments"]["tombstones"] == 0
        assert index.info()["segments"]["coded_vectors"] == 9 * 300
        assert "r4" not in _top_ref(index, refs[4].embeddings)


def test_merged_partial_searches_equal_one_search():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[1500] = x[10]  # an exact tie across parts: ids decide the order
    q = x[:50] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    whole = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
    whole.add_with_ids(x, np.arange(3000))
    expected = merge_topk([whole.search(q, 10)], 10)
    parts = []
    for lo, hi in ((0, 1000), (1000, 2200), (2200, 3000)):
        part = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
        part.add_with_ids(x[lo:hi], np.arange(lo, hi))
        parts.append(part.search(q, 10))
    merged = merge_topk(parts, 10)
    np.testing.assert_array_equal(merged[1], expected[1])
    np.testing.assert_allclose(merged[0], expected[0], rtol=1e-6)
    assert merge_topk([merged], 10)[1].tolist() == merged[1].tolist()


def test_memory_budget_chooses_the_codes():
    from pipeline.index.structure import choose_structure

    big = choose_structure(10_000_000, 512, _config(memory_gb=1.5))
    assert big.kind == "ivfpq" and big.subquantizers == 256 and big.nlist == 4096
    assert big.bytes_per_vector * 10_000_000 <= 1.5 * 2**30
    smaller = choose_structure(10_000_000, 512, _config(memory_gb=1.0))
    assert smaller.subquantizers == 128
    assert choose_structure(50_000, 512, _config()).kind == "flat"
    with pytest.raises(Exception, match="memory_gb"):
        choose_structure(10_000_000_000, 512, _config(memory_gb=1.0))
