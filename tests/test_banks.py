"""Banks: references divided among rights holders, each bank with its own policy and action.
Real footage, the real model, a real index; the service's processor with real uploads."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.edits import Part, compose
from pipeline.errors import IdConflictError, UnknownReferenceError
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.index.banks import Bank, BankError
from pipeline.index.descriptor_file import write_descriptor_file
from pipeline.records import Match, Segment
from pipeline.review.policy import alert_id, build_alert
from pipeline.review.verdicts import Verdicts
from workers.service import UploadProcessor
from workers.tokens import TokenStore

REPO = Path(__file__).resolve().parent.parent


def _add(index, detector, path, bank="default", video_id=None):
    features = detector.describe(path, video_id, views=False)
    return index.add([(features, file_sha256(path))], bank=bank)


@pytest.fixture(scope="module")
def banked(tmp_path_factory, clips, detector):
    """Bikes in bank ``acme`` (block, at least 2 s), the tree in ``beta`` (track), the cup in
    the default bank; the query copies all three, one after the other."""
    root = tmp_path_factory.mktemp("banks")
    index = ReferenceIndex(root / "index")
    index.create_bank(Bank("acme", action="block", min_seconds=2.0))
    index.create_bank(Bank("beta", action="track"))
    _add(index, detector, clips["bikes"], "acme")
    _add(index, detector, clips["tree"], "beta")
    _add(index, detector, clips["cup"])
    query = compose(
        [Part(clips["bikes"], 5.0, start=1.0), Part(clips["tree"], 5.0, start=1.0),
         Part(clips["cup"], 4.0)],
        root / "uploads" / "query.mp4",
    )  # fmt: skip
    yield root, index, query
    index.close()


def _found(detector, index, query, banks=None) -> dict[str, tuple[str, str]]:
    result = detector.query(query, index, banks=banks)
    return {m.reference_id: (m.bank, m.action) for m in result.matches}


def test_matches_carry_their_bank_and_action_and_a_query_can_be_scoped(banked, detector):
    _, index, query = banked
    assert _found(detector, index, query) == {
        "bikes": ("acme", "block"), "tree": ("beta", "track"), "cup": ("default", "alert"),
    }  # fmt: skip
    assert _found(detector, index, query, ["acme"]) == {"bikes": ("acme", "block")}
    assert set(_found(detector, index, query, ["beta", "default"])) == {"tree", "cup"}
    with pytest.raises(BankError, match="no bank 'nosuch'"):
        detector.query(query, index, banks=["nosuch"])


def test_a_disabled_bank_is_not_searched_until_enabled(banked, detector):
    _, index, query = banked
    index.set_bank("beta", enabled=False)
    try:
        assert set(_found(detector, index, query)) == {"bikes", "cup"}
        assert _found(detector, index, query, ["beta"]) == {}
    finally:
        index.set_bank("beta", enabled=True)
    assert "tree" in _found(detector, index, query)


def test_a_scoped_query_finds_its_bank_s_copy_when_other_banks_hold_the_same(
    tmp_path, clips, detector
):
    """Rights holders claim the same video: each bank holds it (content is deduplicated
    within a bank, not across banks), and a query scoped to one bank still finds its copy
    although the other banks' identical frames fill the nearest neighbours it would get."""
    features = detector.describe(clips["bikes"], views=False)
    sha = file_sha256(clips["bikes"])
    with ReferenceIndex(tmp_path / "index") as index:
        for k in range(CLAIMS):
            index.create_bank(Bank(f"claim{k}"))
            named = dataclasses.replace(features, video_id=f"bikes-{k}")
            assert index.add([(named, sha)], bank=f"claim{k}") == ["add"]
        again = dataclasses.replace(features, video_id="bikes-again")
        assert index.add([(again, sha)], bank="claim0") == ["duplicate"]
        query = compose([Part(clips["bikes"], 6.0, start=2.0)], tmp_path / "q.mp4")
        for k in (0, CLAIMS - 1):
            found = _found(detector, index, query, [f"claim{k}"])
            assert found == {f"bikes-{k}": (f"claim{k}", "alert")}


CLAIMS = 30  # banks holding the same video: more than fill a query frame's 20 neighbours


def test_bad_bank_requests_are_refused_and_change_nothing(tmp_path, clips, detector):
    with ReferenceIndex(tmp_path / "index") as index:
        index.create_bank(Bank("acme"))
        _add(index, detector, clips["bikes"], "acme")
        generation = index.generation
        with pytest.raises(BankError, match="already exists"):
            index.create_bank(Bank("acme"))
        with pytest.raises(BankError, match="already exists"):
            index.create_bank(Bank("default"))
        with pytest.raises(BankError, match="no bank 'ghost'"):
            index.set_bank("ghost", action="track")
        with pytest.raises(BankError, match="holds 1 reference"):
            index.remove_bank("acme")
        with pytest.raises(BankError, match="cannot be removed"):
            index.remove_bank("default")
        with pytest.raises(BankError, match="bank name"):
            Bank("no spaces")
        with pytest.raises(BankError, match="action"):
            Bank("x", action="delete")
        with pytest.raises(BankError, match=r"\[0, 1\]"):
            Bank("x", min_share=1.5)
        with pytest.raises(BankError, match="no bank 'ghost'"):
            _add(index, detector, clips["cup"], "ghost")
        # ids are unique across banks; another bank's id is not removable through this bank
        with pytest.raises(IdConflictError, match="another bank"):
            _add(index, detector, clips["cup"], "default", "bikes")
        with pytest.raises(UnknownReferenceError, match="not in bank 'default'"):
            index.remove(["bikes"], bank="default")
        assert index.generation == generation
        assert index.get("bikes").bank == "acme" and index.get("cup") is None
        assert index.remove_bank("acme", with_references=True) == ["bikes"]
        assert index.get("bikes") is None and [b.name for b in index.banks()] == ["default"]


def test_an_index_built_before_banks_keeps_working_in_the_default_bank(tmp_path, clips, detector):
    with ReferenceIndex(tmp_path / "index") as index:
        _add(index, detector, clips["bikes"])
    catalog = sqlite3.connect(tmp_path / "index" / "catalog.sqlite")
    catalog.execute("ALTER TABLE videos DROP COLUMN bank")  # the catalog of an older release
    catalog.execute("DROP TABLE banks")
    catalog.commit()
    catalog.close()
    with ReferenceIndex(tmp_path / "index", create=False) as index:
        assert index.get("bikes").bank == "default"
        assert index.info()["banks"]["default"]["references"] == 1
        query = compose([Part(clips["bikes"], 5.0, start=1.0)], tmp_path / "q.mp4")
        assert _found(detector, index, query) == {"bikes": ("default", "alert")}


def _match(bank: str | None, action: str | None, seconds: float = 4.0) -> Match:
    segment = Segment(0.0, seconds, 10.0, 10.0 + seconds, 0.9)
    return Match("ref", "/r.mp4", 0.9, [segment], bank=bank, action=action)


def test_a_bank_s_policy_decides_what_alerts(config):
    policy = config.policy
    query = {"id": "up", "path": "/up.mp4", "duration": 40.0}

    def alert(match, bank):
        return build_alert(match, "up", "sha", query, 100.0, policy, bank=bank)

    plain = alert(_match("default", "alert"), Bank("default"))
    assert plain["action"] == "alert" and plain["bank"] == "default"
    # a plain default bank keeps the alert ids of before banks (consumers deduplicate on them)
    assert plain["alert_id"] == alert_id("sha", _match(None, None), policy)
    assert alert(_match("beta", "track"), Bank("beta", action="track")) is None
    blocked = alert(_match("acme", "block"), Bank("acme", action="block"))
    assert blocked["action"] == "block" and blocked["bank"] == "acme"
    assert blocked["alert_id"] != plain["alert_id"]
    # thresholds replace the configured ones: 4 copied seconds pass 2, not 5
    assert alert(_match("a", "alert"), Bank("a", min_seconds=2.0))["policy"]["min_copied_s"] == 2
    assert alert(_match("a", "alert"), Bank("a", min_seconds=5.0)) is None
    assert alert(_match("a", "alert"), Bank("a", min_score=0.95)) is None
    # min_share: of either video (4 s of a 40 s upload is 0.1; of the 100 s reference 0.04)
    assert alert(_match("a", "alert"), Bank("a", min_share=0.1))["policy"]["min_share"] == 0.1
    assert alert(_match("a", "alert"), Bank("a", min_share=0.2)) is None


def test_verdicts_act_within_their_bank(tmp_path):
    verdicts = Verdicts(tmp_path / "verdicts.sqlite")
    verdicts.mark("*", "ref", "licensed", bank="acme")
    assert verdicts.lookup("up", None, _match("acme", "alert")).verdict == "licensed"
    assert verdicts.lookup("up", None, _match("beta", "alert")) is None  # the id, reused
    assert [v.bank for v in verdicts.list(bank="acme")] == ["acme"]
    assert verdicts.list(bank="beta") == []
    verdicts.close()


def _message(upload_id: str, path, **extra) -> bytes:
    body = {"schema_version": 1, "upload_id": upload_id, "uri": str(path), **extra}
    return json.dumps(body).encode()


def test_the_service_applies_each_bank_s_policy_and_an_upload_s_banks(banked, config, detector):
    root, _, query = banked
    serve = dataclasses.replace(
        config.serve, index=str(root / "index"), allowed_roots=[str(query.parent)],
        state_dir=str(root / "state"),
    )  # fmt: skip
    processor = UploadProcessor(dataclasses.replace(config, serve=serve), detector)
    try:
        outcome = processor.process(_message("all", query))
        # the tree's bank only tracks: no alert for it; the bikes' bank asks to block
        by_reference = {a["reference_id"]: (a["bank"], a["action"]) for a in outcome.alerts}
        assert by_reference == {"bikes": ("acme", "block"), "cup": ("default", "alert")}
        tracked = processor.process(_message("tree-only", query, banks=["beta"]))
        assert tracked.status == "tracked" and tracked.alerts == []
        with pytest.raises(BankError, match="no bank 'ghost'"):
            processor.process(_message("ghost", query, banks=["ghost"]))
    finally:
        processor.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def test_bank_and_token_commands(tmp_path, clips, detector):
    index = str(tmp_path / "index")
    made = _cli("bank", "create", "acme", "--index", index, "--action", "block",
                "--min-share", "0.5", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["action"] == "block"
    with ReferenceIndex(index) as opened:
        _add(opened, detector, clips["bikes"], "acme")
    described = detector.describe(clips["cup"], views=False)
    write_descriptor_file(tmp_path / "cup.npz", described, file_sha256(clips["cup"]))
    imported = _cli("index", "import", str(tmp_path / "cup.npz"), "--index", index, "--bank",
                    "acme", "--json")  # fmt: skip
    assert json.loads(imported.stdout.splitlines()[0])["status"] == "add"
    removing = _cli("index", "remove", "cup", "--index", index, "--bank", "default")
    assert removing.returncode == 2 and "not in bank 'default'" in removing.stderr
    assert _cli("index", "remove", "cup", "--index", index, "--bank", "acme").returncode == 0
    marked = _cli("review", "mark", "*", "bikes", "--verdict", "licensed", "--index", index,
                  "--json")  # fmt: skip
    assert json.loads(marked.stdout)["bank"] == "acme"  # the verdict acts within the bank
    refused = _cli("bank", "remove", "acme", "--index", index)
    assert refused.returncode == 2 and "holds 1 reference" in refused.stderr
    changed = _cli("bank", "set", "acme", "--index", index, "--min-share", "none", "--disable",
                   "--json")  # fmt: skip
    assert json.loads(changed.stdout)["min_share"] is None
    listed = [json.loads(line) for line in _cli("bank", "list", "--index", index, "--json")
              .stdout.splitlines()]  # fmt: skip
    assert [(b["name"], b["enabled"]) for b in listed] == [("default", True), ("acme", False)]
    assert _cli("bank", "create", "acme", "--index", index).returncode == 2

    created = _cli("token", "create", "--index", index, "--bank", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]  # alone on the last line
    assert token.startswith("cs_") and len(token) == 46
    stored = b"".join(p.read_bytes() for p in Path(index).glob("tokens.sqlite*"))
    assert token.encode() not in stored  # only its hash is kept
    assert _cli("token", "create", "--index", index, "--bank", "ghost").returncode == 2
    assert _cli("token", "revoke", "ci", "--index", index).returncode == 0
    again = _cli("token", "revoke", "ci", "--index", index)
    assert again.returncode == 2 and "revoked" in again.stderr
    live = _cli("token", "create", "--index", index, "--bank", "acme").stdout.splitlines()[-1]
    removed = _cli("bank", "remove", "acme", "--index", index, "--with-references", "--json")
    assert json.loads(removed.stdout)["references_removed"] == ["bikes"]
    assert json.loads(removed.stdout)["tokens_revoked"] == 1  # the live one; not "ci" again
    assert TokenStore.beside(index).grant(live) is None
