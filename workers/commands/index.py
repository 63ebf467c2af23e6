"""``copyspan index ...`` and ``copyspan describe``: build, inspect and maintain the catalog."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import CopyspanError, PermanentError
from pipeline.index.banks import DEFAULT_BANK
from workers.commands import upgrade
from workers.commands.output import compact_if_due, emit, make_detector, progress
from workers.inputs import expand_inputs

log = logging.getLogger("copyspan")

ADD_BATCH = 16  # references committed to the index per transaction
IMPORT_BATCH = 64  # descriptor files committed per transaction by index import


def cmd_index_add(args, config: Config) -> int:
    from pipeline.describe.describer import video_id_for
    from pipeline.index import ReferenceIndex, file_sha256

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    if args.ray or args.ray_address:
        return _index_add_ray(args, config, files)
    detector = make_detector(config)

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
    index.require_bank(args.bank)  # an unknown bank fails before any file is read

    def report(path: Path, video_id: str, status: str, error: str | None = None) -> None:
        obj = {"id": video_id, "path": str(path), "status": status}
        if error:
            obj["error"] = error
        emit(obj, args.json, f"{status:9s} {video_id}  {path}" + (f"  ({error})" if error else ""))

    def flush() -> None:
        items = [(f, sha) for f, sha, _ in pending]
        outcomes = index.add(items, replace=args.replace, bank=args.bank)
        for (features, _, path), outcome in zip(pending, outcomes, strict=True):
            report(path, features.video_id, outcome)
        pending.clear()

    for path in progress(files, what, args.quiet):
        video_id = path.stem
        try:
            video_id, sha, features = source(path)
            if video_id in seen:
                raise PermanentError(f"id {video_id!r} also given by {seen[video_id]}")
            plan = index.plan_add(video_id, sha, args.replace, args.bank) if sha else "add"
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
        emit(obj, args.json, f"{outcome:9s} {item.video_id}  {item.path}")

    outcomes = ingest(
        config, files, args.index, args.replace, args.ray_address, not args.quiet, report,
        args.bank,
    )  # fmt: skip
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0


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
        emit(report, args.json, json.dumps(report))
    return 0


def cmd_index_info(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        info = index.info()
        if args.json:
            info["references_list"] = [
                {"id": r.id, "path": r.path, "duration": r.duration, "frames": r.frames,
                 "bank": r.bank}
                for r in index.references()
            ]  # fmt: skip
            print(json.dumps(info))
        else:
            for key, value in info.items():
                print(f"{key}: {value}")
            for ref in index.references():
                print(f"  {ref.id}  [{ref.bank}]  {ref.duration:.1f}s  {ref.frames} frames  "
                      f"{ref.path}")  # fmt: skip
    return 0


def cmd_index_remove(args, config: Config) -> int:
    from pipeline.index import ReferenceIndex

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        for video_id in index.remove(args.ids, args.bank):
            emit({"id": video_id, "status": "removed"}, args.json, f"removed   {video_id}")
    return 0


def cmd_index_background(args, config: Config) -> int:
    """Replace the index's background set with the frames of the given videos."""
    from pipeline.index import ReferenceIndex

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    detector = make_detector(config)
    described, failures = [], 0
    for path in progress(files, "describing", args.quiet):
        try:
            described.append((path, detector.describe(path, views=False)))
        except (PermanentError, OSError) as exc:
            failures += 1
            emit({"path": str(path), "status": "failed", "error": str(exc)}, args.json,
                  f"failed    {path}: {exc}")  # fmt: skip
    if described:
        with ReferenceIndex(args.index, create=False, config=config.index) as index:
            index.check_model(detector.embedder.model_id, detector.preprocess)
            embeddings = np.concatenate([f.embeddings for _, f in described])
            index.set_background(embeddings, [str(p) for p, _ in described])
        for path, features in described:
            line = f"background {path} ({len(features)} frames)"
            emit({"path": str(path), "status": "background", "frames": len(features)},
                  args.json, line)  # fmt: skip
    return 1 if failures else 0


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
            if index.translation() is not None:  # upgraded: either model's files (translated)
                index.check_model(features.model, features.preprocess)
            elif [features.model, features.preprocess or model[1]] != model:
                raise ModelMismatchError(
                    f"described with model {features.model!r} and frame preparation "
                    f"{features.preprocess!r}; the index holds {model[0]!r} and {model[1]!r}"
                )
            return features.video_id, found.sha256, lambda: features

        return _load(args, index, files, "importing", IMPORT_BATCH, source)


def cmd_describe(args, config: Config) -> int:
    """Descriptor files (pipeline/index/descriptor_file.py), one per video, for bulk import."""
    from pipeline.describe.describer import video_id_for
    from pipeline.index import file_sha256
    from pipeline.index.descriptor_file import write_descriptor_file

    files = expand_inputs(args.paths)
    if not files:
        raise PermanentError("no video files found in the given paths")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = make_detector(config)
    seen: dict[str, Path] = {}
    failures = 0
    for path in progress(files, "describing", args.quiet):
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
        emit(obj, args.json, f"{obj['status']:9s} {video_id}  {path}" +
              (f"  ({obj['error']})" if "error" in obj else ""))  # fmt: skip
    return 1 if failures else 0


def _same_description(target: Path, sha: str, detector) -> bool:
    """Whether ``target`` already describes this content with this model and preparation."""
    from pipeline.describe.crops import crop_count
    from pipeline.index.descriptor_file import DescriptorFileError, read_descriptor_file

    try:
        found = read_descriptor_file(target)
    except DescriptorFileError:
        return False
    features = found.features
    crops = crop_count(detector.config.views)  # an older file may have none
    sound = detector.config.audio.enabled  # ... nor the soundtrack's hashes
    return (found.sha256, features.model, features.preprocess, len(features.crops),
            sound and features.audio is None) == (
        sha, detector.embedder.model_id, detector.preprocess, crops, False,
    )  # fmt: skip


def register(commands, common) -> None:
    index = commands.add_parser("index", help="manage the reference index")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    add = index_commands.add_parser("add", parents=[common], help="add reference videos")
    add.add_argument("paths", nargs="+", help="video files or folders (recursive)")
    add.add_argument("--index", required=True, help="index directory (created if missing)")
    add.add_argument("--replace", action="store_true", help="replace an id's older content")
    add.add_argument("--ray", action="store_true", help="ingest on local Ray actors")
    add.add_argument("--ray-address", help="ingest on an existing Ray cluster")
    add.add_argument("--bank", default=DEFAULT_BANK, help="the bank they go to (default: default)")
    add.set_defaults(handler=cmd_index_add)
    info = index_commands.add_parser("info", parents=[common], help="describe the index")
    info.add_argument("--index", required=True)
    info.set_defaults(handler=cmd_index_info)
    remove = index_commands.add_parser("remove", parents=[common], help="remove references")
    remove.add_argument("ids", nargs="+")
    remove.add_argument("--index", required=True)
    remove.add_argument("--bank", help="only references of this bank (others: unknown)")
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
    import_.add_argument("--bank", default=DEFAULT_BANK, help="the bank they go to")
    import_.set_defaults(handler=cmd_index_import)

    upgrade.register(index_commands, common)

    describe = commands.add_parser(
        "describe", parents=[common], help="write descriptor files for bulk import"
    )
    describe.add_argument("paths", nargs="+", help="video files or folders (recursive)")
    describe.add_argument("--out", required=True, help="folder for the .npz descriptor files")
    describe.set_defaults(handler=cmd_describe)
