"""``copyspan query``, ``similar``, ``match`` and ``eval``: find copies and score runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PermanentError
from workers.commands.output import emit, error_result, human_result, make_detector, progress
from workers.inputs import expand_inputs

log = logging.getLogger("copyspan")


def cmd_query(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex
    from pipeline.review.verdicts import Verdicts

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    detector = make_detector(config)
    failures = 0
    segments = []
    from workers.shards import shard_searcher

    searcher = shard_searcher(args.index, config, args.ray_address)
    verdicts = Verdicts.beside(args.index)
    with ReferenceIndex(args.index, create=False, config=config.index, searcher=searcher) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        index.scope(args.bank)  # an unknown bank fails before any file is read
        for path in progress(files, "querying", args.quiet):
            try:
                result = verdicts.apply(detector.query(path, index, banks=args.bank))
            except (PermanentError, OSError) as exc:
                failures += 1
                log.error("%s", exc)
                result = error_result(path, exc)
            segments.extend(result.segment_boxes())
            emit(result.to_dict(), args.json, human_result(result))
    if args.csv:
        from pipeline.metric import write_segments

        write_segments(args.csv, segments)
    return 1 if failures else 0


def cmd_similar(args, config: Config) -> int:
    """Video-level neighbours of each query (coarse retrieval, no alignment)."""
    from pipeline.index import ReferenceIndex

    files = expand_inputs(args.paths)
    detector = make_detector(config)
    failures = 0
    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        index.check_model(detector.embedder.model_id, detector.preprocess)
        for path in progress(files, "describing", args.quiet):
            try:
                query = detector.weigh_generic(detector.describe(path), index)
            except (PermanentError, OSError) as exc:
                failures += 1
                emit({"query": str(path), "error": str(exc)}, args.json, f"{path}: {exc}")
                continue
            similar = detector.similar_videos(query, index, args.top)
            obj = {
                "query": {"id": query.video_id, "path": query.path},
                "similar": [{"reference_id": r.id, "similarity": round(s, 4)} for r, s in similar],
            }
            human = f"{query.video_id}: " + ", ".join(f"{r.id} {s:.3f}" for r, s in similar)
            emit(obj, args.json, human)
    return 1 if failures else 0


def cmd_match(args, config: Config) -> int:
    detector = make_detector(config)
    try:
        result = detector.match(args.query, args.reference)
    except (PermanentError, OSError) as exc:
        log.error("%s", exc)
        result = error_result(Path(args.query), exc)
        emit(result.to_dict(), args.json, human_result(result))
        return 1
    emit(result.to_dict(), args.json, human_result(result))
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
        print(f"  {edit:20s} F1 {row['f1']:.3f}  P {row['precision']:.3f}  R {row['recall']:.3f}"
              f"  µAP {row['segment_ap']:.3f}")  # fmt: skip
    return 0


def register(commands, common) -> None:
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
    query.add_argument("--bank", action="append", help="match only this bank's references "
                       "(repeat for several; default: every enabled bank)")  # fmt: skip
    query.set_defaults(handler=cmd_query)

    match = commands.add_parser("match", parents=[common], help="compare two videos directly")
    match.add_argument("query")
    match.add_argument("reference")
    match.set_defaults(handler=cmd_match)

    evaluation = commands.add_parser("eval", parents=[common], help="segment metric of a run")
    evaluation.add_argument("--gt", required=True, help="ground-truth segment CSV")
    evaluation.add_argument("--pred", required=True, help="predicted segment CSV")
    evaluation.set_defaults(handler=cmd_eval)
