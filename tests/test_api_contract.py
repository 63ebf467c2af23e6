"""The HTTP API's OpenAPI contract, against a real `copyspan api`: schemathesis with every check,
a client generated from the document and used, and the committed document kept current."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex, file_sha256
from tests.helpers import start_api

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "contract-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory, clips, photos, detector):
    """A server of its own: the checks add, remove and mark what they like."""
    root = tmp_path_factory.mktemp("contract")
    media = root / "media"
    media.mkdir()
    with ReferenceIndex(root / "index") as index:
        index.add([(detector.describe(clips["bikes"], views=False), file_sha256(clips["bikes"]))])
    compose([Part(photos["coffee"], 3.0, photo=True), Part(clips["bikes"], 6.0, start=2.0)],
            media / "copy.mp4")  # fmt: skip
    (root / "token").write_text(TOKEN)
    process, base = start_api(root / "index", media, root / "token", root / "api.log")
    yield {"base": base, "media": media, "root": root}
    process.terminate()
    process.wait(30)


def test_the_committed_document_is_the_one_served(server):
    with urllib.request.urlopen(server["base"] + "/openapi.json") as answer:
        served = json.load(answer)
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: copyspan api --openapi > it"


def test_schemathesis_finds_nothing_with_every_check(server, tmp_path):
    """Generated requests (examples, boundaries, fuzzing, stateful sequences) against the real
    server: status codes, content types, headers and bodies as documented; invalid requests
    refused; undocumented methods answered 405 with Allow."""
    run = subprocess.run(
        [str(BIN / "st"), "--config-file", str(REPO / "tests" / "schemathesis.toml"), "run",
         server["base"] + "/openapi.json", "--checks", "all", "-H",
         f"Authorization: Bearer {TOKEN}", "--max-examples", "15", "--seed", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout


def test_a_generated_client_queries_lists_and_records_a_verdict(server, tmp_path, monkeypatch):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path",
         str(REPO / "docs" / "openapi.json"), "--meta", "none", "--output-path",
         str(tmp_path / "copyspan_client")],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    client_module = importlib.import_module("copyspan_client")
    models = importlib.import_module("copyspan_client.models")
    api = "copyspan_client.api"
    query = importlib.import_module(f"{api}.query.query")
    references = importlib.import_module(f"{api}.references.references")
    add_verdict = importlib.import_module(f"{api}.verdicts.add_verdict")
    client = client_module.AuthenticatedClient(base_url=server["base"], token=TOKEN,
                                               timeout=120)  # fmt: skip

    uri = (server["media"] / "copy.mp4").resolve().as_uri()
    result = query.sync(client=client, body=models.QueryRequest(uri=uri))
    assert isinstance(result, models.QueryResult)
    (match,) = result.matches
    assert match.reference_id == "bikes" and abs(match.segments[0].query_start - 3) <= 1
    listed = references.sync(client=client)
    assert "bikes" in [r.id for r in listed.references]
    verdict = models.VerdictRequest.from_dict(
        {"query_id": "copy", "reference_id": "bikes", "verdict": "not_copy", "by": "client"}
    )
    recorded = add_verdict.sync(client=client, body=verdict)
    assert isinstance(recorded, models.VerdictOut) and recorded.verdict == "not_copy"
    refused = add_verdict.sync_detailed(client=client, body=models.VerdictRequest.from_dict(
        {"query_id": "*", "reference_id": "bikes", "verdict": "copy"}))  # fmt: skip
    assert refused.status_code == 422 and isinstance(refused.parsed, models.ErrorBody)


def test_options_and_unsupported_methods_name_the_allowed_ones(server):
    def ask(method: str, path: str):
        request = urllib.request.Request(server["base"] + path, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    status, headers, _ = ask("OPTIONS", "/v1/references")
    assert status == 204 and headers["Allow"] == "GET, POST"
    status, headers, body = ask("PUT", "/v1/references/bikes")
    assert status == 405 and headers["Allow"] == "DELETE, GET"
    assert "not allowed" in json.loads(body)["error"]
    status, headers, _ = ask("OPTIONS", "/nowhere")
    assert status == 404 and "Allow" not in headers
