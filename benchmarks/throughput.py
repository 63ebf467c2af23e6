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
from pipeline.describe.embed import resolve_runtime
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256


def ray_config(config: Config, cpus: int, gpu: bool = False) -> Config:
    """Actor CPU shares scaled to the CPUs Ray is given (actors must not hold every CPU).

    One decoder per two CPUs: decoding is the CPU stage that parallelises across videos (on 1
    or 2 CPUs this is the single decoder of the default config). ``gpu`` puts the embed actor
    on the GPU, the torch runtime running the same SSCD export.
    """
    share = cpus / 2
    decoders = max(1, cpus // 2)
    aligners = max(1, decoders // 2)
    ray = dataclasses.replace(
        config.ray,
        num_cpus=cpus,
        decoders=decoders,
        aligners=aligners,
        decoder_cpus=0.4 * share / decoders,
        embedder_cpus=0.9 * share,
        aligner_cpus=0.2 * share / aligners,
        embedder_gpus=1.0 if gpu else 0.0,
        # Enough videos in flight to keep every decoder busy (the default, 6, suits 2 CPUs).
        max_in_flight=max(config.ray.max_in_flight, 3 * decoders),
    )
    return dataclasses.replace(
        config, ray=ray, embed=dataclasses.replace(config.embed, threads=cpus)
    )


def single_process(config: Config, refs: list[Path], queries: list[Path], work: Path) -> dict:
    started = time.perf_counter()
    detector = CopyDetector(config)  # start-up: the model loaded and compiled
    start_s = time.perf_counter() - started
    index = ReferenceIndex(work / "index-single")
    started = time.perf_counter()
    index.add([(detector.describe(p, views=False), file_sha256(p)) for p in refs])
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    for path in queries:
        detector.query(path, index)
    audit_s = time.perf_counter() - started
    index.close()
    return {"ingest_s": start_s + ingest_s, "audit_s": audit_s, "audit_total_s": start_s + audit_s}


def with_ray(
    config: Config, refs: list[Path], queries: list[Path], work: Path, cpus: int, gpu: bool
) -> dict:
    import ray

    from workers.audit import Audit, ingest
    from workers.ray_runtime import init_ray

    cfg = ray_config(config, cpus, gpu)
    init_ray(cfg)
    try:
        index_dir = work / f"index-ray{cpus}"
        started = time.perf_counter()
        ingest(cfg, refs, str(index_dir), progress=False)
        ingest_s = time.perf_counter() - started
        out = work / f"audit-ray{cpus}"
        started = time.perf_counter()
        summary = Audit(cfg, str(index_dir), out).run(queries[0].parent, progress=False)
        total_s = time.perf_counter() - started
    finally:
        ray.shutdown()
    # The audit's own wall: first video sent to last result in. Around it: the actors' start
    # (processes, imports, model, index) and end, and the review page.
    return {"ingest_s": ingest_s, "audit_s": summary["wall_seconds"], "audit_total_s": total_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--ray-cpus", default="1,2", help="comma-separated CPU counts for Ray")
    parser.add_argument("--config", help="copyspan config merged over the defaults")
    parser.add_argument(
        "--gpu", action="store_true", help="embed on the GPU (embed.runtime torch); own section"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    data = REPO / "data" / f"bench-seed{args.seed}"
    if not (data / "dataset.json").exists():
        build(args.seed, data)
    config = load_config(args.config)
    if args.gpu:
        config = dataclasses.replace(
            config, embed=dataclasses.replace(config.embed, runtime="torch")
        )
    refs, queries = videos(data / "references"), videos(data / "queries")
    ref_video, _ = decode_only(refs, config)
    query_video, decode_s = decode_only(queries, config)
    decode_tput = query_video / decode_s
    ref_decode_tput = ref_video / decode_only(refs, config)[1]
    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    try:
        rows = {"single process": single_process(config, refs, queries, work)}
        print("single process", rows["single process"], file=sys.stderr, flush=True)
        for cpus in (int(c) for c in args.ray_cpus.split(",")):
            name = f"Ray, {cpus} CPU{'s' if cpus > 1 else ''}"
            rows[name] = with_ray(config, refs, queries, work, cpus, args.gpu)
            print(name, rows[name], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tag = "throughput-gpu" if args.gpu else "throughput"
    tag += f" {Path(args.config).stem}" if args.config else ""
    command = f"python -m benchmarks.throughput --seed {args.seed}"
    command += f" --ray-cpus {args.ray_cpus}" if args.ray_cpus != "1,2" else ""
    command += f" --config {args.config}" if args.config else ""
    command += " --gpu" if args.gpu else ""
    lines = [
        f"<!-- bench:{tag} -->",
        "### Audit and ingest throughput (Ray vs single process vs decode-only)"
        + (", SSCD on the GPU" if args.gpu else ""),
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Files: the seed-{args.seed} benchmark: audit of {len(queries)} queries "
        f"({query_video:.0f} s of video), ingest of {len(refs)} references ({ref_video:.0f} s). "
        f"Model `{config.embed.model}` on {resolve_runtime(config.embed.runtime)}, "
        f"{config.decode.fps:g} fps, decoder `{config.decode.backend}` "
        "(decode-only: one process; Ray: one decoder actor per two CPUs).",
        "",
        "Audit: from the first video in to the last result out; the next column also counts "
        "start-up (model, actors) and, on Ray, the review page. Ingest: start-up included.",
        "",
        "| path | audit video s / s | audit / decode-only | same, start-up and report included "
        "| ingest video s / s | ingest / decode-only |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| decode only (same decoder and sampling) | {decode_tput:.1f} | 1.00 | 1.00 "
        f"| {ref_decode_tput:.1f} | 1.00 |",
    ]
    for name, row in rows.items():
        audit_tput, ingest_tput = query_video / row["audit_s"], ref_video / row["ingest_s"]
        total_tput = query_video / row["audit_total_s"]
        lines.append(
            f"| {name} | {audit_tput:.1f} | {audit_tput / decode_tput:.2f} "
            f"| {total_tput / decode_tput:.2f} | {ingest_tput:.1f} "
            f"| {ingest_tput / ref_decode_tput:.2f} |"
        )
    lines += ["", f"<!-- /bench:{tag} -->"]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_results(tag, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
