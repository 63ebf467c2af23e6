"""End to end on real footage through the real CLI: index, query, match, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex
from tests.helpers import write_corrupt
from workers.cli import main

COPY_Q = (5.0, 11.0)  # where the copied excerpt sits in the query
COPY_R = (2.0, 8.0)  # which seconds of the reference it copies
REFERENCES = ("bikes", "vtest", "cup", "tree", "box")


@pytest.fixture(scope="module")
def scene(tmp_path_factory, clips, photos):
    root = tmp_path_factory.mktemp("e2e")
    refs = root / "refs"
    refs.mkdir()
    for name in REFERENCES:
        shutil.copy(clips[name], refs / clips[name].name)
    queries = root / "queries"
    crop = "crop=iw*0.8:ih*0.8:iw*0.1:ih*0.1"
    compose(
        [
            Part(photos["astronaut"], COPY_Q[0], photo=True),
            Part(clips["bikes"], COPY_R[1] - COPY_R[0], start=COPY_R[0], vf=crop),
            Part(photos["coffee"], 4.0, photo=True),
        ],
        queries / "copy.mp4",
    )
    compose(
        [Part(clips["Megamind"], 6.0, start=1.0), Part(photos["chelsea"], 4.0, photo=True)],
        queries / "unrelated.mp4",
    )
    write_corrupt(queries / "corrupt.mp4", clips["bikes"])
    index = root / "index"
    assert main(["index", "add", str(refs), "--index", str(index), "--json", "-q"]) == 0
    return root


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_copy_is_found_with_both_spans_within_a_second(scene, capsys):
    code = main(
        ["query", str(scene / "queries" / "copy.mp4"), "--index", str(scene / "index"), "--json"]
    )
    assert code == 0
    (result,) = _lines(capsys)
    assert result["query"]["id"] == "copy" and result["query"]["duration"] == pytest.approx(
        15, abs=0.1
    )
    assert [m["reference_id"] for m in result["matches"]] == ["bikes"]
    (segment,) = result["matches"][0]["segments"]
    assert (
        abs(segment["query_start"] - COPY_Q[0]) <= 1 and abs(segment["query_end"] - COPY_Q[1]) <= 1
    )
    assert abs(segment["reference_start"] - COPY_R[0]) <= 1
    assert abs(segment["reference_end"] - COPY_R[1]) <= 1
    assert result["matches"][0]["reference_path"].endswith("bikes.mp4")


def test_batch_with_unrelated_and_corrupt_inputs(scene, capsys):
    queries = scene / "queries"
    args = [str(queries / n) for n in ("corrupt.mp4", "unrelated.mp4", "copy.mp4")]
    code = main(["query", *args, "--index", str(scene / "index"), "--json", "-q"])
    assert code == 1  # one input failed, the others were still answered
    corrupt, unrelated, copy = _lines(capsys)
    assert "not a video or corrupt" in corrupt["error"] and corrupt["matches"] == []
    assert unrelated["matches"] == [] and "error" not in unrelated
    assert copy["matches"][0]["reference_id"] == "bikes"


def _index_state(root):
    from pipeline.index import ReferenceIndex

    with ReferenceIndex(root, create=False) as index:
        generation = index.generation
    return generation, {p.name: p.stat().st_mtime_ns for p in (root / "vectors").iterdir()}


def test_adding_the_same_references_again_changes_nothing(scene, capsys):
    before = _index_state(scene / "index")
    assert (
        main(["index", "add", str(scene / "refs"), "--index", str(scene / "index"), "--json", "-q"])
        == 0
    )
    assert {line["status"] for line in _lines(capsys)} == {"unchanged"}
    assert _index_state(scene / "index") == before


def test_index_info(scene, capsys):
    assert main(["index", "info", "--index", str(scene / "index"), "--json"]) == 0
    (info,) = _lines(capsys)
    assert info["references"] == len(REFERENCES) and info["model"] == "sscd_distilled"
    assert {r["id"] for r in info["references_list"]} == set(REFERENCES)


def test_match_command_without_index(scene, clips, capsys):
    code = main(["match", str(scene / "queries" / "copy.mp4"), str(clips["bikes"]), "--json"])
    assert code == 0
    (result,) = _lines(capsys)
    (segment,) = result["matches"][0]["segments"]
    assert abs(segment["query_start"] - COPY_Q[0]) <= 1
    assert abs(segment["reference_start"] - COPY_R[0]) <= 1


def test_console_script_single_bad_input_exits_non_zero_with_reason(scene):
    script = Path(sys.executable).parent / "copyspan"
    result = subprocess.run(
        [
            str(script),
            "query",
            str(scene / "queries" / "corrupt.mp4"),
            "--index",
            str(scene / "index"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "corrupt.mp4: not a video or corrupt" in result.stderr
    assert json.loads(result.stdout)["error"]


def test_remove_then_copy_is_no_longer_found(scene, tmp_path, capsys):
    index = tmp_path / "index"
    shutil.copytree(scene / "index", index)
    assert main(["index", "remove", "bikes", "--index", str(index)]) == 0
    capsys.readouterr()
    assert (
        main(["query", str(scene / "queries" / "copy.mp4"), "--index", str(index), "--json"]) == 0
    )
    assert _lines(capsys)[0]["matches"] == []


def test_query_against_missing_index_is_a_usage_error(scene, tmp_path, capsys):
    code = main(["query", str(scene / "queries" / "copy.mp4"), "--index", str(tmp_path / "none")])
    assert code == 2
    assert "no index" in capsys.readouterr().err


def test_query_with_other_frame_preparation_is_refused(scene, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text("decode:\n  short_side: 224\n")
    query = str(scene / "queries" / "copy.mp4")
    code = main(["query", query, "--index", str(scene / "index"), "--config", str(other)])
    assert code == 2
    assert "frame preparation" in capsys.readouterr().err


def test_queries_align_on_whitening_stored_with_the_index(scene, capsys):
    """With a whitening fit allowed on these five short references, the first query fits and
    stores it, and the copy found on whitened similarities keeps its spans and a raw-cosine
    score."""
    import dataclasses

    from pipeline.config import load_config
    from pipeline.index import ReferenceIndex

    query, index_dir = str(scene / "queries" / "copy.mp4"), scene / "index"
    (index_dir / "whitening.npz").unlink(missing_ok=True)  # earlier queries may have fitted one
    results = {}
    for name, settings in {"whitened": "min_frames: 50", "raw": "enabled: false"}.items():
        override = scene / f"{name}.yaml"
        override.write_text(f"whiten:\n  {settings}\n")
        main(["query", query, "--index", str(index_dir), "--json", "--config", str(override)])
        results[name] = _lines(capsys)[0]["matches"]
    assert (index_dir / "whitening.npz").exists()  # fitted and stored by the query
    whiten = dataclasses.replace(load_config().whiten, min_frames=50)
    with ReferenceIndex(index_dir, create=False) as index:
        fitted = index.whitening(whiten)
        assert fitted is not None and fitted.frames == index.info()["frames"] >= 50
    (whitened,), (raw,) = results["whitened"], results["raw"]
    assert whitened["reference_id"] == raw["reference_id"] == "bikes"
    assert whitened["score"] == pytest.approx(raw["score"], abs=0.05)
    (segment,) = whitened["segments"]
    assert abs(segment["reference_start"] - COPY_R[0]) <= 1
    assert abs(segment["reference_end"] - COPY_R[1]) <= 1


def test_describe_then_import_gives_the_same_index_as_add(scene, capsys, tmp_path):
    """Descriptors made elsewhere (copyspan describe) load in bulk (index import): the
    contract fields are there, the same copy is found, a repeat is a no-op."""
    import numpy as np

    described = tmp_path / "described"
    refs = scene / "refs"
    assert main(["describe", str(refs), "--out", str(described), "--json", "-q"]) == 0
    assert {r["status"] for r in _lines(capsys)} == {"described"}
    with np.load(described / "bikes.npz", allow_pickle=False) as data:
        assert data["embeddings"].dtype == np.float16 and data["embeddings"].shape[1] == 512
        assert data["starts"].dtype == np.float64 and data["weights"].dtype == np.float32
        assert str(data["video_id"]) == "bikes" and str(data["model"]) == "sscd_distilled"
        assert len(str(data["sha256"])) == 64 and float(data["duration"]) > 0
        assert str(data["preprocess"]).startswith("short_side=")
        # and the reference's crops (views.reference_grid), each with its own rows
        assert {f"crop{k}_embeddings" for k in range(4)} <= set(data.files)
        assert data["crop3_starts"].shape == (len(data["crop3_embeddings"]),)
    assert main(["describe", str(refs), "--out", str(described), "--json", "-q"]) == 0
    assert {r["status"] for r in _lines(capsys)} == {"unchanged"}  # resumable

    imported = tmp_path / "imported"
    assert main(["index", "import", str(described), "--index", str(imported), "--json", "-q"]) == 0
    assert sorted(r["id"] for r in _lines(capsys) if r["status"] == "add") == sorted(REFERENCES)
    assert main(["index", "import", str(described), "--index", str(imported), "--json", "-q"]) == 0
    assert {r["status"] for r in _lines(capsys)} == {"unchanged"}
    with ReferenceIndex(imported) as a, ReferenceIndex(scene / "index") as b:
        assert a.info()["crop_references"] == b.info()["crop_references"] == 4 * len(REFERENCES)
    copy = str(scene / "queries" / "copy.mp4")
    assert main(["query", copy, "--index", str(imported), "--json", "-q"]) == 0
    (via_import,) = _lines(capsys)
    assert main(["query", copy, "--index", str(scene / "index"), "--json", "-q"]) == 0
    (via_add,) = _lines(capsys)
    assert via_import["matches"] == via_add["matches"]


def test_import_refuses_other_models_and_broken_files_and_goes_on(scene, capsys, tmp_path):
    import numpy as np

    from pipeline.index.descriptor_file import read_descriptor_file, write_descriptor_file

    source = tmp_path / "src"
    assert main(["describe", str(scene / "refs" / "tree.avi"), "--out", str(source), "-q"]) == 0
    capsys.readouterr()
    good = read_descriptor_file(source / "tree.npz")
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_descriptor_file(folder / "tree.npz", good.features, good.sha256)
    other = good.features
    other.video_id, other.model = "student", "sscd"  # the default is the student: not this
    write_descriptor_file(folder / "student.npz", other, "another-sha")
    (folder / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(folder / "partial.npz", embeddings=np.zeros((3, 512), np.float32))
    code = main(["index", "import", str(folder), "--index", str(scene / "index"), "--json", "-q"])
    assert code == 1
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in _lines(capsys)}
    assert rows["tree.npz"]["status"] == "unchanged"  # already indexed by `index add`
    assert rows["student.npz"]["status"] == "failed"
    assert "the index holds 'sscd_distilled'" in rows["student.npz"]["error"]
    assert "not a readable descriptor file" in rows["broken.npz"]["error"]
    assert "missing" in rows["partial.npz"]["error"]


def test_index_compact_and_info_report_the_structure(scene, capsys, tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(scene / "index", index)
    assert main(["index", "compact", "--index", str(index), "--json"]) == 0
    (report,) = _lines(capsys)
    assert report["structure"]["kind"] == "flat"  # five short clips: exact search
    assert main(["index", "info", "--index", str(index), "--json"]) == 0
    (info,) = _lines(capsys)
    assert info["structure"]["kind"] == "flat" and info["segments"]["tombstones"] == 0
    assert info["disk_bytes"]["vectors"] > 0 and not info["compaction_due"]
