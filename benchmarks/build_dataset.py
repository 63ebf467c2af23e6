"""Build the copy-detection benchmark from real footage, deterministically from a seed.

    python -m benchmarks.build_dataset --seed 2 --out data/bench-seed2

Writes ``references/`` (real clips plus distractor references nobody copies), ``queries/``
(edited copies of 2-20 s embedded at random offsets between unrelated footage, queries with two
copies, stacked scenes, the natural copy pairs that ship with the footage, and negatives made of
unrelated footage only) and ``gt.csv`` (segment CSV plus an ``edit`` column), ``dataset.json``.

Unrelated footage ("fillers") never appears among the references: two held-out real clips and
photos of their own, animated with a slow zoom.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import footage
from benchmarks.edits import Extra, Part, compose, fit, render

log = logging.getLogger(__name__)

REFERENCE_CLIPS = ("bikes", "vtest", "tree", "Megamind", "carphone_pristine", "bigbuckbunny")
FILLER_CLIPS = ("box", "cup")
DISTRACTOR_PHOTOS = ("brick", "camera", "coins", "gravel", "moon", "page", "retina", "horse")
FILLER_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                 "grass", "ihc", "text", "color")  # fmt: skip
BACKGROUND_PHOTOS = ("grass", "gravel", "text", "color")  # picture-in-picture backgrounds
NATURAL = (("Megamind_bugy", "Megamind"), ("carphone_distorted", "carphone_pristine"))
DISTRACTOR_SECONDS = 10.0


@dataclass(frozen=True)
class Truth:
    query_id: str
    reference_id: str
    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    edit: str


def _r(rng: random.Random, lo: float, hi: float, step: float = 0.04) -> float:
    """A random value on the frame grid (25 fps) so that truth is exact to the frame."""
    return round(rng.uniform(lo, hi) / step) * step


def write_truth(path: Path, truth: list[Truth]) -> None:
    """The segment CSV of ``truth`` with its ``edit`` column (``copyspan eval --gt``)."""
    header = "query_id,reference_id,query_start,query_end,reference_start,reference_end,edit"
    lines = [header] + [
        f"{t.query_id},{t.reference_id},{t.query_start:.3f},{t.query_end:.3f},"
        f"{t.reference_start:.3f},{t.reference_end:.3f},{t.edit}"
        for t in truth
    ]
    path.write_text("\n".join(lines) + "\n")


# ---- edits: each returns the Part fields that make the copy ------------------------------


def _crop(rng):
    w, h = rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85)
    x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return {"vf": f"crop=iw*{w:.3f}:ih*{h:.3f}:iw*{x:.3f}:ih*{y:.3f}"}


def _pip(rng):
    scale = rng.uniform(0.35, 0.6)
    x, y = rng.uniform(0, 1 - scale), rng.uniform(0, 1 - scale)
    background = footage.photos()[rng.choice(BACKGROUND_PHOTOS)]
    graph = (
        "[x1]scale=640:360,setsar=1[bg];"
        f"[main]scale=640*{scale:.3f}:360*{scale:.3f},setsar=1[fg];"
        f"[bg][fg]overlay=W*{x:.3f}:H*{y:.3f}:shortest=1[edited]"
    )
    return {"graph": graph, "extras": (Extra(background, photo=True),)}


def _color(rng):
    return {
        "vf": f"eq=brightness={rng.uniform(-0.15, 0.15):.3f}:contrast={rng.uniform(0.7, 1.4):.3f}"
        f":saturation={rng.uniform(0.3, 1.8):.3f}"
    }


def _reencode(rng):
    factor = rng.choice((3, 4))
    return {"vf": f"scale=iw/{factor}:-2", "crf": rng.randint(38, 44)}


def _box_pad(rng):
    if rng.random() < 0.5:  # letterbox: bars above and below
        return {"vf": f"pad=iw:ih*{rng.uniform(1.3, 1.7):.3f}:0:(oh-ih)/2"}
    return {"vf": f"pad=iw*{rng.uniform(1.3, 1.7):.3f}:ih:(ow-iw)/2:0"}  # pillarbox


def _overlay(rng):
    logo = footage.photos()["logo"]
    corner = rng.choice(("20:20", "W-w-20:20", "20:H-h-60", "W-w-20:H-h-60"))
    graph = (
        f"[main]{fit()}[m];[x1]scale={rng.randint(90, 160)}:-2[logo];"
        f"[m][logo]overlay={corner}:shortest=1,"
        f"drawbox=x=0:y=ih*0.80:w=iw:h=ih*0.13:color=black@{rng.uniform(0.5, 0.85):.2f}:t=fill,"
        f"drawbox=x=iw*0.1:y=ih*0.83:w=iw*{rng.uniform(0.3, 0.7):.2f}:h=ih*0.06:"
        "color=white@0.9:t=fill[edited]"
    )
    return {"graph": graph, "extras": (Extra(logo, photo=True),)}


EDITS: dict[str, Callable[[random.Random], dict]] = {
    "crop": _crop,
    "hflip": lambda rng: {"vf": "hflip"},
    "pip": _pip,
    "speed": lambda rng: {"speed": rng.choice((0.5, 0.67, 0.8, 1.25, 1.5, 2.0))},
    "color": _color,
    "blur": lambda rng: {"vf": f"gblur=sigma={rng.uniform(2, 5):.2f}"},
    "reencode": _reencode,
    "fps_change": lambda rng: {"vf": f"fps={rng.choice((5, 6, 8, 10))}"},
    "letterbox": _box_pad,
    "overlay": _overlay,
    "rotate": lambda rng: {
        "vf": f"rotate={rng.choice((-1, 1)) * rng.uniform(5, 15):.2f}*PI/180:fillcolor=black"
    },
    "grayscale": lambda rng: {"vf": "hue=s=0"},
    "noise": lambda rng: {"vf": f"noise=alls={rng.randint(15, 30)}:allf=t"},
    "stack": None,  # two references side by side or stacked: built in _stack
}


class Builder:
    def __init__(self, seed: int, out: Path):
        self.rng = random.Random(seed)
        self.out = out
        self.clips = footage.clips()
        self.photos = footage.photos()
        self.durations: dict[str, float] = {}
        self.truth: list[Truth] = []
        self.queries: dict[str, list[Part]] = {}

    def duration(self, name: str) -> float:
        if name not in self.durations:
            import av

            with av.open(str(self.clips[name])) as container:
                self.durations[name] = container.duration / 1_000_000
        return self.durations[name]

    # ---- pieces --------------------------------------------------------------------------

    def filler(self) -> Part:
        rng = self.rng
        seconds = _r(rng, 2.0, 7.0)
        if rng.random() < 0.4:
            name = rng.choice(FILLER_CLIPS)
            start = _r(rng, 0.0, max(0.0, self.duration(name) - seconds - 0.2))
            return Part(
                self.clips[name], min(seconds, self.duration(name) - start - 0.2), start=start
            )
        return Part(self.photos[rng.choice(FILLER_PHOTOS)], seconds, photo=True)

    def excerpt(
        self, reference: str, speed: float, lo: float = 2.0, hi: float = 20.0
    ) -> tuple[float, float]:
        """(start in the reference, seconds of query) for a copy of ``lo``-``hi`` s of query
        time (shorter where the reference is)."""
        available = self.duration(reference) - 0.3
        longest = min(hi, available / speed)
        seconds = _r(self.rng, lo, max(lo, longest))
        start = _r(self.rng, 0.0, max(0.0, available - seconds * speed))
        return start, seconds

    def copy(self, edit: str, reference: str) -> tuple[Part, list[tuple[str, float, float, str]]]:
        """A copied part and its truth rows (reference, start, end in the reference, edit)."""
        if edit == "stack":
            return self.stack(reference)
        fields = EDITS[edit](self.rng)
        speed = fields.get("speed", 1.0)
        start, seconds = self.excerpt(reference, speed)
        part = Part(self.clips[reference], seconds, start=start, **fields)
        return part, [(reference, start, start + seconds * speed, edit)]

    def stack(self, reference: str):
        other = self.rng.choice([r for r in REFERENCE_CLIPS if r != reference])
        start_a, seconds_a = self.excerpt(reference, 1.0)
        start_b, seconds_b = self.excerpt(other, 1.0)
        seconds = min(seconds_a, seconds_b)
        how = self.rng.choice(("hstack", "vstack"))
        size = "scale=-2:360" if how == "hstack" else "scale=640:-2"
        graph = f"[main]{size},setsar=1[a];[x1]{size},setsar=1[b];[a][b]{how}=shortest=1[edited]"
        part = Part(
            self.clips[reference], seconds, start=start_a, graph=graph,
            extras=(Extra(self.clips[other], start=start_b),),
        )  # fmt: skip
        return part, [
            (reference, start_a, start_a + seconds, "stack"),
            (other, start_b, start_b + seconds, "stack"),
        ]

    # ---- queries -------------------------------------------------------------------------

    def add_query(self, name: str, copies: list[tuple[str, str]]) -> None:
        parts = [self.filler()]
        clock = parts[0].duration
        for edit, reference in copies:
            part, rows = self.copy(edit, reference)
            for ref, r0, r1, label in rows:
                self.truth.append(Truth(name, ref, clock, clock + part.duration, r0, r1, label))
            parts.append(part)
            clock += part.duration
            filler = self.filler()
            parts.append(filler)
            clock += filler.duration
        self.queries[name] = parts

    def reference(self) -> str:
        """A reference to copy from; longer clips are picked more often (weight sqrt(seconds))."""
        weights = [self.duration(name) ** 0.5 for name in REFERENCE_CLIPS]
        return self.rng.choices(REFERENCE_CLIPS, weights=weights)[0]

    def plan(self, per_edit: int, doubles: int, negatives: int, edits: list[str]) -> None:
        number = 0
        for edit in edits:
            for _ in range(per_edit):
                number += 1
                self.add_query(f"q{number:03d}_{edit}", [(edit, self.reference())])
        single = [e for e in edits if e != "stack"]
        for _ in range(doubles):
            number += 1
            first = self.reference()
            second = self.rng.choice([r for r in REFERENCE_CLIPS if r != first])
            self.add_query(
                f"q{number:03d}_two",
                [(self.rng.choice(single), first), (self.rng.choice(single), second)],
            )
        for index in range(negatives):
            name = f"n{index + 1:03d}_negative"
            self.queries[name] = [self.filler() for _ in range(self.rng.randint(2, 4))]

    # ---- writing -------------------------------------------------------------------------

    def fresh_folders(self) -> tuple[Path, Path]:
        """``references/`` and ``queries/`` under the output, emptied."""
        refs, queries = self.out / "references", self.out / "queries"
        for folder in (refs, queries):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        return refs, queries

    def render_queries(self, folder: Path) -> None:
        for name, parts in self.queries.items():
            compose(parts, folder / f"{name}.mp4")
            log.info("query %s", name)

    def write(self) -> dict:
        refs, queries = self.fresh_folders()
        for name in REFERENCE_CLIPS:
            shutil.copy(self.clips[name], refs)
        for photo in DISTRACTOR_PHOTOS:
            part = Part(self.photos[photo], DISTRACTOR_SECONDS, photo=True)
            render(part, refs / f"distractor_{photo}.mp4")
        self.render_queries(queries)
        for query, reference in NATURAL:
            shutil.copy(self.clips[query], queries)
            duration_q, duration_r = self.duration(query), self.duration(reference)
            self.truth.append(Truth(query, reference, 0.0, duration_q, 0.0, duration_r, "natural"))
        write_truth(self.out / "gt.csv", self.truth)
        summary = {
            "queries": len(self.queries) + len(NATURAL),
            "positive_queries": len({t.query_id for t in self.truth}),
            "negative_queries": sum(name.endswith("_negative") for name in self.queries),
            "references": len(REFERENCE_CLIPS) + len(DISTRACTOR_PHOTOS),
            "distractor_references": len(DISTRACTOR_PHOTOS),
            "gt_segments": len(self.truth),
            "edits": sorted({t.edit for t in self.truth}),
        }
        (self.out / "dataset.json").write_text(
            json.dumps({**summary, "truth": [asdict(t) for t in self.truth]}, indent=1)
        )
        return summary


def build(
    seed: int,
    out: Path,
    per_edit: int = 3,
    doubles: int = 5,
    negatives: int = 10,
    edits: list[str] | None = None,
) -> dict:
    """Build the dataset into ``out``; ``edits`` restricts the edit types (a test slice)."""
    builder = Builder(seed, out)
    builder.plan(per_edit, doubles, negatives, edits or list(EDITS))
    return builder.write()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-edit", type=int, default=3, help="single-copy queries per edit")
    parser.add_argument("--doubles", type=int, default=5, help="queries with two copies")
    parser.add_argument("--negatives", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(build(args.seed, args.out, args.per_edit, args.doubles, args.negatives)))


if __name__ == "__main__":
    main()
