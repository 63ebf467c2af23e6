"""The ``copyspan`` command: a thin shell over ``pipeline``.

stdout carries results only (JSON lines with ``--json``); progress, logs and error reasons go to
stderr. Exit status: 0 when every input succeeded, 1 when any input failed (each failure is still
reported in its place and the others go on), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config, load_config
from pipeline.errors import CopyspanError, PermanentError
from pipeline.records import QueryResult
from workers.logs import setup_logging

log = logging.getLogger("copyspan")

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".3gp", ".ogv",
}  # fmt: skip
ADD_BATCH = 16  # references committed to the index per transaction
VERDICT_CHOICES = ("copy", "not_copy", "licensed", "quarantined")  # pipeline/verdicts.py
IMPORT_BATCH = 64  # descriptor files committed per transaction by index import


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders recursively, keeping files with a video suffix."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                )
            )
        else:
            found.append(path)  # a missing file is reported by the decoder, in its place
    return found


def _progress(items: list, what: str, quiet: bool) -> Iterator:
    return iter(
        tqdm(items, desc=what, unit="video", file=sys.stderr, disable=quiet or len(items) < 2)
    )


def _emit(obj: dict, as_json: bool, human: str) -> None:
    print(json.dumps(obj) if as_json else human, flush=True)


def _human_result(result: QueryResult) -> str:
    if result.error:
        return f"{result.query_path}: ERROR {result.error}"
    if not result.matches:
        return f"{result.query_id}: no copy found"
    lines = [f"{result.query_id}: {len(result.matches)} matching reference(s)"]
    for match in result.matches:
        lines.append(f"  {match.reference_id} (score {match.score:.2f})")
        for s in match.segments:
            lines.append(
                f"    query {s.query_start:7.2f}-{s.query_end:7.2f}s  <-  reference "
                f"{s.reference_start:7.2f}-{s.reference_end:7.2f}s  score {s.score:.2f}"
            )
    return "\n".join(lines)


def _error_result(path: Path, exc: Exception) -> QueryResult:
    from pipeline.detector import video_id_for

    return QueryResult(video_id_for(path), str(path), None, error=str(exc))


def _detector(config: Config):
    from pipeline.detector import CopyDetector

    return CopyDetector(config)


def cmd_index_add(args, config: Config) -> int:
    from pipeline.detector import video_id_for
    from pipeline.index import ReferenceIndex, file_sha256

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    if args.ray or args.ray_address:
        return _index_add_ray(args, config, files)
    detector = _detector(config)

    def source(path: Path):
        sha = file_sha256(path) if path.is_file() else ""  # a missing file fails on decode
        return video_id_for(path), sha, lambda: detector.describe(path, views=False)

    with ReferenceIndex(args.index, config=config.index) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        return _load(args, index, files, "indexing", ADD_BATCH, source)


def _load(args, index, files: list[Path], what: str, batch: int, source) -> int:
    """Add ``files`` to ``index`` in batches, one status line each (index add and import).
    ``source(path)`` -> (id, content hash, a function that makes the features), or raises."""
    pending: list[tuple] = []
    seen: dict[str, Path] = {}
    failures = 0

    def report(path: Path, video_id: str, status: str, error: str | None = None) -> None:
        obj = {"id": video_id, "path": str(path), "status": status}
        if error:
            obj["error"] = error
        _emit(obj, args.json, f"{status:9s} {video_id}  {path}" + (f"  ({error})" if error else ""))

    def flush() -> None:
        outcomes = index.add([(f, sha) for f, sha, _ in pending], replace=args.replace)
        for (features, _, path), outcome in zip(pending, outcomes, strict=True):
            report(path, features.video_id, outcome)
        pending.clear()

    for path in _progress(files, what, args.quiet):
        video_id = path.stem
        try:
            video_id, sha, features = source(path)
            if video_id in seen:
                raise PermanentError(f"id {video_id!r} also given by {seen[video_id]}")
            plan = index.plan_add(video_id, sha, args.replace) if sha else "add"
            if plan in ("unchanged", "duplicate"):  # nothing is decoded or written
                report(path, video_id, plan)
                continue
            seen[video_id] = path
            pending.append((features(), sha, path))
            if len(pending) >= batch:
                flush()
        except (CopyspanError, OSError) as exc:
            failures += 1
            log.error("%s", exc)
            report(path, video_id, "failed", str(exc))
    flush()
    print(json.dumps(index.info()), file=sys.stderr)
    compact_if_due(index, args)
    return 1 if failures else 0


def _index_add_ray(args, config: Config, files: list[Path]) -> int:
    from workers.audit import ingest

    def report(item, outcome: str) -> None:
        status, _, error = outcome.partition(": ")
        obj = {"id": item.video_id, "path": item.path, "status": status}
        if error:
            obj["error"] = error
        _emit(obj, args.json, f"{outcome:9s} {item.video_id}  {item.path}")

    outcomes = ingest(
        config, files, args.index, args.replace, args.ray_address, not args.quiet, report
    )
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0


def compact_if_due(index, args) -> bool:
    """Start ``copyspan index compact --if-due`` as a detached process when the index has work
    for it (index.auto_compact): adding returns at once and the merge runs in the background,
    logging to DIR/compaction.log. Returns whether one was started."""
    config = index.config
    if not config.auto_compact or not index.compaction_due():
        return False
    command = [sys.executable, "-m", "workers.cli", "index", "compact", "--if-due", "-q",
               "--index", str(index.root)]  # fmt: skip
    if getattr(args, "config", None):
        command += ["--config", str(Path(args.config).resolve())]
    with open(index.root / "compaction.log", "ab") as logfile:
        subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
            start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    log.info("started a background compaction of %s", index.root)
    return True


def cmd_index_compact(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex
    from pipeline.index.compaction import CompactionBusy

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        if args.if_due and not index.compaction_due():
            return 0
        try:
            report = index.compact(config.whiten, full=not args.if_due, wait=not args.if_due)
        except CompactionBusy as exc:  # --if-due: the running one will do it
            log.info("%s", exc)
            return 0
        _emit(report, args.json, json.dumps(report))
    return 0


def cmd_describe(args, config: Config) -> int:
    """Descriptor files (pipeline/index/descriptor_file.py), one per video, for bulk import."""
    from pipeline.detector import video_id_for
    from pipeline.index import file_sha256
    from pipeline.index.descriptor_file import write_descriptor_file

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = _detector(config)
    seen: dict[str, Path] = {}
    failures = 0
    for path in _progress(files, "describing", args.quiet):
        video_id = video_id_for(path)
        target = out / f"{video_id}.npz"
        obj = {"id": video_id, "path": str(path), "file": str(target)}
        try:
            if video_id in seen:
                raise PermanentError(f"id {video_id!r} also given by {seen[video_id]}")
            seen[video_id] = path
            sha = file_sha256(path) if path.is_file() else ""
            if target.exists() and _same_description(target, sha, detector):
                obj["status"] = "unchanged"
            else:
                features = detector.describe(path, video_id, views=False)
                write_descriptor_file(target, features, sha)
                obj.update(status="described", frames=len(features))
        except (CopyspanError, OSError) as exc:
            failures += 1
            log.error("%s", exc)
            obj.update(status="failed", error=str(exc))
        _emit(obj, args.json, f"{obj['status']:9s} {video_id}  {path}" +
              (f"  ({obj['error']})" if "error" in obj else ""))  # fmt: skip
    return 1 if failures else 0


def _same_description(target: Path, sha: str, detector) -> bool:
    """Whether ``target`` already describes this content with this model and preparation."""
    from pipeline.index.descriptor_file import DescriptorFileError, read_descriptor_file

    try:
        found = read_descriptor_file(target)
    except DescriptorFileError:
        return False
    features = found.features
    return (found.sha256, features.model, features.preprocess) == (
        sha, detector.embedder.model_id, detector.preprocess,
    )  # fmt: skip


def cmd_index_import(args, config: Config) -> int:
    """Load descriptor files into the index: the same segments and outcomes as ``index add``."""
    from pipeline.errors import ModelMismatchError
    from pipeline.index import ReferenceIndex
    from pipeline.index.descriptor_file import read_descriptor_file

    files = sorted(
        p for raw in args.dirs for p in ([Path(raw)] if Path(raw).is_file() else
                                         Path(raw).rglob("*.npz"))
    )  # fmt: skip
    if not files:
        raise PermanentError("no descriptor files (.npz) found in the given paths")
    with ReferenceIndex(args.index, config=config.index) as index:
        model = [index.model, index.catalog.meta("preprocess")]

        def source(path: Path):
            found = read_descriptor_file(path)
            features = found.features
            if model[0] is None:  # an empty index takes the first file's model
                model[:] = [features.model, features.preprocess]
            if [features.model, features.preprocess or model[1]] != model:
                raise ModelMismatchError(
                    f"described with model {features.model!r} and frame preparation "
                    f"{features.preprocess!r}; the index holds {model[0]!r} and {model[1]!r}"
                )
            return features.video_id, found.sha256, lambda: features

        return _load(args, index, files, "importing", IMPORT_BATCH, source)


def cmd_live(args, config: Config) -> int:
    """Follow a live HLS playlist on disk and alert as copies air (pipeline/streaming/live.py)."""
    from pipeline.index import ReferenceIndex
    from pipeline.streaming.live import LiveStream

    playlist = Path(args.source)
    if not playlist.exists():
        raise PermanentError(f"{playlist}: no such playlist")
    name = args.name or playlist.stem
    state = Path(args.state) if args.state else playlist.parent / f".copyspan-live-{name}.json"
    producer = None
    if args.bootstrap_servers:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all")
    detector = _detector(config)

    def emit(alert: dict) -> None:
        if producer is not None:
            producer.send(args.alerts_topic, json.dumps(alert).encode(), key=name.encode()).get(30)
        segments = ", ".join(
            f"{s['query_start']:.1f}-{s['query_end']:.1f}s <- {s['reference_start']:.1f}-"
            f"{s['reference_end']:.1f}s" for s in alert["segments"]
        )  # fmt: skip
        _emit(alert, args.json, f"{name}: copy of {alert['reference_id']} ({segments})")

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        LiveStream(detector, index, playlist, state, name).run(emit)
    if producer is not None:
        producer.close(timeout=10)
    return 0


def cmd_report(args, config: Config) -> int:
    from pipeline.report import write_report

    out = Path(args.audit_out)
    if not (out / "results.jsonl").exists():
        raise PermanentError(f"{out} holds no audit (results.jsonl)")
    target = write_report(out, args.html)
    _emit({"report": str(target)}, args.json, str(target))
    return 0


def cmd_review(args, config: Config) -> int:
    """Record (mark) or show (list) reviewers' verdicts, kept beside the index."""
    import getpass

    from pipeline.verdicts import Verdicts

    verdicts = Verdicts.beside(args.index)
    try:
        if args.review_command == "mark":
            span = tuple(args.reference_span) if args.reference_span else None
            sha = args.sha256 or _audited_sha(args.audit, args.query_id)
            verdict = verdicts.mark(args.query_id, args.reference_id, args.verdict, args.note,
                                    args.by or getpass.getuser(), sha, span)  # fmt: skip
            _emit(verdict.to_dict(), args.json,
                  f"{verdict.verdict}: {verdict.query_id} / {verdict.reference_id}")  # fmt: skip
            return 0
        for verdict in verdicts.list(args.reference_id, args.query_id):
            line = (f"{verdict.at}  {verdict.verdict:11s} {verdict.query_id} / "
                    f"{verdict.reference_id}  by {verdict.by}  {verdict.note}")  # fmt: skip
            _emit(verdict.to_dict(), args.json, line)
        return 0
    finally:
        verdicts.close()


def _audited_sha(audit: str | None, query_id: str) -> str | None:
    """The content hash an audit recorded for ``query_id`` (None: not audited, or no hash)."""
    if not audit:
        return None
    for line in (Path(audit) / "results.jsonl").read_text().splitlines():
        query = json.loads(line)["query"]
        if query["id"] == query_id:
            return query.get("sha256")
    raise PermanentError(f"no input {query_id!r} in the audit {audit}")


def cmd_api(args, config: Config) -> int:
    from workers.api import serve_api

    roots = [str(Path(root).resolve()) for root in args.allowed_root or []]
    return serve_api(config, args.index, roots, args.token_file, args.host, args.port, args.audit,
                     args.no_auth)  # fmt: skip


def cmd_audit(args, config: Config) -> int:
    from workers.audit import Audit

    audit = Audit(config, args.index, args.out, args.ray_address, report=not args.no_report)
    summary = audit.run(args.source, progress=not args.quiet)
    return 1 if summary["failed"] else 0


def cmd_index_info(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        info = index.info()
        if args.json:
            info["references_list"] = [
                {"id": r.id, "path": r.path, "duration": r.duration, "frames": r.frames}
                for r in index.references()
            ]
            print(json.dumps(info))
        else:
            for key, value in info.items():
                print(f"{key}: {value}")
            for ref in index.references():
                print(f"  {ref.id}  {ref.duration:.1f}s  {ref.frames} frames  {ref.path}")
    return 0


def cmd_index_remove(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        for video_id in index.remove(args.ids):
            _emit({"id": video_id, "status": "removed"}, args.json, f"removed   {video_id}")
    return 0


def cmd_index_background(args, config: Config) -> int:
    """Replace the index's background set with the frames of the given videos."""
    from pipeline.index import ReferenceIndex

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    detector = _detector(config)
    described, failures = [], 0
    for path in _progress(files, "describing", args.quiet):
        try:
            described.append((path, detector.describe(path, views=False)))
        except (PermanentError, OSError) as exc:
            failures += 1
            _emit({"path": str(path), "status": "failed", "error": str(exc)}, args.json,
                  f"failed    {path}: {exc}")  # fmt: skip
    if described:
        with ReferenceIndex(args.index, create=False, config=config.index) as index:
            index.check_model(detector.embedder.model_id, detector.preprocess)
            embeddings = np.concatenate([f.embeddings for _, f in described])
            index.set_background(embeddings, [str(p) for p, _ in described])
        for path, features in described:
            line = f"background {path} ({len(features)} frames)"
            _emit({"path": str(path), "status": "background", "frames": len(features)},
                  args.json, line)  # fmt: skip
    return 1 if failures else 0


def cmd_similar(args, config: Config) -> int:
    """Video-level neighbours of each query (coarse retrieval, no alignment)."""
    from pipeline.index import ReferenceIndex

    files = expand_inputs(args.paths)
    detector = _detector(config)
    failures = 0
    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        for path in _progress(files, "describing", args.quiet):
            try:
                query = detector.weigh_generic(detector.describe(path), index)
            except (PermanentError, OSError) as exc:
                failures += 1
                _emit({"query": str(path), "error": str(exc)}, args.json, f"{path}: {exc}")
                continue
            similar = detector.similar_videos(query, index, args.top)
            obj = {
                "query": {"id": query.video_id, "path": query.path},
                "similar": [{"reference_id": r.id, "similarity": round(s, 4)} for r, s in similar],
            }
            human = f"{query.video_id}: " + ", ".join(f"{r.id} {s:.3f}" for r, s in similar)
            _emit(obj, args.json, human)
    return 1 if failures else 0


def cmd_query(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex
    from pipeline.verdicts import Verdicts

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    detector = _detector(config)
    failures = 0
    segments = []
    from workers.shards import shard_searcher

    searcher = shard_searcher(args.index, config, args.ray_address)
    verdicts = Verdicts.beside(args.index)
    with ReferenceIndex(args.index, create=False, config=config.index, searcher=searcher) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        for path in _progress(files, "querying", args.quiet):
            try:
                result = verdicts.apply(detector.query(path, index))
            except (PermanentError, OSError) as exc:
                failures += 1
                log.error("%s", exc)
                result = _error_result(path, exc)
            segments.extend(result.segment_boxes())
            _emit(result.to_dict(), args.json, _human_result(result))
    if args.csv:
        from pipeline.metric import write_segments

        write_segments(args.csv, segments)
    return 1 if failures else 0


def cmd_match(args, config: Config) -> int:
    detector = _detector(config)
    try:
        result = detector.match(args.query, args.reference)
    except (PermanentError, OSError) as exc:
        log.error("%s", exc)
        result = _error_result(Path(args.query), exc)
        _emit(result.to_dict(), args.json, _human_result(result))
        return 1
    _emit(result.to_dict(), args.json, _human_result(result))
    return 0


def cmd_eval(args, config: Config) -> int:
    from pipeline.metric import evaluate, read_segments

    figures = evaluate(read_segments(args.gt), read_segments(args.pred))
    if args.json:
        print(json.dumps(figures))
        return 0
    for key, value in figures.items():
        if key != "per_edit":
            print(f"{key:40s} {value:.4f}" if isinstance(value, float) else f"{key:40s} {value}")
    for edit, row in figures.get("per_edit", {}).items():
        print(f"  {edit:20s} F1 {row['f1']:.3f}  P {row['precision']:.3f}  R {row['recall']:.3f}")
    return 0


SERVE_FLAGS = (
    "bootstrap_servers", "uploads_topic", "alerts_topic", "dlq_topic", "group_id", "index",
    "state_dir", "metrics_port",
)  # fmt: skip


def serve_overrides(args) -> dict:
    """Flags given on the command line win over the config file."""
    serve = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
    if args.allowed_root:
        serve["allowed_roots"] = [str(Path(root).resolve()) for root in args.allowed_root]
    if args.index_unmatched:
        serve["index_unmatched"] = True
    overrides: dict = {"serve": serve} if serve else {}
    if args.ray_address:
        overrides["ray"] = {"address": args.ray_address}
    return overrides


def cmd_serve(args, config: Config) -> int:
    from workers.service import serve

    config = load_config(args.config, serve_overrides(args))
    return serve(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="copyspan", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML file merged over configs/default.yaml")
    common.add_argument("--json", action="store_true", help="JSON lines on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="manage the reference index")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    add = index_commands.add_parser("add", parents=[common], help="add reference videos")
    add.add_argument("paths", nargs="+", help="video files or folders (recursive)")
    add.add_argument("--index", required=True, help="index directory (created if missing)")
    add.add_argument("--replace", action="store_true", help="replace an id's older content")
    add.add_argument("--ray", action="store_true", help="ingest on local Ray actors")
    add.add_argument("--ray-address", help="ingest on an existing Ray cluster")
    add.set_defaults(handler=cmd_index_add)
    info = index_commands.add_parser("info", parents=[common], help="describe the index")
    info.add_argument("--index", required=True)
    info.set_defaults(handler=cmd_index_info)
    remove = index_commands.add_parser("remove", parents=[common], help="remove references")
    remove.add_argument("ids", nargs="+")
    remove.add_argument("--index", required=True)
    remove.set_defaults(handler=cmd_index_remove)
    background = index_commands.add_parser(
        "background", parents=[common], help="set background footage (generic-frame weights)"
    )
    background.add_argument("paths", nargs="+", help="video files or folders: not references")
    background.add_argument("--index", required=True)
    background.set_defaults(handler=cmd_index_background)

    compact = index_commands.add_parser(
        "compact", parents=[common], help="merge segments, drop removed references"
    )
    compact.add_argument("--index", required=True)
    compact.add_argument(
        "--if-due", action="store_true", help="only when due; skip if one is running (background)"
    )
    compact.set_defaults(handler=cmd_index_compact)
    import_ = index_commands.add_parser(
        "import", parents=[common], help="load descriptor files (copyspan describe)"
    )
    import_.add_argument("dirs", nargs="+", help="folders of .npz descriptor files, or files")
    import_.add_argument("--index", required=True, help="index directory (created if missing)")
    import_.add_argument("--replace", action="store_true", help="replace an id's older content")
    import_.set_defaults(handler=cmd_index_import)

    describe = commands.add_parser(
        "describe", parents=[common], help="write descriptor files for bulk import"
    )
    describe.add_argument("paths", nargs="+", help="video files or folders (recursive)")
    describe.add_argument("--out", required=True, help="folder for the .npz descriptor files")
    describe.set_defaults(handler=cmd_describe)

    similar = commands.add_parser("similar", parents=[common], help="video-level neighbours")
    similar.add_argument("paths", nargs="+", help="query video files or folders")
    similar.add_argument("--index", required=True)
    similar.add_argument("--top", type=int, default=10, help="neighbours per query")
    similar.set_defaults(handler=cmd_similar)

    query = commands.add_parser("query", parents=[common], help="find copies of references")
    query.add_argument("paths", nargs="+", help="query video files or folders")
    query.add_argument("--index", required=True)
    query.add_argument("--csv", help="also write every segment to this segment CSV (for eval)")
    query.add_argument("--ray-address", help="search the index's shards on this Ray cluster")
    query.set_defaults(handler=cmd_query)

    match = commands.add_parser("match", parents=[common], help="compare two videos directly")
    match.add_argument("query")
    match.add_argument("reference")
    match.set_defaults(handler=cmd_match)

    evaluation = commands.add_parser("eval", parents=[common], help="segment metric of a run")
    evaluation.add_argument("--gt", required=True, help="ground-truth segment CSV")
    evaluation.add_argument("--pred", required=True, help="predicted segment CSV")
    evaluation.set_defaults(handler=cmd_eval)

    live = commands.add_parser("live", parents=[common], help="follow a live HLS playlist")
    live.add_argument("source", help="an .m3u8 playlist on local disk, written as it airs")
    live.add_argument("--index", required=True)
    live.add_argument("--name", help="the stream's id in alerts (default: the playlist's stem)")
    live.add_argument("--state", help="progress file (default: beside the playlist)")
    live.add_argument("--bootstrap-servers", help="also publish alerts to Kafka")
    live.add_argument("--alerts-topic", default="copy-alerts")
    live.set_defaults(handler=cmd_live)

    audit = commands.add_parser("audit", parents=[common], help="resumable batch audit on Ray")
    audit.add_argument("source", help="a folder (recursive) or a manifest (.csv/.jsonl: id,path)")
    audit.add_argument("--index", required=True)
    audit.add_argument("--out", required=True, help="results.jsonl, segments.csv, summary.json")
    audit.add_argument("--ray-address", help="an existing Ray cluster (default: local Ray)")
    audit.add_argument("--no-report", action="store_true", help="skip OUT/report.html")
    audit.set_defaults(handler=cmd_audit)

    api = commands.add_parser("api", parents=[common], help="the HTTP API")
    api.add_argument("--index", required=True)
    api.add_argument("--allowed-root", action="append", help="repeatable")
    api.add_argument("--token-file", help="file holding the bearer token of /v1/ routes")
    api.add_argument("--no-auth", action="store_true", help="no token (loopback host only)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--audit", help="an audit's --out folder, served for review at /review")
    api.set_defaults(handler=cmd_api)

    report = commands.add_parser("report", parents=[common], help="HTML review page of an audit")
    report.add_argument("audit_out", help="the audit's --out folder")
    report.add_argument("--html", help="where to write it (default AUDIT_OUT/report.html)")
    report.set_defaults(handler=cmd_report)

    review = commands.add_parser("review", help="reviewers' verdicts on matches")
    review_commands = review.add_subparsers(dest="review_command", required=True)
    mark = review_commands.add_parser("mark", parents=[common], help="record a verdict")
    mark.add_argument("query_id", help="the upload's id, or '*' for the whole reference")
    mark.add_argument("reference_id")
    mark.add_argument("--verdict", required=True, choices=VERDICT_CHOICES)
    mark.add_argument("--note", default="")
    mark.add_argument("--by", help="who (default: the user)")
    mark.add_argument("--index", required=True)
    mark.add_argument("--sha256", help="the upload's content hash (else from --audit)")
    mark.add_argument("--audit", help="an audit's --out folder holding the upload")
    mark.add_argument("--reference-span", nargs=2, type=float, metavar=("START", "END"),
                      help="licensed: only this span of the reference (seconds)")  # fmt: skip
    mark.set_defaults(handler=cmd_review)
    listing = review_commands.add_parser("list", parents=[common], help="show verdicts")
    listing.add_argument("--index", required=True)
    listing.add_argument("--reference-id")
    listing.add_argument("--query-id")
    listing.set_defaults(handler=cmd_review)

    service = commands.add_parser("serve", parents=[common], help="the Kafka service")
    for name in SERVE_FLAGS:
        flag = "--" + name.replace("_", "-")
        service.add_argument(flag, dest=name, type=int if name == "metrics_port" else str)
    service.add_argument("--allowed-root", action="append", help="repeatable")
    service.add_argument("--index-unmatched", action="store_true", help="index unmatched uploads")
    service.add_argument("--ray-address", help="search the index's shards on this Ray cluster")
    service.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    service = args.command == "serve"  # a service logs its work, as JSON lines
    levels = [logging.INFO if service else logging.WARNING, logging.INFO, logging.DEBUG]
    setup_logging(levels[min(args.verbose, 2)], structured=service)
    try:
        config = load_config(args.config)
        return args.handler(args, config)
    except CopyspanError as exc:
        print(f"copyspan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
