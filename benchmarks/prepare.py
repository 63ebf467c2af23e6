"""Frame preparation cost: border crop, evidence weights and region proposals, per frame.

    python -m benchmarks.prepare --seed 2 [--against REV]

Frame preparation is the CPU work between decoding and the model; with the model on a GPU it is
most of the query's CPU time (benchmarks/results/throughput.md, "On a GPU"). ``--against REV``
also times ``pipeline/describe/views.py`` as it was at git revision REV on the same frames in the
same run, and checks that both propose the same regions.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import REPO, machine, videos
from pipeline.config import load_config
from pipeline.describe import views
from pipeline.describe.decode import decode_video
from pipeline.describe.suppress import crop_borders, frame_weights


def _views_at(revision: str):
    """``pipeline/describe/views.py`` from ``revision``, imported as its own module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:pipeline/describe/views.py"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "views_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("views_then", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _timed(fn, frames_list) -> tuple[float, list]:
    started = time.perf_counter()
    out = [fn(frames) for frames in frames_list]
    return time.perf_counter() - started, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument(
        "--against", help="also time pipeline/describe/views.py at this git revision"
    )
    args = parser.parse_args(argv)
    config = load_config()
    queries = videos(REPO / "data" / f"bench-seed{args.seed}" / "queries")
    decoded = [decode_video(path, config.decode).frames for path in queries]
    count = sum(len(frames) for frames in decoded)
    crop_s, cropped = _timed(crop_borders, decoded)
    weights_s, _ = _timed(frame_weights, cropped)
    rows = [("border crop", crop_s), ("evidence weights", weights_s)]
    regions_s, proposed = _timed(lambda f: views.region_proposals(f, config.views), cropped)
    rows.append(("region proposals", regions_s))
    if args.against:
        then = _views_at(args.against)
        then_s, then_proposed = _timed(lambda f: then.region_proposals(f, config.views), cropped)
        same = all(
            [(r, list(i)) for r, i in a] == [(r, list(i)) for r, i in b]
            for a, b in zip(proposed, then_proposed, strict=True)
        )
        rows.append((f"region proposals at {args.against} (same output: {same})", then_s))
    against = f" --against {args.against}" if args.against else ""
    print(f"Command: `python -m benchmarks.prepare --seed {args.seed}{against}`  ")
    print(f"Machine: {machine()}; {len(queries)} queries, {count} sampled frames\n")
    print("| stage | total s | ms per frame |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / count:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
