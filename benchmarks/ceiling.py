"""The most a sampling grid allows: ground truth itself reported on the grid, scored.

A detector that sees one frame per 1/fps seconds and reports the spans its frames stand for
can at best put a copy's query ends on the grid: it knows a copy starts between two sampled
frames, not where. This scores every ground-truth segment reported that way (the query span
covered by the sampled frames inside it; the reference span moved with it along the copy's
speed, so only the query grid costs anything) with the segment metric. It bounds what any
aligner on grid-sampled features can reach, and so what a margin over another can be.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from benchmarks.build_dataset import build
from benchmarks.run import REPO, section_header, update_results
from pipeline.metric import Box, evaluate, read_segments

RATES = (1.0, 2.0, 4.0)


def on_grid(box: Box, fps: float) -> Box | None:
    """``box`` as a perfect detector sampling at ``fps`` would report it (None: no sampled
    frame falls inside its query span)."""
    step = 1.0 / fps
    first = math.ceil(box.q0 / step - 0.5 - 1e-9)  # first sampled frame (centre) inside
    last = math.floor(box.q1 / step - 0.5 + 1e-9)
    if last < first:
        return None
    q0, q1 = first * step, (last + 1) * step
    speed = (box.r1 - box.r0) / (box.q1 - box.q0)
    r0, r1 = box.r0 + (q0 - box.q0) * speed, box.r1 + (q1 - box.q1) * speed
    return dataclasses.replace(box, q0=q0, q1=q1, r0=r0, r1=r1, score=1.0)


def ceiling(truth: list[Box], fps: float) -> dict:
    predicted = [b for b in (on_grid(t, fps) for t in truth) if b is not None]
    return evaluate(truth, predicted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4", help="comma-separated dataset seeds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [
        *section_header("ceiling", f"python -m benchmarks.ceiling --seeds {args.seeds}"),
        "",
        "| sampling | " + " | ".join(f"seed {s} F1 (P / R)" for s in seeds) + " |",
        "| --- | " + " | ".join("---" for _ in seeds) + " |",
    ]
    truths = {}
    for seed in seeds:
        data = REPO / "data" / f"bench-seed{seed}"
        if not (data / "gt.csv").exists():
            build(seed, data)
        truths[seed] = read_segments(data / "gt.csv")
    for fps in RATES:
        cells = []
        for seed in seeds:
            f = ceiling(truths[seed], fps)
            cells.append(f"{f['f1']:.3f} ({f['precision']:.3f} / {f['recall']:.3f})")
        lines.append(f"| {fps:g} fps, query ends on the grid | " + " | ".join(cells) + " |")
    lines += ["", "<!-- /bench:ceiling -->"]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_results("ceiling", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
