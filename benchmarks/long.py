"""Long uploads: memory against duration, and how soon a copy in a long upload is alerted.

    python -m benchmarks.long                          # 15 min, 1 h, 4 h; then the early alert
    python -m benchmarks.long --durations 900 --no-early
    python -m benchmarks.long --wait-final             # the early run also times the final alert

* **Memory**: ``copyspan query`` with the default config on 720p uploads of 15 minutes, 1 hour
  and 4 hours against the seed-2 references: peak resident memory of the process (VmHWM),
  wall time, what it found. Each upload is a minute of unrelated footage, a 30-s copy of a
  reference (``vtest``, brightened), then unrelated real footage looped to length (real clips
  and photos held out of the references).
* **Early alert**: the real ``copyspan serve`` against a real Kafka-protocol broker (Tansu);
  the 60-minute upload is sent once the service has joined its group; seconds from sending
  it to its first alert (the copy sits in its second minute) and, with ``--wait-final``, to its
  final alert.

Writes the "long uploads" section of benchmarks/results/long.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import footage
from benchmarks.build_dataset import build
from benchmarks.edits import Part, compose, run_ffmpeg
from benchmarks.run import (
    REPO,
    described_as,
    process_memory_kb,
    section_header,
    update_results,
    videos,
)

HD = (1280, 720)
COPY = (60.0, 90.0)  # where the copy sits in every upload
COPY_REFERENCE, COPY_FROM = "vtest", 20.0  # what it copies (reference seconds 20-50)


def make_upload(work: Path, seconds: int) -> Path:
    """A 720p upload of ``seconds``: head, copy, then looped unrelated footage (stream copy)."""
    out = work / f"upload-{seconds}s.mp4"
    if out.exists():
        return out
    clips, photos = footage.clips(), footage.photos()
    head = work / "head.mp4"
    if not head.exists():
        compose([Part(photos["astronaut"], COPY[0], photo=True),
                 Part(clips[COPY_REFERENCE], COPY[1] - COPY[0], start=COPY_FROM,
                      vf="eq=brightness=0.08")], head, canvas=HD)  # fmt: skip
    loop = work / "loop.mp4"
    if not loop.exists():  # about four minutes of real footage nobody indexed
        compose([Part(clips["box"], 15.0), Part(photos["chelsea"], 40.0, photo=True),
                 Part(clips["cup"], 8.0), Part(photos["coffee"], 40.0, photo=True),
                 Part(photos["rocket"], 40.0, photo=True), Part(clips["box"], 10.0, start=5.0),
                 Part(photos["grass"], 40.0, photo=True), Part(photos["text"], 40.0, photo=True)],
                loop, canvas=HD)  # fmt: skip
    rest = seconds - COPY[1] - 1.0  # a second short: 4 h exactly would round past the limit
    tail = work / f"tail-{seconds}s.mp4"
    run_ffmpeg(["-stream_loop", "-1", "-i", str(loop), "-t", f"{rest:.3f}", "-c", "copy",
                str(tail)])  # fmt: skip
    listing = work / f"list-{seconds}.txt"
    listing.write_text(f"file '{head}'\nfile '{tail}'\n")
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)])
    tail.unlink()
    return out


def index_of_references(work: Path) -> Path:
    from pipeline.config import load_config
    from pipeline.detector import CopyDetector
    from pipeline.index import ReferenceIndex, file_sha256

    config = load_config()
    # One cached index per model and frame preparation: an index refuses any other.
    index_dir = work / f"index-{hashlib.sha1(described_as(config).encode()).hexdigest()[:10]}"
    if not (index_dir / "catalog.sqlite").exists():
        data = REPO / "data" / "bench-seed2"
        if not (data / "gt.csv").exists():
            build(2, data)
        detector = CopyDetector(config)
        with ReferenceIndex(index_dir) as index:
            index.add([(detector.describe(p, views=False), file_sha256(p))
                       for p in videos(data / "references")])  # fmt: skip
    return index_dir


def measure(path: Path, index_dir: Path) -> dict:
    """One ``copyspan query`` in a fresh process: its peak RSS, wall time and result. Its
    progress (media seconds read, RSS) goes to ``progress-<upload>.jsonl`` beside the upload."""
    started = time.perf_counter()
    with open(path.with_name(f"progress-{path.stem}.jsonl"), "w") as progress:
        process = subprocess.run(
            [sys.executable, "-m", "benchmarks.long", "--worker", str(path), str(index_dir)],
            stdout=subprocess.PIPE, stderr=progress, text=True, check=True, cwd=REPO,
        )  # fmt: skip
    row = json.loads(process.stdout.strip().splitlines()[-1])
    row["wall"] = time.perf_counter() - started
    return row


def worker(path: Path, index_dir: Path) -> None:
    from pipeline.config import load_config
    from pipeline.detector import CopyDetector
    from pipeline.index import ReferenceIndex

    config = load_config()
    detector = CopyDetector(config)
    started = time.perf_counter()

    def progress(streaming, changed) -> None:
        media = float(streaming.last.ends[-1]) if len(streaming.last) else 0.0
        line = {"media_s": round(media, 1), "wall_s": round(time.perf_counter() - started, 1),
                "rss_kb": process_memory_kb("VmRSS"), "hwm_kb": process_memory_kb()}  # fmt: skip
        print(json.dumps(line), file=sys.stderr, flush=True)

    with ReferenceIndex(index_dir, create=False, config=config.index) as index:
        result = detector.query(path, index, on_window=progress)
    print(json.dumps({"rss_kb": process_memory_kb(), "result": result.to_dict()}))


def early_alert(upload: Path, index_dir: Path, work: Path, wait_final: bool) -> dict:
    from benchmarks.broker import TopicReader, committed, create_topics, produce, tansu_broker
    from benchmarks.broker import upload as message

    with tansu_broker(work / "broker.log") as bootstrap:
        create_topics(bootstrap, "uploads", "alerts", "dlq", partitions=1)
        command = [
            str(Path(sys.executable).parent / "copyspan"), "serve", "--bootstrap-servers",
            bootstrap, "--uploads-topic", "uploads", "--alerts-topic", "alerts", "--dlq-topic",
            "dlq", "--group-id", "long", "--index", str(index_dir), "--allowed-root", str(work),
            "--state-dir", str(work / f"state-{time.time_ns()}"),
        ]  # fmt: skip
        with open(work / "service.log", "w") as log:
            service = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        alerts = TopicReader(bootstrap, "alerts")
        try:  # warm-up: the service has loaded and joined its group
            produce(bootstrap, "uploads", [message("warmup", str(work / "head.mp4"))])
            while committed(bootstrap, "long", "uploads").get(0, 0) < 1:
                time.sleep(0.2)
            alerts.read_until(lambda rs: len(rs) >= 1, timeout=60)
            seen = len(alerts.records)
            started = time.perf_counter()
            produce(bootstrap, "uploads", [message("long", str(upload))])
            alerts.read_until(lambda rs: len(rs) > seen, timeout=3600)
            first = time.perf_counter() - started
            first_alert = json.loads(alerts.records[seen].value)
            final = None
            if wait_final:  # the whole upload: as long as the query itself
                alerts.read_until(
                    lambda rs: any(json.loads(r.value).get("stage") == "final" for r in rs[seen:]),
                    timeout=4 * 3600,
                )
                final = time.perf_counter() - started
        finally:
            service.terminate()
            service.wait(60)
            alerts.close()
    return {"first_s": first, "final_s": final, "first": first_alert}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", default="900,3600,14400", help="upload lengths, seconds")
    parser.add_argument("--no-early", action="store_true", help="skip the early-alert run")
    parser.add_argument(
        "--wait-final", action="store_true", help="also time the final alert of the early run"
    )
    parser.add_argument("--work", type=Path, default=REPO / "data" / "long-uploads")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return 0
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    index_dir = index_of_references(work)
    rows = []
    for seconds in (int(s) for s in args.durations.split(",")):
        upload = make_upload(work, seconds)
        row = measure(upload, index_dir)
        row["seconds"] = seconds
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "result"}), file=sys.stderr)
    early = (
        None
        if args.no_early
        else early_alert(make_upload(work, 3600), index_dir, work, args.wait_final)
    )
    markdown = render(rows, early, args)
    print(markdown)
    if not args.no_write:
        plot(work, rows, REPO / "benchmarks" / "long.png")
        update_results("long uploads", markdown)
    return 0


def plot(work: Path, rows: list[dict], target: Path) -> None:
    """Resident memory against media time read, one line per upload (the progress files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        log = work / f"progress-upload-{row['seconds']}s.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        points = [json.loads(x) for x in lines if x.startswith("{")]
        minutes = [p["media_s"] / 60 for p in points]
        name = f"{row['seconds'] / 60:.0f}-min upload"
        line = ax.plot(minutes, [p["rss_kb"] / 2**20 for p in points], ".-",
                       label=f"{name}: after each window")  # fmt: skip
        ax.plot(minutes, [p["hwm_kb"] / 2**20 for p in points], "--",
                color=line[0].get_color(), label=f"{name}: peak so far")  # fmt: skip
    ax.axhline(2, color="grey", linestyle=":", label="target 2 GB")
    ax.set(xlabel="minutes of the upload read", ylabel="query process RSS (GiB)", ylim=(0, None),
           title="copyspan query on long 720p uploads")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)


def _found(result: dict) -> str:
    parts = []
    for match in result["matches"]:
        for s in match["segments"]:
            parts.append(f"{match['reference_id']} {s['query_start']:.1f}-{s['query_end']:.1f}s "
                         f"<- {s['reference_start']:.1f}-{s['reference_end']:.1f}s")  # fmt: skip
    return "; ".join(parts) or "nothing"


def render(rows: list[dict], early: dict | None, args) -> str:
    command = (
        "python -m benchmarks.long"
        + (f" --durations {args.durations}" if args.durations != "900,3600,14400" else "")
        + (" --wait-final" if args.wait_final else "")
    )
    lines = section_header("long uploads", command)
    base = rows[0]["rss_kb"]
    lines += [
        "",
        f"Uploads: 720p, 25 fps, H.264; a 30-s copy of `{COPY_REFERENCE}` "
        f"({COPY_FROM:.0f}-{COPY_FROM + 30:.0f} s) at {COPY[0]:.0f}-{COPY[1]:.0f} s, "
        "unrelated real footage around it. Index: the 14 seed-2 references. Default config "
        "(windows of `streaming.window_s` = 120 s).",
        "",
        "| upload | peak RSS | vs the first | wall s | video s / wall s | decode s | embed s "
        "| found |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        timings = row["result"].get("timings", {})
        lines.append(
            f"| {row['seconds'] / 60:.0f} min | {row['rss_kb'] / 2**20:.2f} GiB | "
            f"{row['rss_kb'] / base:.2f}x | {row['wall']:.0f} | {row['seconds'] / row['wall']:.1f} "
            f"| {timings.get('decode', 0):.0f} | {timings.get('embed', 0):.0f} | "
            f"{_found(row['result'])} |"
        )
    if early:
        first = early["first"]
        lines += [
            "",
            f"Early alert through `copyspan serve` and a real broker (Tansu), 60-min upload: "
            f"first alert **{early['first_s']:.1f} s** after the upload was sent (stage "
            f"`{first['stage']}`, {first['reference_id']} "
            f"{first['segments'][0]['query_start']:.1f}-{first['segments'][0]['query_end']:.1f} s"
            f", sent when {first['query']['duration']:.0f} s of the upload had been read); "
            + (
                f"the final alert after {early['final_s']:.0f} s."
                if early["final_s"] is not None
                else "the final alert was not waited for (it comes once the whole hour is read)."
            ),
        ]
    lines += ["", "Memory against the media read: [long.png](long.png).", "",
              "<!-- /bench:long uploads -->"]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
