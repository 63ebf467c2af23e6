"""What every command shares: progress bars, result lines on stdout, error results, the
background compaction a change starts."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from pipeline.config import Config
from pipeline.records import QueryResult

log = logging.getLogger("copyspan")


def progress(items: list, what: str, quiet: bool) -> Iterator:
    return iter(
        tqdm(items, desc=what, unit="video", file=sys.stderr, disable=quiet or len(items) < 2)
    )


def emit(obj: dict, as_json: bool, human: str) -> None:
    print(json.dumps(obj) if as_json else human, flush=True)


def human_result(result: QueryResult) -> str:
    if result.error:
        return f"{result.query_path}: ERROR {result.error}"
    if not result.matches:
        return f"{result.query_id}: no copy found"
    lines = [f"{result.query_id}: {len(result.matches)} matching reference(s)"]
    for match in result.matches:
        plain = match.bank in (None, "default") and match.action in (None, "alert")
        bank = "" if plain else f", bank {match.bank}: {match.action}"
        lines.append(f"  {match.reference_id} (score {match.score:.2f}{bank})")
        for s in match.segments:
            lines.append(
                f"    query {s.query_start:7.2f}-{s.query_end:7.2f}s  <-  reference "
                f"{s.reference_start:7.2f}-{s.reference_end:7.2f}s  score {s.score:.2f}"
            )
    return "\n".join(lines)


def error_result(path: Path, exc: Exception) -> QueryResult:
    from pipeline.describe.describer import video_id_for

    return QueryResult(video_id_for(path), str(path), None, error=str(exc))


def make_detector(config: Config):
    from pipeline.detector import CopyDetector

    return CopyDetector(config)


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
            start_new_session=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    log.info("started a background compaction of %s", index.root)
    return True
