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
class Part:
    """One piece of a composed video: a clip excerpt (possibly edited) or a photo animation."""

    source: Path
    duration: float  # seconds of output
    start: float = 0.0  # seconds into the source (clips only)
    vf: str = ""  # ffmpeg filters applied before fitting the canvas
    speed: float = 1.0  # >1 plays faster: output covers duration*speed seconds of the source
    photo: bool = False


def run_ffmpeg(args: list[str]) -> None:
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(command)}\n{result.stderr[-2000:]}")


def _fit(canvas: tuple[int, int], fps: int) -> str:
    w, h = canvas
    return (
        f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p"
    )


def render(part: Part, out: Path, canvas=CANVAS, fps=FPS, crf: int = 20) -> Path:
    """Render one part to ``out`` on the common canvas."""
    filters = [f for f in (part.vf,) if f]
    if part.photo:
        # A slow Ken Burns zoom so the photo clip is footage, not one still frame.
        frames = round(part.duration * fps)
        zoom = f"zoompan=z='min(zoom+0.0015,1.5)':d={frames}:s={canvas[0]}x{canvas[1]}:fps={fps}"
        inputs = ["-loop", "1", "-framerate", str(fps), "-i", str(part.source)]
        filters = [zoom, *filters]
    else:
        source_span = part.duration * part.speed
        inputs = ["-ss", f"{part.start:.3f}", "-t", f"{source_span:.3f}", "-i", str(part.source)]
        if part.speed != 1.0:
            filters.append(f"setpts=PTS/{part.speed}")
    filters.append(_fit(canvas, fps))
    run_ffmpeg(
        [
            *inputs,
            "-vf", ",".join(filters),
            "-t", f"{part.duration:.3f}",
            "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), str(out),
        ]
    )  # fmt: skip
    return out


def compose(parts: list[Part], out: Path, canvas=CANVAS, fps=FPS, crf: int = 20) -> Path:
    """Render every part and concatenate them into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        listing = []
        for number, part in enumerate(parts):
            piece = render(part, tmp / f"part{number}.mp4", canvas, fps, crf)
            listing.append(f"file '{piece}'")
        (tmp / "list.txt").write_text("\n".join(listing) + "\n")
        run_ffmpeg(
            ["-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt"), "-c", "copy", str(out)]
        )
    return out
