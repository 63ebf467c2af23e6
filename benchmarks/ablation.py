"""Ablation of copyspan's stages on the benchmark: each stage on and off, one table.

    python -m benchmarks.ablation --seed 2          # writes the "ablation seed 2" section
    python -m benchmarks.ablation --seed 1 --no-write --only default,no_views

Every variant runs the real pipeline (decode, keyframes, views, SSCD, FAISS index, alignment)
through ``CopyDetector``. Two caches make a dozen variants affordable and change no result:
decoded videos are kept in memory for the run, and SSCD descriptors are cached on disk by the
bytes of the frame they describe (``.cache/embed-cache``), so a variant pays only for frames no
earlier variant embedded. Latency is therefore reported as what each variant costs, not as a
wall clock: pixels embedded per second of query video (embedding dominates a query and its
cost grows with pixels, views included) and the
search + alignment + boundary refinement time per query, measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.build_dataset import build
from benchmarks.run import REPO, section_header, update_results, videos
from pipeline.atomic import write_npz
from pipeline.config import load_config
from pipeline.describe.decode import decode_video
from pipeline.describe.describer import video_id_for
from pipeline.describe.embed import Embedder, make_embedder
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.metric import evaluate, read_segments
from pipeline.records import SampledFrames

log = logging.getLogger(__name__)
CACHE = REPO / ".cache" / "embed-cache"

# name -> (what it shows, overrides merged over the defaults)
PLAIN = {
    "suppress": {"crop_borders": False, "blank_frames": False, "generic": False},
    "whiten": {"enabled": False},
    "views": {"enabled": False},
    "search": {"video_candidates": 0},
    "align": {"refine_boundaries": False, "sync_reference": False, "unit_speed_margin": -1.0},
}
ONE_FPS = {"decode": {"fps": 1.0}, "align": {"max_step": 3, "min_length": 2}}
PLAIN_1FPS = {**PLAIN, **ONE_FPS, "align": {**PLAIN["align"], **ONE_FPS["align"]}}
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("everything on (configs/default.yaml)", {}),
    "plain_tn": ("plain temporal network on the same SSCD features: every stage off", PLAIN),
    "plain_tn_1fps": ("plain temporal network at 1 fps (the first release)", PLAIN_1FPS),
    "1fps": ("everything on, 1 fps sampling", ONE_FPS),
    "keyframes": ("keyframe selection on (configs/compact.yaml)", {"keyframes": {"enabled": True}}),
    "no_whiten": ("whitening off (raw similarity)", {"whiten": {"enabled": False}}),
    "no_views": ("query views off", {"views": {"enabled": False}}),
    "flip": ("flipped query view on", {"views": {"flip": True}}),
    "no_borders": ("black-border cropping off", {"suppress": {"crop_borders": False}}),
    "no_blank": ("blank-frame weights off", {"suppress": {"blank_frames": False}}),
    "no_unit_speed": (
        "reference spans at the path's fitted speed, even where the footage cannot tell",
        {"align": {"unit_speed_margin": -1.0}},
    ),
    "no_refine": (
        "query ends left on the sampling grid",
        {"align": {"refine_boundaries": False}},
    ),
    "no_sync": (
        "reference spans not shifted by the motion rhythm",
        {"align": {"sync_reference": False}},
    ),
    "no_video_stage": ("video-level candidates off", {"search": {"video_candidates": 0}}),
}


class CachedEmbedder:
    """An embedder that remembers descriptors by frame content (sha1 of the pixels)."""

    def __init__(self, inner: Embedder, path: Path):
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.path = path
        self.store: dict[bytes, np.ndarray] = {}
        self.pixels = 0  # pixels asked for (cached or not): what a real run would embed
        if path.exists():
            with np.load(path) as data:
                self.store = dict(zip(data["keys"].tolist(), data["values"], strict=True))

    def embed(self, frames: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(f.tobytes() + str(f.shape).encode()).digest() for f in frames]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            for i, value in zip(missing, self.inner.embed(frames[missing]), strict=True):
                self.store[keys[i]] = value
        self.pixels += frames[..., 0].size
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.store[k] for k in keys])

    def save(self) -> None:
        keys = np.array(list(self.store), dtype="S20")
        values = np.stack(list(self.store.values())) if self.store else np.zeros((0, self.dim))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(self.path, keys=keys, values=values.astype(np.float32))


@dataclass
class Row:
    name: str
    what: str
    figures: dict
    kept: float  # fraction of sampled frames embedded (keyframes)
    megapixels_per_s: float  # pixels embedded per second of query video, views included
    search_align_ms: float  # per query
    boxes: list = field(default_factory=list, repr=False)


class DecodeCache:
    """Decoded videos of this run, by file and decode settings."""

    def __init__(self):
        self.store: dict[tuple, SampledFrames] = {}

    def get(self, path: Path, config) -> SampledFrames:
        key = (str(path), astuple(config.decode))
        if key not in self.store:
            self.store[key] = decode_video(path, config.decode)
        return self.store[key]


def add_variants(variants: dict[str, tuple[str, dict]], specs: list[str]) -> None:
    """Variants given on the command line (``--set '{"name": ..., "overrides": {...}}'``)."""
    for extra in specs:
        spec = json.loads(extra)
        variants[spec["name"]] = (spec.get("what", spec["name"]), spec["overrides"])


def run_variant(name: str, overrides: dict, data: Path, decoded: DecodeCache, embedder) -> Row:
    config = load_config(None, overrides)
    detector = CopyDetector(config, embedder=embedder)
    truth = read_segments(data / "gt.csv")
    with tempfile.TemporaryDirectory() as tmp:
        index = ReferenceIndex(Path(tmp) / "index")
        sampled = kept = 0
        items = []
        for path in videos(data / "references"):
            features = detector.describe_sampled(
                decoded.get(path, config), video_id_for(path), False
            )
            items.append((features, file_sha256(path)))
            sampled, kept = sampled + features.sampled, kept + len(features)
        index.add(items)
        boxes, seconds, spent = [], 0.0, 0.0
        before = embedder.pixels
        for path in videos(data / "queries"):
            query = detector.describe_sampled(decoded.get(path, config), video_id_for(path))
            sampled, kept = sampled + query.sampled, kept + len(query)
            started = time.perf_counter()
            result = detector.query_features(query, index)
            spent += time.perf_counter() - started
            seconds += query.duration
            boxes.extend(result.segment_boxes())
        queries = len(videos(data / "queries"))
        index.close()
    figures = evaluate(truth, boxes)
    row = Row(
        name, VARIANTS[name][0], figures, kept / max(1, sampled),
        (embedder.pixels - before) / 1e6 / seconds, 1000 * spent / queries, boxes,
    )  # fmt: skip
    log.info("%s: F1 %.3f kept %.2f", name, figures["f1"], row.kept)
    return row


def _edit_cell(row: dict) -> str:
    return f"{row['f1']:.2f} ({row['pair_recall']:.2f})"


def render(tag: str, command: str, rows: list[Row]) -> str:
    lines = [
        *section_header(tag, command),
        "",
        "| variant | what changes | F1 | P | R | pair P | pair R | false-alarm pairs "
        "(on negatives) | frames kept | Mpixel embedded / query s "
        "| search + align + refine ms / query |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        f = r.figures
        lines.append(
            f"| {r.name} | {r.what} | **{f['f1']:.3f}** | {f['precision']:.3f} "
            f"| {f['recall']:.3f} | {f['pair_precision']:.3f} | {f['pair_recall']:.3f} "
            f"| {f['false_alarm_pairs']} ({f['false_alarm_pairs_on_negative_queries']}) "
            f"| {r.kept:.0%} | {r.megapixels_per_s:.2f} | {r.search_align_ms:.0f} |"
        )
    edits = sorted(rows[0].figures.get("per_edit", {}))
    lines += ["", "Segment F1 per edit (pair recall in brackets):", ""]
    lines += ["| edit | " + " | ".join(r.name for r in rows) + " |"]
    lines += ["| --- |" + " --- |" * len(rows)]
    for edit in edits:
        cells = [_edit_cell(r.figures["per_edit"][edit]) for r in rows]
        lines.append(f"| {edit} | " + " | ".join(cells) + " |")
    lines += ["", f"<!-- /bench:{tag} -->"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="JSON",
                        help='an extra variant: {"name": ..., "overrides": {...}}')  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("faiss", "pipeline.index", "pipeline.describe.decode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "dataset.json").exists():
        build(args.seed, data)
    add_variants(VARIANTS, args.set)
    names = args.only.split(",") if args.only else list(VARIANTS)
    config = load_config()
    embedder = CachedEmbedder(make_embedder(config.embed), CACHE / f"{config.embed.model}.npz")
    decoded = DecodeCache()
    rows = []
    try:
        for name in names:
            rows.append(run_variant(name, VARIANTS[name][1], data, decoded, embedder))
    finally:
        embedder.save()
    command = "python -m benchmarks.ablation " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    markdown = render(f"ablation seed {args.seed}", command.strip(), rows)
    print(markdown)
    if not args.no_write:
        update_results(f"ablation seed {args.seed}", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
