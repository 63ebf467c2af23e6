"""Test-data makers: real encoders (PyAV, ffmpeg) writing real files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from benchmarks.edits import run_ffmpeg


def level_for(second: float) -> int:
    """Grey level that encodes which second of a timing clip a frame belongs to."""
    return 30 + 25 * int(np.floor(second + 1e-9))


def write_timed_clip(path: Path, frame_times: list[float], size=(160, 120)) -> Path:
    """Encode grey frames whose level says their second, at exactly the given times (VFR ok)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": "10", "bf": "0"}
        for t in frame_times:
            image = np.full((size[1], size[0], 3), level_for(t), np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cfr_times(duration: float, fps: float) -> list[float]:
    return [i / fps for i in range(round(duration * fps))]


def vfr_times() -> list[float]:
    """30 fps for 2 s, 2 fps for 4 s, 30 fps for 2 s: average-fps indexing lands seconds off."""
    fast = [i / 30 for i in range(60)]
    slow = [2 + i / 2 for i in range(8)]
    return fast + slow + [6 + i / 30 for i in range(60)]


def write_audio_only(path: Path) -> Path:
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(path)])
    return path


def write_corrupt(path: Path, real_mp4: Path) -> Path:
    """A deterministic corrupt video: the head of a real MP4 whose index (moov) is cut off.
    Random bytes are not used: FFmpeg now and then probes noise as an audio stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(real_mp4.read_bytes()[:40_000])
    return path


_BASIS = np.random.default_rng(1234).standard_normal((48, 512)).astype(np.float32)


def synthetic_features(video_id: str, n: int, seed: int, model: str = "sscd"):
    """Descriptors of a made-up video for index tests: unit vectors in a 48-dimensional
    subspace (so compressed codes can be trained on a few thousand), drifting in time."""
    from pipeline.describe.embed import l2_normalise
    from pipeline.records import VideoFeatures

    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((n, 48)), axis=0) * 0.3 + rng.standard_normal(48) * 3
    starts = np.arange(n, dtype=np.float64) / 2
    return VideoFeatures(
        video_id=video_id, path=f"/refs/{video_id}.mp4", duration=n / 2,
        embeddings=l2_normalise(walk @ _BASIS), starts=starts, ends=starts + 0.5, model=model,
        fps=2.0,
    )  # fmt: skip


def start_api(index: Path, media: Path, token_file: Path, log: Path, *extra: str):
    """A real ``copyspan api`` on a free loopback port, once ``/readyz`` says ready:
    (process, base URL)."""
    import subprocess
    import sys
    import time
    import urllib.request

    from benchmarks.broker import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "api", "--index", str(index), "--allowed-root",
         str(media), "--token-file", str(token_file), "--port", str(port), *extra],
        cwd=Path(__file__).resolve().parent.parent, stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz") as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    return process, base
