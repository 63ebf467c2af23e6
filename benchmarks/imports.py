"""Bulk imports as a user runs them: two imports back to back, queries right after.

    python -m benchmarks.imports --seed 2     # two imports of ~0.5 M frames each (~10 min)

The catalog starts as the seed-2 real references (``copyspan index import`` of their
descriptor files); then two ``copyspan index import`` calls of about 500,000 synthetic
distractor frames each (descriptor files in the documented format, made as the scale
benchmark makes them: benchmarks/scale.py), one right after the other, each starting its
background compaction the way every import does. Measured in one run: each import's wall; the
time from the end of the last import until ``index info`` shows no compaction running and none
due; the seed-2 queries in a fresh process started right after the last import, and again once
the catalog is compacted, beside the same queries against the real references alone: wall per
30 s of query video, peak RSS, F1, pair recall and false-alarm pairs.

Writes the "bulk imports" section of benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.build_dataset import build
from benchmarks.run import REPO, machine, update_results, videos
from benchmarks.scale import (
    DISTRACTOR_FRAMES,
    described,
    distractor,
    distractor_model,
    run_queries,
    score,
)
from pipeline.index import ReferenceIndex
from pipeline.index.descriptor_file import write_descriptor_file

log = logging.getLogger(__name__)


def distractor_files(model, folder: Path, first: int, count: int, seed: int, like) -> None:
    """``count`` distractor descriptor files numbered from ``first`` (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(first, first + count):
        target = folder / f"distractor-{number:06d}.npz"
        if not target.exists():
            write_descriptor_file(target, distractor(model, number, seed, like), f"d{number}")


def copyspan(*args: str) -> float:
    """Run one ``copyspan`` command as a user would; its wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "workers.cli", *args, "-q"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def settled(root: Path) -> tuple[bool, dict]:
    """Whether no compaction is running and none is due; the segment counts."""
    with ReferenceIndex(root, create=False) as index:
        info = index.info()
    return not info["compaction"]["running"] and not info["compaction_due"], info["segments"]


def watch_compaction(root: Path, started: float, out: dict) -> None:
    """Poll until the catalog is settled; record when (seconds after ``started``)."""
    while True:
        done, segments = settled(root)
        if done:
            out.update(compacted_after_s=time.perf_counter() - started, segments=segments)
            return
        if time.perf_counter() - started > out["give_up_s"]:
            out.update(compacted_after_s=None, segments=segments)
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--per-import", type=int, default=420, help="10-min distractors each")
    parser.add_argument("--give-up", type=float, default=1800, help="seconds to wait")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "gt.csv").exists():
        build(args.seed, data)
    work = REPO / "data" / f"imports-seed{args.seed}"
    queries = videos(data / "queries")
    refs = described(videos(data / "references"), work / "references")
    like = next(iter(refs.values()))
    model, _ = distractor_model(work)
    batches = [work / "import-a", work / "import-b"]
    for i, folder in enumerate(batches):
        log.info("distractor descriptor files in %s", folder)
        distractor_files(model, folder, i * args.per_import, args.per_import, args.seed, like)

    small, catalog = work / "small", work / "catalog"
    for root in (small, catalog):
        shutil.rmtree(root, ignore_errors=True)
        copyspan("index", "import", str(work / "references"), "--index", str(root))
    log.info("querying the real references alone")
    rows = {"real references only": score(run_queries(small, queries, work), data / "gt.csv",
                                          work)}  # fmt: skip
    walls = [copyspan("index", "import", str(folder), "--index", str(catalog))
             for folder in batches]  # fmt: skip
    imported = time.perf_counter()
    segments = {"right after the imports": settled(catalog)[1]}
    watch = {"give_up_s": args.give_up}
    watcher = threading.Thread(target=watch_compaction, args=(catalog, imported, watch))
    watcher.start()
    log.info("querying right after the last import")
    rows["right after the imports"] = score(run_queries(catalog, queries, work),
                                            data / "gt.csv", work)  # fmt: skip
    watcher.join()
    log.info("compacted %s s after the last import: %s", watch["compacted_after_s"], watch)
    rows["once compacted"] = score(run_queries(catalog, queries, work), data / "gt.csv", work)
    with ReferenceIndex(catalog, create=False) as index:
        info = index.info()
    segments["once compacted"] = watch["segments"]
    markdown = render(args, walls, watch, rows, segments, info)
    print(markdown)
    if not args.no_write:
        update_results("bulk imports", markdown)
    return 0


def render(args, walls: list[float], watch: dict, rows: dict, segments: dict, info: dict) -> str:
    frames = args.per_import * DISTRACTOR_FRAMES
    after = watch["compacted_after_s"]
    base = rows["real references only"]["wall_per_30s"]
    command = "python -m benchmarks.imports" + (f" --seed {args.seed}" if args.seed != 2 else "")
    lines = [
        "<!-- bench:bulk imports -->",
        "### Bulk imports back to back, queries right after",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Imports: {frames:,} distractor frames each ({args.per_import} descriptor files), "
        f"{walls[0]:.1f} s and {walls[1]:.1f} s; the catalog then holds {info['frames']:,} "
        f"frames ({info['structure']['factory'] if info['structure']['kind'] != 'flat' else 'flat'}"
        f"). From the end of the last import to fully compacted (nothing running, nothing "
        f"due, no command run by hand): **{after:.1f} s**."
        if after is not None
        else f"Not compacted {args.give_up:.0f} s after the last import.",
        "",
        "| catalog | segments (flat / coded) | query s per 30 s | x real references only | "
        "peak RSS GB | F1 | pair R | false-alarm pairs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        held = segments.get(name)
        shown = f"{held['flat']} / {held['coded']}" if held else ""
        lines.append(
            f"| {name} | {shown} | {row['wall_per_30s']:.2f} | {row['wall_per_30s'] / base:.2f} "
            f"| {row['rss_gb']:.2f} | {row['f1']:.3f} | {row['pair_recall']:.3f} "
            f"| {row['false_alarm_pairs']} |"
        )
    lines += [
        "",
        "The queries right after the imports overlap the background compaction on the same two "
        "cores, so they pay for it; the last row is the catalog a long-running reader serves "
        "from once compaction is done (readers follow the compacted generation: no restart).",
        "",
        "<!-- /bench:bulk imports -->",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
