"""The HTTP API's contract: a Pydantic model for every request and response body, and the
error responses each route can give, so that ``/openapi.json`` describes what the server does
(schemathesis checks it against a running server in the tests; a generated client uses it).

The query result is DESIGN.md's contract; fields marked additive appear only when they apply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error answer: the reason, in words."""

    error: str


class Status(BaseModel):
    status: str


# ---- requests -----------------------------------------------------------------------------------


class QueryRequest(BaseModel):
    uri: str = Field(min_length=1, description="file:///... under one of the allowed roots")
    id: str | None = Field(None, description="the query id to report (default: the file stem)")
    banks: list[str] | None = Field(
        None, min_length=1,
        description="additive: match only these banks (default: every enabled bank the token "
        "sees; a bank's token sees its own)",
    )  # fmt: skip


class ReferenceRequest(BaseModel):
    uri: str = Field(min_length=1, description="file:///... under one of the allowed roots")
    id: str | None = Field(None, description="the reference id (default: the file stem)")
    replace: bool = Field(False, description="replace the content an id already holds")
    bank: str | None = Field(
        None, description="additive: the bank it goes to (default: the token's, or 'default')"
    )


class VerdictRequest(BaseModel):
    query_id: str = Field(min_length=1, description="the upload's id; '*' for the whole reference")
    reference_id: str = Field(min_length=1)
    verdict: Literal["copy", "not_copy", "licensed", "quarantined"]
    note: str = ""
    by: str = "api"
    query_sha256: str | None = None
    reference_span: tuple[float, float] | None = Field(
        None, description="[start, end] seconds of the reference a licence covers (start < end)"
    )


# ---- responses ----------------------------------------------------------------------------------


class SegmentOut(BaseModel):
    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    score: float
    reference_alternatives: list[tuple[float, float]] | None = Field(
        None, description="additive: other reference spans the copy fits as well"
    )
    modality: Literal["video", "audio", "both"] | None = Field(
        None, description="additive: what found the segment: the picture, the sound or both"
    )


class VerdictOut(BaseModel):
    number: int
    query_id: str
    query_sha256: str | None
    reference_id: str
    verdict: str
    reference_start: float | None
    reference_end: float | None
    note: str
    by: str
    at: str
    bank: str | None = Field(None, description="additive: the bank the verdict acts in")


class MatchOut(BaseModel):
    reference_id: str
    reference_path: str
    score: float
    segments: list[SegmentOut]
    verdict: VerdictOut | None = Field(None, description="additive: a reviewer's verdict")
    bank: str | None = Field(None, description="additive: the reference's bank")
    action: Literal["alert", "track", "block"] | None = Field(
        None, description="additive: what the bank's matches do"
    )


class QueryInfo(BaseModel):
    id: str
    path: str
    duration: float | None
    sha256: str | None = Field(None, description="additive: the file's content hash")
    audio: str | None = Field(
        None,
        description="additive: what the soundtrack gave: ok, no audio, silent, audio "
        "unreadable: ..., with '; corrupt packets: N' when some were skipped",
    )


class QueryResultOut(BaseModel):
    """The query result of DESIGN.md (one line of ``copyspan query --json``)."""

    model_config = ConfigDict(title="QueryResult")
    query: QueryInfo
    matches: list[MatchOut]
    timings: dict[str, float] | None = Field(None, description="additive: seconds per stage")
    error: str | None = None


class ReferenceOut(BaseModel):
    id: str
    path: str
    duration: float
    frames: int
    sha256: str
    added_at: str
    bank: str = Field("default", description="additive: the bank it belongs to")


class ReferenceList(BaseModel):
    references: list[ReferenceOut]


class BankOut(BaseModel):
    """A bank (pipeline/index/banks.py): its policy and what it holds."""

    name: str
    action: Literal["alert", "track", "block"]
    min_score: float | None
    min_seconds: float | None
    min_share: float | None
    enabled: bool
    created_at: str
    references: int
    frames: int
    duration_s: float


class BankList(BaseModel):
    banks: list[BankOut]


class ReferenceStatus(BaseModel):
    id: str
    status: Literal["add", "replace", "unchanged", "duplicate", "removed"]


class VerdictList(BaseModel):
    verdicts: list[VerdictOut]


# ---- the error answers of each kind of route ----------------------------------------------------


def errors(*codes: int, media: str | None = None) -> dict:
    """OpenAPI ``responses`` entries for these status codes, each an ``ErrorBody`` (as JSON
    under ``media`` too, for a route whose own answers are of another type)."""
    reasons = {
        400: "malformed request",
        401: "missing or wrong bearer token",
        403: "path not allowed (outside the allowed roots, another scheme, a symlink escape)",
        404: "no such reference or bank (a bank's token: nothing of another bank exists)",
        409: "the id holds other content (pass replace)",
        413: "upload over api.max_upload_mb",
        422: "not a decodable video, no such file, or a verdict that cannot be recorded",
        503: "busy: every worker and queue slot taken (Retry-After)",
    }
    if media:
        body = {media: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        return {code: {"content": body, "description": reasons[code]} for code in codes}
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}
