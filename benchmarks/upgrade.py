"""Model upgrades without re-indexing: an index of the earlier model translated into the new
default's space (``copyspan index upgrade``), then backfilled (``copyspan index backfill``).

    python -m benchmarks.upgrade --seed 2                 # data/bench-seed2
    python -m benchmarks.upgrade --profile hard --seed 2  # data/hard-seed2

On one dataset and machine: the earlier model's index queried with its own descriptors
(old/old), the new model's index with the new model's (new/new: what a full re-index gives),
and the earlier index upgraded in place by translations fitted on footage that is not among the
dataset's references (the packages' other clips), queried with the new model: each method, no
fit at all (the identity), half the sample, fitted on the references themselves (the command's
default when their files are reachable), and the default fit backfilled 25, 50 and 100%.
Writes the table into benchmarks/results/upgrade.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.footage import CACHE as FOOTAGE_DIR
from benchmarks.run import REPO, publish, section_header, videos
from pipeline.config import load_config
from pipeline.detector import CopyDetector
from pipeline.index import ReferenceIndex, file_sha256
from pipeline.index.translation import Translation, fit_on_videos
from pipeline.metric import evaluate, read_segments
from workers.commands.upgrade import dense

log = logging.getLogger(__name__)
OLD_PROFILE = REPO / "configs" / "sscd.yaml"  # the default before the distilled student
FIT_FPS = 8.0  # copyspan index upgrade --fps
LATENCY_QUERIES = 8  # queries timed idle, then in turn while the backfill runs


def disjoint_footage(references: list[Path]) -> list[Path]:
    """The packages' clips that show none of the references' footage: a clip is left out
    when its name's first word is part of a reference's name or the other way round
    (``Megamind_bugy`` is ``Megamind``; ``titlecard`` is ``distractor_titlecard``)."""
    names = [p.stem.lower() for p in references]
    found = []
    for clip in sorted((FOOTAGE_DIR / "clips").iterdir()) + sorted(
        (FOOTAGE_DIR / "extras").iterdir()
    ):
        word = clip.stem.lower().split("_")[0]
        if clip.name.startswith("."):  # the cache's own markers
            continue
        if not any(word in name or name.split("_")[0] in clip.stem.lower() for name in names):
            found.append(clip)
    return found


def both(old: CopyDetector, new: CopyDetector, files: list[Path]) -> list[tuple]:
    """(former model's, new model's, new model's of copy-like edits) descriptors per file."""
    return [(old.describe(p, views=False), *new.describe_with_edits(p)) for p in files]


def build_index(detector: CopyDetector, refs: list[Path], root: Path) -> ReferenceIndex:
    index = ReferenceIndex(root)
    index.add([(detector.describe(p, views=False), file_sha256(p)) for p in refs])
    return index


def score(detector: CopyDetector, queries: list, index: ReferenceIndex, truth) -> dict:
    started = time.perf_counter()
    boxes = [b for q in queries for b in detector.query_features(q, index).segment_boxes()]
    figures = evaluate(truth, boxes)
    figures["seconds"] = time.perf_counter() - started
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--profile", choices=("base", "hard"), default="base")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    data = REPO / "data" / f"{'hard' if args.profile == 'hard' else 'bench'}-seed{args.seed}"
    if not (data / "dataset.json").exists():
        raise SystemExit(f"{data} is missing: build it with python -m benchmarks.run first")
    truth = read_segments(data / "gt.csv")
    refs, query_files = videos(data / "references"), videos(data / "queries")
    new_config, old_config = load_config(), load_config(OLD_PROFILE)
    new, old = CopyDetector(new_config), CopyDetector(old_config)
    sample = disjoint_footage(refs)
    rows: list[tuple[str, dict, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log.info("indexing with both models")
        old_index = build_index(old, refs, work / "old")
        new_index = build_index(new, refs, work / "new")
        native = {r.id: new_index.features(r) for r in new_index.references()}
        log.info("describing the queries with both models")
        old_queries = [old.describe(p) for p in query_files]
        new_queries = [new.describe(p) for p in query_files]
        rows.append(("old index, old queries", score(old, old_queries, old_index, truth), ""))
        rows.append(("new index, new queries (re-indexed)",
                     score(new, new_queries, new_index, truth), ""))  # fmt: skip
        old_index.close()

        log.info("describing the fit sample with both models: %s", [p.name for p in sample])
        started = time.perf_counter()
        dense_old = CopyDetector(dense(old_config, FIT_FPS), embedder=old.embedder)
        dense_new = CopyDetector(dense(new_config, FIT_FPS), embedder=new.embedder)
        pairs = both(dense_old, dense_new, sample)
        describe_s = time.perf_counter() - started
        # What `copyspan index upgrade` samples by default when the reference files are
        # reachable: the references themselves (the map is fitted on the content it moves).
        on_refs = both(dense_old, dense_new, refs[:24])
        half, serving = pairs[::2], None
        variants = [  # (method, sample, calibration: on copies, on frame pairs, or none)
            ("auto", pairs, "copies"), ("auto", pairs, "pairs"), ("auto", pairs, None),
            ("lstsq", pairs, "copies"), ("procrustes", pairs, "copies"),
            ("identity", pairs, "copies"), ("auto", half, "copies"),
            ("auto", on_refs, "copies"), ("auto", on_refs, "pairs"),
        ]  # fmt: skip
        for k, (method, subset, calibration) in enumerate(variants):
            started = time.perf_counter()
            copies = [c for _, _, c in subset] if calibration == "copies" else None
            matrix, bias, report = fit_on_videos([(s, t) for s, t, _ in subset], method, copies)
            if calibration is None:
                report["scale"] = 1.0
            fit_s = time.perf_counter() - started
            upgraded = ReferenceIndex(shutil.copytree(work / "old", work / f"up{k}"))
            translation = Translation(
                upgraded.model or "", upgraded.catalog.meta("preprocess") or "",
                new.embedder.model_id, new.preprocess, matrix, bias, report["method"], report,
                report["scale"],
            )  # fmt: skip
            started = time.perf_counter()
            upgraded.upgrade(translation)
            translate_s = time.perf_counter() - started
            held = report["held_out"]
            chosen = report["method"] + (f" (ridge {report['ridge']:g})" if report["ridge"] else "")
            chosen += f", similarities x{report['scale']:g}"
            note = (
                f"{chosen}: {report['videos']} videos, {report['frames']} frame pairs; held-out "
                f"similarity r {held['similarity_r']}, cosine {held['own_cosine']}; fit "
                f"{fit_s:.1f} s after {describe_s:.0f} s describing; catalog translated in "
                f"{translate_s:.2f} s"
            )
            label = f"upgraded index ({method}{', half the sample' if subset is half else ''}"
            label += ", fitted on the references" if subset is on_refs else ""
            label += {"copies": ")", "pairs": ", calibrated on frame pairs)",
                      None: ", no similarity calibration)"}[calibration]  # fmt: skip
            rows.append((label, score(new, new_queries, upgraded, truth), note))
            if k == 0:  # serving while the real backfill command runs, on a copy of this index
                serving = serving_during_backfill(
                    new, query_files[:LATENCY_QUERIES], shutil.copytree(upgraded.root, work / "bf")
                )
            if k == 0:  # the backfill curve, on the default fit
                refs_now = upgraded.translated()
                for share in (0.25, 0.5, 1.0):
                    while len(upgraded.translated()) > round(len(refs_now) * (1 - share)):
                        ref = upgraded.translated()[0]
                        upgraded.backfill(native[ref.id], ref.sha256)
                    retired = upgraded.retire_translation()
                    label = f"upgraded index, {share:.0%} backfilled"
                    rows.append((label, score(new, new_queries, upgraded, truth),
                                 "translation retired" if retired else ""))  # fmt: skip
            upgraded.close()
        new_index.close()
    tag = f"upgrade {'hard ' if args.profile == 'hard' else ''}seed {args.seed}"
    command = "python -m benchmarks.upgrade " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render(tag, command.strip(), rows, sample, serving)
    publish(tag, markdown, write=not args.no_write)
    return 0


def serving_during_backfill(detector: CopyDetector, queries: list[Path], root: Path) -> dict:
    """Query latency (decode to result) on an upgraded index, idle and while ``copyspan index
    backfill`` re-describes its references in another process (the 2 cores are shared)."""

    def once(path: Path) -> float:
        started = time.perf_counter()
        detector.query(path, index)
        return time.perf_counter() - started

    with ReferenceIndex(root) as index:
        idle = [once(p) for p in queries]
        command = [sys.executable, "-m", "workers.cli", "index", "backfill", "--index", str(root),
                   "-q", "--json"]  # fmt: skip
        started = time.perf_counter()
        backfill = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
        during: list[float] = []
        while backfill.poll() is None:
            during.append(once(queries[len(during) % len(queries)]))
        backfill_s = time.perf_counter() - started
        left = len(index.translated())
    return {"idle": idle, "during": during, "backfill_s": backfill_s, "left": left,
            "code": backfill.returncode}  # fmt: skip


def render(
    tag: str, command: str, rows: list, sample: list[Path], serving: dict | None = None
) -> str:
    lines = [
        *section_header(tag, command),
        f"Fit sample (not among the references): {', '.join(p.name for p in sample)}; the "
        "row *fitted on the references* samples the references' own files instead, as "
        "`copyspan index upgrade` does by default when they are reachable  ",
        "",
        "| index / queries | F1 | µAP | pair recall | false-alarm pairs | search+align s | fit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, f, note in rows:
        lines.append(
            f"| {label} | {f['f1']:.3f} | {f['segment_ap']:.3f} | {f['pair_recall']:.3f} | "
            f"{f['false_alarm_pairs']} | {f['seconds']:.1f} | {note} |"
        )
    edits = sorted({e for _, f, _ in rows for e in f.get("per_edit", {})})
    if edits:
        chosen = [r for r in rows if not r[0].startswith("upgraded index (")][:2] + [
            r for r in rows
            if r[0] in ("upgraded index (auto)", "upgraded index (auto, fitted on the references)")
        ]  # fmt: skip
        lines += [
            "",
            "Pair recall per edit family (F1 in brackets):",
            "",
            "| edit | " + " | ".join(label for label, _, _ in chosen) + " |",
            "| --- |" + " --- |" * len(chosen),
        ]
        for edit in edits:
            cells = []
            for _, f, _ in chosen:
                e = f.get("per_edit", {}).get(edit, {})
                cells.append(f"{e.get('pair_recall', 0):.2f} ({e.get('f1', 0):.2f})")
            lines.append(f"| {edit} | " + " | ".join(cells) + " |")
    if serving:
        p50 = {k: float(np.median(serving[k])) if serving[k] else float("nan")
               for k in ("idle", "during")}  # fmt: skip
        lines += [
            "",
            f"Serving during `copyspan index backfill` (another process, same 2 cores): the "
            f"backfill re-described every reference in {serving['backfill_s']:.1f} s (exit "
            f"{serving['code']}, {serving['left']} left translated); {len(serving['during'])} "
            f"queries answered meanwhile, median latency {p50['during']:.2f} s against "
            f"{p50['idle']:.2f} s idle ({len(serving['idle'])} queries, decode to result).",
        ]
    lines.append(f"<!-- /bench:{tag} -->")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
