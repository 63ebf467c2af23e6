"""How the compressed frame index was chosen: code families, and cells visited per query.

    python -m benchmarks.structures --compare 1000000      # FAISS families on 1 M frames
    python -m benchmarks.structures --nprobe --catalog data/scale-seed2/catalog --seed 1

* ``--compare N``: the seed-2 references plus synthetic distractor references
  (benchmarks/distractors.py) up to N frames, held in memory; each FAISS family is trained on
  a 300 k sample and searched with every query frame of the seed-2 queries (views included).
  Reported: training time, search time per 100 query vectors, the share whose exact nearest
  frame is in the top 20, the share of copied frames whose reference is in the top 20, and how
  far estimated similarities fall from the exact ones.
* ``--nprobe``: on a built catalog (the scale benchmark's; its references are the same files
  for every seed), F1, pair recall and search time per 30 s of query for several ``nprobe``,
  on the development seed: the default is chosen here, never on the report seed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.run import REPO, section_header, update_results, videos

FAMILIES = ("IVF{n},PQ128x4fs", "IVF{n},PQ256x4fs", "IVF{n},PQ64", "IVF{n},SQ4", "IVF{n},SQ8")


def compare(size: int, nprobes: list[int]) -> str:
    import faiss

    from benchmarks.scale import described, distractor, distractor_model
    from pipeline.config import load_config
    from pipeline.detector import CopyDetector

    work = REPO / "data" / "scale-seed2"
    data = REPO / "data" / "bench-seed2"
    model, _ = distractor_model(work)
    refs = described(videos(data / "references"), work / "references")
    names = sorted(refs)
    parts = [refs[n].embeddings for n in names]
    owner = [np.full(len(refs[n]), i) for i, n in enumerate(names)]
    total, number = sum(len(p) for p in parts), 0
    preprocess = refs[names[0]].preprocess
    while total < size:
        features = distractor(model, number, 2, preprocess)
        parts.append(features.embeddings)
        owner.append(np.full(len(features), -1))
        total, number = total + len(features), number + 1
    x = np.concatenate(parts)
    owner = np.concatenate(owner)
    detector = CopyDetector(load_config())
    gt = list(csv.DictReader((data / "gt.csv").read_text().splitlines()))
    queries, truth = [], []
    for path in videos(data / "queries"):
        vectors, _ = detector.describe(path).search_vectors()
        refs_of = {names.index(r["reference_id"]) for r in gt if r["query_id"] == path.stem}
        queries.append(vectors)
        truth += [refs_of] * len(vectors)
    q = np.concatenate(queries)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    exact_sims, exact_ids = exact.search(q, 20)
    strong = [i for i in range(len(q)) if exact_sims[i, 0] >= 0.35 and owner[exact_ids[i, 0]] >= 0]
    nlist = 2 ** round(np.log2(np.sqrt(len(x))))
    sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 300000), replace=False)]
    rows = []
    for family in FAMILIES:
        key = family.format(n=nlist)
        index = faiss.index_factory(x.shape[1], key, faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - started
        index.add(x)
        for nprobe in nprobes:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            index.search(q[:100], 20, params=params)  # warm
            started = time.perf_counter()
            sims, ids = index.search(q, 20, params=params)
            per_100 = 1e5 * (time.perf_counter() - started) / len(q)
            nearest = np.mean([exact_ids[i, 0] in ids[i] for i in range(len(q))])
            found = np.mean([owner[exact_ids[i, 0]] in set(owner[ids[i]]) for i in strong])
            error = np.concatenate([sims[i][ids[i] == exact_ids[i, 0]] - exact_sims[i, 0]
                                    for i in strong if exact_ids[i, 0] in ids[i]])  # fmt: skip
            rows.append(f"| `{key}` | {nprobe} | {train_s:.0f} | {per_100:.1f} | {nearest:.3f} | "
                        f"{found:.3f} | {error.mean():+.3f} ({np.percentile(error, 5):+.3f} .. "
                        f"{np.percentile(error, 95):+.3f}) | {index.code_size + 8} |")  # fmt: skip
        del index
    lines = section_header("structures", f"python -m benchmarks.structures --compare {size}")
    lines += [
        "",
        f"{len(x)} frames (14 seed-2 references + {number} synthetic distractors of 10 min); "
        f"{len(q)} query vectors (seed-2 queries, views included), {len(strong)} of them copied "
        "frames whose exact nearest frame is their reference's (similarity >= 0.35).",
        "",
        "| structure | nprobe | train s | search ms / 100 vectors | exact nearest in top 20 | "
        "copied frame's reference in top 20 | estimate - exact: mean (p5 .. p95) "
        "| bytes / vector |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "<!-- /bench:structures -->",
    ]
    return "\n".join(lines)


def sweep(catalog: Path, seed: int, nprobes: list[int]) -> str:
    from pipeline.config import load_config
    from pipeline.detector import CopyDetector
    from pipeline.index import ReferenceIndex
    from pipeline.metric import evaluate, read_segments, write_segments

    data = REPO / "data" / f"bench-seed{seed}"
    detector = CopyDetector(load_config())
    features = [detector.describe(p) for p in videos(data / "queries")]
    seconds = sum(f.duration for f in features)
    rows = []
    for nprobe in nprobes:
        config = load_config(overrides={"index": {"nprobe": nprobe}})
        variant = CopyDetector(config, embedder=detector.embedder)
        with ReferenceIndex(catalog, create=False, config=config.index) as index:
            index.search(np.zeros((1, 512), np.float32), 1)
            boxes, search = [], 0.0
            for query in features:
                result = variant.query_features(query, index)
                boxes += result.segment_boxes()
                search += result.timings["search"]
            frames = index.info()["frames"]
        pred = catalog.parent / f"nprobe-{nprobe}.csv"
        write_segments(pred, boxes)
        figures = evaluate(read_segments(data / "gt.csv"), read_segments(pred))
        per_30s = 1000 * search / seconds * 30
        rows.append(f"| {nprobe} | {figures['f1']:.4f} | {figures['pair_recall']:.3f} | "
                    f"{figures['false_alarm_pairs']} | {per_30s:.0f} |")  # fmt: skip
    tag = f"nprobe seed {seed}"
    command = f"python -m benchmarks.structures --nprobe --catalog {catalog} --seed {seed}"
    lines = section_header(tag, command)
    lines += [
        "",
        f"Catalog: {frames} frames. Queries: the {len(features)} seed-{seed} queries, described "
        "once; search is timed per 30 s of query video.",
        "",
        "| nprobe | F1 | pair R | false-alarm pairs | search ms / 30 s |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"<!-- /bench:{tag} -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=int, help="catalog size for the family comparison")
    parser.add_argument("--nprobe", action="store_true", help="the nprobe sweep")
    parser.add_argument("--catalog", type=Path, default=REPO / "data" / "scale-seed2" / "catalog")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--values", default="16,32,64,128", help="nprobe values")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    values = [int(v) for v in args.values.split(",")]
    sections = []
    if args.compare:
        sections.append(("structures", compare(args.compare, [32, 64])))
    if args.nprobe:
        sections.append((f"nprobe seed {args.seed}", sweep(args.catalog, args.seed, values)))
    for tag, markdown in sections:
        print(markdown)
        if not args.no_write:
            update_results(tag, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
