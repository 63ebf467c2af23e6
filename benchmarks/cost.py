"""What a query costs, stage by stage: seconds per hour of video, and frames through the model.

    python -m benchmarks.cost --seed 2    # the "cost seed 2" section of results/throughput.md

Every query of the dataset goes through the real pipeline (``CopyDetector.query``: decode,
frame preparation, SSCD, FAISS search, alignment, refinement) against an index of the dataset's
references, once per variant, in one process and one run; decode-only (same decoder and
sampling, same files) runs first. A variant is a config merged over the defaults: ``before``
is the setting a cost change replaced, so the table reads before / after on the same machine
at the same moment. The model's share of the embed stage is timed around each model call; the
rest of that stage is frame preparation (borders, weights, view proposals, crops). Segment F1,
pair recall and false-alarm pairs come from the same queries, so a saving that costs accuracy
shows in the same row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.ablation import ONE_FPS, add_variants
from benchmarks.build_dataset import build
from benchmarks.run import REPO, decode_only, publish, section_header, videos
from pipeline.config import load_config
from pipeline.describe.embed import Embedder, make_embedder
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.metric import evaluate, read_segments

STAGES = ("decode", "model", "prepare", "search", "align", "refine")
# name -> (what it is, overrides merged over the defaults)
VARIANTS: dict[str, tuple[str, dict]] = {
    "before": (
        "configs/sscd.yaml: the full SSCD model at 224 px (the default before the student)",
        yaml.safe_load((REPO / "configs" / "sscd.yaml").read_text()),
    ),
    "default": ("configs/default.yaml", {}),
    "onnxruntime": (
        "the default on onnxruntime in f32 (the runtime before OpenVINO)",
        {"embed": {"runtime": "onnxruntime"}},
    ),
    "no_views": ("no query views: what they cost", {"views": {"enabled": False}}),
    "no_sticker_zoom": (
        "no sticker view and no reference crops: what they cost",
        {"views": {"masks": False, "reference_grid": 0}},
    ),
    "1fps": ("1 fps sampling: what the second frame costs", ONE_FPS),
}


class TimedEmbedder:
    """The model, timed and counted per call (frames and pixels through it)."""

    def __init__(self, inner: Embedder):
        self.inner, self.model_id, self.dim = inner, inner.model_id, inner.dim
        self.seconds, self.frames, self.pixels = 0.0, 0, 0

    def embed(self, frames: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self.inner.embed(frames)
        self.seconds += time.perf_counter() - started
        self.frames += len(frames)
        self.pixels += frames[..., 0].size
        return out


def run_variant(overrides: dict, data: Path, work: Path, model: Embedder) -> dict:
    """Index the references and run every query with one variant's config (the index is the
    variant's own: a setting such as the frame rate describes references too)."""
    config = load_config(None, overrides)
    if config.embed != load_config().embed:  # a variant of the model or its runtime loads its own
        model = make_embedder(config.embed)
    timed = TimedEmbedder(model)
    detector = CopyDetector(config, embedder=timed)
    started = time.perf_counter()
    index = ReferenceIndex(work / "index")
    items = [
        (detector.describe(p, views=False), file_sha256(p)) for p in videos(data / "references")
    ]
    index.add(items)
    reference_s = sum(f.duration for f, _ in items)
    ingest = {"s_per_hour": (time.perf_counter() - started) * 3600 / reference_s,
              "frames_per_s": timed.frames / reference_s}  # fmt: skip
    timed.seconds, timed.frames, timed.pixels = 0.0, 0, 0
    stages = dict.fromkeys(STAGES, 0.0)
    seconds, boxes = 0.0, []
    started = time.perf_counter()
    for path in videos(data / "queries"):
        result = detector.query(path, index)
        seconds += result.duration
        boxes.extend(result.segment_boxes())
        for key, value in result.timings.items():
            stages[key if key != "embed" else "prepare"] += value
    wall = time.perf_counter() - started
    stages["model"] = timed.seconds
    stages["prepare"] -= timed.seconds  # the embed stage's time outside the model
    index.close()
    return {
        "ingest": ingest,
        "video_s": seconds,
        "wall_s": wall,
        "stages": stages,
        "frames_per_s": timed.frames / seconds,
        "mpixels_per_s": timed.pixels / 1e6 / seconds,
        "figures": evaluate(read_segments(data / "gt.csv"), boxes),
    }


def render(tag: str, command: str, rows: dict, decode: tuple) -> str:
    video_s, decode_s = decode
    per_hour = 3600.0 / next(iter(rows.values()))["video_s"]
    columns = ["variant", "what", *STAGES, "total", "x realtime", "model frames / video s",
               "Mpixel / video s", "F1", "pair R", "false-alarm pairs", "ingest s / hour",
               "ingest model frames / video s"]  # fmt: skip
    lines = [
        *section_header(tag, command),
        "",
        "Seconds per hour of query video, by stage (model: time inside SSCD calls; prepare: the "
        "rest of the embed stage). Decode-only on the same files: "
        f"{decode_s * 3600 / video_s:.0f} s per hour. Ingest: indexing the references (decode "
        "and embed, no views), per hour of reference video.",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for name, row in rows.items():
        cells = [f"{row['stages'][s] * per_hour:.0f}" for s in STAGES]
        total = row["wall_s"] * 3600 / row["video_s"]
        figures = row["figures"]
        lines.append(
            f"| {name} | {VARIANTS[name][0]} | " + " | ".join(cells) + f" | {total:.0f} | "
            f"{3600 / total:.1f} | {row['frames_per_s']:.2f} | {row['mpixels_per_s']:.3f} | "
            f"**{figures['f1']:.3f}** | {figures['pair_recall']:.3f} | "
            f"{figures['false_alarm_pairs']} | {row['ingest']['s_per_hour']:.0f} | "
            f"{row['ingest']['frames_per_s']:.2f} |"
        )
    lines += ["", f"<!-- /bench:{tag} -->"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="JSON",
                        help='an extra variant: {"name": ..., "overrides": {...}}')  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "dataset.json").exists():
        build(args.seed, data)
    add_variants(VARIANTS, args.set)
    config = load_config()
    decode = decode_only(videos(data / "queries"), config)
    model = make_embedder(config.embed)
    rows = {}
    for name, (_, overrides) in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            rows[name] = run_variant(overrides, data, Path(tmp), model)
        print(name, json.dumps(rows[name], default=float), file=sys.stderr, flush=True)
    tag = f"cost seed {args.seed}"
    command = "python -m benchmarks.cost " + " ".join(argv if argv is not None else sys.argv[1:])
    publish(tag, render(tag, command.strip(), rows, decode), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
