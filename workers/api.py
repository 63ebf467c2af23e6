"""The HTTP API (``copyspan api``): query, references, verdicts, metrics and the review pages.

FastAPI on uvicorn, around the same ``pipeline`` the CLI uses (imported by ``copyspan api``
only). Every ``/v1/`` route needs ``Authorization: Bearer <token>``: the ``--token-file`` token
(compared in constant time) or one of ``copyspan token create`` (workers/tokens.py) sees
everything (admin); a bank's token sees and changes only its bank, and anything of another
bank answers 404 as if it did not exist (its matches are not reported to it). ``/healthz``
and ``/readyz`` need none (``/readyz`` answers 503 until the model and index are loaded).
Queries run in a pool of ``api.workers`` threads; beyond ``api.queue`` more waiting, a request
is answered 503 with ``Retry-After`` at once instead of piling up. Errors are JSON (``{"error":
reason}``): 400 malformed request, 401 no or wrong token, 403 path not allowed, 404 unknown
reference or bank, 405 method not allowed (with ``Allow``), 413 too large, 422 not a decodable
video or a verdict that cannot be recorded, 503 saturated or not ready. The OpenAPI document
(workers/api_schema.py, committed as docs/openapi.json) declares every body, answer and error,
and the bearer scheme.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import html
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pipeline.config import Config
from pipeline.errors import PermanentError, UnknownReferenceError, VideoDecodeError
from pipeline.index.banks import DEFAULT_BANK, BankError
from pipeline.streaming.uploads import PathNotAllowedError, resolve_uri
from workers.api_schema import (
    BankList,
    QueryRequest,
    QueryResultOut,
    ReferenceList,
    ReferenceOut,
    ReferenceRequest,
    ReferenceStatus,
    Status,
    VerdictList,
    VerdictOut,
    VerdictRequest,
    errors,
)
from workers.tokens import ADMIN, Grant, TokenStore

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def decode_status(exc: VideoDecodeError) -> int:
    return 413 if exc.reason == "file too large" else 422


class Engine:
    """The model, the index and the bounded pool the routes run their work in."""

    def __init__(
        self, config: Config, index_dir: str, roots: list[str], audit: str | None, load=True
    ):
        self.config, self.index_dir, self.roots = config, index_dir, roots
        self.audit = Path(audit) if audit else None
        self.pool = concurrent.futures.ThreadPoolExecutor(config.api.workers)
        self.capacity = config.api.workers + config.api.queue
        self.busy = 0
        self.busy_lock = threading.Lock()
        self.write_lock = threading.Lock()  # one writer of the index at a time, in this process
        self.local = threading.local()
        self.ready = threading.Event()
        self.detector = None
        self.failure: str | None = None
        self.tokens = (
            TokenStore.beside(index_dir) if index_dir and Path(index_dir).is_dir() else None
        )
        self.token_lock = threading.Lock()
        if load:
            threading.Thread(target=self._load, daemon=True).start()

    def _load(self) -> None:
        try:
            from pipeline.detector import CopyDetector

            self.detector = CopyDetector(self.config)
            index = self.index()
            index.check_model(self.detector.embedder.model_id, self.detector.preprocess)
            index.search(np.zeros((1, 512), np.float32), 1)  # load the segments now
            self.ready.set()
            log.info("ready: %d references", len(index))
        except Exception as exc:  # /readyz says why
            self.failure = str(exc)
            log.error("cannot load the model or index: %s", exc)

    def index(self):
        """This thread's handle on the index (SQLite connections stay in their thread)."""
        from pipeline.index import ReferenceIndex

        if getattr(self.local, "index", None) is None:
            self.local.index = ReferenceIndex(
                self.index_dir, create=False, config=self.config.index
            )
        return self.local.index

    def verdicts(self):
        from pipeline.review.verdicts import Verdicts

        if getattr(self.local, "verdicts", None) is None:
            self.local.verdicts = Verdicts.beside(self.index_dir)
        return self.local.verdicts

    def grant(self, given: str, admin_token: str | None) -> Grant | None:
        """What the request's bearer token may do (None: no such token, or revoked)."""
        if admin_token is None:  # --no-auth, on a loopback address
            return ADMIN
        if hmac.compare_digest(given.encode(), admin_token.encode()):
            return ADMIN
        if self.tokens is None:
            return None
        with self.token_lock:
            return self.tokens.grant(given)

    async def run(self, work, *args) -> Any:
        """Run ``work`` in the pool, or refuse at once (503) when the queue is full."""
        if not self.ready.is_set():
            raise ApiError(503, self.failure or "loading the model and index", {"Retry-After": "5"})
        with self.busy_lock:
            if self.busy >= self.capacity:
                raise ApiError(503, "saturated: too many requests in progress",
                               {"Retry-After": str(self.config.api.retry_after_s)})  # fmt: skip
            self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        finally:
            with self.busy_lock:
                self.busy -= 1

    def resolve(self, uri: Any) -> Path:
        if not isinstance(uri, str) or not uri:  # blank: not an allowed path (403) below
            raise ApiError(400, "the request needs a string field 'uri'")
        try:
            return resolve_uri(uri, self.roots)
        except PathNotAllowedError as exc:
            raise ApiError(403, str(exc)) from exc

    # ---- work run in the pool ---------------------------------------------------------------

    def query(self, path: Path, query_id: str | None, banks: list[str] | None = None) -> dict:
        """Match ``path`` against ``banks`` (None: every enabled bank)."""
        index = self.index()
        try:  # an unknown bank fails when the query starts, before anything is decoded
            windows = self.detector.describe_windows(path, query_id)
            result = self.detector.query_windows(windows, index, banks=banks)
        except BankError as exc:
            raise ApiError(404, str(exc)) from exc
        except VideoDecodeError as exc:
            raise ApiError(decode_status(exc), str(exc)) from exc
        return self.verdicts().apply(result).to_dict()

    def add_reference(self, path: Path, video_id: str | None, replace: bool, bank: str) -> dict:
        from pipeline.describe.describer import video_id_for
        from pipeline.index import file_sha256

        video_id = video_id or video_id_for(path)
        index = self.index()
        try:
            index.require_bank(bank)
            sha = file_sha256(path)
            plan = index.plan_add(video_id, sha, replace, bank)
            if plan in ("unchanged", "duplicate"):
                return {"id": video_id, "status": plan}
            features = self.detector.describe(path, video_id, views=False)
            with self.write_lock:
                (status,) = index.add([(features, sha)], replace=replace, bank=bank)
        except BankError as exc:
            raise ApiError(404, str(exc)) from exc
        except VideoDecodeError as exc:
            raise ApiError(decode_status(exc), str(exc)) from exc
        except PermanentError as exc:  # an id that holds other content
            raise ApiError(409, str(exc)) from exc
        except FileNotFoundError as exc:
            raise ApiError(422, f"{path}: file not found") from exc
        return {"id": video_id, "status": status}


def create_app(
    config: Config,
    index_dir: str,
    roots: list[str],
    token: str | None,
    audit: str | None = None,
    load: bool = True,
):
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    engine = Engine(config, index_dir, roots, audit, load)
    app = FastAPI(
        title="copyspan", version="1", docs_url=None, redoc_url=None,
        generate_unique_id_function=lambda route: route.name,  # operationId: the function's
        description="Video copy detection: which seconds of an upload copy which reference.",
    )  # fmt: skip
    app.state.engine = engine
    registry = CollectorRegistry()
    requests = Counter("copyspan_api_requests", "Requests by route and status",
                       ["route", "status"], registry=registry)  # fmt: skip
    latency = Histogram("copyspan_api_seconds", "Request time", ["route"], registry=registry,
                        buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120))  # fmt: skip
    in_flight = Gauge("copyspan_api_in_flight", "Requests in the pool", registry=registry)
    in_flight.set_function(lambda: engine.busy)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_reason(exc.errors())}, status_code=400)

    def allowed(request: Request) -> list[str]:
        """The methods the OpenAPI document lists for the request's path (for ``Allow``)."""
        methods: set[str] = set()
        for route in app.routes:
            if getattr(route, "include_in_schema", False) and route.matches(request.scope)[0] in (
                Match.FULL, Match.PARTIAL,
            ):  # fmt: skip
                methods |= set(getattr(route, "methods", ())) - {"HEAD"}
        return sorted(methods)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            grant = engine.grant(given, token)
            if grant is None:
                response = JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                        headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                requests.labels(path, "401").inc()
                return response
            request.state.grant = grant
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        if response.status_code == 405:  # a path that exists; OPTIONS lands here too
            methods = allowed(request)
            if methods:  # a known path: answer with the methods it has (RFC 9110)
                code = 204 if request.method == "OPTIONS" else 405
                body = None if code == 204 else {"error": f"{request.method} not allowed here"}
                response = (Response(status_code=204) if body is None
                            else JSONResponse(body, status_code=405))  # fmt: skip
                response.headers["Allow"] = ", ".join(methods)
        requests.labels(name, str(response.status_code)).inc()
        latency.labels(name).observe(time.perf_counter() - started)
        return response

    bearer = [Depends(HTTPBearer(auto_error=False, description="the --token-file token (admin) "
                                 "or one of `copyspan token create`"))]  # fmt: skip
    busy = errors(401, 503)  # every /v1/ route: the token, a saturated pool

    @app.get("/healthz", tags=["health"], response_model=Status)
    async def healthz() -> dict:
        return {"status": "ok"}

    loading = {503: {"model": Status, "description": "loading, or failed to load"}}

    @app.get("/readyz", tags=["health"], response_model=Status, responses=loading)
    async def readyz():
        if engine.ready.is_set():
            return {"status": "ready"}
        return JSONResponse({"status": engine.failure or "loading"}, status_code=503)

    @app.post(
        "/v1/query", tags=["query"], dependencies=bearer, response_model=None,
        responses={200: {"model": QueryResultOut}, **errors(400, 403, 404, 413, 422), **busy},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/QueryRequest"}}}}},
    )  # fmt: skip
    async def query(request: Request) -> dict:
        """Match one video named by JSON ``{"uri": "file:///..."}`` under the allowed roots.
        Answers the query-result JSON. (A multipart upload is taken here too, as before
        ``/v1/query/upload`` documented it on its own: one body type per operation is what
        client generators handle.)"""
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            return await _uploaded(request)
        body = _checked(QueryRequest, await _json(request))
        banks = _banks(request.state.grant, body.banks)
        path = engine.resolve(body.uri)
        if not path.is_file():
            raise ApiError(422, f"{path}: file not found")
        return await engine.run(engine.query, path, body.id, banks)

    @app.post(
        "/v1/query/upload", tags=["query"], dependencies=bearer, response_model=None,
        responses={200: {"model": QueryResultOut}, **errors(400, 413, 422), **busy},
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}}}}}},
    )  # fmt: skip
    async def query_upload(request: Request) -> dict:
        """Match an uploaded video (multipart field ``file``, at most ``api.max_upload_mb``;
        spooled to a temporary file that is always deleted). Answers the query-result JSON."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "a multipart/form-data upload with a 'file' field is expected")
        return await _uploaded(request)

    async def _uploaded(request: Request) -> dict:
        limit = config.api.max_upload_mb * 2**20
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit + 2**16:
            raise ApiError(413, f"upload over {config.api.max_upload_mb} MB")
        with tempfile.TemporaryDirectory(prefix="copyspan-upload-") as folder:
            try:
                form = await request.form(max_part_size=limit)
            except Exception as exc:  # a part over the limit, or a malformed body
                text = str(exc)
                raise ApiError(413 if "size" in text.lower() else 400, text) from exc
            try:
                upload = form.get("file")
                if upload is None or not hasattr(upload, "read"):
                    raise ApiError(400, "multipart upload needs a 'file' field")
                name = Path(upload.filename or "upload.bin").name
                target = Path(folder) / name
                with open(target, "wb") as handle:
                    shutil.copyfileobj(upload.file, handle)
            finally:
                await form.close()  # the parser's own spooled copy goes too
            if target.stat().st_size > limit:
                raise ApiError(413, f"upload over {config.api.max_upload_mb} MB")
            banks = _banks(request.state.grant, None)
            return await engine.run(engine.query, target, Path(name).stem, banks)
        # the temporary folder (and the upload in it) is deleted on every way out

    async def _json(request: Request) -> dict:
        try:
            body = await request.json()
        except Exception as exc:
            raise ApiError(400, f"malformed JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    @app.get("/v1/references", tags=["references"], dependencies=bearer,
             response_model=None, responses={200: {"model": ReferenceList}, **busy})  # fmt: skip
    async def references(request: Request, bank: str | None = None) -> dict:
        """The references the token sees (``?bank=``: of that bank only)."""
        grant = request.state.grant
        refs = await engine.run(lambda: engine.index().references())
        seen = [r for r in refs if grant.sees(r.bank) and bank in (None, r.bank)]
        return {"references": [_reference(r) for r in seen]}

    @app.get("/v1/references/{video_id}", tags=["references"], dependencies=bearer,
             response_model=None,
             responses={200: {"model": ReferenceOut}, **errors(404), **busy})  # fmt: skip
    async def reference(request: Request, video_id: str) -> dict:
        ref = await engine.run(lambda: engine.index().get(video_id))
        if ref is None or not request.state.grant.sees(ref.bank):
            raise ApiError(404, f"no reference {video_id!r}")
        return _reference(ref)

    @app.post(
        "/v1/references", tags=["references"], status_code=201, dependencies=bearer,
        response_model=None,
        responses={201: {"model": ReferenceStatus}, **errors(400, 403, 404, 409, 422), **busy},
    )  # fmt: skip
    async def add_reference(request: Request, body: ReferenceRequest) -> dict:
        grant = request.state.grant
        bank = body.bank or grant.bank or DEFAULT_BANK
        if not grant.sees(bank):
            raise ApiError(404, f"no bank {bank!r}")
        path = engine.resolve(body.uri)
        return await engine.run(engine.add_reference, path, body.id, body.replace, bank)

    @app.delete("/v1/references/{video_id}", tags=["references"], dependencies=bearer,
                response_model=None,
                responses={200: {"model": ReferenceStatus}, **errors(404), **busy})  # fmt: skip
    async def remove_reference(request: Request, video_id: str) -> dict:
        bank = request.state.grant.bank  # a bank's token: another bank's id is unknown

        def remove() -> dict:
            with engine.write_lock:
                try:
                    engine.index().remove([video_id], bank)
                except UnknownReferenceError as exc:
                    raise ApiError(404, str(exc)) from exc
            return {"id": video_id, "status": "removed"}

        return await engine.run(remove)

    @app.post(
        "/v1/verdicts", tags=["verdicts"], status_code=201, dependencies=bearer,
        response_model=None,
        responses={201: {"model": VerdictOut}, **errors(400, 404, 422), **busy},
    )  # fmt: skip
    async def add_verdict(request: Request, body: VerdictRequest) -> dict:
        """Record a verdict; it acts within the reference's bank (a bank's token: only on its
        own references)."""
        from pipeline.review.verdicts import VerdictError

        grant = request.state.grant
        ref = await engine.run(lambda: engine.index().get(body.reference_id))
        if not grant.admin and (ref is None or ref.bank != grant.bank):
            raise ApiError(404, f"no reference {body.reference_id!r}")
        try:
            verdict = engine.verdicts().mark(
                body.query_id, body.reference_id, body.verdict, body.note, body.by,
                body.query_sha256, body.reference_span, ref.bank if ref else None,
            )  # fmt: skip
        except VerdictError as exc:  # well-formed, but not a verdict that can be recorded
            raise ApiError(422, str(exc)) from exc
        return verdict.to_dict()

    @app.get("/v1/verdicts", tags=["verdicts"], dependencies=bearer, response_model=None,
             responses={200: {"model": VerdictList}, **busy})  # fmt: skip
    async def list_verdicts(
        request: Request,
        reference_id: str | None = None,
        query_id: str | None = None,
        bank: str | None = None,
    ):
        """Verdicts the token sees (a bank's token: its bank's; ``?bank=``: of that bank)."""
        grant = request.state.grant
        if not grant.admin and bank not in (None, grant.bank):
            return {"verdicts": []}  # another bank's: as if it had none
        found = engine.verdicts().list(reference_id, query_id, grant.bank or bank)
        return {"verdicts": [v.to_dict() for v in found]}

    @app.get("/v1/banks", tags=["banks"], dependencies=bearer, response_model=None,
             responses={200: {"model": BankList}, **busy})  # fmt: skip
    async def banks(request: Request) -> dict:
        """The banks the token sees, each with its policy and what it holds."""
        grant = request.state.grant
        summary = await engine.run(lambda: engine.index().bank_summary())
        return {"banks": [{"name": name, **bank} for name, bank in summary.items()
                          if grant.sees(name)]}  # fmt: skip

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus metrics"}})  # fmt: skip
    async def metrics():
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        return _docs_page(app.openapi())

    @app.get("/review", response_class=HTMLResponse, tags=["review"],
             responses=errors(401, 404, media="application/json"))  # fmt: skip
    async def review(given: str | None = Query(None, alias="token")):
        """The audit report of ``--audit`` with buttons that record verdicts; ``?token=``
        when the API needs one (a browser cannot send a bearer header on navigation)."""
        grant = engine.grant(given or "", token)
        if grant is None:
            raise ApiError(401, "the review page needs ?token=<token>")
        if engine.audit is None:
            raise ApiError(404, "no audit to review: start the API with --audit OUT")
        from pipeline.review.report.page import build_page

        return await engine.run(build_page, engine.audit, "/v1/verdicts", grant.bank)

    described = app.openapi

    def openapi() -> dict:
        """FastAPI's document, plus the JSON body of /v1/query (parsed by hand: the route
        takes a multipart upload too)."""
        spec = described()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "QueryRequest",
            QueryRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _banks(grant: Grant, asked: list[str] | None) -> list[str] | None:
    """The banks a query of this token matches: a bank's token only its own (asking for
    another answers 404, as for a bank that does not exist); admin what it asks (None: all)."""
    if grant.admin:
        return asked
    for name in asked or ():
        if name != grant.bank:
            raise ApiError(404, f"no bank {name!r}")
    return [grant.bank]


def _checked(model, body: dict):
    """``body`` as ``model``, or a 400 naming what is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, _validation_reason(exc.errors())) from exc


def _validation_reason(problems) -> str:
    """One line from Pydantic's validation errors: where, and what is wrong."""
    parts = []
    for problem in list(problems)[:3]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _reference(ref) -> dict:
    return {"id": ref.id, "path": ref.path, "duration": ref.duration, "frames": ref.frames,
            "sha256": ref.sha256, "added_at": ref.added_at, "bank": ref.bank}  # fmt: skip


def _docs_page(spec: dict) -> str:
    """The API's routes from its OpenAPI description, self-contained (no CDN)."""
    rows = []
    for path, methods in spec.get("paths", {}).items():
        for method, info in methods.items():
            text = html.escape((info.get("description") or info.get("summary") or "").strip())
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>"
                        f"{html.escape(path)}</code></td><td>{text}</td></tr>")  # fmt: skip
    head = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>copyspan API</title>"
        "<style>body{font:14px system-ui;margin:2em}td{padding:4px 10px;vertical-align:top}"
        "</style></head><body><h1>copyspan API</h1><p>OpenAPI: <a href='/openapi.json'>"
        "/openapi.json</a>. Every <code>/v1/</code> route needs <code>Authorization: "
        "Bearer &lt;token&gt;</code>.</p><table>"
    )
    return head + "".join(rows) + "</table></body></html>"


def openapi_document(config: Config) -> dict:
    """The API's OpenAPI document (what ``/openapi.json`` serves), without serving."""
    return create_app(config, "", ["/"], "unused", load=False).openapi()


def serve_api(
    config: Config,
    index_dir: str,
    roots: list[str],
    token_file: str | None,
    host: str,
    port: int,
    audit: str | None,
    no_auth: bool,
) -> int:
    import uvicorn

    from pipeline.errors import ConfigError

    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ConfigError(f"the token file {token_file} is empty")
    elif no_auth:
        if host not in LOOPBACK:
            raise ConfigError("--no-auth is only allowed on a loopback address")
        token = None
    else:
        raise ConfigError("--token-file is required (or --no-auth on a loopback address)")
    if not roots:
        raise ConfigError("--allowed-root is required")
    app = create_app(config, index_dir, roots, token, audit)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
