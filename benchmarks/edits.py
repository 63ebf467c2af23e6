"""Video edits rendered with ffmpeg: excerpts, transformations, photo clips and concatenation.

Every part of a composed video is rendered to the same canvas, frame rate and codec so that the
parts concatenate exactly and the ground-truth times are known to the frame.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.footage import ffmpeg_exe

CANVAS = (640, 360)
FPS = 25


@dataclass(frozen=True)
class Extra:
    """A second input of a part: a photo (looped) or a clip excerpt, labelled ``[x1]``, ...."""

    source: Path
    start: float = 0.0
    photo: bool = False
    loop: bool = False  # a clip shorter than the part plays again from its start


@dataclass(frozen=True)
class Part:
    """One piece of a composed video: a clip excerpt (possibly edited) or a photo animation.

    ``vf`` is a simple filter chain on the main input. ``graph`` is a filter graph instead: it
    reads ``[main]`` (the trimmed, re-timed main input) and ``[x1]``, ``[x2]``... (the extras)
    and writes ``[edited]``.
    """

    source: Path
    duration: float  # seconds of output
    start: float = 0.0  # seconds into the source (clips only)
    vf: str = ""
    speed: float = 1.0  # >1 plays faster: output covers duration*speed seconds of the source
    photo: bool = False
    graph: str = ""
    extras: tuple[Extra, ...] = ()
    crf: int = 20
    zoom_rate: float = 0.0015  # photos: Ken Burns zoom per frame (0: a still, as in a slideshow)


def run_ffmpeg(args: list[str]) -> None:
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(command)}\n{result.stderr[-2000:]}")


def fit(canvas: tuple[int, int] = CANVAS, fps: int = FPS) -> str:
    """Scale into the canvas keeping aspect (black bars where needed), fixed rate and format."""
    w, h = canvas
    return (
        f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p"
    )


def _input(
    source: Path, start: float, span: float | None, photo: bool, fps: int, loop: bool = False
) -> list[str]:
    if photo:
        return ["-loop", "1", "-framerate", str(fps), "-i", str(source)]
    timing = ["-ss", f"{start:.3f}"] + (["-t", f"{span:.3f}"] if span else [])
    return [*(["-stream_loop", "-1"] if loop else []), *timing, "-i", str(source)]


def render(part: Part, out: Path, canvas=CANVAS, fps=FPS) -> Path:
    """Render one part to ``out`` on the common canvas."""
    # Half a second more input than needed: filters that sync two inputs drop the last frame
    # otherwise. The output is cut to the exact duration by -t.
    span = part.duration * part.speed + 0.5
    inputs = _input(part.source, part.start, span, part.photo, fps)
    if part.photo:
        # A slow Ken Burns zoom so the photo clip is footage, not one still frame.
        frames = round(part.duration * fps) + 1
        w, h = canvas
        main = f"zoompan=z='min(zoom+{part.zoom_rate},1.5)':d={frames}:s={w}x{h}:fps={fps}"
    else:
        main = f"setpts=(PTS-STARTPTS)/{part.speed}" if part.speed != 1.0 else "setpts=PTS-STARTPTS"
    graph = [f"[0:v]{main}[main]"]
    for number, extra in enumerate(part.extras, start=1):
        inputs += _input(extra.source, extra.start, part.duration + 1, extra.photo, fps, extra.loop)
        graph.append(f"[{number}:v]setpts=PTS-STARTPTS[x{number}]")
    graph.append(part.graph or f"[main]{part.vf or 'null'}[edited]")
    graph.append(f"[edited]{fit(canvas, fps)}[out]")
    run_ffmpeg(
        [
            *inputs,
            "-filter_complex", ";".join(graph), "-map", "[out]",
            "-t", f"{part.duration:.3f}",
            "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(part.crf), str(out),
        ]
    )  # fmt: skip
    return out


def compose(parts: list[Part], out: Path, canvas=CANVAS, fps=FPS) -> Path:
    """Render every part and concatenate them into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        listing = []
        for number, part in enumerate(parts):
            piece = render(part, tmp / f"part{number}.mp4", canvas, fps)
            listing.append(f"file '{piece}'")
        (tmp / "list.txt").write_text("\n".join(listing) + "\n")
        concat = ["-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt"), "-c", "copy"]
        run_ffmpeg([*concat, str(out)])
    return out
