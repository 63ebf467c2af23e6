"""The demo: real footage in, edited copies made with ffmpeg, copies found and localized.

One reference is only sound (a track of real recorded music) and one query copies it under
unrelated pictures: it is found by its soundtrack (``modality: audio``).

Run with ``make demo`` (or ``python -m benchmarks.demo``). It drives the ``copyspan`` command
exactly as a user would and prints each query's true spans next to the spans copyspan found.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import footage, sounds
from benchmarks.edits import Part, compose, run_ffmpeg

REPO = Path(__file__).resolve().parent.parent
REFERENCES = (
    "bikes",
    "vtest",
    "cup",
    "tree",
    "box",
    "bigbuckbunny",
    "Megamind",
    "carphone_pristine",
)


@dataclass(frozen=True)
class Truth:
    reference: str | None  # None: an unrelated video, nothing should be found
    query_span: tuple[float, float] = (0.0, 0.0)
    reference_span: tuple[float, float] = (0.0, 0.0)


def make_queries(out: Path) -> dict[str, tuple[Path, Truth]]:
    """Edited copies embedded in unrelated footage, an unrelated query, and the natural pairs."""
    clips, photos = footage.clips(), footage.photos()
    intro = Part(photos["astronaut"], 4.0, photo=True)
    outro = Part(photos["coffee"], 3.0, photo=True)
    crop = "crop=iw*0.75:ih*0.75:iw*0.1:ih*0.1"
    brighter = "eq=brightness=0.12:contrast=1.3"
    recipes = {
        "crop_bikes": (
            [intro, Part(clips["bikes"], 6.0, start=2.0, vf=crop), outro],
            Truth("bikes", (4.0, 10.0), (2.0, 8.0)),
        ),
        "brighter_vtest": (
            [intro, Part(clips["vtest"], 12.0, start=30.0, vf=brighter), outro],
            Truth("vtest", (4.0, 16.0), (30.0, 42.0)),
        ),
        "fast_tree": (
            [Part(photos["rocket"], 5.0, photo=True), Part(clips["tree"], 8, start=10, speed=1.5)],
            Truth("tree", (5.0, 13.0), (10.0, 22.0)),
        ),
        "unrelated": (
            [Part(photos["chelsea"], 5, photo=True), Part(photos["moon"], 5, photo=True)],
            Truth(None),
        ),
    }  # fmt: skip
    made = {
        name: (compose(parts, out / f"{name}.mp4"), truth)
        for name, (parts, truth) in recipes.items()
    }
    # Natural copies that ship with the footage, as they are: a re-timed and a degraded copy.
    made["Megamind_bugy"] = (
        Path(shutil.copy(clips["Megamind_bugy"], out)),
        Truth("Megamind", (0.0, 9.0), (0.0, 11.26)),
    )
    made["carphone_distorted"] = (
        Path(shutil.copy(clips["carphone_distorted"], out)),
        Truth("carphone_pristine", (0.0, 4.0), (0.0, 4.0)),
    )
    # The theme's 10-25 s as low-bitrate mono sound under a slideshow of unrelated photos.
    slides = [Part(photos[p], 5.0, photo=True) for p in ("horse", "page", "coins")]
    pictures = compose(slides, out / "slides.mp4")
    sung = out / "theme_under_photos.mp4"
    run_ffmpeg(["-i", str(pictures), "-ss", "10", "-t", "15", "-i", str(out.parent / "references"
                / "theme.mp3"), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-ac", "1",
                "-c:a", "aac", "-b:a", "32k", str(sung)])  # fmt: skip
    pictures.unlink()
    made["theme_under_photos"] = (sung, Truth("theme", (0.0, 15.0), (10.0, 25.0)))
    return made


def _copyspan(*args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "copyspan"), *args]
    print("$ copyspan " + " ".join(args), flush=True)
    return subprocess.run(command, stdout=subprocess.PIPE, text=True)


def _span(a: float, b: float) -> str:
    return f"{a:6.1f}-{b:<6.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "out" / "demo"), help="working folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "references").mkdir(parents=True)
    (out / "queries").mkdir()

    clips = footage.clips()
    print(f"real footage: {len(clips)} clips in {footage.CACHE}")
    for name in REFERENCES:
        shutil.copy(clips[name], out / "references")
    track = sounds.music()["hr3-mirror"]  # real recorded music (Debian hyperrogue-music)
    run_ffmpeg(["-ss", "20", "-t", "40", "-i", str(track), "-c:a", "libmp3lame", "-b:a", "128k",
                str(out / "references" / "theme.mp3")])  # fmt: skip
    print(f"real music: {track.name} -> references/theme.mp3 (a reference that is only sound)")
    queries = make_queries(out / "queries")
    print(f"made {len(queries)} queries in {out / 'queries'}")

    added = _copyspan("index", "add", str(out / "references"), "--index", str(out / "index"), "-q")
    if added.returncode != 0:
        return added.returncode
    result = _copyspan("query", str(out / "queries"), "--index", str(out / "index"), "--json")
    found = {line["query"]["id"]: line for line in map(json.loads, result.stdout.splitlines())}

    header = f"{'query':20s} {'truth: reference  query span  ref span':44s} found"
    print("\n" + header + "\n" + "-" * len(header))
    correct = 0
    for name, (_, truth) in queries.items():
        matches = found.get(name, {}).get("matches", [])
        want = (
            f"{truth.reference:18s} {_span(*truth.query_span)} {_span(*truth.reference_span)}"
            if truth.reference
            else "(no copy)"
        )
        got = "nothing" if not matches else ""
        for match in matches:
            for s in match["segments"]:
                got += (
                    f"{match['reference_id']:18s} {_span(s['query_start'], s['query_end'])} "
                    f"{_span(s['reference_start'], s['reference_end'])} score {s['score']:.2f} "
                    f"({s['modality']})  "
                )
        ids = [m["reference_id"] for m in matches]
        correct += ids == ([truth.reference] if truth.reference else [])
        print(f"{name:20s} {want:44s} {got}")
    print(f"\n{correct}/{len(queries)} queries matched the right reference (and only it)")
    return 0 if correct == len(queries) else 1


if __name__ == "__main__":
    sys.exit(main())
