"""Ray actors wrapping the pipeline stages. ``pipeline/`` stays Ray-free; this is the edge.

Stages: decode (and frame preparation) -> embed (frames batched across videos) -> align
(query) or index writer (a single writer for ingest). Input failures (``PermanentError``) are
returned as values, never raised, so Ray does not retry them; an actor process that dies is
restarted by Ray (``max_restarts``) and its task retried (``max_task_retries``), after which the
driver records the item as failed. Every method is idempotent: Ray may run a task again after
a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.errors import PermanentError
from pipeline.index.banks import DEFAULT_BANK

log = logging.getLogger(__name__)


@dataclass
class Failed:
    """An item that failed with a permanent error; passed through the later stages."""

    item: str
    error: str


def _ping() -> int:
    return os.getpid()


class DecodeActor:
    def __init__(self, config: dict):
        self.config = Config.from_dict(config)

    def pid(self) -> int:
        return _ping()

    def describe(self, item: str, video_id: str, path: str, views: bool, embedder) -> Any:
        """Describe one video window by window: decode and frame preparation here, the model
        on ``embedder``, the next window decoded while the model runs on this one. Only the
        window in flight travels through the object store; what comes back is descriptors.

        Border cropping, evidence weights and region proposals are CPU work: they run here,
        where videos are decoded in parallel, so the one embed actor (often on a GPU) does
        nothing but run the model."""
        import ray

        from pipeline.describe.crops import reference_crops
        from pipeline.describe.decode import decode_windows
        from pipeline.describe.describer import (
            AUDIO_ONLY,
            keeps_native,
            open_sound,
            prepare_frames,
            sound_only,
            window_sound,
        )
        from pipeline.errors import VideoDecodeError
        from pipeline.records import VideoFeatures

        config = self.config
        window = max(1, round(config.streaming.window_s * config.decode.fps))
        parts, pending = [], None
        sound, heard = None, []  # the soundtrack, read here alongside the frames
        try:
            sound = open_sound(path, config, query=views)
            started = time.perf_counter()
            native = None  # a query's native frames stay here: the embed actor needs none
            wanted = keeps_native(config, views)
            for sampled in decode_windows(path, config.decode, window, wanted):
                decode_s = time.perf_counter() - started
                started = time.perf_counter()
                prepared = prepare_frames(sampled, config, views)
                native = sampled.native
                # A reference's crops (views.reference_grid) are prepared here too.
                crops = [] if views else reference_crops(sampled, prepared.frames, config.views)
                decoded = {"prepared": _shippable(prepared), "decode_s": decode_s,
                           "crops": [_shippable(prepare_frames(c, config, False)) for c in crops],
                           "prepare_s": time.perf_counter() - started}  # fmt: skip
                following = embedder.describe.remote(decoded, item, video_id, path, views)
                if sound is not None:
                    timings: dict[str, float] = {}
                    heard.append((window_sound(timings, sampled, sound), timings))
                if pending is not None:
                    parts.append(ray.get(pending))
                pending = following
                started = time.perf_counter()
            if pending is not None:
                parts.append(ray.get(pending))
        except VideoDecodeError as exc:
            if exc.reason != AUDIO_ONLY or sound is None:
                return Failed(item, str(exc))
            try:  # a file that is only sound: matched by its sound alone
                dim, model = ray.get(embedder.shape.remote())
                return sound_only(path, video_id, sound, dim, model, config)
            except PermanentError as sound_exc:
                return Failed(item, str(sound_exc))
        except (PermanentError, OSError) as exc:
            return Failed(item, str(exc))
        finally:
            if sound is not None:
                sound.close()
        for part, (audio, timings) in zip(parts, heard, strict=False):
            part.audio = audio
            part.timings["audio"] = timings["audio"]
        if len(parts) == 1:
            return dataclasses.replace(parts[0], native=native)
        return VideoFeatures.concat(parts)


def _shippable(prepared):
    """``prepared`` holding one copy of its pixels (the cropped ones) for the object store."""
    prepared.sampled = dataclasses.replace(prepared.sampled, frames=prepared.frames, native=None)
    return prepared


class EmbedActor:
    """Async actor: concurrent ``describe`` calls are gathered for a few milliseconds and their
    frames embedded together, in batches of frames of the same size, across videos."""

    def __init__(self, config: dict):
        from pipeline.describe.embed import make_embedder

        self.config = Config.from_dict(config)
        self.embedder = make_embedder(self.config.embed)
        self.pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    def pid(self) -> int:
        return _ping()

    def model_id(self) -> str:
        return self.embedder.model_id

    def shape(self) -> tuple[int, str]:
        """The descriptors' width and the model: what a record with no frames still says."""
        return self.embedder.dim, self.embedder.model_id

    async def describe(self, decoded: Any, item: str, video_id: str, path: str, views: bool = True):
        from pipeline.records import crop_id

        if isinstance(decoded, Failed):
            return decoded
        untimed = {"decode_s": 0.0, "prepare_s": 0.0}  # counted in the whole frames' timings
        features, *crops = await asyncio.gather(
            self._described(decoded["prepared"], decoded, video_id, views),
            *(self._described(crop, untimed, crop_id(video_id, k))
              for k, crop in enumerate(decoded.get("crops", []))),
        )  # fmt: skip
        features.crops = list(crops)
        return features

    async def _described(self, prepared, decoded: dict, video_id: str, views: bool = False):
        """One window's prepared frames embedded and built into features (as
        ``Describer.describe_sampled`` does in one process)."""
        from pipeline.describe.describer import build_features, preprocess_id
        from pipeline.describe.keyframes import select_keyframes

        started = time.perf_counter()
        sampled = prepared.sampled
        pixels, take = prepared.unique_frames()
        embeddings = (await self._embed(pixels))[take]
        keys = select_keyframes(embeddings, sampled.starts, sampled.ends, self.config.keyframes)
        view_embeddings = {
            name: (rows, (await self._embed(pixels))[take])
            for name, (rows, pixels, take) in prepared.view_batches(keys).items()
        }
        # "embed" covers preparation too, as in the single-process path's timings.
        embed_s = decoded["prepare_s"] + time.perf_counter() - started
        timings = {"decode": decoded["decode_s"], "embed": embed_s}
        return build_features(
            prepared, keys, embeddings, view_embeddings, video_id, self.embedder.model_id,
            self.config.decode.fps, timings, preprocess_id(self.config),
        )  # fmt: skip

    async def _embed(self, frames: np.ndarray) -> np.ndarray:
        """Queue frames for the next batch and wait for their descriptors."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((frames, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.ensure_future(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.config.ray.embed_batch_wait_ms / 1000)
        async with self.lock:
            batch, self.pending = self.pending, []
            if batch:
                loop = asyncio.get_running_loop()
                try:
                    outputs = await loop.run_in_executor(None, self._embed_grouped, batch)
                except Exception as exc:  # surface the error in every waiting call
                    for _, future in batch:
                        future.set_exception(exc)
                    return
                for (_, future), out in zip(batch, outputs, strict=True):
                    future.set_result(out)
        if self.pending:  # arrived while embedding
            self.flusher = asyncio.ensure_future(self._flush_soon())

    def _embed_grouped(self, batch: list[tuple[np.ndarray, Any]]) -> list[np.ndarray]:
        """Embed every video's frames, concatenating videos whose frames share a size."""
        by_shape: dict[tuple, list[int]] = {}
        for number, (frames, _) in enumerate(batch):
            by_shape.setdefault(frames.shape[1:], []).append(number)
        outputs: list[np.ndarray] = [np.empty(0)] * len(batch)
        for numbers in by_shape.values():
            stacked = np.concatenate([batch[n][0] for n in numbers])
            embedded = self.embedder.embed(stacked)
            offset = 0
            for n in numbers:
                count = len(batch[n][0])
                outputs[n] = embedded[offset : offset + count]
                offset += count
        return outputs


class AlignActor:
    """Queries the reference index (read-only) with described videos."""

    def __init__(self, config: dict, index_dir: str, shards: list | None = None):
        from pipeline.detector import CopyDetector
        from pipeline.index import ReferenceIndex
        from workers.shards import RayShards

        self.config = Config.from_dict(config)
        from pipeline.review.verdicts import Verdicts

        searcher = RayShards(shards) if shards else None  # frame search on the shard actors
        self.index = ReferenceIndex(
            index_dir, create=False, config=self.config.index, searcher=searcher
        )
        self.verdicts = Verdicts.beside(index_dir)
        self.detector = CopyDetector(self.config, embedder=_NoEmbedder())

    def pid(self) -> int:
        return _ping()

    def query(self, features: Any, item: str, query_id: str, path: str) -> dict:
        from pipeline.records import QueryResult

        if isinstance(features, Failed):
            return QueryResult(query_id, path, None, error=features.error).to_dict()
        try:
            result = self.detector.query_features(features, self.index)
            self.verdicts.apply(result)
            out = result.to_dict()
            if result.matches:  # the report draws its similarity heatmaps from these
                out["evidence"] = {
                    "embeddings": features.embeddings.astype(np.float16),
                    "starts": features.starts, "ends": features.ends,
                }  # fmt: skip
            return out
        except PermanentError as exc:
            return QueryResult(
                query_id, path, round(features.duration, 3), error=str(exc)
            ).to_dict()


class IndexWriterActor:
    """The single writer of the reference index during bulk ingest."""

    def __init__(self, index_dir: str, config: dict):
        from pipeline.index import ReferenceIndex

        self.index = ReferenceIndex(index_dir, config=Config.from_dict(config).index)

    def pid(self) -> int:
        return _ping()

    def add(self, features: Any, sha256: str, replace: bool, bank: str = DEFAULT_BANK) -> str:
        """Idempotent: after a crash Ray may call it again, and the same content is a no-op."""
        if isinstance(features, Failed):
            return f"failed: {features.error}"
        try:
            (outcome,) = self.index.add([(features, sha256)], replace=replace, bank=bank)
        except PermanentError as exc:
            return f"failed: {exc}"
        return outcome


class _NoEmbedder:
    """The align actor never embeds: it receives descriptors. Keeps the model out of memory."""

    model_id = "none"
    dim = 0

    def embed(self, frames: np.ndarray) -> np.ndarray:  # pragma: no cover - never called
        raise RuntimeError("the align actor does not embed frames")
