"""A studio intro shared by references: evidence of nothing once it is in the background set.

Real footage through the real CLI: two references open with the same logo animation; a query
that opens with it too but copies neither matches both until the intro is given as background
footage; a true copy is still found after that. Also the video-level neighbours command.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.edits import Part, compose
from workers.cli import main


@pytest.fixture(scope="module")
def studio(tmp_path_factory, clips, photos):
    root = tmp_path_factory.mktemp("intro")
    intro = Part(photos["logo"], 4.0, photo=True)
    compose([intro], root / "background" / "intro.mp4")
    compose([intro, Part(clips["bikes"], 8.0, start=1.0)], root / "refs" / "film_a.mp4")
    compose([intro, Part(clips["vtest"], 8.0, start=10.0)], root / "refs" / "film_b.mp4")
    compose([intro, Part(clips["Megamind"], 6.0, start=1.0)], root / "queries" / "other.mp4")
    compose([intro, Part(clips["bikes"], 6.0, start=2.0)], root / "queries" / "copy_a.mp4")
    assert main(["index", "add", str(root / "refs"), "--index", str(root / "index"), "-q"]) == 0
    return root


def _query(root, name, capsys) -> dict:
    capsys.readouterr()
    path = root / "queries" / f"{name}.mp4"
    assert main(["query", str(path), "--index", str(root / "index"), "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)


def test_shared_intro_stops_matching_once_it_is_background(studio, capsys):
    before = _query(studio, "other", capsys)
    assert {m["reference_id"] for m in before["matches"]} == {"film_a", "film_b"}
    code = main(
        ["index", "background", str(studio / "background"), "--index", str(studio / "index"),
         "--json", "-q"]
    )  # fmt: skip
    assert code == 0
    assert _query(studio, "other", capsys)["matches"] == []
    (match,) = _query(studio, "copy_a", capsys)["matches"]
    assert match["reference_id"] == "film_a"
    (segment,) = match["segments"]  # the copied footage, not the intro
    assert segment["query_start"] == pytest.approx(4.0, abs=1.0)
    assert segment["reference_start"] == pytest.approx(5.0, abs=1.0)


def test_similar_lists_video_level_neighbours(studio, capsys):
    capsys.readouterr()
    path = studio / "queries" / "copy_a.mp4"
    code = main(["similar", str(path), "--index", str(studio / "index"), "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    ranked = [s["reference_id"] for s in result["similar"]]
    assert ranked[0] == "film_a" and set(ranked) == {"film_a", "film_b"}
    assert result["similar"][0]["similarity"] > result["similar"][1]["similarity"]
