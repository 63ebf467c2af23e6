"""``copyspan index upgrade`` and ``index backfill``: a new model without re-indexing first.

``upgrade`` describes footage with both the index's model (the profile that built it) and the
new configuration, fits a translation from the former descriptors into the new space on the
pairs (pipeline/index/translation.py) and translates the catalog in place: queries of the new
model are served at once, and no reference file is needed. ``backfill`` then describes the
translated references again with the new model, one committed change each, while the index
serves; when none is left the translation is retired.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from pipeline.config import DEFAULT_CONFIG, Config, load_config
from pipeline.errors import PermanentError
from pipeline.index.translation import METHODS
from workers.commands.output import compact_if_due, emit, make_detector, progress
from workers.inputs import expand_inputs

log = logging.getLogger("copyspan")


def index_profile(index, explicit: str | None) -> Config:
    """The configuration that describes frames the way the index's model did: ``explicit``,
    or the first shipped profile (configs/*.yaml, the defaults first) with the index's model
    and frame preparation."""
    from pipeline.describe.describer import preprocess_id

    built = (index.model, index.catalog.meta("preprocess") or "")
    if explicit:
        config = load_config(explicit)
        if (config.embed.model, preprocess_id(config)) != built:
            raise PermanentError(
                f"{explicit} describes with {config.embed.model!r} ({preprocess_id(config)}); "
                f"the index holds {built[0]!r} ({built[1]})"
            )
        return config
    shipped = sorted(p for p in DEFAULT_CONFIG.parent.glob("*.yaml") if p != DEFAULT_CONFIG)
    profiles = [None, *shipped]
    for profile in profiles:
        config = load_config(profile)
        if (config.embed.model, preprocess_id(config)) == built:
            return config
    raise PermanentError(
        f"no shipped profile describes like the index ({built[0]!r}, {built[1]}): "
        "name its configuration with --from-config"
    )


def sample_files(index, extra: list[str], limit: int) -> list[Path]:
    """Footage to fit on: the ``extra`` files, then reference files that are still where they
    were indexed from, spread over the catalog, ``limit`` in all."""
    files = expand_inputs(extra) if extra else []
    refs = [r for r in index.references() if r.path and Path(r.path).is_file()]
    room = max(0, limit - len(files))  # the footage given is always used
    if room and refs:
        step = max(1, len(refs) // room)
        files += [Path(r.path) for r in refs[::step][:room]]
    return files


def dense(config: Config, fps: float) -> Config:
    """``config`` sampling ``fps`` frames a second and embedding every one: the fit needs many
    pairs (a 512 x 512 map), and repeated pictures would only repeat pairs."""
    return dataclasses.replace(
        config,
        decode=dataclasses.replace(config.decode, fps=fps),
        embed=dataclasses.replace(config.embed, reuse_diff=0.0),
    )


def cmd_index_upgrade(args, config: Config) -> int:
    from pipeline.describe.describer import preprocess_id
    from pipeline.errors import CopyspanError
    from pipeline.index import ReferenceIndex
    from pipeline.index.translation import Translation, fit_on_videos

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        if index.model is None:
            raise PermanentError(f"index {args.index} is empty: there is nothing to upgrade")
        old_config = index_profile(index, args.from_config)
        if (config.embed.model, preprocess_id(config)) == (
            old_config.embed.model,
            preprocess_id(old_config),
        ):
            raise PermanentError("the configuration already describes like the index")
        files = sample_files(index, args.sample or [], args.max_videos)
        if not files:
            raise PermanentError(
                "no reference file of the index is reachable: give footage with --sample"
            )
        old, new = (
            make_detector(dense(old_config, args.fps)),
            make_detector(dense(config, args.fps)),
        )
        started = time.perf_counter()
        videos, copies = [], []
        for path in progress(files, "describing with both models", args.quiet):
            try:
                source = old.describe(path, views=False)
                target, edited = new.describe_with_edits(path)  # calibration on copies
            except (CopyspanError, OSError) as exc:
                log.warning("upgrade sample %s skipped: %s", path, exc)
                continue
            videos.append((source, target))
            copies.append(edited)
        if not videos:
            raise PermanentError("none of the sample footage could be described")
        matrix, bias, report = fit_on_videos(videos, args.method, copies)
        report["fit_seconds"] = round(time.perf_counter() - started, 1)
        report["sample"] = [str(p) for p in files]
        translation = Translation(
            source_model=index.model,
            source_preprocess=index.catalog.meta("preprocess") or "",
            target_model=new.embedder.model_id,
            target_preprocess=new.preprocess,
            matrix=matrix,
            bias=bias,
            method=report["method"],
            report=report,
            scale=report["scale"],
        )
        started = time.perf_counter()
        done = index.upgrade(translation)
        report["translate_seconds"] = round(time.perf_counter() - started, 1)
        if done["coded_segments"]:  # coded in the former space: re-encode now
            log.info("re-encoding %d coded segments in the new space", done["coded_segments"])
            index.compact(config.whiten)
    held = report["held_out"]
    summary = {"status": "upgraded", "from": translation.source_model,
               "into": translation.target_model, **done, **report}  # fmt: skip
    emit(summary, args.json, (
        f"upgraded {args.index}: {translation.source_model} -> {translation.target_model}, "
        f"{done['translated']} references translated ({report['method']}, fitted on "
        f"{report['frames']} frames of {report['videos']} videos; held out: similarity r "
        f"{held['similarity_r']}, cosine {held['own_cosine']}); backfill with "
        "`copyspan index backfill`"
    ))  # fmt: skip
    return 0


def cmd_index_backfill(args, config: Config) -> int:
    """Describe translated references again with the index's (new) model, one committed
    change each: resumable, and the index serves throughout."""
    from pipeline.errors import CopyspanError
    from pipeline.index import ReferenceIndex, file_sha256

    with ReferenceIndex(args.index, create=False, config=config.index) as index:
        detector = make_detector(config)
        if index.translation() is None and not index.translated(crops=True):
            emit({"status": "native"}, args.json, f"{args.index}: every reference is native")
            return 0
        index.check_model(detector.embedder.model_id, detector.preprocess)
        if detector.embedder.model_id != index.model:
            raise PermanentError(
                f"backfill describes with the index's model {index.model!r}: pass its "
                "configuration with --config"
            )
        todo = index.translated()[: args.limit] if args.limit else index.translated()
        missing = 0
        for ref in progress(todo, "backfilling", args.quiet):
            obj = {"id": ref.id, "path": ref.path}
            try:
                path = Path(ref.path)
                if not ref.path or not path.is_file():
                    raise PermanentError("file missing: keeps its translated descriptors")
                if file_sha256(path) != ref.sha256:
                    raise PermanentError("file changed since it was indexed: keeps its "
                                         "translated descriptors")  # fmt: skip
                features = detector.describe(path, ref.id, views=False)
                obj["status"] = index.backfill(features, ref.sha256)
            except (CopyspanError, OSError) as exc:
                missing += 1
                obj.update(status="kept", error=str(exc))
            emit(obj, args.json, f"{obj['status']:10s} {ref.id}" +
                 (f"  ({obj['error']})" if "error" in obj else ""))  # fmt: skip
        if index.retire_translation():
            emit({"status": "retired"}, args.json, "every reference is native: translation "
                 f"retired, {index.model} queries only")  # fmt: skip
        compact_if_due(index, args)
    return 1 if missing else 0


def register(index_commands, common) -> None:
    upgrade = index_commands.add_parser(
        "upgrade", parents=[common],
        help="move the index to the model of --config through a fitted translation",
    )  # fmt: skip
    upgrade.add_argument("--index", required=True)
    upgrade.add_argument("--sample", nargs="+", help="footage described by both models "
                         "(needed when no reference file is reachable)")  # fmt: skip
    upgrade.add_argument("--from-config", help="the configuration that built the index "
                         "(default: the shipped profile that matches it)")  # fmt: skip
    upgrade.add_argument("--method", choices=("auto", *METHODS), default="auto")
    upgrade.add_argument("--max-videos", type=int, default=24, help="sample size, in videos")
    upgrade.add_argument("--fps", type=float, default=8.0, help="frames a second sampled to fit")
    upgrade.set_defaults(handler=cmd_index_upgrade)
    backfill = index_commands.add_parser(
        "backfill", parents=[common],
        help="describe translated references again with the index's model (resumable)",
    )  # fmt: skip
    backfill.add_argument("--index", required=True)
    backfill.add_argument("--limit", type=int, default=0, help="at most this many references")
    backfill.set_defaults(handler=cmd_index_backfill)
