"""Real recorded sound, fetched by package name from Debian (no datasets, no hubs).

* Debian ``hyperrogue-music`` (12.0q-1, CC BY-SA game soundtrack by Shawn Parrotte, Savino,
  Domina): about twenty recorded tracks of 1-5 minutes, Ogg Vorbis. One of them does not
  decode (its header is damaged in the package); only tracks that decode are listed.
* Debian ``espeak-ng``: synthesised speech (voice-overs, speech-only negatives). Installed with
  apt-get when the machine lacks it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.footage import CACHE, _apt_download, fetched_once, ffmpeg_exe

MUSIC_PACKAGE = "hyperrogue-music"
RATE = 44100  # the sample rate benchmark soundtracks are mixed at


def music(cache: Path = CACHE) -> dict[str, Path]:
    """Every decodable track of the music package by name, fetched once into ``music/``."""

    def fill(root: Path, tmp: Path) -> None:
        deb = _apt_download(MUSIC_PACKAGE, tmp)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        for track in sorted((tmp / "x" / "usr/share/hyperrogue/music").glob("*.ogg")):
            if _decodes(track):
                shutil.copy(track, root / track.name)

    return {p.stem: p for p in sorted(fetched_once(cache, "music", fill).glob("*.ogg"))}


def _decodes(path: Path) -> bool:
    command = [ffmpeg_exe(), "-loglevel", "error", "-t", "2", "-i", str(path), "-f", "null", "-"]
    return subprocess.run(command, capture_output=True).returncode == 0


def read_pcm(path: Path, start: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at ``RATE`` of a file's sound (decoded by ffmpeg)."""
    command = [ffmpeg_exe(), "-loglevel", "error", "-ss", f"{start:.3f}"]
    if seconds is not None:
        command += ["-t", f"{seconds:.3f}"]
    command += ["-i", str(path), "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"]
    out = subprocess.run(command, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32).copy()


def speech(text: str, out: Path, speed: int = 160, voice: str = "en") -> Path:
    """``text`` spoken by espeak-ng into the WAV file ``out``."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:  # a fresh machine: install the synthesiser from Debian
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "espeak-ng"], check=True, capture_output=True
        )
        espeak = shutil.which("espeak-ng") or "espeak-ng"
    subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
    return out


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """Mono float samples at ``RATE`` as 16-bit WAV (clipped to full scale)."""
    import wave

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(pcm.tobytes())
    return path


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
