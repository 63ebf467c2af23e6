"""Upload messages, allowed roots and the alert policy (no broker needed)."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.config import PolicyConfig
from pipeline.records import Match, QueryResult, Segment
from pipeline.review.policy import alert_id, build_alerts, covered_seconds
from pipeline.streaming.uploads import MessageError, PathNotAllowedError, parse_upload, resolve_uri


def _msg(**fields) -> bytes:
    return json.dumps({"schema_version": 1, "upload_id": "u1", "uri": "/x.mp4", **fields}).encode()


def test_parse_valid_message_ignores_unknown_fields():
    upload = parse_upload(_msg(metadata={"user": 7}, extra="ignored"))
    assert (upload.upload_id, upload.uri, upload.metadata) == ("u1", "/x.mp4", {"user": 7})
    assert upload.banks is None and parse_upload(_msg(banks=["acme"])).banks == ["acme"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        None,
        _msg(schema_version=2),
        json.dumps({"upload_id": "u", "uri": "/x"}).encode(),
        json.dumps({"schema_version": 1, "uri": "/x"}).encode(),
        _msg(upload_id=""),
        _msg(uri=5),
        _msg(metadata=[1]),
        _msg(banks="acme"),
        _msg(banks=[]),
        _msg(banks=["acme", ""]),
        _msg(banks=[3]),
    ],
)
def test_malformed_messages_are_permanent_errors(raw):
    with pytest.raises(MessageError):
        parse_upload(raw)


def test_resolve_inside_and_outside_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a b.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    os.symlink(outside / "secret.mp4", root / "link.mp4")
    roots = [root]
    assert resolve_uri(str(root / "a b.mp4"), roots) == (root / "a b.mp4").resolve()
    assert resolve_uri(f"file://{root}/a%20b.mp4", roots) == (root / "a b.mp4").resolve()
    bad = [
        str(outside / "secret.mp4"),  # outside
        f"{root}/../outside/secret.mp4",  # .. escape
        str(root / "link.mp4"),  # symlink escape
        "http://example.com/v.mp4",  # other scheme
        "s3://bucket/v.mp4",
        "file://otherhost/v.mp4",  # remote host
        "relative/v.mp4",
    ]
    for uri in bad:
        with pytest.raises(PathNotAllowedError):
            resolve_uri(uri, roots)


def _result(segments, duration=20.0) -> QueryResult:
    match = Match("ref", "/r.mp4", max(s.score for s in segments), segments)
    return QueryResult("u1", "/u.mp4", duration, [match])


def test_policy_thresholds_and_deterministic_ids():
    policy = PolicyConfig(
        min_copied_s=3.0, min_upload_share=0.1, min_reference_share=0.0, min_score=0.5
    )
    short = _result([Segment(0, 2, 0, 2, 0.9)])
    assert build_alerts(short, "u1", "sha", {"ref": 60.0}, policy) == []
    long = _result([Segment(0, 4, 10, 14, 0.9), Segment(3, 6, 13, 16, 0.8)])
    (alert,) = build_alerts(long, "u1", "sha", {"ref": 60.0}, policy)
    assert alert["policy"]["copied_s"] == 6.0 and alert["policy"]["upload_share"] == 0.3
    assert alert["policy"]["reference_share"] == 0.1
    again = build_alerts(long, "u1", "sha", {"ref": 60.0}, policy)[0]
    assert again["alert_id"] == alert["alert_id"]
    assert alert_id("other-sha", long.matches[0], policy) != alert["alert_id"]
    strict = PolicyConfig(3.0, 0.1, 0.5, 0.5)
    assert build_alerts(long, "u1", "sha", {"ref": 60.0}, strict) == []


def test_covered_seconds_is_a_union():
    assert covered_seconds([(0, 4), (3, 6), (10, 11)]) == 7
