"""Compaction without anyone's help: work that arrives while a compaction runs is compacted by
it, readers follow the compacted generation, and a dead compactor leaves the work due."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import load_config
from pipeline.index import ReferenceIndex, compaction
from pipeline.index.compaction import CompactionBusy
from pipeline.index.descriptor_file import write_descriptor_file
from tests.helpers import synthetic_features

REPO = Path(__file__).resolve().parent.parent
CODED = {"kind": "ivfpq", "min_train_vectors": 256, "segment_vectors": 1500}


def _add(index: ReferenceIndex, first: int, count: int, frames: int = 300) -> list:
    refs = [synthetic_features(f"r{i:03d}", frames, seed=i) for i in range(first, first + count)]
    for ref in refs:
        index.add([(ref, ref.video_id)])
    return refs


def _sealed_flat(index: ReferenceIndex) -> list:
    return [s for s in index.catalog.segments() if not s.coded and s.sealed]


def _finds_each(index: ReferenceIndex, refs: list) -> bool:
    for ref in refs:
        _, nums, _ = index.search(ref.embeddings[:3], 5)
        if index.get(ref.video_id).num not in nums[:, 0].tolist():
            return False
    return True


def test_an_add_during_a_compaction_is_compacted_by_it(tmp_path, monkeypatch):
    config = load_config(overrides={"index": CODED}).index
    writer = ReferenceIndex(tmp_path, config=config)
    first = _add(writer, 0, 10)
    assert writer.compaction_due()
    planned, go_on = threading.Event(), threading.Event()
    original = compaction._run

    def run_after_a_pause(*args):  # the first pass waits between its plan and its work
        if not planned.is_set():
            planned.set()
            assert go_on.wait(60)
        return original(*args)

    monkeypatch.setattr(compaction, "_run", run_after_a_pause)
    reports = []
    runner = threading.Thread(
        target=lambda: reports.append(
            ReferenceIndex(tmp_path, config=config).compact(full=False, wait=False)
        )
    )
    runner.start()
    assert planned.wait(60)
    assert compaction.compaction_state(tmp_path)["running"]
    second = _add(writer, 10, 10)  # added after the running pass made its plan
    with pytest.raises(CompactionBusy):  # what `index compact --if-due` meets: it leaves
        writer.compact(full=False, wait=False)
    go_on.set()
    runner.join(120)
    assert not runner.is_alive()
    assert not writer.compaction_due() and not _sealed_flat(writer)
    assert len(reports[0]["passes"]) == 2  # the running one made a pass for the new work
    state = writer.info()["compaction"]
    assert not state["running"] and not state["requested"]
    assert _finds_each(writer, first + second)
    writer.close()


def _descriptor_folder(folder: Path, first: int, count: int, frames: int = 200) -> None:
    folder.mkdir(parents=True)
    for i in range(first, first + count):
        features = synthetic_features(f"v{i:03d}", frames, seed=i)
        write_descriptor_file(folder / f"v{i:03d}.npz", features, f"sha-{i}")


def _info(index: Path, config: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "index", "info", "--index", str(index), "--json",
         "--config", str(config)], cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_back_to_back_imports_end_compacted_and_readers_follow(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"index": CODED}))
    config = load_config(config_file).index
    root = tmp_path / "index"
    reader = ReferenceIndex(root, config=config)  # a long-running reader, opened first
    assert reader.search(np.ones((1, 512), np.float32), 1)[1][0, 0] == -1  # empty
    _descriptor_folder(tmp_path / "a", 0, 40)
    _descriptor_folder(tmp_path / "b", 40, 40)
    for folder in ("a", "b"):  # as a user would: one import right after the other
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "index", "import", str(tmp_path / folder),
             "--index", str(root), "--config", str(config_file), "-q"],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
    assert reader.searcher.vectors == 80 * 200  # it follows the imports, flat for now
    deadline = time.monotonic() + 180
    info = _info(root, config_file)
    while info["compaction"]["running"] or info["compaction_due"]:
        assert time.monotonic() < deadline, json.dumps(info)
        time.sleep(0.5)
        info = _info(root, config_file)
    assert info["segments"]["coded"] >= 1 and not _sealed_flat(reader)
    vectors = reader.searcher.vectors
    assert vectors == 80 * 200
    # The reader serves from the codes now: far less memory than the flat float32 vectors.
    assert reader.searcher.memory_bytes() < vectors * 512 * 4 / 4
    assert all(s.segment.coded or not s.segment.sealed for s in reader.searcher.loaded.values())
    refs = [synthetic_features(f"v{i:03d}", 200, seed=i) for i in range(0, 80, 7)]
    assert _finds_each(reader, refs)
    reader.close()
