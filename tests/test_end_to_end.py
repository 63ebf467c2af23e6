"""End to end on real footage through the real CLI: index, query, match, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.edits import Part, compose
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


def test_adding_the_same_references_again_changes_nothing(scene, capsys):
    before = (scene / "index" / "frames.json").read_text()
    assert (
        main(["index", "add", str(scene / "refs"), "--index", str(scene / "index"), "--json", "-q"])
        == 0
    )
    assert {line["status"] for line in _lines(capsys)} == {"unchanged"}
    assert (scene / "index" / "frames.json").read_text() == before


def test_index_info(scene, capsys):
    assert main(["index", "info", "--index", str(scene / "index"), "--json"]) == 0
    (info,) = _lines(capsys)
    assert info["references"] == len(REFERENCES) and info["model"] == "sscd"
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
    other.write_text("decode:\n  short_side: 288\n")
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
