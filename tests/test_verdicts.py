"""Reviewers' verdicts: what each one changes, recorded with who and when."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.records import Match, QueryResult, Segment
from pipeline.review.verdicts import VerdictError, Verdicts, silenced
from workers.cli import main
from workers.service import UploadProcessor


def _result(query_id: str, reference: str, span=(10.0, 20.0)) -> QueryResult:
    segment = Segment(0.0, 10.0, span[0], span[1], 0.8)
    return QueryResult(query_id, "/nowhere.mp4", 10.0, [Match(reference, "/r.mp4", 0.8, [segment])])


def test_each_verdict_acts_as_documented(tmp_path):
    verdicts = Verdicts(tmp_path / "v.sqlite")
    with pytest.raises(VerdictError):
        verdicts.mark("q", "r", "maybe")
    with pytest.raises(VerdictError):
        verdicts.mark("*", "r", "not_copy")  # about one query only

    verdicts.mark("up1", "film", "not_copy", "fan edit", "ana", query_sha256="aaa")
    same_content = verdicts.apply(dataclasses.replace(_result("other-id", "film"), sha256="aaa"))
    assert same_content.matches[0].verdict["verdict"] == "not_copy"
    assert silenced(same_content.matches[0])
    other_content = verdicts.apply(dataclasses.replace(_result("up1", "film"), sha256="bbb"))
    assert other_content.matches[0].verdict is None  # new content: a new decision

    verdicts.mark("*", "trailer", "licensed", "deal 42", "bo", reference_span=(0.0, 30.0))
    inside = verdicts.apply(dataclasses.replace(_result("u", "trailer"), sha256="c"))
    outside = verdicts.apply(dataclasses.replace(_result("u", "trailer", (25, 40)), sha256="c"))
    assert inside.matches[0].verdict["verdict"] == "licensed" and outside.matches[0].verdict is None

    verdicts.mark("*", "intro", "quarantined", "matches everything", "cy")
    assert silenced(verdicts.apply(_result("u", "intro")).matches[0])
    verdicts.mark("u", "intro", "copy", "a real one this time", "cy")  # pair beats reference
    confirmed = verdicts.apply(_result("u", "intro")).matches[0]
    assert confirmed.verdict["verdict"] == "copy" and not silenced(confirmed)
    listed = verdicts.list(reference_id="intro")
    assert [v.verdict for v in listed] == ["quarantined", "copy"]
    assert listed[0].by == "cy" and listed[0].at.startswith("20")
    assert _result("q", "r").to_dict()["matches"][0].keys() >= {"reference_id", "segments"}
    assert "verdict" in confirmed.to_dict()


def test_a_not_copy_verdict_stops_the_next_alert(tmp_path, clips, photos, config, detector):
    uploads = tmp_path / "uploads"
    upload = compose(
        [Part(photos["rocket"], 3.0, photo=True), Part(clips["bikes"], 6.0, start=2.0)],
        uploads / "u.mp4",
    )
    with ReferenceIndex(tmp_path / "index") as index:
        index.add([(detector.describe(clips["bikes"], views=False), file_sha256(clips["bikes"]))])
    serve = dataclasses.replace(
        config.serve, index=str(tmp_path / "index"), allowed_roots=[str(uploads)],
        state_dir=str(tmp_path / "state"),
    )  # fmt: skip
    processor = UploadProcessor(dataclasses.replace(config, serve=serve), detector)

    def send(upload_id: str):
        message = {"schema_version": 1, "upload_id": upload_id, "uri": str(upload)}
        return processor.process(json.dumps(message).encode())

    first = send("first")
    assert first.status == "alerted" and first.alerts[0]["reference_id"] == "bikes"
    code = main(["review", "mark", "first", "bikes", "--verdict", "not_copy", "--note", "parody",
                 "--by", "ana", "--sha256", file_sha256(upload), "--index",
                 str(tmp_path / "index"), "-q"])  # fmt: skip
    assert code == 0
    again = send("second")  # the same content under another upload id
    assert again.status == "silenced" and again.alerts == []
    processor.close()
