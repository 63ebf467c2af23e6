"""Index shards on Ray actors: the merged answer equals one node's, through a shard's death."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.index import ReferenceIndex
from pipeline.records import AudioPrint
from tests.helpers import synthetic_features
from workers.shards import RayShards

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_sharded_search_equals_one_node_and_survives_a_killed_shard(tmp_path, ray_session, kind):
    import ray

    config = load_config(overrides={"index": {"kind": kind, "min_train_vectors": 256, "shards": 2}})
    refs = [synthetic_features(f"s{i}", 250, seed=i) for i in range(12)]
    rng = np.random.default_rng(1)
    for ref in refs:  # soundtracks too: their postings live in the shards' segments
        ref.audio = AudioPrint(rng.integers(0, 1 << 22, 500), np.arange(500) * 2)
    with ReferenceIndex(tmp_path, config=config.index) as index:
        for ref in refs:
            index.add([(ref, ref.video_id)])
        index.compact()  # one segment per shard
        segments = index.catalog.segments()
        assert {s.shard for s in segments} == {0, 1} and len(segments) == 2
        assert all(s.coded == (kind == "ivfpq") for s in segments)
        probes = np.concatenate([r.embeddings[::25] for r in refs])
        probes += 0.05 * np.random.default_rng(0).standard_normal(probes.shape).astype(np.float32)
        expected = index.searcher.search(probes, 20)
        heard = np.concatenate([r.audio.hashes[::10] for r in refs])
        expected_audio = sorted(zip(*(a.tolist() for a in index.search_audio(heard)), strict=True))
        assert len(expected_audio) >= len(heard)

    shards = RayShards.start(tmp_path, config)
    try:
        assert len(shards.actors) == 2 and shards.approximate == (kind == "ivfpq")
        got = shards.search(probes, 20)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
        got_audio = sorted(zip(*(a.tolist() for a in shards.search_audio(heard)), strict=True))
        assert got_audio == expected_audio

        pid = ray.get(shards.actors[1].pid.remote())
        os.kill(pid, signal.SIGKILL)  # Ray restarts it; it reloads its shard
        again = shards.search(probes, 20)
        np.testing.assert_array_equal(again[1], expected[1])
        assert ray.get(shards.actors[1].pid.remote()) != pid

        # a reference added afterwards is found through the shards (they follow the catalog)
        late = synthetic_features("late", 100, seed=77)
        with ReferenceIndex(tmp_path, config=config.index) as index:
            index.add([(late, "late")])
            with ReferenceIndex(tmp_path, config=config.index, searcher=shards) as remote:
                _, nums, _ = remote.search(late.embeddings[:3], 1)
                assert {remote.by_num(int(n)).id for n in nums[:, 0]} == {"late"}
    finally:
        shards.close()


def test_query_with_ray_address_searches_the_shards(tmp_path, ray_session, clips, photos):
    """`copyspan query --ray-address`: the shards live in actors and the answer is the same."""
    import shutil

    import yaml

    from benchmarks.edits import Part, compose
    from workers.cli import main

    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("bikes", "tree", "cup"):
        shutil.copy(clips[name], refs)
    query = tmp_path / "copy.mp4"
    compose([Part(photos["coffee"], 3.0, photo=True), Part(clips["tree"], 6.0, start=2.0)], query)
    config = tmp_path / "sharded.yaml"
    config.write_text(yaml.safe_dump({"index": {"shards": 2}}))
    index = str(tmp_path / "index")
    common = ["--config", str(config), "--json", "-q"]
    assert main(["index", "add", str(refs), "--index", index, *common]) == 0
    assert main(["index", "compact", "--index", index, *common]) == 0
    results = []
    for extra in ([], ["--ray-address", "auto"]):  # auto: the running (test) Ray
        out = tmp_path / f"out{len(results)}.json"
        code = main(["query", str(query), "--index", index, *common, *extra, "--csv", str(out)])
        assert code == 0
        results.append(out.read_text())
    assert results[0] == results[1] and "tree" in results[0]
    with ReferenceIndex(index, create=False) as opened:
        assert {s.shard for s in opened.catalog.segments()} == {0, 1}
