"""``copyspan serve``: Kafka uploads in, copyright-infringement alerts out, at least once.

One message at a time per service process (scale out with more processes in the same group):

1. poll one upload; pause every assigned partition and keep polling while it is processed, so
   a long video never exceeds ``max.poll.interval.ms`` nor triggers a rebalance;
2. process it (parse, resolve inside the allowed roots, describe, query, apply the policy);
3. publish its alerts, or its dead letter, and wait for the broker's acknowledgement;
4. record it in the ledger, then commit its offset.

A crash anywhere before step 4 redelivers the upload; alert ids are deterministic, so a
redelivery can repeat an alert message but never creates a new distinct alert. Permanent
failures (bad message, path outside the roots, undecodable video) go straight to the dead-letter
topic; anything else is retried with exponential backoff, then dead-lettered with its attempt
count. Broker failures while publishing are retried until they succeed or the service stops.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, ServeConfig
from pipeline.detector import CopyDetector
from pipeline.errors import PermanentError
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.ledger import Ledger
from pipeline.records import Match, QueryResult, VideoFeatures
from pipeline.review.policy import build_alert, build_alerts
from pipeline.review.verdicts import Verdicts, silenced
from pipeline.streaming.uploads import parse_upload, resolve_uri
from workers.shards import shard_searcher

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What processing one upload produced."""

    upload_id: str
    key: str  # ledger key: upload id and content hash
    status: str  # alerted | silenced | tracked | below_policy | no_match | duplicate
    alerts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    published: set[str] = field(default_factory=set)  # ids of final alerts already sent


@dataclass(frozen=True)
class Where:
    """A record's position, for logs."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    @property
    def ids(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class UploadProcessor:
    """Upload message bytes -> alerts. No Kafka here, so it is tested alone."""

    def __init__(self, config: Config, detector: CopyDetector | None = None):
        serve = config.serve
        if not serve.index:
            raise PermanentError("serve.index (--index) is required")
        if not serve.allowed_roots:
            raise PermanentError("serve.allowed_roots (--allowed-root) is required")
        self.config = config
        self.detector = detector or CopyDetector(config)
        searcher = shard_searcher(serve.index, config, None)  # ray.address: shards on Ray
        self.index = ReferenceIndex(
            serve.index, create=serve.index_unmatched, config=config.index, searcher=searcher
        )
        self.index.check_model(self.detector.embedder.model_id, self.detector.preprocess)
        self.verdicts = Verdicts.beside(serve.index)
        state = Path(serve.state_dir or Path(serve.index) / "serve-state")
        self.ledger = Ledger(state / "processed.sqlite")
        self.lock = threading.Lock()  # one upload at a time touches the index and ledger

    def process(self, raw: bytes | None, publish: Callable[[dict], None] | None = None) -> Outcome:
        """Match one upload. ``publish`` receives each early alert the moment a copy is known
        (while the upload is still being read) and each final alert the moment its match's
        spans are final (the best match's before the others' references are reread). The
        outcome lists every final alert; ``Outcome.published`` holds the ids already sent."""
        started = time.perf_counter()
        upload = parse_upload(raw)
        self.index.scope(upload.banks)  # an unknown bank: a permanent failure, before any work
        path = resolve_uri(upload.uri, self.config.serve.allowed_roots)
        if not path.is_file():
            raise PermanentError(f"{path}: file not found")
        sha = file_sha256(path)
        key = f"{upload.upload_id}:{sha}"
        with self.lock:
            done = self.ledger.get(key)
            if done is not None:
                log.info(
                    "upload %s already processed (%s); skipping", upload.upload_id, done["status"]
                )
                return Outcome(upload.upload_id, key, "duplicate")
            described: list[VideoFeatures] = []  # kept only to index an unmatched upload
            early: dict[str, dict] = {}  # reference id -> its last early alert
            published: set[str] = set()  # final alerts already sent
            last: list[VideoFeatures] = []  # the latest window read

            def windows():
                for window in self.detector.describe_windows(path, upload.upload_id):
                    if self.config.serve.index_unmatched:
                        described.append(window)
                    last[:] = [window]
                    yield window

            def send(match: Match, query: dict, reference_duration: float, stage: str) -> None:
                verdict = self.verdicts.lookup(upload.upload_id, sha, match)
                match.verdict = verdict.to_dict() if verdict else None
                previous = early.get(match.reference_id)
                alert = build_alert(match, upload.upload_id, sha, query, reference_duration,
                                    self.config.policy, stage, previous,
                                    self.index.bank(match.bank or ""))  # fmt: skip
                if alert is None or publish is None:
                    return
                publish(alert)
                if stage == "early":
                    early[match.reference_id] = alert
                else:
                    published.add(alert["alert_id"])

            def on_window(streaming, changed: list[int]) -> None:
                if float(streaming.last.ends[-1]) >= streaming.last.duration - 1e-6:
                    return  # the last window: the final alerts follow at once
                query = {"id": upload.upload_id, "path": str(path),
                         "duration": round(float(streaming.last.ends[-1]), 3)}  # fmt: skip
                for match, ref in streaming.matches_of(changed):
                    send(match, query, ref.duration, "early")

            def on_final(match: Match) -> None:
                reference = self.index.get(match.reference_id)
                if reference is not None:
                    window = last[0]  # the query as the final alerts describe it
                    heard = window.audio.status if window.audio is not None else None
                    query = QueryResult(window.video_id, window.path, round(window.duration, 3),
                                        sha256=sha, audio=heard).to_dict()["query"]  # fmt: skip
                    send(match, query, reference.duration, "final")

            result = self.detector.query_windows(
                windows(), self.index, on_window, on_final, upload.banks
            )
            result.sha256 = sha
            self.verdicts.apply(result)
            durations = {
                m.reference_id: ref.duration
                for m in result.matches
                if (ref := self.index.get(m.reference_id)) is not None
            }
            banks = {bank.name: bank for bank in self.index.banks()}
            alerts = build_alerts(
                result, upload.upload_id, sha, durations, self.config.policy, early, banks
            )
            if alerts:
                status = "alerted"
            elif any(silenced(m) for m in result.matches):
                status = "silenced"  # a reviewer's verdict
            elif any(m.action == "track" for m in result.matches):
                status = "tracked"  # a bank that only reports its matches
            elif result.matches:
                status = "below_policy"
            else:
                status = "no_match"
                if self.config.serve.index_unmatched:
                    features = described[0] if len(described) == 1 else (
                        VideoFeatures.concat(described))  # fmt: skip
                    self.index.add([(features, sha)])
                    log.info("indexed unmatched upload %s as a reference", upload.upload_id)
        seconds = time.perf_counter() - started
        return Outcome(upload.upload_id, key, status, alerts, seconds, published)

    def mark_done(self, outcome: Outcome) -> None:
        """Record a published outcome so a redelivery is skipped."""
        alert_ids = [a["alert_id"] for a in outcome.alerts]
        self.ledger.record(outcome.key, outcome.status, alert_ids=alert_ids)

    def close(self) -> None:
        self.index.close()
        self.ledger.close()
        self.verdicts.close()


class Metrics:
    """Prometheus metrics of the service (served on /metrics when a port is configured)."""

    def __init__(self, port: int):
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            start_http_server,
        )

        self.registry = CollectorRegistry()
        self.processed = Counter(
            "copyspan_uploads_processed", "Uploads processed, by outcome", ["status"],
            registry=self.registry,
        )  # fmt: skip
        self.failed = Counter(
            "copyspan_uploads_failed", "Failed attempts, by error class", ["error"],
            registry=self.registry,
        )  # fmt: skip
        self.alerts = Counter("copyspan_alerts", "Alerts published", registry=self.registry)
        self.dead_letters = Counter(
            "copyspan_dead_letters", "Uploads dead-lettered", registry=self.registry
        )
        self.latency = Histogram(
            "copyspan_processing_seconds", "Upload processing time (poll to commit)",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600), registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "copyspan_in_flight", "Uploads being processed", registry=self.registry
        )
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
            log.info("metrics on http://127.0.0.1:%d/metrics", port)


class KafkaService:
    def __init__(self, config: Config, processor: UploadProcessor | None = None):
        from kafka import KafkaConsumer, KafkaProducer

        self.config = config
        self.serve: ServeConfig = config.serve
        self.processor = processor or UploadProcessor(config)
        self.metrics = Metrics(self.serve.metrics_port)
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.serve.bootstrap_servers,
            group_id=self.serve.group_id,
            enable_auto_commit=False,  # commit only after the broker acknowledged the outcome
            auto_offset_reset="earliest",
            session_timeout_ms=self.serve.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.serve.session_timeout_ms // 4),
            max_poll_interval_ms=self.serve.max_poll_interval_ms,
            max_poll_records=1,
            fetch_max_wait_ms=self.serve.fetch_max_wait_ms,
        )
        self.producer = KafkaProducer(
            bootstrap_servers=self.serve.bootstrap_servers, acks="all", retries=5, linger_ms=0
        )
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.stopping = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum, _frame) -> None:
            log.info("signal %d: finishing the upload in flight, then stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> None:
        self.consumer.subscribe([self.serve.uploads_topic])
        log.info(
            "consuming %s as group %s from %s",
            self.serve.uploads_topic, self.serve.group_id, self.serve.bootstrap_servers,
        )  # fmt: skip
        try:
            while not self.stopping.is_set():
                batches = self.consumer.poll(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        if not self.handle(record):
                            return  # abandoned on shutdown: not committed, will be redelivered
        finally:
            self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        try:
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=10)
            self.consumer.close(autocommit=False)
            self.processor.close()

    # ---- one upload --------------------------------------------------------------------

    def handle(self, record) -> bool:
        """Process one record to a committed offset. False when abandoned at shutdown."""
        where = Where(record.topic, record.partition, record.offset)
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            future = self.executor.submit(self._process_and_publish, record, where)
            if not self._wait_polling(future):
                log.warning(
                    "%s abandoned at shutdown; it will be redelivered", where, extra=where.ids
                )
                return False
            future.result()
            self._commit(record, where)
            return True
        finally:
            self.metrics.in_flight.dec()
            self.metrics.latency.observe(time.perf_counter() - started)

    def _wait_polling(self, future: concurrent.futures.Future) -> bool:
        """Keep polling (paused) until ``future`` is done; False if shutdown grace runs out."""
        partitions = self.consumer.assignment()
        self.consumer.pause(*partitions)
        deadline = None
        try:
            while not future.done():
                if self.stopping.is_set() and deadline is None:
                    deadline = time.monotonic() + self.serve.shutdown_grace_s
                if deadline is not None and time.monotonic() > deadline:
                    return False
                # Heartbeats and group membership only: paused partitions return nothing, but
                # should a record slip through, rewind so it is delivered again, never lost.
                for partition, records in self.consumer.poll(timeout_ms=200).items():
                    if records:
                        self.consumer.seek(partition, records[0].offset)
            return True
        finally:
            self.consumer.resume(*[p for p in partitions if p in self.consumer.assignment()])

    def _process_and_publish(self, record, where: Where) -> None:
        attempt = 0
        while True:
            attempt += 1

            def publish_now(alert: dict) -> None:
                self._publish(
                    self.serve.alerts_topic, json.dumps(alert).encode(), alert["upload_id"]
                )
                self.metrics.alerts.inc()
                log.info(
                    "%s %s alert for upload %s: %s", where, alert["stage"], alert["upload_id"],
                    alert["reference_id"], extra={**where.ids, "upload_id": alert["upload_id"]},
                )  # fmt: skip

            try:
                outcome = self.processor.process(record.value, publish_now)
            except PermanentError as exc:
                self.metrics.failed.labels(type(exc).__name__).inc()
                log.warning("%s dead-lettered: %s", where, exc, extra=where.ids)
                self._dead_letter(record, exc, attempt)
                return
            except Exception as exc:  # transient, or a bug: retry, then dead-letter
                self.metrics.failed.labels(type(exc).__name__).inc()
                if attempt >= self.serve.max_attempts or self.stopping.is_set():
                    log.error(
                        "%s failed %d times (%s); dead-lettered",
                        where,
                        attempt,
                        exc,
                        extra=where.ids,
                    )
                    self._dead_letter(record, exc, attempt)
                    return
                delay = min(self.serve.max_backoff_s, self.serve.backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "%s attempt %d failed (%s); retrying in %.1fs", where, attempt, exc, delay
                )
                time.sleep(delay)
                continue
            for alert in outcome.alerts:
                if alert["alert_id"] not in outcome.published:
                    self._publish(
                        self.serve.alerts_topic, json.dumps(alert).encode(), outcome.upload_id
                    )
                    self.metrics.alerts.inc()
            if outcome.status != "duplicate":
                self.processor.mark_done(outcome)
            self.metrics.processed.labels(outcome.status).inc()
            log.info(
                "%s upload %s: %s, %d alert(s), %.2fs",
                where, outcome.upload_id, outcome.status, len(outcome.alerts), outcome.seconds,
                extra={**where.ids, "upload_id": outcome.upload_id, "status": outcome.status},
            )  # fmt: skip
            return

    def _dead_letter(self, record, exc: BaseException, attempt: int) -> None:
        headers = [
            ("error_class", type(exc).__name__.encode()),
            ("error_reason", str(exc).encode("utf-8", "replace")[:2000]),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("attempts", str(attempt).encode()),
        ]
        self._publish(self.serve.dlq_topic, record.value or b"", record.key, headers)
        self.metrics.dead_letters.inc()
        self.metrics.processed.labels("dead_letter").inc()

    def _publish(self, topic: str, value: bytes, key, headers=None) -> None:
        """Send and wait for the broker's acknowledgement; retry while the broker is away."""
        key_bytes = key.encode() if isinstance(key, str) else key
        delay = self.serve.backoff_s
        while True:
            try:
                self.producer.send(topic, value=value, key=key_bytes, headers=headers).get(
                    timeout=30
                )
                return
            except Exception as exc:  # KafkaError, timeouts: the broker is unavailable
                if self.stopping.is_set():
                    raise
                log.warning("publishing to %s failed (%s); retrying in %.1fs", topic, exc, delay)
                time.sleep(delay)
                delay = min(self.serve.max_backoff_s, delay * 2)

    def _commit(self, record, where: Where) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        offsets = {
            TopicPartition(record.topic, record.partition): OffsetAndMetadata(
                record.offset + 1, "", -1
            )
        }
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:  # partition moved in a rebalance: redelivered elsewhere
            log.warning(
                "%s commit failed (%s); the upload may be redelivered", where, exc, extra=where.ids
            )


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT. An unreachable broker at start-up is waited for, with backoff."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    processor = UploadProcessor(config)  # fails fast on a bad index or missing allowed roots
    delay = config.serve.backoff_s
    while True:
        try:
            service = KafkaService(config, processor)
            break
        except (KafkaTimeoutError, KafkaConnectionError):
            log.warning(
                "no broker reachable at %s; retrying in %.1fs",
                config.serve.bootstrap_servers,
                delay,
            )
            time.sleep(delay)
            delay = min(config.serve.max_backoff_s, max(delay, 0.1) * 2)
    service.install_signal_handlers()
    service.run()
    return 0
