"""Frames that need no model call: how many a thumbnail test spares, and what reusing costs.

    python -m benchmarks.reuse --seed 1      # the development seed chooses embed.reuse_diff

Every sampled frame of every video of the dataset (references and queries, default frame
preparation) is embedded once; then, for each threshold of ``embed.reuse_diff``, the frames
``repeated_frames`` would not embed are counted and each one's true descriptor is compared with
the descriptor it would take instead. A reused frame is harmless when that similarity is as
high as the similarity of two consecutive sampled frames of a held shot; the table gives its
low quantiles. Writes the "reuse seed N" section of benchmarks/results/throughput.md.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.build_dataset import build
from benchmarks.run import REPO, section_header, update_results, videos
from pipeline.config import load_config
from pipeline.describe.decode import decode_windows
from pipeline.describe.describer import prepare_frames
from pipeline.describe.embed import make_embedder
from pipeline.describe.keyframes import repeated_frames

THRESHOLDS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def describe_all(paths, config) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frames as prepared, descriptor of every frame) per video, one window at a time."""
    embedder = make_embedder(config.embed)
    out = []
    for number, path in enumerate(paths):
        window = round(config.streaming.window_s * config.decode.fps)
        for sampled in decode_windows(path, config.decode, window):
            prepared = prepare_frames(sampled, config, views=False)
            out.append((prepared.frames, embedder.embed(prepared.frames)))
        print(f"{number + 1}/{len(paths)} {path.name}", file=sys.stderr, flush=True)
    return out


def measure(described, threshold: float) -> dict:
    reused, total, sims = 0, 0, []
    for frames, descriptors in described:
        source = repeated_frames(frames, threshold)
        mask = source != np.arange(len(frames))
        reused += int(mask.sum())
        total += len(frames)
        sims.append((descriptors[mask] * descriptors[source[mask]]).sum(axis=1))
    sims = np.concatenate(sims)
    quantile = (lambda q: float(np.quantile(sims, q))) if len(sims) else (lambda q: float("nan"))
    return {
        "threshold": threshold,
        "reused": reused / max(total, 1),
        "min": float(sims.min()) if len(sims) else float("nan"),
        "p001": quantile(0.001),
        "p01": quantile(0.01),
        "below_09": int((sims < 0.9).sum()),
    }


def consecutive(described) -> np.ndarray:
    """Similarity of consecutive sampled frames, for scale."""
    return np.concatenate([(d[1:] * d[:-1]).sum(axis=1) for _, d in described])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "gt.csv").exists():
        build(args.seed, data)
    config = load_config()
    paths = videos(data / "references") + videos(data / "queries")
    described = describe_all(paths, config)
    rows = [measure(described, t) for t in THRESHOLDS]
    steps = consecutive(described)
    lines = section_header(
        f"reuse seed {args.seed}", f"python -m benchmarks.reuse --seed {args.seed}"
    )
    frames = sum(len(d) for _, d in described)
    lines += [
        "",
        f"Data: the {len(paths)} videos of seed {args.seed} (references and queries), {frames} "
        f"sampled frames at {config.decode.fps:g} fps. For scale: consecutive sampled frames "
        f"have descriptor similarity p1 {np.quantile(steps, 0.01):.3f}, median "
        f"{np.median(steps):.3f}. Default `embed.reuse_diff`: {config.embed.reuse_diff:g}.",
        "",
        "| reuse_diff (grey levels) | frames not embedded | reused vs true descriptor: min "
        "| p0.1 | p1 | reused frames below 0.9 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['threshold']:g} | {r['reused']:.1%} | {r['min']:.3f} | {r['p001']:.3f} | "
            f"{r['p01']:.3f} | {r['below_09']} |"
        )
    lines += ["", f"<!-- /bench:reuse seed {args.seed} -->"]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_results(f"reuse seed {args.seed}", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
