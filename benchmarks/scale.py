"""The catalog at scale: accuracy, latency, memory, disk and add cost from 0.1 M to 10 M frames.

    python -m benchmarks.scale --seed 2                          # 0.1 M, 1 M, 10 M (~1.5 h)
    python -m benchmarks.scale --seed 2 --sizes 100000,1000000   # fewer sizes

One catalog grows through the sizes: the benchmark's real references (seed 2), then synthetic
distractor references of 10 minutes at 2 fps (benchmarks/distractors.py: descriptors that
behave like unrelated real videos; their fit is reported). At each size the catalog is
compacted (``copyspan index compact``: the default config picks the structure) and measured:

* accuracy: every seed-2 query through the real ``CopyDetector.query`` (decode, embed, search,
  align, refine) in a fresh process, scored with the segment metric; that process's peak RSS;
* search recall: for the query frames inside copied spans, whether the approximate top-20 holds
  the exact nearest frame (computed by brute force over every catalog frame), and the true
  reference's nearest frame;
* cost: wall time per query split by stage, disk per frame, time to add one reference (median
  of 20 adds, after ``sync``) on the index of the real references and after each size's
  compaction (those 20 stay, in a fresh flat segment, as in a live index), build and
  compaction time.

Writes the "scale" section of benchmarks/results/scale.md and benchmarks/scale.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import footage
from benchmarks.build_dataset import build
from benchmarks.distractors import (
    calibrate,
    similarity_stats,
    temporal_stats,
    unrelated_pairs,
)
from benchmarks.run import (
    REPO,
    described_as,
    process_memory_kb,
    section_header,
    update_results,
    videos,
)
from pipeline.config import load_config
from pipeline.describe.crops import crop_count
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.index.descriptor_file import read_descriptor_file, write_descriptor_file
from pipeline.records import VideoFeatures

log = logging.getLogger(__name__)

DISTRACTOR_FRAMES = 1200  # 10 minutes at 2 fps
ADD_SAMPLE = 20  # adds timed at each point (median reported)
KNN = 20  # search.knn_k


def described(paths: list[Path], cache: Path) -> dict[str, VideoFeatures]:
    """Reference-style descriptors of real videos, cached as descriptor files (described
    again when the config's model or frame preparation differs from the cached ones)."""
    from pipeline.detector import CopyDetector

    config = load_config()
    cache.mkdir(parents=True, exist_ok=True)
    detector, out = None, {}
    for path in paths:
        target = cache / f"{path.stem}.npz"
        cached = read_descriptor_file(target).features if target.exists() else None
        crops = crop_count(config.views)
        if (
            cached is None
            or f"{cached.model};{cached.preprocess}" != described_as(config)
            or (len(cached.crops) != crops)
        ):
            detector = detector or CopyDetector(config)
            write_descriptor_file(target, detector.describe(path, views=False), file_sha256(path))
            cached = read_descriptor_file(target).features
        out[path.stem] = cached
    return out


def distractor_model(work: Path) -> tuple[object, dict]:
    """The distractor model fitted on the real footage, and how it compares with it."""
    clips = described(sorted(footage.clips().values()), work / "footage")
    related = {frozenset(pair) for pair in footage.NATURAL_PAIRS}
    real = {name: f.embeddings for name, f in clips.items()}
    unrelated = unrelated_pairs(real, related)
    frames = np.concatenate(list(real.values()))
    model = calibrate(frames, float(np.percentile(unrelated, 99)))
    rng = np.random.default_rng(1)
    fake = [model.video(rng, DISTRACTOR_FRAMES) for _ in range(20)]
    pairs = len(unrelated)
    report = {
        "shrink": round(model.shrink, 4),
        "real_unrelated": {
            "pairs": pairs,
            "mean": round(float(unrelated.mean()), 4),
            "p99": round(float(np.percentile(unrelated, 99)), 4),
            "max": round(float(unrelated.max()), 4),
        },
        "distractor_to_real": similarity_stats(np.concatenate(fake), frames, pairs),
        "distractor_to_distractor": similarity_stats(fake[0], np.concatenate(fake[1:]), pairs),
        "temporal_real": temporal_stats(list(real.values()), 2.0),
        "temporal_distractor": temporal_stats(fake, 2.0),
        "real_frames": len(frames),
        "real_videos": len(real),
    }
    return model, report


def distractor(model, number: int, seed: int, like: VideoFeatures) -> VideoFeatures:
    """A synthetic reference described as ``like`` is (model and frame preparation): the index
    refuses any other."""
    rng = np.random.default_rng([seed, number])
    embeddings = model.video(rng, DISTRACTOR_FRAMES)
    starts = np.arange(DISTRACTOR_FRAMES, dtype=np.float64) / 2
    return VideoFeatures(
        video_id=f"distractor-{number:06d}", path=f"/synthetic/distractor-{number:06d}.mp4",
        duration=DISTRACTOR_FRAMES / 2, embeddings=embeddings, starts=starts, ends=starts + 0.5,
        model=like.model, fps=2.0, preprocess=like.preprocess,
    )  # fmt: skip


class ExactNeighbours:
    """Running exact top-1 of fixed query vectors over every frame added to the catalog."""

    def __init__(self, queries: np.ndarray):
        self.queries = queries
        self.sims = np.full(len(queries), -np.inf, np.float32)
        self.ids = np.full(len(queries), -1, np.int64)

    def add(self, num: int, embeddings: np.ndarray) -> None:
        sims = self.queries @ embeddings.T
        best = sims.argmax(axis=1)
        top = sims[np.arange(len(sims)), best]
        better = top > self.sims
        self.sims[better] = top[better]
        self.ids[better] = (np.int64(num) << 24) + best[better]


def query_worker(catalog: str, queries: list[str], out: str, overrides: dict | None = None) -> None:
    """Run in a fresh process: every query through the real pipeline against ``catalog``."""
    from pipeline.detector import CopyDetector

    config = load_config(overrides=overrides)
    detector = CopyDetector(config)
    rows = []
    with ReferenceIndex(catalog, create=False, config=config.index) as index:
        started = time.perf_counter()
        index.search(np.zeros((1, 512), np.float32), 1)  # load the search structure first
        load_s = time.perf_counter() - started
        memory = index.searcher.memory_bytes()
        for path in queries:
            started = time.perf_counter()
            result = detector.query(path, index)
            rows.append({"result": result.to_dict(), "wall": time.perf_counter() - started})
    peak = process_memory_kb() * 1024  # VmHWM: this process's peak, in bytes
    Path(out).write_text(json.dumps({"rows": rows, "rss": peak, "load_s": load_s,
                                     "structure_bytes": memory}))  # fmt: skip


def run_queries(catalog: Path, queries: list[Path], work: Path, overrides=None) -> dict:
    out = work / "queries.json"
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=query_worker,
        args=(str(catalog), [str(q) for q in queries], str(out), overrides or {}),
    )
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"query process failed ({process.exitcode})")
    return json.loads(out.read_text())


def score(run: dict, gt: Path, work: Path) -> dict:
    from pipeline.metric import Box, evaluate, read_segments, write_segments

    boxes = []
    stages: dict[str, float] = {}
    seconds = 0.0
    for row in run["rows"]:
        result = row["result"]
        seconds += result["query"]["duration"]
        for key, value in result.get("timings", {}).items():
            stages[key] = stages.get(key, 0.0) + value
        for match in result["matches"]:
            for s in match["segments"]:
                boxes.append(Box(result["query"]["id"], match["reference_id"], s["query_start"],
                                 s["query_end"], s["reference_start"], s["reference_end"],
                                 s["score"]))  # fmt: skip
    write_segments(work / "pred.csv", boxes)
    figures = evaluate(read_segments(gt), read_segments(work / "pred.csv"))
    walls = [row["wall"] for row in run["rows"]]
    per_30s = 30.0 / seconds
    return {
        "f1": figures["f1"],
        "pair_recall": figures["pair_recall"],
        "false_alarm_pairs": figures["false_alarm_pairs"],
        "queries": len(walls),
        "wall_per_query": statistics.mean(walls),
        "wall_per_30s": sum(walls) * per_30s,
        "stage_per_30s": {k: v * per_30s for k, v in stages.items()},
        "rss_gb": run["rss"] / 2**30,
        "structure_gb": run["structure_bytes"] / 2**30,
        "load_s": run["load_s"],
    }


def search_recall(catalog: Path, vectors: np.ndarray, truth: list[int], exact) -> dict:
    """Share of copied query frames whose exact nearest catalog frame (and whose true reference)
    the index's top-20 holds."""
    config = load_config()
    with ReferenceIndex(catalog, create=False, config=config.index) as index:
        _, nums, frames = index.search(vectors, KNN)
    ids = np.where(nums >= 0, (nums << 24) + frames, -1)
    nearest = np.mean([exact.ids[i] in ids[i] for i in range(len(vectors))])
    own = [i for i in range(len(vectors)) if exact.ids[i] >> 24 == truth[i]]
    own_frame = np.mean([exact.ids[i] in ids[i] for i in own]) if own else float("nan")
    own_ref = np.mean([truth[i] in nums[i] for i in own]) if own else float("nan")
    return {"nearest": nearest, "true_frame": own_frame, "true_reference": own_ref,
            "vectors": len(vectors), "true_vectors": len(own)}  # fmt: skip


def copied_vectors(data: Path, work: Path, refs: dict[str, int]) -> tuple[np.ndarray, list[int]]:
    """Query frame descriptors inside ground-truth copied spans, and their references' nums."""
    from pipeline.detector import CopyDetector

    config = load_config()
    cache = work / "copied.npz"
    if cache.exists():
        with np.load(cache) as data_:
            cached_as = str(data_["described_as"]) if "described_as" in data_ else ""
        if cached_as != described_as(config):  # another model's cannot be searched here
            cache.unlink()
    if not cache.exists():
        detector = CopyDetector(config)
        gt = list(csv.DictReader((data / "gt.csv").read_text().splitlines()))
        by_query: dict[str, list[dict]] = {}
        for row in gt:
            by_query.setdefault(row["query_id"], []).append(row)
        vectors, owners = [], []
        for path in videos(data / "queries"):
            if path.stem not in by_query:
                continue
            features = detector.describe(path, views=False)
            centres = (features.starts + features.ends) / 2
            for row in by_query[path.stem]:
                inside = (centres >= float(row["query_start"])) & (
                    centres <= float(row["query_end"])
                )
                vectors.append(features.embeddings[inside])
                owners += [row["reference_id"]] * int(inside.sum())
        np.savez(
            cache, vectors=np.concatenate(vectors), owners=np.array(owners),
            described_as=np.array(described_as(config)),
        )  # fmt: skip
    with np.load(cache) as data_:
        return data_["vectors"], [refs[str(o)] for o in data_["owners"]]


def exact_neighbours(
    index: ReferenceIndex, data: Path, work: Path, nums: dict[str, int]
) -> tuple[np.ndarray, list[int], ExactNeighbours]:
    """The copied query vectors, their references' nums, and their exact nearest frames over
    every frame ``index`` holds now (brute force; distractors added later are fed to it)."""
    vectors, truth = copied_vectors(data, work, nums)
    exact = ExactNeighbours(vectors)
    for ref in index.references():
        exact.add(ref.num, index.features(ref).embeddings)
    return vectors, truth, exact


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_add(index: ReferenceIndex, features: VideoFeatures) -> float:
    started = time.perf_counter()
    index.add([(features, features.video_id)])
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=0, help="only the first N (smoke runs)")
    parser.add_argument(
        "--remeasure", action="store_true", help="measure the last built catalog (and the "
        "baseline) again after a search-side change; build and add figures are kept",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pipeline.index.reference_index").setLevel(logging.WARNING)  # per add
    sizes = sorted(int(float(s)) for s in args.sizes.split(","))
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "gt.csv").exists():
        build(args.seed, data)
    work = args.work or REPO / "data" / f"scale-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    queries = videos(data / "queries")[: args.queries or None]

    model, realism = distractor_model(work)
    log.info("distractor model: %s", json.dumps(realism))
    refs = described(videos(data / "references"), work / "references")
    like = next(iter(refs.values()))

    if args.remeasure:
        return remeasure(work, data, queries, realism, args)
    rows = []
    small = work / "small"  # the real references alone: the baseline
    shutil.rmtree(small, ignore_errors=True)
    with ReferenceIndex(small) as index:
        index.add([(f, f.video_id) for f in refs.values()])
    log.info("querying the small catalog")
    baseline = score(run_queries(small, queries, work), data / "gt.csv", work)
    with ReferenceIndex(small) as index:
        rows.append({"size": "real references only", "frames": index.info()["frames"],
                     "structure": "flat", **baseline})  # fmt: skip

    catalog = work / "catalog"
    shutil.rmtree(catalog, ignore_errors=True)
    config = load_config()
    index = ReferenceIndex(catalog, config=config.index)
    nums = {}
    for features in refs.values():
        index.add([(features, features.video_id)])
        nums[features.video_id] = index.get(features.video_id).num
    vectors, truth, exact = exact_neighbours(index, data, work, nums)

    number, frames = 0, index.info()["frames"]

    def add_distractor() -> float:
        nonlocal number, frames
        features = distractor(model, number, args.seed, like)
        seconds = timed_add(index, features)
        exact.add(index.get(features.video_id).num, features.embeddings)
        number, frames = number + 1, frames + DISTRACTOR_FRAMES
        if number % 500 == 0:
            log.info("%d distractors, %d frames", number, frames)
        return seconds

    def settled_adds() -> list[float]:
        """Adds timed once the disk has caught up: a build writes gigabytes, and fsyncs
        queued behind that writeback would time the disk, not the index."""
        os.sync()
        return [add_distractor() for _ in range(ADD_SAMPLE)]

    add_start = settled_adds()  # on an index of the 14 real references only
    build_s = 0.0
    for size in sizes:
        started = time.perf_counter()
        while frames < size:
            add_distractor()
        build_s += time.perf_counter() - started
        started = time.perf_counter()
        report = index.compact(config.whiten)
        compact_s = time.perf_counter() - started
        add_now = settled_adds()  # they stay: a fresh flat segment beside the coded one
        index.compact(config.whiten, full=False)  # what the background compaction does next
        info = index.info()
        log.info("size %d: %s", size, json.dumps(info))
        recall = search_recall(catalog, vectors, truth, exact)
        log.info("querying the %d-frame catalog", info["frames"])
        scored = score(run_queries(catalog, queries, work), data / "gt.csv", work)
        rows.append({
            "size": f"{info['frames'] / 1e6:.2f} M frames", "frames": info["frames"],
            "structure": info["structure"]["factory"] if info["structure"]["kind"] != "flat"
            else "flat", "nprobe": info["nprobe"],
            "recall": recall, "add_ms_start": 1000 * statistics.median(add_start),
            "add_ms_now": 1000 * statistics.median(add_now), "build_s": build_s,
            "compact_s": compact_s, "trained": report.get("trained"),
            "disk_per_frame": du(catalog) / info["frames"],
            "training": info["training"], **scored,
        })  # fmt: skip
        log.info("row: %s", json.dumps(rows[-1], default=str))
        (work / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    index.close()

    return publish(rows, realism, args)


def remeasure(work: Path, data: Path, queries: list[Path], realism: dict, args) -> int:
    """Query the baseline and the built catalog again, in one run; keep the build figures."""
    rows = json.loads((work / "rows.json").read_text())
    catalog = work / "catalog"
    rows[0].update(score(run_queries(work / "small", queries, work), data / "gt.csv", work))
    config = load_config()
    with ReferenceIndex(catalog, create=False, config=config.index) as index:
        nums = {r.id: r.num for r in index.references() if not r.id.startswith("distractor-")}
        vectors, truth, exact = exact_neighbours(index, data, work, nums)
        info = index.info()
    rows[-1]["recall"] = search_recall(catalog, vectors, truth, exact)
    rows[-1].update(score(run_queries(catalog, queries, work), data / "gt.csv", work))
    rows[-1]["nprobe"] = info["nprobe"]
    (work / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    return publish(rows, realism, args)


def publish(rows: list[dict], realism: dict, args) -> int:
    """Print the section, draw the plot and (unless --no-write) update its results page."""
    markdown = render(rows, realism, args)
    print(markdown)
    plot(rows, REPO / "benchmarks" / "scale.png")
    if not args.no_write:
        update_results("scale", markdown)
    return 0


def render(rows: list[dict], realism: dict, args) -> str:
    command = "python -m benchmarks.scale --seed 2" + (
        f" --sizes {args.sizes}" if args.sizes != "100000,1000000,10000000" else ""
    )
    base = rows[0]
    lines = section_header("scale", command)
    lines += [
        "",
        "Catalog: the 14 seed-2 references, then synthetic 10-minute distractor references "
        "(below); compacted with the default config at each size. Queries: the 59 seed-2 "
        "queries through the real pipeline in a fresh process. Times are per 30 s of query "
        "video (the queries total 957 s).",
        "",
        "| catalog | structure | F1 | pair R | false-alarm pairs | search recall: nearest / true "
        "frame / true reference | query wall s | decode | embed | search ms | align | refine "
        "| wall vs real-only | RSS GB | structure GB | disk / frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- | --- |",
    ]
    for row in rows:
        stage = row["stage_per_30s"]
        recall = row.get("recall")
        recall_text = (
            f"{recall['nearest']:.3f} / {recall['true_frame']:.3f} / {recall['true_reference']:.3f}"
            if recall
            else "exact"
        )
        lines.append(
            f"| {row['size']} | {row['structure']}"
            + (f", nprobe {row['nprobe']}" if row.get("nprobe") else "")
            + f" | **{row['f1']:.3f}** | "
            f"{row['pair_recall']:.3f} | {row['false_alarm_pairs']} | {recall_text} | "
            f"{row['wall_per_30s']:.2f} | {stage.get('decode', 0):.2f} | "
            f"{stage.get('embed', 0):.2f} | {1000 * stage.get('search', 0):.0f} | "
            f"{stage.get('align', 0):.3f} | {stage.get('refine', 0):.2f} | "
            f"{row['wall_per_30s'] / base['wall_per_30s']:.2f} | {row['rss_gb']:.2f} | "
            f"{row['structure_gb']:.2f} | "
            + (f"{row['disk_per_frame']:.0f} B |" if "disk_per_frame" in row else "|")
        )
    lines += [
        "",
        "| catalog | add one reference, empty index | add one reference, now | build s "
        "(cumulative) | compaction s | trained on |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows[1:]:
        training = row.get("training") or {}
        lines.append(
            f"| {row['size']} | {row['add_ms_start']:.1f} ms | {row['add_ms_now']:.1f} ms | "
            f"{row['build_s']:.0f} | {row['compact_s']:.0f} | "
            f"{training.get('sample_vectors', '-')} vectors "
            f"(error p5 {training.get('similarity_error', {}).get('p5', '-')}) |"
        )
    real, fake = realism["real_unrelated"], realism["distractor_to_real"]
    other = realism["distractor_to_distractor"]
    tr, tf = realism["temporal_real"], realism["temporal_distractor"]
    lines += [
        "",
        f"Distractors (benchmarks/distractors.py), fitted on {realism['real_frames']} SSCD "
        f"descriptors of {realism['real_videos']} real clips (shrinkage {realism['shrink']}):",
        "",
        "| cosine similarity over the same number of pairs | mean | p99 | max |",
        "| --- | --- | --- | --- |",
        f"| unrelated real videos ({real['pairs']} pairs) | {real['mean']} | {real['p99']} | "
        f"{real['max']} |",
        f"| distractor to real frames | {fake['mean']} | {fake['p99']} | {fake['max']} |",
        f"| distractor to other distractors | {other['mean']} | {other['p99']} | {other['max']} |",
        "",
        "| in time | consecutive frames, median | p10 | cuts / min | same video, mean |",
        "| --- | --- | --- | --- | --- |",
        f"| real clips (4-80 s each) | {tr['consecutive_median']} | {tr['consecutive_p10']} | "
        f"{tr['cuts_per_min']} | {tr['within_video_mean']} |",
        f"| distractors (10 min each) | {tf['consecutive_median']} | {tf['consecutive_p10']} | "
        f"{tf['cuts_per_min']} | {tf['within_video_mean']} |",
        "",
        "![latency and memory against catalog size](scale.png)",
        "",
        "<!-- /bench:scale -->",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sized = rows[1:]
    frames = [r["frames"] / 1e6 for r in sized]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(frames, [1000 * r["stage_per_30s"].get("search", 0) for r in sized], "o-",
              label="search (ms)")  # fmt: skip
    left.plot(frames, [1000 * r["wall_per_30s"] for r in sized], "s-", label="whole query (ms)")
    left.axhline(100, color="grey", linestyle=":", label="search target 100 ms")
    left.set(xscale="log", yscale="log", xlabel="catalog (million frame descriptors)",
             ylabel="ms per 30 s of upload", title="Query latency")  # fmt: skip
    left.legend()
    right.plot(frames, [r["rss_gb"] for r in sized], "o-", label="query process RSS")
    right.plot(frames, [r["structure_gb"] for r in sized], "s-", label="search structure")
    right.axhline(2, color="grey", linestyle=":", label="target 2 GB")
    right.set(xscale="log", xlabel="catalog (million frame descriptors)", ylabel="GB",
              title="Memory")  # fmt: skip
    right.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
