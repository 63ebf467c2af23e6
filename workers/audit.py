"""Batch audits and bulk ingest on Ray: bounded, resumable, crash-tolerant.

``copyspan audit PATH|MANIFEST --index DIR --out DIR`` matches a folder (recursive) or a manifest
(CSV or JSONL with ``id,path``) against the index. Finished items are recorded in
``DIR/state.sqlite`` (result and all) the moment they complete, so a killed audit resumes where
it stopped; ``results.jsonl`` (one line per input), ``segments.csv`` and ``summary.json`` are
rewritten atomically from that state, so no input is ever missing or written twice.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import atomic
from pipeline.config import Config
from pipeline.errors import PermanentError, TransientError
from pipeline.index.banks import DEFAULT_BANK
from pipeline.ledger import Ledger
from pipeline.metric import Box, covered_seconds, write_segments
from workers.actors import AlignActor, DecodeActor, EmbedActor, IndexWriterActor
from workers.inputs import expand_inputs
from workers.ray_runtime import init_ray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    # Resumption key: the input as it was named (its path as listed under the audit's folder,
    # or its manifest id and path), never the resolved target: two links to one file, or one
    # file under two manifest ids, are two inputs with two results.
    key: str
    video_id: str
    path: str


class Stages:
    """The actor pools. Ray restarts a dead actor and retries its task; see actors.py."""

    def __init__(
        self,
        config: Config,
        index_dir: str | None = None,
        writer: bool = False,
        sharded: bool = False,
    ):
        import ray

        from workers.shards import RayShards

        cfg = config.ray
        plain = config.to_dict()
        retry = {"max_restarts": cfg.max_restarts, "max_task_retries": cfg.max_task_retries}
        # Two videos at a time per decoder: one decodes while the other waits on the model.
        decode = ray.remote(DecodeActor).options(
            num_cpus=cfg.decoder_cpus, max_concurrency=2, **retry
        )
        embed = ray.remote(EmbedActor).options(
            num_cpus=cfg.embedder_cpus, num_gpus=cfg.embedder_gpus, max_concurrency=64, **retry
        )
        self.decoders = [decode.remote(plain) for _ in range(cfg.decoders)]
        self.embedders = [embed.remote(plain) for _ in range(cfg.embedders)]
        self.aligners = []
        self.shards = None
        if index_dir and not writer:
            # On a cluster the index's shards live in actors of their own (workers/shards.py).
            self.shards = RayShards.start(index_dir, config) if sharded else None
            handles = self.shards.actors if self.shards else None
            align = ray.remote(AlignActor).options(num_cpus=cfg.aligner_cpus, **retry)
            self.aligners = [align.remote(plain, index_dir, handles) for _ in range(cfg.aligners)]
        self.writer = None
        if writer and index_dir:
            write = ray.remote(IndexWriterActor).options(num_cpus=0.1, **retry)
            self.writer = write.remote(index_dir, plain)
        self.turn = 0

    def actors(self) -> list:
        return [
            *self.decoders,
            *self.embedders,
            *self.aligners,
            *([self.writer] if self.writer else []),
            *(self.shards.actors if self.shards else []),
        ]

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Fail clearly, instead of waiting forever, when Ray cannot place the actors."""
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            ray.get([actor.pid.remote() for actor in self.actors()], timeout=timeout)
        except GetTimeoutError as exc:
            raise TransientError(
                f"Ray could not start the workers within {timeout:.0f}s: not enough free CPUs "
                f"for the actors (ray.*_cpus in the config)? {ray.available_resources()}"
            ) from exc

    def close(self) -> None:
        """Kill the actors: their CPUs go back to Ray for the next audit or ingest."""
        import ray

        for actor in self.actors():
            ray.kill(actor)

    def _next(self, pool: list):
        return pool[self.turn % len(pool)]

    def describe(self, item: Item, views: bool = True):
        self.turn += 1
        embedder = self._next(self.embedders)
        return self._next(self.decoders).describe.remote(
            item.key, item.video_id, item.path, views, embedder
        )

    def query(self, item: Item):
        features = self.describe(item)
        return self._next(self.aligners).query.remote(features, item.key, item.video_id, item.path)

    def ingest(self, item: Item, sha256: str, replace: bool, bank: str):
        return self.writer.add.remote(self.describe(item, views=False), sha256, replace, bank)


def iter_inputs(source: str | Path) -> list[Item]:
    """A folder (recursive, video suffixes), a CSV manifest or a JSONL manifest (id, path)."""
    source = Path(source)
    if source.is_dir():
        listed = expand_inputs([str(source)])
        return [Item(os.path.abspath(p), p.stem, str(p)) for p in listed]
    if source.suffix.lower() in (".csv", ".jsonl", ".json"):
        return _manifest(source)
    return [Item(os.path.abspath(source), source.stem, str(source))]


def _manifest(path: Path) -> list[Item]:
    rows: list[dict[str, Any]]
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise PermanentError(f"{path}: malformed JSONL manifest: {exc}") from exc
    items, seen = [], set()
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path"):
            raise PermanentError(f"{path}: row {number} has no path")
        video_id = str(row.get("id") or Path(row["path"]).stem)
        key = f"{video_id}\t{os.path.abspath(row['path'])}"
        if key not in seen:
            seen.add(key)
            items.append(Item(key, video_id, str(row["path"])))
    return items


def _run_bounded(
    stages: Stages, items: list[Item], submit: Callable, on_done: Callable, limit: int, bar
) -> None:
    """Keep at most ``limit`` items in flight; handle results in completion order."""
    import ray
    from ray.exceptions import RayError

    pending: dict[Any, Item] = {}
    queue: Iterator[Item] = iter(items)
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < limit:
            item = next(queue, None)
            if item is None:
                exhausted = True
                break
            pending[submit(item)] = item
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            item = pending.pop(ref)
            try:
                value = ray.get(ref)
            except RayError as exc:  # the actor died on every retry: a poisoned input
                log.error("%s failed in a worker: %s", item.path, type(exc).__name__)
                value = RuntimeError(f"{item.path}: worker crashed ({type(exc).__name__})")
            on_done(item, value)
            bar.update(1)


class Audit:
    def __init__(
        self,
        config: Config,
        index_dir: str,
        out_dir: str | Path,
        address: str | None = None,
        report: bool = True,
    ):
        from pipeline.index import ReferenceIndex

        with ReferenceIndex(index_dir, create=False, config=config.index) as index:  # fail early
            self.model = index.model
        self.config = config
        self.index_dir = index_dir
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = Ledger(self.out / "state.sqlite")
        self.address = address
        self.report = report

    def run(
        self, source: str | Path, progress: bool = True, on_result: Callable | None = None
    ) -> dict:
        """Audit ``source``; the actors live for this call only."""
        init_ray(self.config, self.address)
        sharded = bool(self.address or self.config.ray.address)
        self.stages = Stages(self.config, self.index_dir, sharded=sharded)
        try:
            self.stages.wait_ready()
            summary = self._run(source, progress, on_result)
        finally:
            self.stages.close()
        if self.report:  # the review page (pipeline/review/report/), once the actors are gone
            from pipeline.review.report import write_report

            write_report(self.out)
        return summary

    def _run(self, source: str | Path, progress: bool, on_result: Callable | None) -> dict:
        import ray

        items = iter_inputs(source)
        done_keys = self.state.keys()
        todo = [item for item in items if item.key not in done_keys]
        embedder_model = ray.get(self.stages.embedders[0].model_id.remote())
        if self.model and embedder_model != self.model:
            from pipeline.errors import ModelMismatchError

            raise ModelMismatchError(f"index built with {self.model!r}, not {embedder_model!r}")
        started = time.perf_counter()
        seconds = 0.0

        def on_done(item: Item, value: Any) -> None:
            nonlocal seconds
            if isinstance(value, Exception):
                from pipeline.records import QueryResult

                value = QueryResult(item.video_id, item.path, None, error=str(value)).to_dict()
            value["query"]["id"] = item.video_id
            evidence = value.pop("evidence", None)
            if evidence is not None:  # query descriptors of a match, for the report's heatmaps
                from pipeline.review.report.evidence import evidence_path

                atomic.write_npz(evidence_path(self.out, value["query"]), **evidence)
            status = "failed" if "error" in value else "matched" if value["matches"] else "clean"
            self.state.record(item.key, status, result=value)
            seconds += value["query"].get("duration") or 0.0
            bar.set_postfix(video_s=f"{seconds:.0f}", refresh=False)
            if on_result:
                on_result(item, value)

        with tqdm(
            total=len(todo), desc="audit", unit="video", file=sys.stderr, disable=not progress
        ) as bar:
            _run_bounded(
                self.stages, todo, self.stages.query, on_done, self.config.ray.max_in_flight, bar
            )
        wall = time.perf_counter() - started
        summary = self.write_outputs(items, wall, seconds, skipped=len(items) - len(todo))
        print(json.dumps(summary), file=sys.stderr)
        return summary

    def write_outputs(self, items: list[Item], wall: float, seconds: float, skipped: int) -> dict:
        """results.jsonl, segments.csv and summary.json, rewritten from the state, atomically."""
        lines, boxes, failed, matched, copied = [], [], 0, 0, 0.0
        for item in items:
            entry = self.state.get(item.key)
            if entry is None:
                continue
            result = entry["result"]
            lines.append(json.dumps(result))
            failed += "error" in result
            matched += bool(result["matches"])
            for match in result["matches"]:
                spans = [(s["query_start"], s["query_end"]) for s in match["segments"]]
                copied += covered_seconds(spans)
                for s in match["segments"]:
                    boxes.append(
                        Box(result["query"]["id"], match["reference_id"], s["query_start"],
                            s["query_end"], s["reference_start"], s["reference_end"], s["score"])
                    )  # fmt: skip
        atomic.write_text(self.out / "results.jsonl", "".join(line + "\n" for line in lines))
        write_segments(self.out / "segments.csv", boxes)
        summary = {
            "index": str(Path(self.index_dir).resolve()),
            "inputs": len(items),
            "done": len(lines),
            "skipped_already_done": skipped,
            "matched": matched,
            "failed": failed,
            "copied_seconds": round(copied, 3),
            "wall_seconds": round(wall, 3),
            "video_seconds_this_run": round(seconds, 3),
            "throughput_video_s_per_s": round(seconds / wall, 3) if wall else 0.0,
        }
        atomic.write_json(self.out / "summary.json", summary)
        return summary


def ingest(
    config: Config,
    paths: list[Path],
    index_dir: str,
    replace: bool = False,
    address: str | None = None,
    progress: bool = True,
    on_result: Callable | None = None,
    bank: str = DEFAULT_BANK,
) -> dict[str, str]:
    """Bulk ``index add`` (into ``bank``) on the same actors; one writer actor commits."""
    from pipeline.describe.describer import video_id_for
    from pipeline.index import ReferenceIndex, file_sha256

    plans: list[tuple[Item, str]] = []
    outcomes: dict[str, str] = {}
    with ReferenceIndex(index_dir, config=config.index) as index:
        index.require_bank(bank)  # an unknown bank fails before any file is read
        for path in paths:
            item = Item(str(path.resolve()), video_id_for(path), str(path))
            try:
                sha = file_sha256(path)
                plan = index.plan_add(item.video_id, sha, replace, bank)
            except (PermanentError, OSError) as exc:
                outcomes[item.path] = f"failed: {exc}"
                continue
            if plan in ("unchanged", "duplicate"):
                outcomes[item.path] = plan
            else:
                plans.append((item, sha))
    if not plans:
        return outcomes
    init_ray(config, address)
    stages = Stages(config, index_dir, writer=True)
    shas = {item.key: sha for item, sha in plans}

    def on_done(item: Item, value: Any) -> None:
        outcomes[item.path] = value if isinstance(value, str) else f"failed: {value}"
        if on_result:
            on_result(item, outcomes[item.path])

    with tqdm(
        total=len(plans), desc="ingest", unit="video", file=sys.stderr, disable=not progress
    ) as bar:
        _run_bounded(
            stages, [item for item, _ in plans],
            lambda item: stages.ingest(item, shas[item.key], replace, bank),
            on_done, config.ray.max_in_flight, bar,
        )  # fmt: skip
    return outcomes
