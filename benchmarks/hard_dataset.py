"""The hard profile: the edits people use first to evade copy detection, deterministic per seed.

    python -m benchmarks.hard_dataset --seed 1 --out data/hard-seed1    # development
    python -m benchmarks.hard_dataset --seed 2 --out data/hard-seed2    # reporting (~8 min)

Same layout as benchmarks/build_dataset.py (``references/``, ``queries/``, ``gt.csv`` with an
``edit`` column, ``dataset.json``), which it extends. Families (``edit`` labels):

* ``pip_small``: the copy in a window of 4-15% of the frame area, anywhere, over moving real
  video (the held-out clips, looped), with a border or without;
* ``zoom``: a crop keeping 30-50% of each side, scaled back up;
* ``rotate90`` (90°, 180° or 270°), ``rotate_small`` (5-20° with a coloured fill);
* ``mirror_frame``: mirrored inside a coloured frame;
* ``speed``: 0.5x-2x, any rate;
* ``lowq``: 4-8 fps, blurred, a third of the resolution at very low bitrate;
* ``screen``: a screen recording's look: perspective, flicker, noise;
* ``caption``: a caption band or a sticker over a third of the frame;
* ``combo``: two edits at once;
* ``short``: a 2-3 s copy inside 30-60 s of unrelated footage;
* ``static``: copies of near-static or slideshow references (a slowly turning Earth, a tree in
  wind, stills with cuts);
* ``natural``: the natural copy pairs that ship with the footage.

References: the six real clips of the base builder, two more real clips (``cityCC0``,
``world``; benchmarks/footage.py ``extra_clips``), two slideshows of still photos, and
distractors nobody copies (animated photos and a real title card). Negatives are unrelated
footage only. Families are balanced; each query holds one copy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
from pathlib import Path

from benchmarks import footage
from benchmarks.build_dataset import (
    FILLER_CLIPS,
    NATURAL,
    REFERENCE_CLIPS,
    Builder,
    Truth,
    _color,
    _r,
    write_truth,
)
from benchmarks.edits import Extra, Part, compose, fit, render

log = logging.getLogger(__name__)

EXTRA_REFERENCES = ("cityCC0", "world")
SLIDESHOWS = {
    "slideshow_a": ("brick", "camera", "coins", "clock_motion"),
    "slideshow_b": ("moon", "horse", "cell", "microaneurysms"),
}
STATIC_REFERENCES = ("tree", "world", "slideshow_a", "slideshow_b")
HARD_DISTRACTOR_PHOTOS = ("gravel", "page", "retina")
DISTRACTOR_CLIPS = ("titlecard",)  # real footage nobody copies (a generic title card)
NATURAL_EXTRA = (("world_cut", "world", 0.0, 5.0),)  # query, reference, reference span
INSET_PHOTOS = ("grass", "text")  # still backgrounds, the minority of insets
COLOURS = ("0x101010", "0xf0f0f0", "0x2040a0", "0xa02020", "0x208040", "0xc0a000")
FAMILIES = (
    "pip_small", "zoom", "rotate90", "rotate_small", "mirror_frame", "speed", "lowq", "screen",
    "caption", "combo", "short", "static",
)  # fmt: skip


def _pip_small(b: HardBuilder, rng: random.Random) -> dict:
    area = rng.uniform(0.04, 0.15)
    side = math.sqrt(area)
    x, y = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
    if rng.random() < 0.75:  # moving real video behind the window
        name = rng.choice(FILLER_CLIPS)
        start = _r(rng, 0.0, max(0.0, b.duration(name) - 1.0))
        background = Extra(b.clips[name], start=start, loop=True)
    else:
        background = Extra(b.photos[rng.choice(INSET_PHOTOS)], photo=True)
    border = ""
    if rng.random() < 0.5:
        px = rng.randint(2, 6)
        border = f",pad=iw+{2 * px}:ih+{2 * px}:{px}:{px}:color={rng.choice(COLOURS)}"
    graph = (
        f"[x1]{fit()}[bg];"
        f"[main]scale=640*{side:.3f}:360*{side:.3f},setsar=1{border}[fg];"
        f"[bg][fg]overlay=W*{x:.3f}:H*{y:.3f}:shortest=1[edited]"
    )
    return {"graph": graph, "extras": (background,), "_strength": round(area, 3)}


def _zoom(rng: random.Random, lo: float = 0.3, hi: float = 0.5) -> dict:
    w, h = rng.uniform(lo, hi), rng.uniform(lo, hi)
    x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return {"vf": f"crop=iw*{w:.3f}:ih*{h:.3f}:iw*{x:.3f}:ih*{y:.3f}",
            "_strength": round(min(w, h), 3)}  # fmt: skip


def _rotate90(rng: random.Random) -> dict:
    return {"vf": rng.choice(("transpose=1", "transpose=2", "hflip,vflip"))}


def _rotate_small(rng: random.Random) -> dict:
    angle = rng.choice((-1, 1)) * rng.uniform(5, 20)
    return {"vf": f"rotate={angle:.2f}*PI/180:fillcolor={rng.choice(COLOURS)}"}


def _mirror_frame(rng: random.Random) -> dict:
    grow = rng.uniform(1.15, 1.4)
    return {"vf": f"hflip,pad=iw*{grow:.3f}:ih*{grow:.3f}:(ow-iw)/2:(oh-ih)/2:"
                  f"color={rng.choice(COLOURS)}"}  # fmt: skip


def _speed(rng: random.Random) -> dict:
    speed = math.exp(rng.choice((-1, 1)) * rng.uniform(math.log(1.2), math.log(2.0)))
    return {"speed": round(speed, 2)}


def _lowq(rng: random.Random) -> dict:
    return {"vf": f"fps={rng.randint(4, 8)},gblur=sigma={rng.uniform(1.5, 3.5):.2f},"
                  "scale=iw/3:-2", "crf": rng.randint(42, 47)}  # fmt: skip


def _screen(rng: random.Random) -> dict:
    a, b, c, d = (rng.uniform(0.02, 0.1) for _ in range(4))
    keystone = (f"perspective=x0=W*{a:.3f}:y0=H*{b:.3f}:x1=W*{1 - c:.3f}:y1=0:x2=0:y2=H:"
                f"x3=W*{1 - d:.3f}:y3=H*{1 - a:.3f}:sense=destination")  # fmt: skip
    flicker = f"eq=brightness={rng.uniform(0.03, 0.07):.3f}*sin(2*PI*t*{rng.uniform(4, 9):.1f})"
    return {"vf": f"{keystone},{flicker}:eval=frame,noise=alls={rng.randint(8, 18)}:allf=t"}


def _caption(b: HardBuilder, rng: random.Random) -> dict:
    if rng.random() < 0.5:  # a caption band: a third of the height, text-like bars on it
        y = rng.choice((0.0, 0.33, 0.67))
        bars = "".join(
            f",drawbox=x=iw*{rng.uniform(0.05, 0.2):.2f}:y=ih*{y + 0.05 + 0.1 * i:.2f}:"
            f"w=iw*{rng.uniform(0.4, 0.75):.2f}:h=ih*0.06:color=white@0.9:t=fill"
            for i in range(2)
        )
        return {"vf": f"{fit()},drawbox=x=0:y=ih*{y:.2f}:w=iw:h=ih*0.33:"
                      f"color=black@{rng.uniform(0.75, 0.95):.2f}:t=fill{bars}"}  # fmt: skip
    sticker = b.photos[rng.choice(("logo", "astronaut", "chelsea"))]
    x, y = rng.uniform(0, 0.42), rng.uniform(0, 0.42)
    graph = (f"[main]{fit()}[m];[x1]scale=640*0.58:360*0.58,setsar=1[s];"
             f"[m][s]overlay=W*{x:.3f}:H*{y:.3f}:shortest=1[edited]")  # fmt: skip
    return {"graph": graph, "extras": (Extra(sticker, photo=True),)}


def _band(rng: random.Random) -> dict:
    return {"vf": f"{fit()},drawbox=x=0:y=ih*0.67:w=iw:h=ih*0.33:color=black@0.85:t=fill"}


# Edits that chain as one filter (vf) or a rate, for ``combo``.
COMBINABLE = {
    "zoom": lambda rng: _zoom(rng, 0.5, 0.7),
    "hflip": lambda rng: {"vf": "hflip"},
    "color": _color,
    "blur": lambda rng: {"vf": f"gblur=sigma={rng.uniform(2, 4):.2f}"},
    "rotate_small": _rotate_small,
    "noise": lambda rng: {"vf": f"noise=alls={rng.randint(15, 25)}:allf=t"},
    "band": _band,
    "speed": _speed,
    "letterbox": lambda rng: {"vf": f"pad=iw:ih*{rng.uniform(1.3, 1.6):.3f}:0:(oh-ih)/2"},
}


def _combo(rng: random.Random) -> dict:
    first, second = rng.sample(sorted(COMBINABLE), 2)
    fields: dict = {"_parts": f"{first}+{second}"}
    filters = []
    for name in (first, second):
        edit = COMBINABLE[name](rng)
        if "vf" in edit:
            filters.append(edit["vf"])
        if "speed" in edit:
            fields["speed"] = edit["speed"]
    if filters:
        fields["vf"] = ",".join(filters)
    return fields


def _mild(rng: random.Random) -> dict:
    """What a copy of near-static or short footage also goes through: a light edit."""
    return rng.choice([
        {},
        COMBINABLE["color"](rng),
        {"vf": "scale=iw/2:-2", "crf": 34},
        COMBINABLE["letterbox"](rng),
        _zoom(rng, 0.7, 0.85),
    ])  # fmt: skip


class HardBuilder(Builder):
    def __init__(self, seed: int, out: Path):
        super().__init__(seed, out)
        self.clips = {**self.clips, **footage.extra_clips()}
        self.references = (*REFERENCE_CLIPS, *EXTRA_REFERENCES)
        self.strengths: dict[str, object] = {}

    def duration(self, name: str) -> float:
        if name in SLIDESHOWS:
            return 4 * 3.0
        return super().duration(name)

    def source(self, name: str) -> Path:
        return self.out / "references" / f"{name}.mp4" if name in SLIDESHOWS else self.clips[name]

    def edit_fields(self, family: str) -> dict:
        rng = self.rng
        return {
            "pip_small": lambda: _pip_small(self, rng),
            "zoom": lambda: _zoom(rng),
            "rotate90": lambda: _rotate90(rng),
            "rotate_small": lambda: _rotate_small(rng),
            "mirror_frame": lambda: _mirror_frame(rng),
            "speed": lambda: _speed(rng),
            "lowq": lambda: _lowq(rng),
            "screen": lambda: _screen(rng),
            "caption": lambda: _caption(self, rng),
            "combo": lambda: _combo(rng),
            "short": lambda: _mild(rng),
            "static": lambda: _mild(rng),
        }[family]()

    def hard_query(self, name: str, family: str) -> None:
        rng = self.rng
        if family == "static":
            reference = rng.choice(STATIC_REFERENCES)
        else:
            reference = rng.choices(
                self.references, weights=[self.duration(r) ** 0.5 for r in self.references]
            )[0]
        fields = self.edit_fields(family)
        strength = fields.pop("_strength", None) or fields.pop("_parts", None)
        speed = fields.get("speed", 1.0)
        lo, hi = (2.0, 3.0) if family == "short" else (3.0, 15.0)
        start, seconds = self.excerpt(reference, speed, lo, hi)
        copy = Part(self.source(reference), seconds, start=start, **fields)
        long_filler = family == "short"
        before = self.fillers(30.0 if long_filler else 0.0)
        after = self.fillers(30.0 if long_filler else 0.0)
        clock = sum(p.duration for p in before)
        self.truth.append(Truth(name, reference, clock, clock + seconds, start,
                                start + seconds * speed, family))  # fmt: skip
        self.queries[name] = [*before, copy, *after]
        if strength is not None:
            self.strengths[name] = strength

    def fillers(self, at_least: float) -> list[Part]:
        parts = [self.filler()]
        while sum(p.duration for p in parts) < at_least:
            parts.append(self.filler())
        return parts

    def plan_hard(self, per_family: int, negatives: int) -> None:
        number = 0
        for family in FAMILIES:
            for _ in range(per_family):
                number += 1
                self.hard_query(f"h{number:03d}_{family}", family)
        for index in range(negatives):
            name = f"n{index + 1:03d}_negative"
            self.queries[name] = [self.filler() for _ in range(self.rng.randint(2, 5))]

    def write_hard(self) -> dict:
        refs, queries = self.fresh_folders()
        for name in self.references:
            shutil.copy(self.clips[name], refs / f"{name}{self.clips[name].suffix}")
        for name, photos in SLIDESHOWS.items():
            stills = [Part(self.photos[p], 3.0, photo=True, zoom_rate=0.0) for p in photos]
            compose(stills, refs / f"{name}.mp4")
        for photo in HARD_DISTRACTOR_PHOTOS:
            render(Part(self.photos[photo], 10.0, photo=True), refs / f"distractor_{photo}.mp4")
        for name in DISTRACTOR_CLIPS:
            shutil.copy(self.clips[name], refs / f"distractor_{name}{self.clips[name].suffix}")
        self.render_queries(queries)
        for query, reference in NATURAL:
            shutil.copy(self.clips[query], queries)
            self.truth.append(Truth(query, reference, 0.0, self.duration(query), 0.0,
                                    self.duration(reference), "natural"))  # fmt: skip
        for query, reference, r0, r1 in NATURAL_EXTRA:
            shutil.copy(self.clips[query], queries)
            self.truth.append(Truth(query, reference, 0.0, self.duration(query), r0, r1,
                                    "natural"))  # fmt: skip
        write_truth(self.out / "gt.csv", self.truth)
        distractors = len(HARD_DISTRACTOR_PHOTOS) + len(DISTRACTOR_CLIPS)
        summary = {
            "profile": "hard",
            "queries": len(self.queries) + len(NATURAL) + len(NATURAL_EXTRA),
            "positive_queries": len({t.query_id for t in self.truth}),
            "negative_queries": sum(name.endswith("_negative") for name in self.queries),
            "references": len(self.references) + len(SLIDESHOWS) + distractors,
            "distractor_references": distractors,
            "gt_segments": len(self.truth),
            "edits": sorted({t.edit for t in self.truth}),
        }
        (self.out / "dataset.json").write_text(json.dumps(
            {**summary, "strengths": self.strengths, "truth": [t.__dict__ for t in self.truth]},
            indent=1,
        ))  # fmt: skip
        return summary


def build_hard(seed: int, out: Path, per_family: int = 13, negatives: int = 30) -> dict:
    builder = HardBuilder(seed, out)
    builder.plan_hard(per_family, negatives)
    return builder.write_hard()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-family", type=int, default=13)
    parser.add_argument("--negatives", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(build_hard(args.seed, args.out, args.per_family, args.negatives)))


if __name__ == "__main__":
    main()
