"""Scoped tokens on a real ``copyspan api``: a bank's token sees and changes only its bank, and
every ``/v1/`` route of the OpenAPI document is tried with another bank's token."""

from __future__ import annotations

import json
import urllib.request

import pytest

from benchmarks.edits import Part, compose
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.index.banks import Bank
from tests.helpers import start_api
from tests.test_api import call, multipart
from workers.tokens import TokenStore

ADMIN = "admin-token-of-the-file"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, clips, detector):
    """Bikes in bank ``acme``, the tree in ``beta``, the cup in the default bank; a verdict in
    each of acme and beta; an audit output whose one query copies all three."""
    root = tmp_path_factory.mktemp("api-banks")
    media = root / "media"
    query = compose(
        [Part(clips["bikes"], 5.0, start=1.0), Part(clips["tree"], 5.0, start=1.0),
         Part(clips["cup"], 4.0)],
        media / "query.mp4",
    )  # fmt: skip
    compose([Part(clips["bikes"], 4.0)], media / "bikes-cut.mp4")
    with ReferenceIndex(root / "index") as index:
        for name, bank in (("bikes", "acme"), ("tree", "beta"), ("cup", "default")):
            if bank != "default":
                index.create_bank(Bank(bank))
            features = detector.describe(clips[name], views=False)
            index.add([(features, file_sha256(clips[name]))], bank=bank)
        result = detector.query(query, index)
    assert {m.reference_id for m in result.matches} == {"bikes", "tree", "cup"}
    audit = root / "audit"
    audit.mkdir()
    (audit / "results.jsonl").write_text(json.dumps(result.to_dict()) + "\n")
    (audit / "summary.json").write_text(json.dumps({"inputs": 1, "matched": 1, "failed": 0}))
    store = TokenStore.beside(root / "index")
    tokens = {bank: store.create(bank)[0] for bank in ("acme", "beta")}
    revoked, _ = store.create("beta", "to-revoke")
    store.revoke("to-revoke")
    store.close()
    (root / "token").write_text(ADMIN)
    server, base = start_api(root / "index", media, root / "token", root / "api.log",
                             "--audit", str(audit))  # fmt: skip
    for reference, token in (("bikes", tokens["acme"]), ("tree", tokens["beta"])):
        status, _, _ = call(
            base,
            "POST",
            "/v1/verdicts",
            {"query_id": "*", "reference_id": reference, "verdict": "licensed"},
            token=token,
        )
        assert status == 201
    yield {"base": base, "media": media, "query": query, "tokens": tokens, "revoked": revoked}
    server.terminate()
    server.wait(30)


def _ids(body: dict, key: str, field: str) -> set[str]:
    return {item[field] for item in body[key]}


def _as_beta(d, method, path, body=None, **kw):
    return call(d["base"], method, path, body, token=d["tokens"]["beta"], **kw)


def _gone(d, method, path, body=None, **kw):
    """Beta's token on something of acme: 404, worded as for something that does not exist."""
    status, answer, _ = _as_beta(d, method, path, body, **kw)
    assert status == 404, (method, path, status, answer)
    return answer["error"]


def _query(d):
    status, answer, _ = _as_beta(d, "POST", "/v1/query", {"uri": f"file://{d['query']}"})
    assert status == 200
    assert {(m["reference_id"], m["bank"]) for m in answer["matches"]} == {("tree", "beta")}
    assert _gone(d, "POST", "/v1/query", {"uri": f"file://{d['query']}", "banks": ["acme"]}) == (
        _gone(d, "POST", "/v1/query", {"uri": f"file://{d['query']}", "banks": ["ghost"]})
        .replace("ghost", "acme")
    )  # fmt: skip


def _query_upload(d):
    body, headers = multipart(d["query"])
    status, answer, _ = _as_beta(d, "POST", "/v1/query/upload", raw=body, headers=headers)
    assert status == 200 and _ids(answer, "matches", "reference_id") == {"tree"}


def _references(d):
    status, answer, _ = _as_beta(d, "GET", "/v1/references")
    assert status == 200 and _ids(answer, "references", "id") == {"tree"}
    status, answer, _ = _as_beta(d, "GET", "/v1/references?bank=acme")
    assert status == 200 and answer["references"] == []


def _reference(d):
    assert _as_beta(d, "GET", "/v1/references/tree")[0] == 200
    other = _gone(d, "GET", "/v1/references/bikes")
    assert other == _gone(d, "GET", "/v1/references/ghost").replace("ghost", "bikes")


def _add_reference(d):
    uri = f"file://{d['media'] / 'bikes-cut.mp4'}"
    assert _gone(d, "POST", "/v1/references", {"uri": uri, "bank": "acme"}) == (
        _gone(d, "POST", "/v1/references", {"uri": uri, "bank": "ghost"}).replace("ghost", "acme")
    )


def _remove_reference(d):
    other = _gone(d, "DELETE", "/v1/references/bikes")
    assert other == _gone(d, "DELETE", "/v1/references/ghost").replace("ghost", "bikes")
    assert call(d["base"], "GET", "/v1/references/bikes", token=ADMIN)[0] == 200  # still there


def _add_verdict(d):
    verdict = {"query_id": "*", "reference_id": "bikes", "verdict": "not_copy"}
    before = call(d["base"], "GET", "/v1/verdicts", token=ADMIN)[1]["verdicts"]
    other = _gone(d, "POST", "/v1/verdicts", {**verdict, "query_id": "up"})
    missing = _gone(d, "POST", "/v1/verdicts", {**verdict, "query_id": "up",
                                                "reference_id": "ghost"})  # fmt: skip
    assert other == missing.replace("ghost", "bikes")
    assert call(d["base"], "GET", "/v1/verdicts", token=ADMIN)[1]["verdicts"] == before


def _verdicts(d):
    status, answer, _ = _as_beta(d, "GET", "/v1/verdicts")
    assert status == 200 and _ids(answer, "verdicts", "reference_id") == {"tree"}
    for query in ("?reference_id=bikes", "?bank=acme"):
        status, answer, _ = _as_beta(d, "GET", "/v1/verdicts" + query)
        assert status == 200 and answer["verdicts"] == []


def _banks(d):
    status, answer, _ = _as_beta(d, "GET", "/v1/banks")
    assert status == 200 and _ids(answer, "banks", "name") == {"beta"}


# Every /v1/ route with what another bank's token must get from it. A route added to the API
# without a line here fails the test below.
ISOLATION = {
    ("post", "/v1/query"): _query,
    ("post", "/v1/query/upload"): _query_upload,
    ("get", "/v1/references"): _references,
    ("post", "/v1/references"): _add_reference,
    ("get", "/v1/references/{video_id}"): _reference,
    ("delete", "/v1/references/{video_id}"): _remove_reference,
    ("post", "/v1/verdicts"): _add_verdict,
    ("get", "/v1/verdicts"): _verdicts,
    ("get", "/v1/banks"): _banks,
}


def test_every_v1_route_hides_another_bank(deployment):
    with urllib.request.urlopen(deployment["base"] + "/openapi.json") as answer:
        spec = json.loads(answer.read())
    routes = {
        (method, path)
        for path, methods in spec["paths"].items() if path.startswith("/v1/")
        for method in methods
    }  # fmt: skip
    assert routes == set(ISOLATION), "a /v1/ route without an isolation check"
    for route in sorted(routes):
        ISOLATION[route](deployment)


def test_admin_sees_every_bank_and_revoked_or_malformed_tokens_are_refused(deployment):
    base = deployment["base"]
    status, answer, _ = call(base, "GET", "/v1/references", token=ADMIN)
    assert status == 200
    assert {(r["id"], r["bank"]) for r in answer["references"]} == {
        ("bikes", "acme"), ("tree", "beta"), ("cup", "default")}  # fmt: skip
    assert _ids(call(base, "GET", "/v1/banks", token=ADMIN)[1], "banks", "name") == {
        "default", "acme", "beta"}  # fmt: skip
    acme = call(base, "GET", "/v1/references", token=deployment["tokens"]["acme"])[1]
    assert _ids(acme, "references", "id") == {"bikes"}
    for token in (deployment["revoked"], "cs_" + "x" * 43, "not-a-token", ""):
        assert call(base, "GET", "/v1/banks", token=token)[0] == 401


def test_a_bank_s_review_page_shows_only_its_matches(deployment):
    def page(token: str) -> str:
        url = f"{deployment['base']}/review?token={token}"
        with urllib.request.urlopen(url) as answer:
            return answer.read().decode()

    admin, beta = page(ADMIN), page(deployment["tokens"]["beta"])
    assert all(f'data-reference="{r}' in admin or f" {r}" in admin for r in ("bikes", "tree"))
    assert "tree" in beta and "bikes" not in beta and "cup" not in beta
    assert "bank beta: alert" in beta and "bank acme: alert" in admin


def test_the_review_page_needs_a_live_token(deployment):
    status, _, _ = call(deployment["base"], "GET", f"/review?token={deployment['revoked']}")
    assert status == 401
