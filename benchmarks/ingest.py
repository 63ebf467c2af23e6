"""Bulk ingest of 720p H.264 footage against decoding it, in one run.

    python -m benchmarks.ingest   # the "ingest 720p" section of results/throughput.md

Footage: 12 one-minute 720p 25 fps H.264 videos re-cut from the real clips (excerpts of 3-12 s
with the streaming benchmark's looks: flips, hue, contrast, crops), rendered once into
``data/ingest-720p/``. Timings of the same files:

* decode-only as the throughput issue defines it: PyAV decoding every frame, threaded on all
  cores, nothing else;
* decode-only with copyspan's own decoder and sampling (decord at 288 px, 2 fps);
* ``copyspan index add DIR --index NEW`` in a fresh process: start-up, decoding, frame
  preparation, the model and writing the index, all included; and the same without the
  reference crops (``views.reference_grid: 0``), what they cost.

Ratios are video seconds per wall second against the first; the median of ``--repeat`` runs
of each (this machine is shared).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.long import HD
from benchmarks.run import REPO, decode_only, publish, section_header, videos
from benchmarks.stream import recut
from pipeline.config import load_config

DATA = REPO / "data" / "ingest-720p"


def build(out: Path, count: int = 12, seed: int = 7) -> list[Path]:
    """``count`` one-minute 720p videos of re-cut real footage (rendered once, then kept)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"hd{number:02d}.mp4" for number in range(count)]
    recut(paths, random.Random(seed), HD)
    return paths


def pyav_every_frame(paths: list[Path]) -> float:
    """Wall seconds to decode every frame of ``paths`` with PyAV on all cores."""
    import av

    started = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass
    return time.perf_counter() - started


def index_add(folder: Path, *options: str) -> float:
    """Wall seconds of ``copyspan index add`` of ``folder`` into a new index, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).parent / "copyspan"), "index", "add", str(folder),
                   "--index", str(Path(tmp) / "index"), "-q", *options]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"copyspan index add failed: {done.stderr[-2000:]}")
        return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    build(DATA)
    paths = videos(DATA)
    config = load_config()
    runs: dict[str, list[float]] = {"pyav": [], "sampled": [], "ingest": [], "no_crops": []}
    seconds = 0.0
    no_crops = Path(tempfile.mkdtemp()) / "no-crops.yaml"
    no_crops.write_text("views:\n  reference_grid: 0\n")
    for _ in range(args.repeat):  # interleaved: a slow spell of the machine hits them all
        runs["pyav"].append(pyav_every_frame(paths))
        seconds, wall = decode_only(paths, config)
        runs["sampled"].append(wall)
        runs["ingest"].append(index_add(DATA))
        runs["no_crops"].append(index_add(DATA, "--config", str(no_crops)))
        print({k: round(v[-1], 2) for k, v in runs.items()}, file=sys.stderr, flush=True)
    wall = {name: statistics.median(values) for name, values in runs.items()}
    rows = [
        ("decode-only: PyAV, every frame, all cores", wall["pyav"]),
        ("decode-only: copyspan's decoder and sampling (decord, 288 px, 2 fps)", wall["sampled"]),
        ("`copyspan index add` (a fresh process: start-up, model, index writes)", wall["ingest"]),
        ("the same without reference crops (`views.reference_grid: 0`)", wall["no_crops"]),
    ]
    tag = "ingest 720p"
    command = "python -m benchmarks.ingest" + (f" --repeat {args.repeat}" * (args.repeat != 3))
    lines = [
        *section_header(tag, command),
        "",
        f"Files: {len(paths)} videos, {seconds:.0f} s of 720p 25 fps H.264 (real clips re-cut). "
        f"Median of {args.repeat} interleaved runs. Model `{config.embed.model}`.",
        "",
        "| path | wall s | video s / s | vs PyAV decode-only |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {s:.1f} | {seconds / s:.1f} | {wall['pyav'] / s:.2f} |" for name, s in rows),
        "",
        f"<!-- /bench:{tag} -->",
    ]
    publish(tag, "\n".join(lines), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
