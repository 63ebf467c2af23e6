"""The HTTP API: a real server on a loopback port, a real client, real footage."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from benchmarks.broker import free_port
from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex, file_sha256
from tests.helpers import start_api, write_corrupt

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def api(tmp_path_factory, clips, photos, detector):
    root = tmp_path_factory.mktemp("api")
    media, outside = root / "media", root / "outside"
    media.mkdir()
    outside.mkdir()
    with ReferenceIndex(root / "index") as index:
        for name in ("bikes", "tree"):
            index.add([(detector.describe(clips[name], views=False), file_sha256(clips[name]))])
    compose([Part(photos["coffee"], 3.0, photo=True), Part(clips["bikes"], 6.0, start=2.0)],
            media / "copy.mp4")  # fmt: skip
    compose([Part(clips["cup"], 5.0)], media / "cup.mp4")
    compose([Part(clips["cup"], 3.0)], media / "small.mp4", canvas=(320, 180))
    (media / "big.mp4").write_bytes(b"\0" * (2 * 2**20))  # over the 1 MB upload limit
    (media / "notes.txt").write_text("not a video")
    write_corrupt(media / "broken.mp4", clips["bikes"])
    (outside / "secret.mp4").write_bytes((media / "copy.mp4").read_bytes())
    (root / "token").write_text(TOKEN + "\n")
    config = root / "api.yaml"
    config.write_text("api:\n  workers: 1\n  queue: 0\n  max_upload_mb: 1\n")
    server, base = start_api(root / "index", media, root / "token", root / "api.log",
                             "--config", str(config))  # fmt: skip
    yield {"base": base, "root": root, "media": media, "outside": outside}
    server.terminate()
    server.wait(30)


def call(base, method, path, body=None, token=TOKEN, raw=None, headers=None):
    """(status, parsed body, response headers)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, payload, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, got = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(payload), got
    except ValueError:
        return status, payload.decode(errors="replace"), got


def post_expecting_continue(base, path, raw, headers) -> tuple[int, dict]:
    """POST the way a careful client sends a large body: headers with ``Expect: 100-continue``
    first, the body only after the server's 100. A server that refuses on the headers answers
    at once; sending the body regardless raced the server's close (a broken pipe)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {TOKEN}",
                 f"Content-Length: {len(raw)}", "Expect: 100-continue", "Connection: close",
                 *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = http.client.HTTPResponse(conn)
        reply.begin()  # a server that wants the body (100 Continue) leaves this to time out
        return reply.status, json.loads(reply.read())


def multipart(path: Path) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename="
            f"\"{path.name}\"\r\nContent-Type: video/mp4\r\n\r\n").encode()  # fmt: skip
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_health_and_auth(api):
    base = api["base"]
    assert call(base, "GET", "/healthz", token=None)[0] == 200
    assert call(base, "GET", "/readyz", token=None)[:2] == (200, {"status": "ready"})
    status, body, headers = call(base, "GET", "/v1/references", token=None)
    assert status == 401 and "token" in body["error"] and headers["WWW-Authenticate"] == "Bearer"
    assert call(base, "GET", "/v1/references", token="wrong")[0] == 401
    spec = call(base, "GET", "/openapi.json", token=None)[1]
    assert "/v1/query" in spec["paths"] and "/v1/verdicts" in spec["paths"]
    docs = call(base, "GET", "/docs", token=None)[1]
    assert "/v1/references/{video_id}" in docs and "cdn" not in docs.lower()


def test_query_by_uri_and_by_upload_finds_the_copy(api):
    base, media = api["base"], api["media"]
    status, result, _ = call(base, "POST", "/v1/query", {"uri": f"file://{media}/copy.mp4"})
    assert status == 200, result
    assert [m["reference_id"] for m in result["matches"]] == ["bikes"]
    (segment,) = result["matches"][0]["segments"]
    assert abs(segment["query_start"] - 3.0) <= 1 and abs(segment["reference_start"] - 2.0) <= 1
    assert len(result["query"]["sha256"]) == 64
    clean = call(base, "POST", "/v1/query", {"uri": str(media / "cup.mp4")})[1]
    assert clean["matches"] == []
    body, headers = multipart(media / "small.mp4")  # under the 1 MB upload limit
    status, uploaded, _ = call(base, "POST", "/v1/query", raw=body, headers=headers)
    assert status == 200 and uploaded["query"]["id"] == "small" and uploaded["matches"] == []
    leftovers = list(Path("/tmp").glob("copyspan-upload-*"))
    assert not leftovers  # the spooled upload is deleted


def test_every_error_from_real_bad_input(api):
    base, media = api["base"], api["media"]
    cases = [
        (400, call(base, "POST", "/v1/query", raw=b"{nope", headers={"Content-Type":
                                                                       "application/json"})),
        (400, call(base, "POST", "/v1/query", {"path": "x"})),
        (403, call(base, "POST", "/v1/query", {"uri": str(api["outside"] / "secret.mp4")})),
        (403, call(base, "POST", "/v1/query", {"uri": f"{media}/../outside/secret.mp4"})),
        (403, call(base, "POST", "/v1/query", {"uri": "https://example.com/v.mp4"})),
        (422, call(base, "POST", "/v1/query", {"uri": str(media / "notes.txt")})),
        (422, call(base, "POST", "/v1/query", {"uri": str(media / "broken.mp4")})),
        (422, call(base, "POST", "/v1/query", {"uri": str(media / "absent.mp4")})),
        (413, (*post_expecting_continue(base, "/v1/query", *multipart(media / "big.mp4")), {})),
        (404, call(base, "GET", "/v1/references/nobody")),
    ]  # fmt: skip
    for expected, (status, body, _) in cases:
        assert status == expected, (expected, body)
        assert isinstance(body, dict) and body["error"], body


def test_references_and_a_verdict_through_the_api(api):
    base, media = api["base"], api["media"]
    refs = call(base, "GET", "/v1/references")[1]["references"]
    assert sorted(r["id"] for r in refs) == ["bikes", "tree"]
    status, added, _ = call(base, "POST", "/v1/references", {"uri": str(media / "cup.mp4")})
    assert (status, added) == (201, {"id": "cup", "status": "add"})
    assert call(base, "GET", "/v1/references/cup")[1]["frames"] > 0
    again = call(base, "POST", "/v1/query", {"uri": str(media / "cup.mp4")})[1]
    assert [m["reference_id"] for m in again["matches"]] == ["cup"]
    removed = call(base, "DELETE", "/v1/references/cup")
    assert removed[:2] == (200, {"id": "cup", "status": "removed"})
    assert call(base, "DELETE", "/v1/references/cup")[0] == 404

    copy = call(base, "POST", "/v1/query", {"uri": str(media / "copy.mp4")})[1]
    verdict = {
        "query_id": "copy",
        "reference_id": "bikes",
        "verdict": "not_copy",
        "note": "commentary",
        "by": "ana",
        "query_sha256": copy["query"]["sha256"],
    }
    status, recorded, _ = call(base, "POST", "/v1/verdicts", verdict)
    assert status == 201 and recorded["by"] == "ana"
    assert call(base, "POST", "/v1/verdicts", {**verdict, "verdict": "nah"})[0] == 400
    listed = call(base, "GET", "/v1/verdicts?reference_id=bikes")[1]["verdicts"]
    assert [v["verdict"] for v in listed] == ["not_copy"]
    after = call(base, "POST", "/v1/query", {"uri": str(media / "copy.mp4")})[1]
    assert after["matches"][0]["verdict"]["verdict"] == "not_copy"  # reported, never alerted
    metrics = call(base, "GET", "/metrics", token=None)[1]
    assert 'copyspan_api_requests_total{route="/v1/query",status="200"}' in metrics


def test_saturated_server_answers_503_with_retry_after(api):
    base, media = api["base"], api["media"]
    results = []

    def query() -> None:
        results.append(call(base, "POST", "/v1/query", {"uri": str(media / "copy.mp4")}))

    threads = [threading.Thread(target=query) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 200 and 503 in statuses  # one worker, no queue
    busy = next(headers for status, _, headers in results if status == 503)
    assert busy["Retry-After"] == "5"


def test_no_token_file_is_refused_unless_no_auth_on_loopback(api, tmp_path):
    base_args = [sys.executable, "-m", "workers.cli", "api", "--index", str(api["root"] / "index"),
                 "--allowed-root", str(api["media"]), "--port", str(free_port())]  # fmt: skip
    refused = subprocess.run(base_args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--token-file" in refused.stderr
    public = subprocess.run([*base_args, "--no-auth", "--host", "0.0.0.0"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert public.returncode == 2 and "loopback" in public.stderr
