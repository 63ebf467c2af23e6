"""Descriptor files: ``copyspan describe`` writes them, ``copyspan index import`` reads them.

One ``.npz`` per video (no pickle), a contract other programs rely on (extend additively):

    embeddings  [N, D] float32 or float16 frame descriptors
    starts      [N] float64 seconds: start of the span each descriptor stands for
    ends        [N] float64 seconds: end of that span
    weights     [N] float32 evidence weight in [0, 1] (optional; 1 when absent)
    video_id, path, sha256, model, preprocess   0-d strings
    duration, fps                               0-d floats

``preprocess`` is what ``index info --json`` shows as ``preprocess``: descriptors made with
another model or frame preparation are refused by the index.

A reference described with crops (``views.reference_grid``) also holds, for each crop k = 0,
1, ... (optional, added in issue 32):

    crop<k>_embeddings, crop<k>_starts, crop<k>_ends, crop<k>_weights   as above, [M_k] rows

A video whose soundtrack was fingerprinted (``audio.enabled``) also holds (optional, issue 35):

    audio_hashes       [M] int32 landmark hashes (pipeline/audio/fingerprint.py)
    audio_times        [M] int32 time of each hash's anchor, in hops of 32 ms from the start
    audio_fingerprint  0-d string: the fingerprint's version; another version is refused
    audio_status       0-d string: ``ok``, ``no audio``, ``silent``, ...

A file that is only sound has N = 0 frames (``embeddings`` [0, D]) and its hashes.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.audio.fingerprint import FINGERPRINT_ID
from pipeline.errors import PermanentError
from pipeline.records import AudioPrint, VideoFeatures, crop_id

STRINGS = ("video_id", "path", "sha256", "model", "preprocess")
FLOATS = ("duration", "fps")


class DescriptorFileError(PermanentError):
    """A descriptor file is unreadable or does not follow the format."""


@dataclass(frozen=True)
class DescriptorFile:
    features: VideoFeatures
    sha256: str


def write_descriptor_file(
    target: str | Path, features: VideoFeatures, sha256: str, dtype=np.float16
) -> Path:
    target = Path(target)
    crops = {
        f"crop{k}_{key}": value
        for k, crop in enumerate(features.crops)
        for key, value in _arrays(crop, dtype).items()
    }
    sound = {}
    if features.audio is not None:
        sound = {
            "audio_hashes": features.audio.hashes,
            "audio_times": features.audio.times,
            "audio_fingerprint": np.array(FINGERPRINT_ID),
            "audio_status": np.array(features.audio.status),
        }
    atomic.write_npz(
        target,
        **_arrays(features, dtype),
        **crops,
        **sound,
        video_id=np.array(features.video_id),
        path=np.array(features.path),
        sha256=np.array(sha256),
        duration=np.array(float(features.duration)),
        model=np.array(features.model),
        fps=np.array(float(features.fps)),
        preprocess=np.array(features.preprocess),
    )
    return target


def _arrays(features: VideoFeatures, dtype) -> dict[str, np.ndarray]:
    return {
        "embeddings": features.embeddings.astype(dtype),
        "starts": features.starts.astype(np.float64),
        "ends": features.ends.astype(np.float64),
        "weights": features.weights.astype(np.float32),
    }


def read_descriptor_file(path: str | Path) -> DescriptorFile:
    """Read and check one descriptor file; ``DescriptorFileError`` says what is wrong."""
    try:
        data = atomic.read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DescriptorFileError(f"{path}: not a readable descriptor file ({exc})") from exc
    missing = [k for k in ("embeddings", "starts", "ends", *STRINGS, *FLOATS) if k not in data]
    if missing:
        raise DescriptorFileError(f"{path}: missing {', '.join(missing)}")
    audio = _audio(path, data)
    _check_rows(path, data, "", frameless=audio is not None and len(audio) > 0)
    crops = 0
    while f"crop{crops}_embeddings" in data:
        _check_rows(path, data, f"crop{crops}_")
        crops += 1
    if any(data[key].shape != () for key in (*STRINGS, *FLOATS)):
        raise DescriptorFileError(f"{path}: video_id, path, ... must be 0-d arrays")
    text = {key: str(data[key]) for key in STRINGS}
    if not text["video_id"] or not text["sha256"] or not text["model"]:
        raise DescriptorFileError(f"{path}: video_id, sha256 and model must not be empty")

    def features(prefix: str, video_id: str) -> VideoFeatures:
        return VideoFeatures(
            video_id=video_id,
            path=text["path"],
            duration=float(data["duration"]),
            embeddings=data[f"{prefix}embeddings"].astype(np.float32),
            starts=data[f"{prefix}starts"].astype(np.float64),
            ends=data[f"{prefix}ends"].astype(np.float64),
            model=text["model"],
            fps=float(data["fps"]),
            weights=data.get(f"{prefix}weights"),
            preprocess=text["preprocess"],
        )

    try:
        whole = features("", text["video_id"])
        whole.crops = [features(f"crop{k}_", crop_id(whole.video_id, k)) for k in range(crops)]
        whole.audio = audio
    except ValueError as exc:
        raise DescriptorFileError(f"{path}: {exc}") from exc
    return DescriptorFile(whole, text["sha256"])


def _audio(path: str | Path, data: dict) -> AudioPrint | None:
    """The soundtrack's hashes, when the file has them (checked)."""
    if "audio_hashes" not in data:
        return None
    hashes, times = data["audio_hashes"], data.get("audio_times", np.zeros(0))
    version = str(data.get("audio_fingerprint", ""))
    if version != FINGERPRINT_ID:
        raise DescriptorFileError(
            f"{path}: audio fingerprint {version!r}; this copyspan reads {FINGERPRINT_ID!r}"
        )
    if hashes.dtype != np.int32 or times.dtype != np.int32 or hashes.shape != times.shape:
        raise DescriptorFileError(f"{path}: audio_hashes and audio_times must be [M] int32")
    return AudioPrint(hashes, times, status=str(data.get("audio_status", "ok")))


def _check_rows(path: str | Path, data: dict, prefix: str, frameless: bool = False) -> None:
    """``prefix``embeddings are [N, D] finite floats, and its starts, ends, weights [N]
    (``frameless``: N may be 0, a file that is only sound)."""
    embeddings = data[f"{prefix}embeddings"]
    if embeddings.ndim != 2 or embeddings.dtype not in (np.float16, np.float32):
        raise DescriptorFileError(f"{path}: {prefix}embeddings must be [N, D] float32 or float16")
    n = len(embeddings)
    if (n == 0 and not frameless) or not np.isfinite(embeddings).all():
        raise DescriptorFileError(f"{path}: {prefix}embeddings must be non-empty and finite")
    for name in ("starts", "ends", "weights"):
        key = prefix + name
        optional = name == "weights" and not prefix  # a crop's rows are written whole
        if (key in data or not optional) and data.get(key, np.zeros(0)).shape != (n,):
            raise DescriptorFileError(f"{path}: {key} must be [N] with N = {n}")
