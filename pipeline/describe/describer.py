"""The describe stage: a video's frames decoded, prepared and embedded, window by window.

decode.py samples frames by their timestamps; suppress.py crops borders and weighs blank frames;
views.py finds the query-side region views (insets, stacked scenes); keyframes.py collapses
repeated pictures; embed.py runs the model. ``Describer`` chains them into ``VideoFeatures``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio.decode import AudioReader
from pipeline.audio.fingerprint import QUERY, REFERENCE
from pipeline.config import Config
from pipeline.describe.crops import reference_crops
from pipeline.describe.decode import check_file, decode_windows
from pipeline.describe.edits import copy_like
from pipeline.describe.embed import Embedder, make_embedder
from pipeline.describe.keyframes import Keyframes, repeated_frames, select_keyframes
from pipeline.describe.suppress import crop_borders, frame_weights
from pipeline.describe.views import View, block_sums, query_views
from pipeline.errors import VideoDecodeError
from pipeline.records import AudioPrint, SampledFrames, VideoFeatures, crop_id

log = logging.getLogger(__name__)
AUDIO_ONLY = "audio-only file"  # decode.probe's reason for a file that has sound and no picture


def open_sound(path: str | Path, config: Config, query: bool) -> AudioReader | None:
    """The soundtrack's reader, when ``audio.enabled`` (queries are read denser than
    references: pipeline/audio/fingerprint.py)."""
    if not config.audio.enabled:
        return None
    check_file(Path(path), config.decode)  # the picture path's own first check
    density = QUERY if query else REFERENCE
    return AudioReader(path, config.decode.max_duration_s, density)


def window_sound(
    timings: dict[str, float], sampled: SampledFrames, sound: AudioReader
) -> AudioPrint:
    """The soundtrack's hashes up to the end of ``sampled`` (every one left after the last),
    the time it took added to ``timings``."""
    last = float(sampled.ends[-1]) >= sampled.duration - 1e-6
    return _timed(timings, sound, None if last else float(sampled.ends[-1]))


def sound_only(
    path: str | Path, video_id: str, sound: AudioReader, dim: int, model: str, config: Config
) -> VideoFeatures:
    """An audio-only file (a song, a podcast) as a record with no frames: it is matched by its
    sound alone. One whose sound gives nothing at all is still unusable."""
    none = np.zeros(0)
    features = VideoFeatures(
        video_id=video_id, path=str(path), duration=0.0,
        embeddings=np.zeros((0, dim), np.float32), starts=none, ends=none, model=model,
        fps=config.decode.fps, preprocess=preprocess_id(config),
    )  # fmt: skip
    features.audio = _timed(features.timings, sound, None)
    if sound.status == "duration over limit":  # as the picture's probe refuses a long video
        limit = f"{config.decode.max_duration_s:.1f}s"
        raise VideoDecodeError(path, "duration over limit", f"its sound runs past {limit}")
    if not len(features.audio):
        raise VideoDecodeError(
            path, AUDIO_ONLY, f"its sound gives no fingerprint: {sound.summary()}"
        )
    features.duration = round(features.audio.seconds, 3)
    return features


def _timed(timings: dict[str, float], sound: AudioReader, end_s: float | None) -> AudioPrint:
    """The soundtrack's hashes up to ``end_s``, the time it took added to ``timings``."""
    started = time.perf_counter()
    found = sound.until(end_s)
    timings["audio"] = timings.get("audio", 0.0) + time.perf_counter() - started
    return found


def preprocess_id(config: Config) -> str:
    """What, besides the model, makes two descriptors comparable: an index refuses others."""
    return f"short_side={config.decode.short_side};crop_borders={int(config.suppress.crop_borders)}"


def video_id_for(path: str | Path) -> str:
    """A reference or query id is the file name without its extension."""
    return Path(path).stem


@dataclass
class PreparedFrames:
    """One video's frames ready for the embedder, and the query views found in them."""

    sampled: SampledFrames
    frames: np.ndarray  # [N, H, W, 3] sampled frames, borders cropped: embedded first
    weights: np.ndarray  # [N] evidence weight of each frame
    views: dict[str, View]  # name -> (sampled frames it applies to, pixels from frames)
    source: np.ndarray  # [N] the frame whose descriptor each frame takes (repeated_frames)
    blank_views: bool = True  # drop view pixels that are blank (suppress.blank_frames)

    def unique_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(the frames the model must see, take): frame i's descriptor is the model's output
        row ``take[i]``; a repeated picture is embedded once."""
        embedded, take = np.unique(self.source, return_inverse=True)
        frames = self.frames if len(embedded) == len(self.frames) else self.frames[embedded]
        return frames, take

    def view_batches(self, keys: Keyframes) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pixels to embed for each view, only for kept frames whose runs the view covers and
        once per repeated picture: name -> (rows, pixels, take); row ``rows[i]``'s view
        descriptor is the model's output row ``take[i]``."""
        batches = {}
        for name, (sampled_rows, crop) in self.views.items():
            rows = np.unique(keys.run[sampled_rows])
            _, first, take = np.unique(
                self.source[keys.kept[rows]], return_index=True, return_inverse=True
            )
            pixels = crop(self.frames[keys.kept[rows[first]]])
            if self.blank_views:
                # A region can be blank where its frame is not (a letterbox bar, a dark
                # wall): like a blank frame it carries no evidence, and enlarged it matched
                # the dark slate of a title card.
                lit = frame_weights(pixels) > 0
                if not lit.all():
                    rows, take = rows[lit[take]], (np.cumsum(lit) - 1)[take[lit[take]]]
                    pixels = pixels[lit]
            if len(rows):
                batches[name] = (rows, np.ascontiguousarray(pixels), take)
        return batches


def keeps_native(config: Config, views: bool) -> bool:
    """Whether a video's decode keeps thumbnails of its native frames: queries (``views``)
    whose spans are refined, so refinement need not read the file again."""
    return views and config.decode.query_thumbnails and config.align.refines_spans


def prepare_frames(sampled: SampledFrames, config: Config, views: bool = True) -> PreparedFrames:
    """Borders cropped, evidence weights, repeated pictures and (for queries) extra views."""
    frames = crop_borders(sampled.frames) if config.suppress.crop_borders else sampled.frames
    weights = frame_weights(frames) if config.suppress.blank_frames else np.ones(len(frames))
    blocks = block_sums(frames) if len(frames) else None
    found = query_views(frames, config.views, blocks) if views else {}
    source = repeated_frames(frames, config.embed.reuse_diff, blocks)
    return PreparedFrames(
        sampled, frames, weights.astype(np.float32), found, source, config.suppress.blank_frames
    )


def build_features(
    prepared: PreparedFrames,
    keys: Keyframes,
    embeddings: np.ndarray,
    view_embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
    video_id: str,
    model: str,
    fps: float,
    timings: dict[str, float],
    preprocess: str = "",
) -> VideoFeatures:
    """``embeddings`` are of every sampled frame; the features keep the keyframes'."""
    kept = embeddings[keys.kept]
    views = {name: (rows, described) for name, (rows, described) in view_embeddings.items()}
    sampled = prepared.sampled
    return VideoFeatures(
        video_id=video_id,
        path=sampled.path,
        duration=sampled.duration,
        embeddings=kept,
        starts=keys.starts,
        ends=keys.ends,
        model=model,
        fps=fps,
        timings=timings,
        weights=prepared.weights[keys.kept],
        preprocess=preprocess,
        views=views,
        sampled=len(sampled.frames),
        native=sampled.native,
    )


class Describer:
    """Decode, prepare and embed videos with one loaded model."""

    def __init__(self, config: Config, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or make_embedder(config.embed)
        self.preprocess = preprocess_id(config)

    def describe(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> VideoFeatures:
        """Decode and embed one video (``views=False`` for references: no query views).
        Raises ``VideoDecodeError`` for unusable input. Memory holds one window of frames."""
        parts = list(self.describe_windows(path, video_id, views))
        return parts[0] if len(parts) == 1 else VideoFeatures.concat(parts)

    def describe_windows(
        self, path: str | Path, video_id: str | None = None, views: bool = True
    ) -> Iterator[VideoFeatures]:
        """The video described ``streaming.window_s`` at a time: decode, frame preparation
        (borders, weights, query views: each window on its own) and embedding per window, so
        only descriptors outlive a window. A video shorter than one window is one window."""
        video_id = video_id or video_id_for(path)
        window = max(1, round(self.config.streaming.window_s * self.config.decode.fps))
        native = keeps_native(self.config, views)
        opened = time.perf_counter()
        sound = open_sound(path, self.config, query=views)
        opening = {"audio": time.perf_counter() - opened}  # counted with the first window's
        started = time.perf_counter()
        try:
            for sampled in decode_windows(path, self.config.decode, window, native):
                decode_s = time.perf_counter() - started
                features = self.describe_sampled(sampled, video_id, views, decode_s)
                if sound is not None:  # the soundtrack up to the window's end, alongside
                    features.timings.update(opening)
                    opening = {}
                    features.audio = window_sound(features.timings, sampled, sound)
                yield features
                started = time.perf_counter()
        except VideoDecodeError as exc:
            if exc.reason != AUDIO_ONLY or sound is None:
                raise
            embedder = self.embedder
            yield sound_only(path, video_id, sound, embedder.dim, embedder.model_id, self.config)
        finally:
            if sound is not None:
                sound.close()

    def describe_with_edits(
        self, path: str | Path, video_id: str | None = None
    ) -> tuple[VideoFeatures, VideoFeatures]:
        """The video described as a reference, and the same frames through copy-like edits
        (pipeline/describe/edits.py) described alike: an index upgrade's calibration pairs.
        Memory holds one window of frames."""
        video_id = video_id or video_id_for(path)
        window = max(1, round(self.config.streaming.window_s * self.config.decode.fps))
        plain, edited = [], []
        for sampled in decode_windows(path, self.config.decode, window, False):
            plain.append(self.describe_sampled(sampled, video_id, views=False, crops=False))
            copies = dataclasses.replace(sampled, frames=copy_like(sampled.frames))
            edited.append(self.describe_sampled(copies, video_id, views=False, crops=False))
        return VideoFeatures.concat(plain), VideoFeatures.concat(edited)

    def describe_sampled(
        self,
        sampled: SampledFrames,
        video_id: str,
        views: bool = True,
        decode_s: float = 0.0,
        crops: bool = True,
    ) -> VideoFeatures:
        """One window described; a reference's (``views=False``) with its crops too when
        ``views.reference_grid`` asks for them (``crops=False``: not for a crop itself)."""
        started = time.perf_counter()
        prepared = prepare_frames(sampled, self.config, views)
        pixels, take = prepared.unique_frames()
        embeddings = self.embedder.embed(pixels)[take]
        keys = select_keyframes(embeddings, sampled.starts, sampled.ends, self.config.keyframes)
        view_embeddings = {
            name: (rows, self.embedder.embed(pixels)[take])
            for name, (rows, pixels, take) in prepared.view_batches(keys).items()
        }
        log.debug("described %s: embedded %d, kept %d of %d frames", video_id, len(pixels),
                  len(keys.kept), len(embeddings))  # fmt: skip
        # Only a reference (no query views) is indexed with crops, and a crop has none itself:
        # a query must not pay for resizing them.
        wanted = crops and not views
        grid = reference_crops(sampled, prepared.frames, self.config.views) if wanted else []
        described = [
            self.describe_sampled(crop, crop_id(video_id, k), views=False, crops=False)
            for k, crop in enumerate(grid)
        ]
        timings = {"decode": decode_s, "embed": time.perf_counter() - started}
        features = build_features(
            prepared, keys, embeddings, view_embeddings, video_id, self.embedder.model_id,
            self.config.decode.fps, timings, self.preprocess,
        )  # fmt: skip
        features.crops = described
        return features
