"""The Kafka service against a real Kafka-protocol broker (Tansu), with real footage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.broker import (
    TopicReader,
    committed,
    create_topics,
    free_port,
    produce,
    tansu_broker,
    upload,
)
from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex, file_sha256
from tests.helpers import write_corrupt

pytestmark = pytest.mark.kafka

CROP = "crop=iw*0.8:ih*0.8:iw*0.1:ih*0.1"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with tansu_broker(tmp_path_factory.mktemp("tansu") / "broker.log") as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def world(tmp_path_factory, clips, photos, detector):
    """An index of real references, an upload folder (the allowed root) and files outside it."""
    root = tmp_path_factory.mktemp("service")
    uploads, outside = root / "uploads", root / "outside"
    uploads.mkdir()
    outside.mkdir()
    index = ReferenceIndex(root / "index")
    refs = [clips[n] for n in ("bikes", "box", "Megamind")]
    index.add([(detector.describe(p, views=False), file_sha256(p)) for p in refs])
    index.close()
    filler = Part(photos["astronaut"], 4.0, photo=True)
    copies = {
        "bikes": ([filler, Part(clips["bikes"], 6.0, start=2.0, vf=CROP)], (4.0, 10.0), (2.0, 8.0)),
        "box": ([filler, Part(clips["box"], 8.0, start=3.0, vf="hflip")], (4.0, 12.0), (3.0, 11.0)),
        "Megamind": ([Part(clips["Megamind"], 7.0, start=2.0), filler], (0.0, 7.0), (2.0, 9.0)),
        "bikes2": ([Part(photos["coffee"], 3.0, photo=True), Part(clips["bikes"], 5.0, start=4.0)],
                   (3.0, 8.0), (4.0, 9.0)),
    }  # fmt: skip
    truth = {}
    for name, (parts, q_span, r_span) in copies.items():
        compose(parts, uploads / f"copy_{name}.mp4")
        truth[f"copy_{name}"] = (name.rstrip("2"), q_span, r_span)
    compose(
        [Part(photos["chelsea"], 4.0, photo=True), Part(clips["cup"], 4.0)], uploads / "clean.mp4"
    )
    write_corrupt(uploads / "corrupt.mp4", clips["bikes"])
    shutil.copy(clips["vtest"], uploads / "long.avi")  # 79.5 s: over the test's 60 s limit
    shutil.copy(clips["bikes"], outside / "secret.mp4")
    os.symlink(outside / "secret.mp4", uploads / "escape.mp4")
    config = root / "serve.yaml"
    config.write_text(
        "decode:\n  max_duration_s: 60\n"
        "serve:\n  max_attempts: 2\n  backoff_s: 0.2\n  session_timeout_ms: 6000\n"
        "  shutdown_grace_s: 20\n"
        "policy:\n  min_copied_s: 2.0\n"
    )
    return {"root": root, "uploads": uploads, "outside": outside, "truth": truth, "config": config}


def start_service(world, bootstrap: str, name: str, metrics_port: int = 0) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "copyspan"), "serve", "--config", str(world["config"]),
        "--bootstrap-servers", bootstrap, "--uploads-topic", f"{name}-uploads",
        "--alerts-topic", f"{name}-alerts", "--dlq-topic", f"{name}-dlq", "--group-id", name,
        "--index", str(world["root"] / "index"), "--allowed-root", str(world["uploads"]),
        "--state-dir", str(world["root"] / f"state-{name}"), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    log = open(world["root"] / f"{name}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _alerts(records) -> list[dict]:
    return [json.loads(r.value) for r in records]


def test_alerts_for_copies_dead_letters_for_poison(broker, world):
    name = "main"
    create_topics(broker, f"{name}-uploads", f"{name}-alerts", f"{name}-dlq")
    up = world["uploads"]
    good = [upload(f"u-{stem}", str(up / f"{stem}.mp4")) for stem in world["truth"]]
    good.append(upload("u-clean", f"file://{up}/clean.mp4"))
    poison = {
        "malformed": ("p-json", b"{not json"),
        "schema": upload("p-schema", str(up / "clean.mp4"), schema_version=9),
        "missing": ("p-missing", json.dumps({"schema_version": 1, "uri": "/x"}).encode()),
        "outside": upload("p-outside", str(world["outside"] / "secret.mp4")),
        "dotdot": upload("p-dotdot", f"{up}/../outside/secret.mp4"),
        "symlink": upload("p-symlink", str(up / "escape.mp4")),
        "scheme": upload("p-scheme", "http://example.com/v.mp4"),
        "absent": upload("p-absent", str(up / "absent.mp4")),
        "corrupt": upload("p-corrupt", str(up / "corrupt.mp4")),
        "limit": upload("p-limit", str(up / "long.avi")),
    }
    ends = produce(broker, f"{name}-uploads", good[:2] + list(poison.values()) + good[2:])
    metrics_port = free_port()
    service = start_service(world, broker, name, metrics_port)
    alerts = TopicReader(broker, f"{name}-alerts")
    dlq = TopicReader(broker, f"{name}-dlq")
    try:
        dead = dlq.read_until(lambda rs: len(rs) >= len(poison))
        found = alerts.read_until(lambda rs: len({a["upload_id"] for a in _alerts(rs)}) >= 4)
        deadline = time.monotonic() + 60
        while committed(broker, name, f"{name}-uploads") != ends and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(broker, name, f"{name}-uploads") == ends  # everything done, nothing lost
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(60)
        alerts.close()
        dlq.close()
    assert code == 0  # SIGTERM is a clean stop

    by_upload = {a["upload_id"]: a for a in _alerts(found)}
    assert set(by_upload) == {f"u-{stem}" for stem in world["truth"]}  # none for the clean upload
    for stem, (reference, q_span, r_span) in world["truth"].items():
        alert = by_upload[f"u-{stem}"]
        assert alert["event_type"] == "copy_alert" and alert["schema_version"] == 1
        assert alert["reference_id"] == reference
        segment = max(alert["segments"], key=lambda s: s["query_end"] - s["query_start"])
        assert (
            abs(segment["query_start"] - q_span[0]) <= 1
            and abs(segment["query_end"] - q_span[1]) <= 1
        )
        assert abs(segment["reference_start"] - r_span[0]) <= 1
        assert abs(segment["reference_end"] - r_span[1]) <= 1
        assert alert["query"]["id"] == f"u-{stem}" and alert["policy"]["min_copied_s"] == 2.0

    assert len(dead) == len(poison)
    headers = {r.key.decode(): dict(r.headers) for r in dead}
    assert set(headers) == {key for key, _ in poison.values()}
    expect = {
        "p-json": "malformed JSON", "p-schema": "schema_version", "p-missing": "upload_id",
        "p-outside": "outside the allowed roots", "p-dotdot": "'..'",
        "p-symlink": "outside the allowed roots", "p-scheme": "scheme not allowed",
        "p-absent": "file not found", "p-corrupt": "not a video or corrupt",
        "p-limit": "duration over limit",
    }  # fmt: skip
    for key, fragment in expect.items():
        assert fragment in headers[key]["error_reason"].decode(), (key, headers[key])
        assert headers[key]["original_topic"] == f"{name}-uploads".encode()
        assert int(headers[key]["attempts"]) == 1  # permanent errors are never retried
    original = {key: value for key, value in poison.values()}
    assert all(r.value == original[r.key.decode()] for r in dead)  # the original bytes

    assert "copyspan_alerts_total 4.0" in metrics
    assert "copyspan_dead_letters_total 10.0" in metrics
    assert 'copyspan_uploads_processed_total{status="no_match"} 1.0' in metrics
    assert "copyspan_processing_seconds_count" in metrics


def test_sigkill_mid_stream_then_restart_loses_nothing(broker, world):
    name = "crash"
    create_topics(broker, f"{name}-uploads", f"{name}-alerts", f"{name}-dlq")
    up = world["uploads"]
    messages = [upload(f"k-{stem}", str(up / f"{stem}.mp4")) for stem in world["truth"]]
    messages += [upload("k-clean", str(up / "clean.mp4")), upload("k-bad", str(up / "corrupt.mp4"))]
    ends = produce(broker, f"{name}-uploads", messages)
    alerts = TopicReader(broker, f"{name}-alerts")
    service = start_service(world, broker, name)
    try:
        alerts.read_until(lambda rs: len(rs) >= 1)  # mid-stream: one alert out, more to come
        service.send_signal(signal.SIGKILL)
        service.wait(30)
        service = start_service(world, broker, name)
        deadline = time.monotonic() + 180
        while committed(broker, name, f"{name}-uploads") != ends and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(broker, name, f"{name}-uploads") == ends
        found = _alerts(alerts.read_until(lambda rs: False, timeout=3))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        alerts.close()
    assert {a["upload_id"] for a in found} == {f"k-{stem}" for stem in world["truth"]}
    distinct = {a["alert_id"] for a in found}
    assert len(distinct) == len(world["truth"])  # redelivery never makes a new distinct alert


def test_service_waits_for_a_broker_that_is_not_up_yet(world, tmp_path):
    """Broker unavailable at start is a transient failure: the service retries, then works."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    service = start_service(world, bootstrap, "late")
    try:
        time.sleep(3)
        assert service.poll() is None  # still running, waiting for the broker
        with tansu_broker(tmp_path / "late.log", port=port):
            create_topics(bootstrap, "late-uploads", "late-alerts", "late-dlq")
            up = world["uploads"]
            ends = produce(bootstrap, "late-uploads", [upload("l-1", str(up / "copy_bikes.mp4"))])
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if committed(bootstrap, "late", "late-uploads") == ends:
                        break
                except Exception:  # the group coordinator may not be ready yet
                    pass
                time.sleep(0.5)
            assert committed(bootstrap, "late", "late-uploads") == ends
            reader = TopicReader(bootstrap, "late-alerts")
            (alert,) = _alerts(reader.read_until(lambda rs: len(rs) >= 1, timeout=30))
            reader.close()
            assert alert["upload_id"] == "l-1" and alert["reference_id"] == "bikes"
            service.send_signal(signal.SIGTERM)
            assert service.wait(60) == 0
    finally:
        if service.poll() is None:
            service.kill()


def test_early_alert_while_the_upload_is_read_then_a_final_one(broker, world, clips, photos):
    """Windows of 6 s: a copy in the first seconds of a 40 s upload is alerted (stage early)
    before the upload is done; the final alert supersedes it; a redelivery repeats the ids."""
    name = "early"
    create_topics(broker, f"{name}-uploads", f"{name}-alerts", f"{name}-dlq")
    long_upload = world["uploads"] / "long_copy.mp4"
    compose([Part(clips["bikes"], 6.0, start=2.0), Part(photos["rocket"], 34.0, photo=True)],
            long_upload)  # fmt: skip
    config = world["root"] / "early.yaml"
    config.write_text(world["config"].read_text() + "streaming:\n  window_s: 6.0\n")
    early_world = {**world, "config": config}
    produce(broker, f"{name}-uploads", [upload("e-1", str(long_upload))])
    alerts = TopicReader(broker, f"{name}-alerts")
    service = start_service(early_world, broker, name)
    try:
        found = _alerts(alerts.read_until(lambda rs: len(rs) >= 2, timeout=180))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
    early, final = found
    assert early["stage"] == "early" and final["stage"] == "final"
    assert early["reference_id"] == final["reference_id"] == "bikes"
    assert early["query"]["duration"] < 40.0  # sent before the whole upload was read
    assert (early["sequence"], final["sequence"]) == (1, 2)
    assert final["supersedes"] == early["alert_id"] and early["supersedes"] is None
    (segment,) = early["segments"]
    assert segment["query_start"] <= 1.0 and abs(segment["query_end"] - 6.0) <= 1.0

    # Delivered again (a new upload id would be a new upload): the same alerts, same ids.
    shutil.rmtree(world["root"] / f"state-{name}")
    produce(broker, f"{name}-uploads", [upload("e-1", str(long_upload))])
    service = start_service(early_world, broker, name)
    try:
        again = _alerts(alerts.read_until(lambda rs: len(rs) >= 4, timeout=180))[2:]
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        alerts.close()
    assert [a["alert_id"] for a in again] == [early["alert_id"], final["alert_id"]]
