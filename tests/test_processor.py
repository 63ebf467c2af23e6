"""The service's upload processor without a broker: the optional index-unmatched policy."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.edits import Part, compose
from pipeline.errors import PermanentError
from pipeline.index import ReferenceIndex, file_sha256
from workers.service import UploadProcessor


def _message(upload_id: str, path) -> bytes:
    return json.dumps({"schema_version": 1, "upload_id": upload_id, "uri": str(path)}).encode()


@pytest.fixture
def setup(tmp_path, clips, photos, config, detector):
    uploads = tmp_path / "uploads"
    original = compose([Part(clips["cup"], 6.0, start=1.0)], uploads / "original.mp4")
    reupload = compose(
        [Part(photos["rocket"], 3.0, photo=True), Part(original, 5.0, start=0.5, vf="hflip")],
        uploads / "reupload.mp4",
    )
    with ReferenceIndex(tmp_path / "index") as index:
        index.add([(detector.describe(clips["bikes"], views=False), file_sha256(clips["bikes"]))])
    serve = dataclasses.replace(
        config.serve, index=str(tmp_path / "index"), allowed_roots=[str(uploads)],
        state_dir=str(tmp_path / "state"), index_unmatched=True,
    )  # fmt: skip
    return dataclasses.replace(config, serve=serve), original, reupload


def test_unmatched_upload_is_indexed_and_its_copy_alerts(setup, detector):
    config, original, reupload = setup
    processor = UploadProcessor(config, detector)
    first = processor.process(_message("first", original))
    assert first.status == "no_match" and processor.index.get("first") is not None
    processor.mark_done(first)
    second = processor.process(_message("second", reupload))
    assert second.status == "alerted"
    (alert,) = second.alerts
    assert alert["reference_id"] == "first" and alert["upload_id"] == "second"
    processor.mark_done(second)
    assert processor.process(_message("second", reupload)).status == "duplicate"
    processor.close()


def test_final_alerts_go_out_as_soon_as_their_spans_are_final(setup, detector):
    config, original, reupload = setup
    processor = UploadProcessor(config, detector)
    processor.mark_done(processor.process(_message("first", original)))
    sent = []
    outcome = processor.process(_message("second", reupload), sent.append)
    (alert,) = outcome.alerts
    # Sent from inside process (before the outcome existed), once, and marked as sent so the
    # service does not publish it again; the same message but for its timestamp.
    assert outcome.published == {alert["alert_id"]}
    (streamed,) = sent
    assert streamed.pop("produced_at") and alert.pop("produced_at")
    assert streamed == alert and alert["stage"] == "final"
    processor.close()


def test_unmatched_uploads_are_not_indexed_by_default(setup, detector):
    config, original, _ = setup
    config = dataclasses.replace(
        config, serve=dataclasses.replace(config.serve, index_unmatched=False)
    )
    processor = UploadProcessor(config, detector)
    assert processor.process(_message("first", original)).status == "no_match"
    assert processor.index.get("first") is None
    with pytest.raises(PermanentError):
        processor.process(_message("x", "/etc/passwd"))
    processor.close()
