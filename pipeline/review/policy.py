"""The alert policy and deterministic alert records.

A match raises an alert when it copies enough, in the manner of Content ID's match amounts:
every threshold must be met — copied seconds of the upload, the share of the upload that is
copied, the share of the reference that is copied, and the match score — and no reviewer's
verdict silences it (``not_copy``, ``licensed``, ``quarantined``: pipeline/review/verdicts.py).
The reference's bank (pipeline/index/banks.py) may set its own thresholds, which replace the
configured ones for its matches (``min_share``: the share of either video), and its action:
``track`` never alerts, ``block`` alerts with ``action: block``.

Alerts come in stages: ``early`` while the upload is still being read (the segments found so
far, on the sampling grid, shares of what was read so far) and ``final`` once it is done (spans
refined). Per upload and reference, ``sequence`` counts the alerts and ``supersedes`` names the
one each replaces, so a consumer keeps the latest. Ids are hashes of what the alert says, so a
redelivered upload repeats the same alerts under the same ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.config import PolicyConfig as AlertPolicy
from pipeline.index.banks import DEFAULT_BANK, Bank
from pipeline.metric import covered_seconds
from pipeline.records import Match, QueryResult
from pipeline.review.verdicts import silenced

ALERT_SCHEMA_VERSION = 1


def match_amounts(match: Match, query_duration: float, reference_duration: float) -> dict:
    copied = covered_seconds([(s.query_start, s.query_end) for s in match.segments])
    reference = covered_seconds([(s.reference_start, s.reference_end) for s in match.segments])
    return {
        "copied_s": round(copied, 3),
        "upload_share": round(copied / query_duration, 4) if query_duration else 0.0,
        "reference_share": round(reference / reference_duration, 4) if reference_duration else 0.0,
    }


def bank_policy(policy: AlertPolicy, bank: Bank | None) -> AlertPolicy:
    """The configured policy with the bank's own thresholds in place of its (a bank's
    ``min_share`` is checked on its own: see ``passes``)."""
    if bank is None:
        return policy
    return replace(
        policy,
        min_copied_s=policy.min_copied_s if bank.min_seconds is None else bank.min_seconds,
        min_score=policy.min_score if bank.min_score is None else bank.min_score,
    )


def passes(policy: AlertPolicy, match: Match, amounts: dict, bank: Bank | None = None) -> bool:
    policy = bank_policy(policy, bank)
    if bank is not None and bank.min_share is not None:  # share of either video
        shares = max(amounts["upload_share"], amounts["reference_share"]) >= bank.min_share
    else:
        shares = (
            amounts["upload_share"] >= policy.min_upload_share
            and amounts["reference_share"] >= policy.min_reference_share
        )
    return (
        shares
        and amounts["copied_s"] >= policy.min_copied_s
        and weighed_score(policy, match) >= policy.min_score
        and rests_on(policy.require, match)
    )


def weighed_score(policy: AlertPolicy, match: Match) -> float:
    """The match's score for the policy: its own, unless some segment was found by the sound
    alone and ``audio_weight`` discounts it: then the best segment's, such segments weighed."""
    heard_only = any(s.modality == "audio" for s in match.segments)
    if policy.audio_weight == 1.0 or not heard_only:
        return match.score
    weight = {"audio": policy.audio_weight}
    return max(s.score * weight.get(s.modality, 1.0) for s in match.segments)


def rests_on(require: str, match: Match) -> bool:
    """Whether the match has the evidence ``require`` asks for: ``video`` (a segment the
    picture found), ``audio`` (one the sound found), ``both`` (each) or ``any``."""
    found = {s.modality for s in match.segments}
    picture, sound = bool(found & {"video", "both"}), bool(found & {"audio", "both"})
    return {"any": True, "video": picture, "audio": sound, "both": picture and sound}[require]


# Policy keys added after alert ids existed: at these values they leave the ids as they were.
_LATER_POLICY_DEFAULTS = {"require": "any", "audio_weight": 1.0}


def _customised(bank: Bank | None) -> bool:
    """Whether the bank changes anything an alert id depends on (a plain default bank does
    not: alerts keep the ids they had before banks)."""
    return bank is not None and bank.to_dict() | {"created_at": ""} != Bank(DEFAULT_BANK).to_dict()


def alert_id(
    content_sha256: str,
    match: Match,
    policy: AlertPolicy,
    stage: str = "final",
    bank: Bank | None = None,
) -> str:
    """Same upload content, reference, segments, policy, bank (and stage) give the same id, so
    a redelivered upload never creates a second distinct alert."""
    policy_key = {
        k: v for k, v in asdict(policy).items() if _LATER_POLICY_DEFAULTS.get(k, object()) != v
    }
    key: dict[str, Any] = {
        "content": content_sha256,
        "reference": match.reference_id,
        # A segment's modality joined later: the picture's ("video") leaves ids as they were.
        "segments": [_id_fields(s.to_dict()) for s in match.segments],
        "policy": policy_key,
    }
    if stage != "final":  # final alerts keep the ids they had before stages existed
        key["stage"] = stage
    if _customised(bank):
        key["bank"] = {k: v for k, v in bank.to_dict().items() if k not in ("created_at",)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _id_fields(segment: dict[str, Any]) -> dict[str, Any]:
    if segment.get("modality") == "video":
        return {k: v for k, v in segment.items() if k != "modality"}
    return segment


def build_alert(
    match: Match,
    upload_id: str,
    content_sha256: str,
    query: dict[str, Any],
    reference_duration: float,
    policy: AlertPolicy,
    stage: str = "final",
    previous: dict[str, Any] | None = None,
    bank: Bank | None = None,
) -> dict[str, Any] | None:
    """The alert message for one match, or None below the policy (``bank``: the reference's,
    whose thresholds and action apply; a ``track`` bank never alerts). ``previous``: the last
    alert for this upload and reference, which this one supersedes."""
    amounts = match_amounts(match, query.get("duration") or 0.0, reference_duration)
    if not passes(policy, match, amounts, bank) or silenced(match):
        return None
    if bank is not None and not bank.alerts:
        return None
    thresholds = asdict(bank_policy(policy, bank))
    if bank is not None and bank.min_share is not None:
        thresholds["min_share"] = bank.min_share
    alert = {
        "schema_version": ALERT_SCHEMA_VERSION,
        "event_type": "copy_alert",
        "alert_id": alert_id(content_sha256, match, policy, stage, bank),
        "stage": stage,
        "sequence": (previous["sequence"] + 1) if previous else 1,
        "supersedes": previous["alert_id"] if previous else None,
        "upload_id": upload_id,
        "produced_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "query": query,
        "reference_id": match.reference_id,
        "reference_path": match.reference_path,
        "score": round(match.score, 4),
        "segments": [s.to_dict() for s in match.segments],
        "policy": {**thresholds, **amounts},
        "content_sha256": content_sha256,
    }
    if bank is not None:  # additive: whose reference, and what the platform should do
        alert["bank"], alert["action"] = bank.name, bank.action
    return alert


def build_alerts(
    result: QueryResult,
    upload_id: str,
    content_sha256: str,
    reference_durations: dict[str, float],
    policy: AlertPolicy,
    previous: dict[str, dict[str, Any]] | None = None,
    banks: dict[str, Bank] | None = None,
) -> list[dict[str, Any]]:
    """The final alert messages for a query result, one per match that passes the policy;
    ``previous``: reference id -> the last early alert for it; ``banks``: name -> bank."""
    query = result.to_dict()["query"]
    alerts = []
    for match in result.matches:
        alert = build_alert(
            match, upload_id, content_sha256, query,
            reference_durations.get(match.reference_id, 0.0), policy, "final",
            (previous or {}).get(match.reference_id), (banks or {}).get(match.bank or ""),
        )  # fmt: skip
        if alert is not None:
            alerts.append(alert)
    return alerts
