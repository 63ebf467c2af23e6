"""Audit and ingest throughput: Ray actors vs the single-process path vs decode-only.

    python -m benchmarks.throughput --seed 2     # uses data/bench-seed2 (built if missing)

All figures are video-seconds per wall-second on the same files in one run, so the ratios to
decode-only (same decoder, same sampling) are what to compare across machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.build_dataset import build
from benchmarks.run import REPO, decode_only, machine, update_results, videos
from pipeline.config import Config, load_config
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256


def ray_config(config: Config, cpus: int) -> Config:
    """Actor CPU shares scaled to the CPUs Ray is given (actors must not hold every CPU)."""
    share = cpus / 2
    ray = dataclasses.replace(
        config.ray,
        num_cpus=cpus,
        decoder_cpus=0.4 * share,
        embedder_cpus=0.9 * share,
        aligner_cpus=0.2 * share,
    )
    return dataclasses.replace(
        config, ray=ray, embed=dataclasses.replace(config.embed, threads=cpus)
    )


def single_process(config: Config, refs: list[Path], queries: list[Path], work: Path) -> dict:
    detector = CopyDetector(config)
    index = ReferenceIndex(work / "index-single")
    started = time.perf_counter()
    index.add([(detector.describe(p, views=False), file_sha256(p)) for p in refs])
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    for path in queries:
        detector.query(path, index)
    audit_s = time.perf_counter() - started
    index.close()
    return {"ingest_s": ingest_s, "audit_s": audit_s}


def with_ray(config: Config, refs: list[Path], queries: list[Path], work: Path, cpus: int) -> dict:
    import ray

    from workers.audit import Audit, ingest, init_ray

    cfg = ray_config(config, cpus)
    init_ray(cfg)
    try:
        index_dir = work / f"index-ray{cpus}"
        started = time.perf_counter()
        ingest(cfg, refs, str(index_dir), progress=False)
        ingest_s = time.perf_counter() - started
        out = work / f"audit-ray{cpus}"
        started = time.perf_counter()
        Audit(cfg, str(index_dir), out).run(queries[0].parent, progress=False)
        audit_s = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"ingest_s": ingest_s, "audit_s": audit_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "dataset.json").exists():
        build(args.seed, data)
    config = load_config()
    refs, queries = videos(data / "references"), videos(data / "queries")
    ref_video, _ = decode_only(refs, config)
    query_video, decode_s = decode_only(queries, config)
    decode_tput = query_video / decode_s
    ref_decode_tput = ref_video / decode_only(refs, config)[1]
    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    try:
        rows = {"single process": single_process(config, refs, queries, work)}
        for cpus in (1, 2):
            rows[f"Ray, {cpus} CPU{'s' if cpus > 1 else ''}"] = with_ray(
                config, refs, queries, work, cpus
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "<!-- bench:throughput -->",
        "### Audit and ingest throughput (Ray vs single process vs decode-only)",
        "",
        f"Command: `python -m benchmarks.throughput --seed {args.seed}`  ",
        f"Machine: {machine()}  ",
        f"Files: the seed-{args.seed} benchmark: audit of {len(queries)} queries "
        f"({query_video:.0f} s of video), ingest of {len(refs)} references ({ref_video:.0f} s). "
        f"Model `{config.embed.model}`, {config.decode.fps:g} fps, "
        f"decoder `{config.decode.backend}`.",
        "",
        "| path | audit video s / s | audit / decode-only | ingest video s / s "
        "| ingest / decode-only |",
        "| --- | --- | --- | --- | --- |",
        f"| decode only (same decoder and sampling) | {decode_tput:.1f} | 1.00 "
        f"| {ref_decode_tput:.1f} | 1.00 |",
    ]
    for name, row in rows.items():
        audit_tput, ingest_tput = query_video / row["audit_s"], ref_video / row["ingest_s"]
        lines.append(
            f"| {name} | {audit_tput:.1f} | {audit_tput / decode_tput:.2f} | {ingest_tput:.1f} "
            f"| {ingest_tput / ref_decode_tput:.2f} |"
        )
    lines += ["", "<!-- /bench:throughput -->"]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_results("throughput", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
