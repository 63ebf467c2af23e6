"""Reading a file's soundtrack with PyAV, forward, a piece at a time.

``AudioReader`` follows the picture: ``until(t)`` decodes the first audio stream up to second
``t`` (mono, ``SAMPLE_RATE``, placed by presentation time: a gap in the stream is silence) and
returns the hashes settled so far, so a long upload's soundtrack is never held whole. What
goes wrong with the sound never stops the picture: a file without audio, or whose audio cannot
be read, gives no hashes and says why in ``status``; a corrupt packet is skipped and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.audio.fingerprint import (
    REFERENCE,
    SAMPLE_RATE,
    AudioPrint,
    Density,
    StreamingFingerprinter,
)
from pipeline.errors import short_reason

log = logging.getLogger(__name__)

MAX_GAP_S = 30.0  # a jump in audio timestamps beyond this is a broken stamp, not silence
# Decoded frames (~1,024 samples each) are resampled a second at a time: resampling frame by
# frame cost 60% more than decoding (per-call overhead), 3.3 against 2.0 s per hour of sound.
RESAMPLE_CHUNK_S = 1.0
SILENT = 1e-3  # peak amplitude (full scale 1) below which a soundtrack is silent


class AudioReader:
    """The soundtrack of ``path``, decoded as far as asked; ``max_duration_s`` bounds it."""

    def __init__(
        self,
        path: str | Path,
        max_duration_s: float = 14400.0,
        density: Density = REFERENCE,
        relative: bool = False,
    ):
        self.path = str(path)
        # relative: time 0 is the first audio frame's (a live stream's segment), not the file's
        self.origin: float | None = None if relative else 0.0
        self.max_duration_s = max_duration_s
        self.fingerprinter = StreamingFingerprinter(density)
        self.status = "ok"
        self.corrupt = 0
        self.loudest = 0.0
        self.decoded_s = 0.0  # seconds of audio read so far (from the file's start), gaps included
        self._container = None
        self._frames = None
        self._resampler = None
        self._fifo = None  # decoded, not yet resampled
        self._done = False
        self._open()

    def _open(self) -> None:
        import av

        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except Exception as exc:  # PyAV raises many error types for unreadable input
            self._stop(f"audio unreadable: {short_reason(exc)}")
            return
        if not self._container.streams.audio:
            self._stop("no audio")
            return
        stream = self._container.streams.audio[0]
        stream.thread_type = "AUTO"
        self._frames = self._decode(stream)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._fifo = av.AudioFifo()

    def _decode(self, stream):
        import av

        for packet in self._container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                self.corrupt += 1  # a damaged packet: its samples are lost, the rest play on

    def _stop(self, status: str) -> None:
        self.status = status
        self._finish_stream()

    def until(self, end_s: float | None) -> AudioPrint:
        """Decode up to ``end_s`` (None: to the end); the hashes settled by then."""
        found = self.fingerprinter.push(self.samples(end_s), last=self._done)
        found.status = self.summary()
        return found

    def samples(self, end_s: float | None) -> np.ndarray:
        """The next samples, up to ``end_s`` (None: to the end)."""
        pieces: list[np.ndarray] = []
        while not self._done and (end_s is None or self.decoded_s < end_s):
            try:
                frame = next(self._frames)
            except StopIteration:
                pieces += self._drain(last=True)
                self._finish_stream()
                break
            except Exception as exc:  # the demuxer gave up mid-file: keep what was read
                log.warning("%s: audio stops at %.1fs: %s", self.path, self.decoded_s, exc)
                pieces += self._drain(last=True)
                self._finish_stream()
                break
            pieces += self._place(frame)
            if self.decoded_s > self.max_duration_s:
                pieces += self._drain(last=True)
                self._finish_stream()
                self.status = "duration over limit"  # what was read is kept
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if len(samples):
            self.loudest = max(self.loudest, float(np.abs(samples).max()))
        return samples

    def _place(self, frame) -> list[np.ndarray]:
        """Queue the frame; silence first for any gap before it. Returns what is resampled."""
        out = []
        start = frame.time if frame.time is not None else self.decoded_s
        if self.origin is None:
            self.origin = start
        gap = start - self.origin - self.decoded_s
        if 0.05 < gap <= MAX_GAP_S:
            out += self._drain(last=False)
            out.append(np.zeros(round(gap * SAMPLE_RATE), np.float32))
            self.decoded_s += gap
        frame.pts = None  # placed here, by the running count
        try:
            self._fifo.write(frame)
        except ValueError:  # the stream changed its format mid-way: a queue for the new one
            out += self._drain(last=False)
            self._fifo = type(self._fifo)()
            self._fifo.write(frame)
        self.decoded_s += frame.samples / frame.sample_rate
        chunk = round(RESAMPLE_CHUNK_S * frame.sample_rate)
        while self._fifo.samples >= chunk:
            out += self._resample(self._fifo.read(chunk))
        return out

    def _drain(self, last: bool) -> list[np.ndarray]:
        """What is queued, resampled (and, when ``last``, what the resampler holds back)."""
        out = []
        if self._fifo is not None and self._fifo.samples:
            out += self._resample(self._fifo.read())
        if last and self._resampler is not None:
            out += self._resample(None)
        return out

    def _resample(self, frame) -> list[np.ndarray]:
        return [
            r.to_ndarray().reshape(-1).astype(np.float32) for r in self._resampler.resample(frame)
        ]

    def _finish_stream(self) -> None:
        self._done = True
        if self._container is not None:
            self._container.close()
            self._container = None

    def summary(self) -> str:
        """What the soundtrack gave: ``ok``, ``no audio``, ``silent``, ``audio unreadable: ...``,
        with ``; corrupt packets: N`` when some were skipped."""
        status = self.status
        if status == "ok" and self._done and self.decoded_s == 0 and self.corrupt:
            status = "audio unreadable"
        elif status == "ok" and self._done and self.loudest < SILENT:
            status = "silent"
        return f"{status}; corrupt packets: {self.corrupt}" if self.corrupt else status

    def close(self) -> None:
        self._finish_stream()


def read_audio(
    path: str | Path, max_duration_s: float = 14400.0, density: Density = REFERENCE
) -> AudioPrint:
    """The whole soundtrack's hashes at once."""
    return AudioReader(path, max_duration_s, density).until(None)


def segment_samples(path: str | Path, seconds: float) -> tuple[np.ndarray, str]:
    """A live stream segment's sound, exactly ``seconds`` long (from its first audio frame;
    cut or padded with silence so consecutive segments keep the stream's clock), and what it
    gave (``AudioReader.summary``)."""
    reader = AudioReader(path, max(seconds * 2, 1.0), relative=True)
    samples = reader.samples(None)
    want = round(seconds * SAMPLE_RATE)
    samples = np.pad(samples[:want], (0, max(0, want - len(samples))))
    return samples.astype(np.float32), reader.summary()
