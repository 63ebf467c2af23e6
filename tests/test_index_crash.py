"""Crashes and full disks: the last committed state stays readable and the next command
repairs or resumes. Writers are real processes killed with SIGKILL mid-change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import StorageFullError
from pipeline.index import ReferenceIndex
from pipeline.index.descriptor_file import write_descriptor_file
from tests.helpers import synthetic_features

REPO = Path(__file__).resolve().parent.parent
CODED = {"kind": "ivfpq", "min_train_vectors": 256, "segment_vectors": 1500}


def _check_consistent(root: Path, config=None) -> list[str]:
    """Open the index, sweep leftovers, and check that the catalog, the descriptor files and
    the search agree. Returns the reference ids."""
    with ReferenceIndex(root, config=config) as index:
        with index.write_lock():
            index.repair()
        refs = index.references()
        files = {int(p.stem) for p in (root / "vectors").glob("*.npz")}
        assert files == {r.num for r in refs}
        named = {s.file for s in index.catalog.segments() if s.file}
        assert named == {p.name for p in (root / "segments").iterdir()}
        assert index.searcher.vectors - sum(t.frames for t in index.catalog.tombstones()) == sum(
            r.frames for r in refs
        )
        for ref in refs[:: max(1, len(refs) // 5)]:
            probe = index.features(ref).embeddings[:2]
            _, nums, _ = index.search(probe, 3)
            assert ref.num in nums[0].tolist()
        return sorted(r.id for r in refs)


def _kill_when(command: list[str], marker: str, delay: float, cwd: Path = REPO) -> str:
    """Run ``command``, SIGKILL it ``delay`` s after ``marker`` appears in its output."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            time.sleep(delay)
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    seen.append(process.stdout.read())  # what it printed before it died
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    return "".join(seen)


def _descriptor_files(folder: Path, count: int, frames: int = 200) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        features = synthetic_features(f"v{i:03d}", frames, seed=i)
        write_descriptor_file(folder / f"v{i:03d}.npz", features, f"sha-{i}")
    return [f"v{i:03d}" for i in range(count)]


@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_import_killed_midway_resumes(tmp_path, delay):
    ids = _descriptor_files(tmp_path / "desc", 150)
    index = tmp_path / "index"
    cli = [sys.executable, "-m", "workers.cli", "index", "import", str(tmp_path / "desc"),
           "--index", str(index), "--json", "-q"]  # fmt: skip
    output = _kill_when(cli, '"status": "add"', delay)  # after the first batch committed
    first = [json.loads(line)["id"] for line in output.splitlines() if line.startswith("{")]
    present = _check_consistent(index)
    assert set(first) <= set(present) < set(ids)
    done = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, check=True)
    statuses = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        statuses[row["id"]] = row["status"]
    assert set(statuses) == set(ids)
    assert all(statuses[i] == "unchanged" for i in present)
    assert all(statuses[i] == "add" for i in set(ids) - set(present))
    assert _check_consistent(index) == ids  # each exactly once


ADD_LOOP = """
import sys
from pipeline.index import ReferenceIndex
from tests.helpers import synthetic_features
with ReferenceIndex(sys.argv[1]) as index:
    for i in range(1000):
        f = synthetic_features(f"a{i:04d}", 150, seed=i)
        index.add([(f, f"sha-{i}")])
        print("added", i, flush=True)
"""


def test_add_killed_midway_keeps_every_committed_reference(tmp_path):
    index = tmp_path / "index"
    output = _kill_when([sys.executable, "-c", ADD_LOOP, str(index)], "added 20", 0.05)
    reported = output.count("added ")
    present = _check_consistent(index)
    assert reported <= len(present) <= reported + 1  # at most the one in flight, committed
    assert present == [f"a{i:04d}" for i in range(len(present))]
    with ReferenceIndex(index) as reopened:  # and the next add works
        more = synthetic_features("more", 50, seed=99)
        assert reopened.add([(more, "sha-more")]) == ["add"]


COMPACT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from pipeline.config import load_config
from pipeline.index import ReferenceIndex
config = load_config(sys.argv[2]).index
with ReferenceIndex(sys.argv[1], config=config) as index:
    index.compact()
"""


@pytest.mark.parametrize("marker", ["compaction: training", "compaction: writing segment"])
def test_compaction_killed_midway_leaves_the_index_readable(tmp_path, marker):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"index": CODED}))
    config = load_config(config_file).index
    root = tmp_path / "index"
    with ReferenceIndex(root, config=config) as index:
        refs = [synthetic_features(f"c{i}", 300, seed=i) for i in range(12)]
        for ref in refs:
            index.add([(ref, ref.video_id)])
    command = [sys.executable, "-c", COMPACT, str(root), str(config_file)]
    _kill_when(command, marker, 0.0)
    ids = [f"c{i}" for i in range(12)]
    assert _check_consistent(root, config) == sorted(ids)
    with ReferenceIndex(root, config=config) as index:
        info = index.info()
        assert info["segments"]["coded"] == 0  # nothing half-done was committed
        assert not info["compaction"]["running"] and info["compaction_due"]  # still due
    # The next command compacts it, as an add or import does after committing.
    subprocess.run(
        [sys.executable, "-m", "workers.cli", "index", "compact", "--if-due", "--index",
         str(root), "--config", str(config_file), "-q"], cwd=REPO, check=True,
    )  # fmt: skip
    with ReferenceIndex(root, config=config) as index:
        assert index.info()["segments"]["coded"] == 1 and index.approximate
        assert not index.compaction_due()
    assert _check_consistent(root, config) == sorted(ids)


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs: a real file system that fills up. Needs mount rights (root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_nothing_committed(small_disk):
    reserve = small_disk / "reserve"
    reserve.write_bytes(b"\0" * 1024 * 1024)  # something else on the device, freed later
    root = small_disk / "index"
    added = []
    with ReferenceIndex(root) as index, pytest.raises(StorageFullError, match="no space left"):
        for i in range(1000):  # each reference ~150 KB of float16 descriptors
            ref = synthetic_features(f"d{i:03d}", 150, seed=i)
            index.add([(ref, f"sha-{i}")])
            added.append(ref.video_id)
    assert len(added) > 5
    assert _check_consistent(root) == added  # the failed add left nothing behind
    reserve.unlink()  # room again: the next command goes on where it stopped
    with ReferenceIndex(root) as index:
        retry = synthetic_features("retry", 150, seed=5000)
        assert index.add([(retry, "sha-retry")]) == ["add"]
    assert _check_consistent(root) == [*added, "retry"]


def test_compaction_on_a_full_disk_changes_nothing(small_disk):
    config = load_config(overrides={"index": CODED}).index
    root = small_disk / "index"
    with ReferenceIndex(root, config=config) as index:
        for i in range(12):
            ref = synthetic_features(f"e{i}", 300, seed=i)
            index.add([(ref, ref.video_id)])
        free = os.statvfs(small_disk)
        room = free.f_bavail * free.f_frsize
        (small_disk / "filler").write_bytes(b"\0" * max(0, room - 64 * 1024))
        with pytest.raises(StorageFullError):
            index.compact()
        assert index.info()["segments"]["coded"] == 0
        (small_disk / "filler").unlink()
    ids = sorted(f"e{i}" for i in range(12))
    assert _check_consistent(root, config) == ids
    with ReferenceIndex(root, config=config) as index:
        index.compact()
        assert index.approximate
    assert _check_consistent(root, config) == ids
