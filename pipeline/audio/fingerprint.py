"""Audio fingerprints: spectral-peak landmark hashes (Wang 2003, the method of Shazam,
audfprint and Olaf).

The soundtrack, mono at ``SAMPLE_RATE``, becomes a log-magnitude spectrogram; each frequency
band is measured against its own level over the last few seconds, so a steady hum, a noise
floor or a volume change drops out; the strongest local peaks (a few per second: ``Density``)
are kept, and each peak is paired with the next few peaks ahead of it. A pair's hash is its two
frequencies and their distance in time: what survives re-encoding at a low bit rate, mono
downmix, noise and a voice mixed over it (the voice adds peaks of its own, and many of the
music's survive). A copy shows as many hashes of the query found in a reference at one
constant time offset (pipeline/audio/match.py).

Chosen by measurement against Chromaprint on real music (benchmarks/results/audio.md):
Chromaprint's windows found more voice-overs but matched silence and mains hum to references,
and place a copy only to its 8 s windows; landmarks raised no false alarm and place spans to a
hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.records import AUDIO_HOP_S, AudioPrint

# The version of the hashes below: descriptor files and indexes carry it, and prints of another
# version are refused (their hashes would never meet).
FINGERPRINT_ID = "landmarks-v1/8000/512/256"
SAMPLE_RATE = 8000  # Hz: what a 16 kb/s codec keeps is below 4 kHz anyway
FFT = 512  # 64 ms windows, 15.6 Hz bands
HOP = 256  # 32 ms between spectrogram columns: the time unit of every hash
HOP_S = HOP / SAMPLE_RATE
assert HOP_S == AUDIO_HOP_S  # the time unit records.AudioPrint is kept in
LOW_BAND = 6  # bands below ~94 Hz (mains hum, rumble) carry no peak
BANDS = FFT // 2  # bands 0..255 (the Nyquist band dropped)
BACKGROUND = 95  # columns (3 s) of each band's running level a peak must stand above
MIN_RISE = 1.0  # natural-log units (8.7 dB) above the band's running level
PAIR_AHEAD = 24  # peaks ahead of an anchor looked at for its pairs (at least 4x the fan-out)
MAX_DT = 63  # columns (2 s) between the two peaks of a pair
MIN_DT = 1


@dataclass(frozen=True)
class Density:
    """How many landmarks a soundtrack gives: peaks kept per second, pairs per peak, and the
    neighbourhood a peak must be the largest in (+- columns, +- bands)."""

    peaks_per_s: int
    fan_out: int
    reach: tuple[int, int]


# References are stored sparse (the catalog's size); queries are read dense, so that a
# reference's peaks survive in a query where a voice or noise added peaks of its own next to
# them (a peak that is the largest of a wide neighbourhood is also of a narrow one). On real
# music with a voice-over at equal loudness, 20 s: the copy's votes went from 15-60 to 38-166
# (other music: at most 5 -> 8), at 6x the query's hashes (benchmarks/results/audio.md).
REFERENCE = Density(peaks_per_s=18, fan_out=6, reach=(7, 10))
QUERY = Density(peaks_per_s=40, fan_out=20, reach=(5, 7))
CONTEXT = BACKGROUND // 2 + REFERENCE.reach[0] + MAX_DT + 2  # columns a window needs around its own


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """[T, BANDS] natural-log magnitudes of mono float32 samples at ``SAMPLE_RATE``."""
    samples = np.ascontiguousarray(samples, np.float32)
    count = (len(samples) - FFT) // HOP + 1
    if count <= 0:
        return np.zeros((0, BANDS), np.float32)
    step = samples.strides[0]
    frames = np.lib.stride_tricks.as_strided(samples, (count, FFT), (step * HOP, step))
    spectrum = np.fft.rfft(frames * np.hanning(FFT).astype(np.float32), axis=1)[:, :BANDS]
    return np.log(np.abs(spectrum) + 1e-4).astype(np.float32)


def peaks(
    logmag: np.ndarray, first_col: int = 0, density: Density = REFERENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Columns and bands of the landmark peaks, in time order (then band); ``first_col``: the
    column of the file ``logmag`` starts at (the seconds peaks are counted in are the file's)."""
    if len(logmag) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Each band against its running level: steady tones, noise floors and gain drop out.
    level = cv2.blur(logmag, (1, BACKGROUND), borderType=cv2.BORDER_REFLECT)
    rise = logmag - level
    rise[:, :LOW_BAND] = -np.inf
    reach_t, reach_f = density.reach
    kernel = np.ones((2 * reach_t + 1, 2 * reach_f + 1), np.uint8)
    local = (rise >= cv2.dilate(rise, kernel)) & (rise > MIN_RISE)
    cols, bands = np.nonzero(local)
    if len(cols) == 0:
        return cols, bands
    # The strongest few per second, so loud passages do not crowd the catalog.
    strength = rise[cols, bands]
    second = (cols + first_col) // round(1 / HOP_S)
    order = np.lexsort((-strength, second))
    rank = np.arange(len(order)) - np.searchsorted(second[order], second[order])
    kept = np.sort(order[rank < density.peaks_per_s])
    return cols[kept], bands[kept]


def landmark_hashes(
    cols: np.ndarray, bands: np.ndarray, fan_out: int = REFERENCE.fan_out
) -> tuple[np.ndarray, np.ndarray]:
    """Each peak paired with up to ``fan_out`` peaks ahead of it: (hashes, anchor columns).
    A hash is the anchor's band (8 bits), the band difference + 128 (8 bits) and the time
    difference in columns (6 bits)."""
    n = len(cols)
    if n < 2:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    ahead = np.arange(1, max(PAIR_AHEAD, 4 * fan_out) + 1)
    j = np.arange(n)[:, None] + ahead[None, :]
    inside = j < n
    j = np.minimum(j, n - 1)
    dt = cols[j] - cols[:, None]
    df = bands[j] - bands[:, None]
    valid = inside & (dt >= MIN_DT) & (dt <= MAX_DT) & (np.abs(df) < 128)
    valid &= np.cumsum(valid, axis=1) <= fan_out
    anchor, which = np.nonzero(valid)
    hashes = (bands[anchor] << 14) | ((df[anchor, which] + 128) << 6) | dt[anchor, which]
    return hashes.astype(np.int32), cols[anchor].astype(np.int32)


def fingerprint(
    samples: np.ndarray, first_col: int = 0, density: Density = REFERENCE
) -> AudioPrint:
    """The landmark hashes of a whole soundtrack (or an excerpt starting at ``first_col``)."""
    cols, bands = peaks(spectrogram(samples), first_col, density)
    hashes, times = landmark_hashes(cols, bands, density.fan_out)
    return AudioPrint(hashes, times + first_col, len(samples) / SAMPLE_RATE)


class StreamingFingerprinter:
    """Fingerprints a soundtrack pushed in consecutive pieces, with the same hashes as
    ``fingerprint`` of the whole (each piece is analysed with ``CONTEXT`` columns of the audio
    around it); memory holds a piece and its context."""

    def __init__(self, density: Density = REFERENCE, first_col: int = 0) -> None:
        self.density = density
        self.buffer = np.zeros(0, np.float32)
        self.buffer_col = first_col  # column of the buffer's first sample
        self.emitted = first_col  # anchors before this column were emitted
        self.seconds = 0.0

    def push(self, samples: np.ndarray, last: bool = False) -> AudioPrint:
        """Hashes whose anchors are now settled (every one left, when ``last``)."""
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, np.float32)])
        self.seconds += len(samples) / SAMPLE_RATE
        columns = max(0, (len(self.buffer) - FFT) // HOP + 1)
        settled = self.buffer_col + columns - (0 if last else CONTEXT)
        if settled <= self.emitted:
            return AudioPrint(seconds=len(samples) / SAMPLE_RATE)
        found = fingerprint(self.buffer, self.buffer_col, self.density)
        keep = (found.times >= self.emitted) & (found.times < settled)
        out = AudioPrint(found.hashes[keep], found.times[keep], len(samples) / SAMPLE_RATE)
        self.emitted = settled
        drop_cols = max(0, settled - CONTEXT - self.buffer_col)  # keep context behind
        self.buffer = self.buffer[drop_cols * HOP :]
        self.buffer_col += drop_cols
        return out
