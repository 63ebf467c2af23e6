"""Ray audits and bulk ingest on real footage: resumable, exactly once, survive SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex
from tests.helpers import write_corrupt
from workers.audit import Audit, ingest, iter_inputs
from workers.inputs import expand_inputs

pytestmark = pytest.mark.ray

REFERENCES = ("bikes", "cup", "tree", "Megamind")


@pytest.fixture(scope="module")
def library(tmp_path_factory, clips, photos, config, ray_session):
    root = tmp_path_factory.mktemp("audit")
    refs, queries = root / "refs", root / "queries"
    refs.mkdir()
    for name in REFERENCES:
        shutil.copy(clips[name], refs)
    filler = Part(photos["astronaut"], 3.0, photo=True)
    compose([filler, Part(clips["bikes"], 5.0, start=3.0, vf="hflip")], queries / "a_bikes.mp4")
    compose([Part(clips["Megamind"], 6.0, start=1.0), filler], queries / "b_megamind.mp4")
    compose([filler, Part(photos["rocket"], 4.0, photo=True)], queries / "c_clean.mp4")
    compose(
        [Part(clips["cup"], 5.0, start=2.0, vf="eq=brightness=0.1"), filler], queries / "d_cup.mp4"
    )
    write_corrupt(queries / "e_corrupt.mp4", clips["bikes"])
    index = root / "index"
    killed = []

    def kill_embedder_once(item, outcome) -> None:  # SIGKILL a worker mid-ingest
        if not killed:
            killed.append(item)
            os.kill(ray_pid(stages_holder["stages"].embedders[0]), signal.SIGKILL)

    stages_holder: dict = {}
    import workers.audit as audit_module

    original = audit_module.Stages

    class Spy(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stages_holder["stages"] = self

    audit_module.Stages = Spy
    try:
        outcomes = ingest(config, expand_inputs([str(refs)]), str(index), progress=False,
                          on_result=kill_embedder_once)  # fmt: skip
    finally:
        audit_module.Stages = original
    return {"root": root, "queries": queries, "index": index, "ingest": outcomes, "killed": killed}


def ray_pid(actor) -> int:
    import ray

    return ray.get(actor.pid.remote())


def test_ingest_survives_a_killed_worker_and_indexes_each_reference_once(library):
    assert library["killed"], "the test must kill a worker during ingest"
    assert sorted(library["ingest"].values()) == ["add"] * len(REFERENCES)
    with ReferenceIndex(library["index"]) as index:
        assert sorted(r.id for r in index.references()) == sorted(REFERENCES)
        refs = index.references(crops=True)  # each with its 2 x 2 crops (views.reference_grid)
        assert len(refs) == 5 * len(REFERENCES)
        assert index.info()["frames"] == sum(r.frames for r in refs)
        # no reference's frames twice in what is searched
        assert index.searcher.vectors == sum(r.frames for r in refs)


def test_the_ray_ingest_makes_the_crops_index_add_makes(library, detector, clips):
    import numpy as np

    from pipeline.records import crop_id

    local = detector.describe(clips["tree"], views=False)
    with ReferenceIndex(library["index"]) as index:
        for k, crop in enumerate(local.crops):
            ray_made = index.features(index.get(crop_id("tree", k)))
            assert np.array_equal(ray_made.starts, crop.starts)
            cosines = (ray_made.embeddings * crop.embeddings).sum(axis=1)
            assert cosines.min() > 0.99  # float16 storage apart, the same descriptors


def test_the_ray_ingest_fingerprints_the_soundtrack_as_index_add_does(library, detector, clips):
    import numpy as np

    local = detector.describe(clips["Megamind"], views=False)  # a clip with a soundtrack
    with ReferenceIndex(library["index"]) as index:
        ray_made = index.features(index.get("Megamind"))
    assert len(local.audio) > 500
    assert np.array_equal(ray_made.audio.hashes, local.audio.hashes)
    assert np.array_equal(ray_made.audio.times, local.audio.times)


def test_ingesting_again_is_a_no_op(library, config):
    paths = expand_inputs([str(library["root"] / "refs")])
    outcomes = ingest(config, paths, str(library["index"]), progress=False)
    assert set(outcomes.values()) == {"unchanged"}


def test_audit_with_a_killed_actor_writes_every_input_exactly_once(library, config, detector):
    out = library["root"] / "out-kill"
    audit = Audit(config, str(library["index"]), out)
    victims = []

    def kill_once(item, value) -> None:
        if not victims:
            victims.append(item)
            os.kill(ray_pid(audit.stages.decoders[0]), signal.SIGKILL)
            os.kill(ray_pid(audit.stages.aligners[0]), signal.SIGKILL)

    summary = audit.run(library["queries"], progress=False, on_result=kill_once)
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    ids = [line["query"]["id"] for line in lines]
    assert sorted(ids) == ["a_bikes", "b_megamind", "c_clean", "d_cup", "e_corrupt"]
    assert summary["failed"] == 1 and summary["done"] == 5
    by_id = {line["query"]["id"]: line for line in lines}
    assert "not a video or corrupt" in by_id["e_corrupt"]["error"]
    assert [m["reference_id"] for m in by_id["a_bikes"]["matches"]] == ["bikes"]
    assert by_id["c_clean"]["matches"] == []
    # Audit results equal `copyspan query` results for the same inputs and index.
    with ReferenceIndex(library["index"]) as index:
        for name in ("a_bikes", "b_megamind", "d_cup"):
            expected = detector.query(library["queries"] / f"{name}.mp4", index).to_dict()
            assert by_id[name]["matches"] == expected["matches"]
    segments = (out / "segments.csv").read_text().splitlines()
    assert segments[0].startswith("query_id,reference_id") and len(segments) >= 4


def test_interrupted_audit_resumes_without_duplicates(library, config):
    out = library["root"] / "out-resume"
    audit = Audit(config, str(library["index"]), out)

    def stop_after_two(item, value) -> None:
        if len(audit.state.keys()) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit.run(library["queries"], progress=False, on_result=stop_after_two)
    assert len(audit.state.keys()) == 2
    summary = Audit(config, str(library["index"]), out).run(library["queries"], progress=False)
    assert summary["skipped_already_done"] == 2 and summary["done"] == 5
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5 and len({json.loads(x)["query"]["id"] for x in lines}) == 5


def test_manifests(tmp_path, library):
    queries = library["queries"]
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text(
        f"id,path\nfirst,{queries / 'a_bikes.mp4'}\nsecond,{queries / 'c_clean.mp4'}\n"
    )
    assert [i.video_id for i in iter_inputs(csv_manifest)] == ["first", "second"]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"id": "x", "path": str(queries / "d_cup.mp4")}) + "\n")
    assert [(i.video_id, i.path) for i in iter_inputs(jsonl)] == [("x", str(queries / "d_cup.mp4"))]


def test_links_and_repeated_files_are_each_reported_under_their_own_name(tmp_path, library, config):
    """Two links to one video and one file under two manifest ids are four inputs with four
    results, also when the audit is interrupted and resumed."""
    queries = library["queries"]
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "clip__a.mp4").symlink_to(queries / "a_bikes.mp4")
    (folder / "clip__b.mp4").symlink_to(queries / "a_bikes.mp4")
    shutil.copy(queries / "c_clean.mp4", folder / "plain.mp4")
    out = tmp_path / "out-links"
    audit = Audit(config, str(library["index"]), out)

    def stop_after_one(item, value) -> None:
        if len(audit.state.keys()) >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit.run(folder, progress=False, on_result=stop_after_one)
    summary = Audit(config, str(library["index"]), out).run(folder, progress=False)
    assert summary["inputs"] == 3 and summary["done"] == 3 and summary["matched"] == 2
    assert summary["skipped_already_done"] == 1
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["query"]["id"], Path(r["query"]["path"]).name) for r in lines) == [
        ("clip__a", "clip__a.mp4"), ("clip__b", "clip__b.mp4"), ("plain", "plain.mp4"),
    ]  # fmt: skip
    by_id = {r["query"]["id"]: r for r in lines}
    assert by_id["clip__a"]["matches"] == by_id["clip__b"]["matches"] != []
    segments = (out / "segments.csv").read_text()
    assert "\nclip__a," in segments and "\nclip__b," in segments

    manifest = tmp_path / "twice.csv"
    manifest.write_text(f"id,path\none,{queries / 'd_cup.mp4'}\ntwo,{queries / 'd_cup.mp4'}\n")
    out = tmp_path / "out-manifest"
    Audit(config, str(library["index"]), out).run(manifest, progress=False)
    again = Audit(config, str(library["index"]), out).run(manifest, progress=False)
    assert again["skipped_already_done"] == 2 and again["done"] == 2
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["query"]["id"] for r in lines] == ["one", "two"]


def chromium() -> str:
    """Debian's Chromium, installed here when missing (CI machines start without it)."""
    found = shutil.which("chromium")
    if found is None:
        import subprocess

        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env,
                       timeout=1200)  # fmt: skip
        found = shutil.which("chromium")
    assert found, "Chromium could not be installed"
    return found


BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def test_report_of_a_real_audit_in_a_real_browser(tmp_path, library, config):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    Audit(config, str(library["index"]), out).run(library["queries"], progress=False)
    report = out / "report.html"
    text = report.read_text()
    assert 'src="http' not in text and 'href="http' not in text and "@import" not in text
    matched = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    matched = [r for r in matched if r["matches"]]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        assert page.locator(".entry").count() == len(matched) >= 3
        assert page.locator(".match").count() == sum(len(r["matches"]) for r in matched)
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        thumbs = sum(len(m["segments"]) for r in matched for m in r["matches"]) * 6
        assert len(widths) >= thumbs and all(w > 0 for w in widths)  # every image decoded
        assert page.locator("svg polygon").count() >= 3  # spans joined on the timelines
        assert "copyspan audit report" in page.title()
        page.fill("#filter", "cup")
        assert page.locator("#shown").inner_text() == "1"
        page.fill("#filter", "")
        page.select_option("#sort", "copied")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        shutil.copy(tmp_path / "report.png", Path("/tmp") / "copyspan-report.png")
        browser.close()
    assert errors == []
    assert all(url.startswith(("file://", "data:")) for url in requests), requests


def test_review_thumbnails_read_in_one_pass_are_the_frames_on_screen(clips, tmp_path):
    """frames_at reads a file once for many times (any order, repeated, past the end) and gives
    the frame a seek to each time would: the last one starting at or before it."""
    import av
    import numpy as np

    from pipeline.review.report.figures import THUMB_WIDTH, frames_at

    path = clips["bikes"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(f.time, f) for f in container.decode(stream)]
        last_time = decoded[-1][0]
        height = round(THUMB_WIDTH * stream.height / stream.width / 2) * 2
        expected_at = {}
        times = [7.3, 0.0, 2.51, 2.51, 9.9, 0.04, last_time + 30.0, 3.0]
        for t in times:
            frame = [f for ft, f in decoded if ft <= t + 1e-3][-1]
            expected_at[t] = frame.to_ndarray(width=THUMB_WIDTH, height=height, format="rgb24")
    got = frames_at(path, times)
    for t, image in zip(times, got, strict=True):
        assert image is not None and np.array_equal(image, expected_at[t]), t
    assert frames_at(tmp_path / "gone.mp4", [1.0, 2.0]) == [None, None]
