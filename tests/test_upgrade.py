"""Model upgrades without re-indexing: the fitted translation, the in-place upgrade of a catalog,
the backfill (resumable, serving throughout) and the former model's queries and imports."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.edits import Part, compose
from pipeline.describe.embed import l2_normalise
from pipeline.errors import ModelMismatchError, ReferenceIndexError
from pipeline.index import ReferenceIndex
from pipeline.index.translation import Translation, fit_on_videos, fit_translation, pair_frames
from pipeline.records import VideoFeatures
from tests.helpers import synthetic_features
from workers.cli import main

REPO = Path(__file__).resolve().parent.parent
OLD, NEW = "sscd", "sscd_distilled"
ROTATION = np.linalg.qr(np.random.default_rng(7).standard_normal((512, 512)))[0].astype(np.float32)


def _translation(matrix: np.ndarray = ROTATION, source_preprocess: str = "") -> Translation:
    return Translation(OLD, source_preprocess, NEW, "p-new", matrix, np.zeros(512, np.float32),
                       "lstsq", {"frames": 0})  # fmt: skip


def _as_new(features: VideoFeatures) -> VideoFeatures:
    """What the new model would describe: the old descriptors rotated."""
    return dataclasses.replace(features, embeddings=features.embeddings @ ROTATION, model=NEW,
                               preprocess="p-new")  # fmt: skip


# ---- the fit ---------------------------------------------------------------------------------


def test_pairs_are_the_frames_of_the_same_moment():
    def video(starts, ends):
        n = len(starts)
        return VideoFeatures("v", "", 10.0, np.ones((n, 4), np.float32) / 2,
                             np.array(starts, float), np.array(ends, float), "m")  # fmt: skip

    a = video([0.0, 0.5, 1.0, 1.5], [0.5, 1.0, 1.5, 2.0])
    b = video([0.0, 1.0], [1.0, 2.0])  # b collapsed two repeated pictures into each span
    rows, at = pair_frames(a, b)
    assert rows.tolist() == [0, 1, 2, 3] and at.tolist() == [0, 0, 1, 1]
    rows, at = pair_frames(b, a)
    assert rows.tolist() == [0, 1] and at.tolist() == [1, 3]


def test_least_squares_recovers_a_linear_map_and_procrustes_a_rotation():
    rng = np.random.default_rng(0)
    source = l2_normalise(rng.standard_normal((2000, 512)).astype(np.float32))
    matrix, bias = fit_translation(source, source @ ROTATION, "procrustes")
    assert np.abs(matrix - ROTATION).max() < 1e-3 and np.abs(bias).max() < 1e-3
    skew = rng.standard_normal((512, 512)).astype(np.float32) / 20
    matrix, bias = fit_translation(source, source @ skew, "lstsq", ridge=1e-4)
    assert np.abs(source @ matrix + bias - source @ skew).max() < 0.02
    eye, zero = fit_translation(source, source, "identity")
    assert np.array_equal(eye, np.eye(512)) and not zero.any()


def _pairs(transform, noise: float, videos: int = 8, seed: int = 0):
    out = []
    for k in range(videos):
        old = synthetic_features(f"v{k}", 60, seed + k)
        rng = np.random.default_rng(100 + k)
        moved = transform(old.embeddings) + noise * rng.standard_normal(old.embeddings.shape)
        new = VideoFeatures(old.video_id, "", old.duration, l2_normalise(moved.astype(np.float32)),
                            old.starts, old.ends, NEW)  # fmt: skip
        out.append((old, new))
    return out


def test_auto_keeps_the_identity_for_a_student_and_fits_a_map_otherwise():
    # a distilled student describes in its teacher's space, with its own errors
    _, _, report = fit_on_videos(_pairs(lambda x: x, noise=0.03))
    assert report["method"] == "identity" and report["held_out_by"] == "videos"
    # a model of another space: the identity cannot serve, a fitted map can
    _matrix, _bias, report = fit_on_videos(_pairs(lambda x: x @ ROTATION, noise=0.01))
    assert report["method"] in ("lstsq", "procrustes")
    assert report["held_out"]["similarity_r"] > 0.9 > report["tried"]["identity"]


def test_calibration_on_copies_keeps_weak_copies_as_strong_as_the_new_model_finds_them():
    """Translated references stored longer by the ratio of weak copies' similarities; none for
    a map that loses the similarity structure."""
    pairs = _pairs(lambda x: x, noise=0.04)
    rng = np.random.default_rng(3)
    copies = []
    for _old, new in pairs:  # an edited copy of each frame, as the new model describes it
        noisy = new.embeddings + 0.02 * rng.standard_normal(new.embeddings.shape)
        copies.append(dataclasses.replace(new, embeddings=l2_normalise(noisy.astype(np.float32))))
    _, _, plain = fit_on_videos(pairs)
    _, _, on_copies = fit_on_videos(pairs, copies=copies)
    assert on_copies["calibrated_on"] == "copies" and plain["calibrated_on"] == "frame pairs"
    native = np.concatenate([np.sum(c.embeddings * n.embeddings, 1) for (_, n), c in
                             zip(pairs, copies, strict=True)])  # fmt: skip
    cross = np.concatenate([np.sum(c.embeddings * o.embeddings, 1) for (o, _), c in
                            zip(pairs, copies, strict=True)])  # fmt: skip
    tail = np.percentile(native, 10) / np.percentile(cross, 10)
    assert on_copies["method"] == "identity" and abs(on_copies["scale"] - tail) < 0.02
    assert on_copies["scale"] > 1.0
    # a new model unrelated to the former: no map keeps the similarity structure, and none is
    # calibrated (the copies' ratio would be enormous, and capped at 2 it raised false alarms)
    unrelated = _pairs(lambda x: np.random.default_rng(9).standard_normal(x.shape), noise=0.0)
    like = [dataclasses.replace(new, embeddings=new.embeddings.copy()) for _, new in unrelated]
    for method in ("identity", "procrustes"):
        _, _, report = fit_on_videos(unrelated, method=method, copies=like)
        assert report["held_out"]["similarity_r"] < 0.9 and report["scale"] == 1.0


# ---- upgrade and backfill of an index ---------------------------------------------------------


def _old_index(
    root: Path, refs: int = 4, config=None
) -> tuple[ReferenceIndex, list[VideoFeatures]]:
    index = ReferenceIndex(root, config=config)
    features = [synthetic_features(f"r{k}", 40, k) for k in range(refs)]
    for f in features:
        f.preprocess = "p-old"
    index.add([(f, f.video_id) for f in features])
    return index, features


def test_upgrade_translates_the_catalog_and_serves_both_models(tmp_path):
    index, refs = _old_index(tmp_path)
    generation = index.generation
    index.upgrade(_translation(source_preprocess="p-old"))
    assert (index.model, index.catalog.meta("preprocess")) == (NEW, "p-new")
    assert index.generation == generation + 1  # one committed change
    assert {r.id for r in index.translated()} == {f.video_id for f in refs}
    state = index.info()["upgrade"]
    assert (state["source_model"], state["translated"], state["native"]) == (OLD, 4, 0)
    # a query of the new model finds the frame natively; one of the former model is translated
    new_query = _as_new(refs[2]).embeddings[17]
    _, nums, frames = index.search(new_query[None], 1)
    assert (index.by_num(int(nums[0, 0])).id, int(frames[0, 0])) == ("r2", 17)
    index.check_model(NEW, "p-new")
    index.check_model(OLD, "p-old")
    moved = index.as_indexed(refs[1])
    assert moved.model == NEW and np.allclose(moved.embeddings, _as_new(refs[1]).embeddings,
                                              atol=1e-5)  # fmt: skip
    with pytest.raises(ModelMismatchError):
        index.check_model("torchscript:other", "")
    _sims, nums = index.search_videos(_as_new(refs[3]).embeddings.mean(0, keepdims=True), 1)
    assert index.by_num(int(nums[0, 0])).id == "r3"  # the video-level index follows
    onward = Translation(NEW, "p-new", "third", "p3", ROTATION, np.zeros(512, np.float32), "lstsq")
    with pytest.raises(ReferenceIndexError, match="backfill it first"):
        index.upgrade(onward)  # a second upgrade waits for the first one's backfill


def test_backfill_makes_references_native_then_retires_the_translation(tmp_path):
    index, refs = _old_index(tmp_path, refs=3)
    index.upgrade(_translation(source_preprocess="p-old"))
    native = [_as_new(f) for f in refs]
    assert index.backfill(native[0], "r0") == "backfilled"
    assert index.backfill(native[0], "r0") == "native"  # twice: nothing more
    assert not index.retire_translation()  # two are still translated
    assert index.info()["upgrade"]["native"] == 1
    with pytest.raises(ModelMismatchError):
        index.backfill(refs[1], "r1")  # the former model's descriptors are no backfill
    for f in native[1:]:
        index.backfill(f, f.video_id)
    assert index.retire_translation()
    assert index.translation() is None and index.info()["upgrade"]["retired"]
    with pytest.raises(ModelMismatchError):
        index.check_model(OLD, "p-old")  # the former model is no longer served
    assert [r.model for r in index.references()] == [NEW] * 3


def test_a_former_model_reference_added_in_transition_is_translated(tmp_path):
    index, _ = _old_index(tmp_path, refs=2)
    index.upgrade(_translation(source_preprocess="p-old"))
    late = synthetic_features("late", 30, 9)
    late.preprocess = "p-old"
    assert index.add([(late, "late")]) == ["add"]
    assert "late" in {r.id for r in index.translated()}
    stored = index.features(index.get("late")).embeddings
    assert np.allclose(stored, _as_new(late).embeddings, atol=2e-3)  # float16 on disk


def test_backfill_counts_towards_refitting_the_whitening(tmp_path):
    from pipeline.config import load_config

    config = dataclasses.replace(load_config().whiten, min_frames=10)
    index, refs = _old_index(tmp_path, refs=4)
    index.upgrade(_translation(source_preprocess="p-old"))
    first = index.whitening(config)
    assert first is not None
    index.backfill(_as_new(refs[0]), "r0")
    index.backfill(_as_new(refs[1]), "r1")  # half the frames described again: refit
    second = index.whitening(config)
    assert not np.allclose(first.mean, second.mean)
    assert index.catalog.meta("backfilled_frames") == "0"


# ---- the real thing: real footage, both real models, the CLI ------------------------------------


REFS = ("bikes", "cup", "tree", "vtest")


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory, clips, photos):
    """An index built with the former default (full SSCD at 224 px), upgraded in place to the
    default model by a translation fitted on footage that is not among its references."""
    root = tmp_path_factory.mktemp("upgrade")
    refs = root / "refs"
    refs.mkdir()
    for name in REFS:
        shutil.copy(clips[name], refs / clips[name].name)
    compose(
        [Part(photos["astronaut"], 4.0, photo=True),
         Part(clips["bikes"], 6.0, start=2.0, vf="crop=iw*0.8:ih*0.8:iw*0.1:ih*0.1"),
         Part(photos["coffee"], 3.0, photo=True)],
        root / "copy.mp4",
    )  # fmt: skip
    index = root / "index"
    sscd = str(REPO / "configs" / "sscd.yaml")
    assert main(["index", "add", str(refs), "--index", str(index), "--config", sscd, "-q"]) == 0
    sample = [str(clips["box"]), str(clips["Megamind"])]
    assert main(["index", "upgrade", "--index", str(index), "--sample", *sample,
                 "--max-videos", "0", "--json", "-q"]) == 0  # fmt: skip
    return root


def _query(root: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    code = main(["query", str(root / "copy.mp4"), "--index", str(root / "index"), "--json", *extra])
    assert code == 0
    (line,) = capsys.readouterr().out.splitlines()
    return json.loads(line)


def _found(result: dict) -> tuple[float, float, float, float] | None:
    for match in result["matches"]:
        if match["reference_id"] == "bikes":
            s = match["segments"][0]
            return s["query_start"], s["query_end"], s["reference_start"], s["reference_end"]
    return None


def test_an_upgraded_index_serves_the_new_model_without_reading_references(upgraded, capsys):
    capsys.readouterr()
    assert main(["index", "info", "--index", str(upgraded / "index"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == NEW and info["upgrade"]["source_model"] == OLD
    assert info["upgrade"]["translated"] == len(REFS) and info["upgrade"]["report"]["frames"] > 100
    assert info["upgrade"]["report"]["calibrated_on"] == "copies"  # real footage, edited copies
    assert 1.0 < info["upgrade"]["report"]["scale"] <= 2.0
    moved = upgraded / "moved-refs"
    (upgraded / "refs").rename(moved)  # no reference file is needed to answer
    try:
        span = _found(_query(upgraded, capsys))  # the default configuration: the new model
        old_span = _found(_query(upgraded, capsys, "--config", str(REPO / "configs/sscd.yaml")))
    finally:
        moved.rename(upgraded / "refs")
    for found in (span, old_span):  # the former model's queries are translated
        assert found is not None
        assert abs(found[0] - 4) <= 1 and abs(found[1] - 10) <= 1
        assert abs(found[2] - 2) <= 1 and abs(found[3] - 8) <= 1


def test_import_takes_descriptor_files_of_either_model_in_transition(
    upgraded, clips, capsys, tmp_path
):
    index = tmp_path / "index"
    shutil.copytree(upgraded / "index", index)
    files = tmp_path / "descriptors"
    sscd = str(REPO / "configs" / "sscd.yaml")
    for name, extra in (("box", ["--config", sscd]), ("Megamind", [])):
        assert main(["describe", str(clips[name]), "--out", str(files), "-q", *extra]) == 0
    capsys.readouterr()
    assert main(["index", "import", str(files), "--index", str(index), "--json", "-q"]) == 0
    rows = {r["id"]: r["status"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows == {"box": "add", "Megamind": "add"}
    with ReferenceIndex(index, create=False) as opened:
        translated = {r.id for r in opened.translated()}
        assert "box" in translated and "Megamind" not in translated  # native: the new model
        opened.catalog.db.execute("UPDATE videos SET path = '/gone/tree.avi' WHERE id = 'tree'")
        opened.catalog.db.commit()
    # a reference whose file is gone keeps its translated descriptors, and the translation stays
    assert main(["index", "backfill", "--index", str(index), "--json", "-q"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kept = [r for r in rows if r["status"] == "kept"]
    assert [r["id"] for r in kept] == ["tree"] and "file missing" in kept[0]["error"]
    assert sum(r["status"] == "backfilled" for r in rows) == len(REFS)  # box and three refs
    with ReferenceIndex(index, create=False) as opened:
        assert [r.id for r in opened.translated()] == ["tree"]
        assert opened.translation() is not None


def test_backfill_serves_throughout_survives_sigkill_and_resumes(upgraded, capsys):
    index_dir = upgraded / "index"
    command = [sys.executable, "-m", "workers.cli", "index", "backfill", "--index",
               str(index_dir), "--json", "-q"]  # fmt: skip
    worker = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    during: dict = {}
    querying = threading.Thread(target=lambda: during.update(_query(upgraded, capsys)))
    querying.start()  # answers while the backfill runs
    try:
        with ReferenceIndex(index_dir, create=False) as index:
            deadline = time.monotonic() + 120
            while len(index.translated()) == len(REFS) and time.monotonic() < deadline:
                time.sleep(0.02)
            os.killpg(worker.pid, signal.SIGKILL)  # as soon as one reference is native
            worker.wait()
            querying.join()
            left = len(index.translated())
            assert 0 < left < len(REFS), "the kill did not land mid-way"
            assert _found(during) is not None
            assert _found(_query(upgraded, capsys)) is not None  # after the kill
            resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            assert resumed.returncode == 0, resumed.stderr
            rows = [json.loads(line) for line in resumed.stdout.splitlines()]
            assert len([r for r in rows if r["status"] == "backfilled"]) == left
            assert rows[-1]["status"] == "retired"
            assert index.translated(crops=True) == [] and index.translation() is None
            assert index.info()["upgrade"]["retired"]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    span = _found(_query(upgraded, capsys))
    assert span is not None and abs(span[2] - 2) <= 1 and abs(span[3] - 8) <= 1


def test_a_coded_index_is_re_encoded_in_the_new_space(tmp_path):
    from pipeline.config import load_config

    config = load_config(overrides={"index": {"kind": "ivfpq", "min_train_vectors": 256,
                                              "segment_vectors": 1500}})  # fmt: skip
    index = ReferenceIndex(tmp_path, config=config.index)
    refs = [synthetic_features(f"r{i}", 300, seed=i) for i in range(8)]
    for ref in refs:
        ref.preprocess = "p-old"
        index.add([(ref, ref.video_id)])
    index.compact()
    assert all(s.coded for s in index.catalog.segments()) and index.structure().kind == "ivfpq"
    done = index.upgrade(_translation(source_preprocess="p-old"))
    assert done["coded_segments"] > 0 and index.catalog.meta("training") is None
    assert index.compaction_due()  # the codes were trained in the former space
    index.compact()
    assert not index.compaction_due() and index.structure().kind == "ivfpq"
    for ref in refs:
        _, nums, _ = index.search(_as_new(ref).embeddings[:3], 5)
        assert index.get(ref.video_id).num in nums[:, 0].tolist()


@pytest.mark.ray
def test_shard_actors_follow_an_upgrade_and_a_backfill(tmp_path, ray_session):
    from pipeline.config import load_config
    from workers.shards import RayShards

    config = load_config(overrides={"index": {"shards": 2}})
    index, refs = _old_index(tmp_path, refs=6, config=config.index)
    index.compact()  # the references spread over both shards
    assert {s.shard for s in index.catalog.segments()} == {0, 1}
    shards = RayShards.start(tmp_path, config)  # serving before the upgrade
    try:
        index.upgrade(_translation(source_preprocess="p-old"))
        index.backfill(_as_new(refs[4]), "r4")
        probes = np.concatenate([_as_new(r).embeddings[::10] for r in refs])
        expected = index.searcher.search(probes, 5)
        got = shards.search(probes, 5)  # the actors caught up with both changes
        np.testing.assert_array_equal(got[1], expected[1])
        with ReferenceIndex(tmp_path, config=config.index, searcher=shards) as remote:
            _, nums, frames = remote.search(_as_new(refs[4]).embeddings[7:8], 1)
            assert (remote.by_num(int(nums[0, 0])).id, int(frames[0, 0])) == ("r4", 7)
    finally:
        shards.close()


def test_similarities_across_models_are_calibrated_on_held_out_frames(tmp_path):
    from pipeline.index.translation import calibrate

    rng = np.random.default_rng(3)
    target = l2_normalise(rng.standard_normal((400, 512)).astype(np.float32) + 2.0)
    noisy = l2_normalise(target + 0.7 * rng.standard_normal(target.shape).astype(np.float32))
    scale = calibrate(noisy, target)  # a second model: similarities to it run lower
    assert 1.1 < scale <= 2.0
    assert calibrate(target, target) == 1.0  # the same model: nothing to correct
    # stored references are that much longer; a former-model query the other way
    index, refs = _old_index(tmp_path, refs=2)
    translation = dataclasses.replace(_translation(source_preprocess="p-old"), scale=1.25)
    index.upgrade(translation)
    stored = index.features(index.get("r0")).embeddings
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.25, atol=2e-3)
    query = index.as_indexed(refs[1], query=True)
    assert np.allclose(np.linalg.norm(query.embeddings, axis=1), 1 / 1.25, atol=1e-5)
    assert index.translation().scale == 1.25


def test_a_reference_replaced_between_search_and_alignment_is_skipped(tmp_path, config):
    """The race a serving process meets during a backfill (or an index remove): the search
    found a reference number that the catalog no longer has by the time it is looked up and
    its descriptors read. Found with a real query path (StreamingQuery), no crash."""
    from pipeline.match import MatchStages
    from pipeline.streaming.matcher import StreamingQuery

    index, refs = _old_index(tmp_path, refs=3)
    index.upgrade(_translation(source_preprocess="p-old"))
    other = ReferenceIndex(tmp_path)
    real_search = index.search

    def search_then_backfill(vectors, k):
        found = real_search(vectors, k)
        for ref in other.translated():  # every reference replaced right after the search
            other.backfill(_as_new(next(f for f in refs if f.video_id == ref.id)), ref.sha256)
        return found

    index.search = search_then_backfill
    query = dataclasses.replace(_as_new(refs[1]), video_id="q", path="")
    stream = StreamingQuery(MatchStages.from_config(config), index)
    stream.add(query)  # the candidates it searched are gone: skipped, nothing raised
    result = stream.finish(refine=False)
    assert result.query_id == "q"
    index.search = real_search
    stream = StreamingQuery(MatchStages.from_config(config), index)
    stream.add(query)
    assert [m.reference_id for m in stream.finish(refine=False).matches] == ["r1"]
