"""The typed configuration tree, loaded from YAML and validated once.

``configs/default.yaml`` holds every default; a user file is merged over it. Unknown keys and
wrongly typed values are a ``ConfigError`` so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@dataclass(frozen=True)
class DecodeConfig:
    backend: str
    fps: float
    short_side: int
    max_duration_s: float
    max_pixels: int
    max_file_bytes: int
    batch_frames: int
    pyav_after_s: float  # longer videos are read with PyAV (forward, no whole-file state)
    query_thumbnails: bool  # a query of one window keeps its native frames (PyAV, one pass)

    def validate(self) -> None:
        _check(self.backend in ("decord", "pyav"), "decode.backend must be decord or pyav")
        _check(self.pyav_after_s > 0, "decode.pyav_after_s must be > 0")
        _check(0 < self.fps <= 30, "decode.fps must be in (0, 30]")
        _check(32 <= self.short_side <= 1024, "decode.short_side must be in [32, 1024]")
        _check(self.max_duration_s > 0 and self.max_pixels > 0, "decode limits must be > 0")
        _check(self.batch_frames > 0, "decode.batch_frames must be > 0")


@dataclass(frozen=True)
class EmbedConfig:
    model: str
    torchscript_path: str | None
    batch_size: int
    threads: int
    runtime: str  # auto | openvino | onnxruntime | torch: what runs the SSCD exports
    precision: str  # auto | f32: OpenVINO computes in bf16 where the CPU has bf16 units (auto)
    reuse_diff: float  # grey levels: a frame this close to the last embedded one reuses it

    def validate(self) -> None:
        _check(
            self.model in ("sscd", "sscd_distilled", "torchscript"),
            "embed.model must be sscd, sscd_distilled or torchscript",
        )
        _check(
            self.model != "torchscript" or bool(self.torchscript_path),
            "embed.torchscript_path is required when embed.model is torchscript",
        )
        _check(self.batch_size > 0 and self.threads >= 0, "embed.batch_size/threads invalid")
        _check(0 <= self.reuse_diff <= 255, "embed.reuse_diff must be in [0, 255]")
        _check(
            self.runtime in ("auto", "openvino", "onnxruntime", "torch"),
            "embed.runtime must be auto, openvino, onnxruntime or torch",
        )
        _check(self.precision in ("auto", "f32"), "embed.precision must be auto or f32")


@dataclass(frozen=True)
class SuppressConfig:
    crop_borders: bool  # crop black borders shared by every frame before embedding
    blank_frames: bool  # blank / near-uniform frames get weight 0
    generic: bool  # query frames that resemble the index's background set weigh less
    background_k: int  # background neighbours averaged into a frame's background similarity
    generic_low: float  # background similarity up to which a frame keeps weight 1 ...
    generic_high: float  # ... falling linearly to weight 0 here

    def validate(self) -> None:
        _check(self.background_k > 0, "suppress.background_k must be > 0")
        _check(self.generic_low < self.generic_high, "suppress.generic_low < generic_high")


@dataclass(frozen=True)
class WhitenConfig:
    enabled: bool  # align on whitened descriptors (pipeline/index/whitening.py)
    shrinkage: float  # covariance shrinkage toward the identity, 0..1
    min_frames: int  # reference frames needed before a fit is trusted (fewer: raw similarity)
    max_frames: int  # reference frames sampled for a fit (bounds its time and memory)
    refit_change: float  # refit when the reference frame count changes by this share
    min_gain: float  # align on whitened similarity only when whitening changes them this much
    min_sim: float  # align.min_sim, min_score and skew_penalty on whitened similarity
    min_score: float
    skew_penalty: float

    def validate(self) -> None:
        _check(0 <= self.shrinkage <= 1, "whiten.shrinkage must be in [0, 1]")
        _check(self.min_frames >= 2 and self.max_frames >= self.min_frames, "whiten.min/max_frames")
        _check(self.refit_change > 0, "whiten.refit_change must be > 0")


@dataclass(frozen=True)
class KeyframesConfig:
    enabled: bool  # collapse runs of near-identical consecutive sampled frames
    min_corr: float  # descriptor cosine similarity above which a frame repeats the run's first
    max_run: int  # most sampled frames one kept frame may stand for (bounds time error)

    def validate(self) -> None:
        _check(-1 <= self.min_corr <= 1, "keyframes.min_corr must be in [-1, 1]")
        _check(self.max_run >= 1, "keyframes.max_run must be >= 1")


@dataclass(frozen=True)
class ViewsConfig:
    enabled: bool  # embed extra views of query frames (see pipeline/describe/views.py)
    flip: bool  # a horizontally flipped view
    regions: bool  # sub-regions bounded by persistent straight edges (picture-in-picture, stacks)
    max_regions: int
    max_share: float  # region-view pixels as embedded, at most this share of each window's pixels
    window: int  # sampled frames analysed together (a layout must hold this long)
    cut_corr: float  # consecutive-frame thumbnail correlation below which a shot ends
    activity: float  # grey-level std over a window along a layout line's moving side
    edge_contrast: float  # grey-level step that counts as an edge
    persistence: float  # share of sampled frames an edge pixel must be an edge in
    min_side: float  # a region side spans at least this share of the frame
    min_area: float  # region area, as a share of the frame
    max_area: float
    min_support: float  # share of each region side the detected edges must cover
    min_short_side: int  # region views smaller than this (pixels) are enlarged to it; 0: never
    masks: bool = True  # a view beside a still opaque overlay (sticker), or with it masked
    reference_grid: int = 2  # references also indexed as a grid x grid of crops (0: none)
    reference_side: float = 0.6  # each crop keeps this share of each side
    reference_every: int = 16  # crops of every this many sampled frames

    def validate(self) -> None:
        _check(self.max_regions >= 0 and self.window >= 3, "views.max_regions/window")
        _check(0 <= self.reference_grid <= 4, "views.reference_grid must be in 0..4")
        _check(0 < self.reference_side < 1, "views.reference_side must be in (0, 1)")
        _check(self.reference_every >= 1, "views.reference_every must be >= 1")
        _check(0 < self.persistence <= 1 and 0 < self.min_support <= 1, "views shares in (0, 1]")
        _check(0 < self.min_area <= self.max_area <= 1, "views.min_area/max_area in (0, 1]")
        _check(self.min_short_side >= 0 and self.max_share > 0, "views.min_short_side/max_share")


@dataclass(frozen=True)
class SearchConfig:
    knn_k: int
    candidate_min_sim: float
    max_candidates: int
    video_candidates: int  # also align the best video-level neighbours (0 = frame kNN only)
    video_min_sim: float  # ... when their video descriptors are at least this similar

    def validate(self) -> None:
        _check(self.knn_k > 0 and self.max_candidates > 0, "search.knn_k/max_candidates > 0")


@dataclass(frozen=True)
class AlignConfig:
    method: str
    min_sim: float
    top_k: int
    max_step: int
    min_length: int
    min_score: float
    max_segments: int
    max_speed: float
    skew_penalty: float
    span_fit_slack: float
    # A span whose unit-speed line is this close (mean similarity) to its fitted line's plays
    # at the original speed; < 0 turns the check off.
    unit_speed_margin: float
    refine_boundaries: bool  # move segment ends onto the query's cuts (pipeline/match/refine.py)
    sync_reference: bool  # shift reference spans onto the query's motion (pipeline/match/sync.py)
    sync_max_matches: int  # references reread for sync per query, best matches first
    ambiguity_margin: float = 0.02  # other reference spans this close are reported; 0 = off
    ambiguity_min_shift_s: float = 2.0  # ... at least this far (and half its length) away

    @property
    def refines_spans(self) -> bool:
        """Whether query spans are read off the videos' native frames."""
        return self.refine_boundaries or self.sync_reference

    def validate(self) -> None:
        _check(self.method in ("tn", "hv", "dp"), "align.method must be tn, hv or dp")
        _check(self.max_speed >= 1, "align.max_speed must be >= 1")
        _check(self.top_k > 0 and self.max_step > 0, "align.top_k/max_step must be > 0")
        _check(self.min_length >= 1 and self.max_segments >= 1, "align.min_length/max_segments")
        _check(self.skew_penalty >= 0, "align.skew_penalty must be >= 0")
        _check(self.span_fit_slack >= 0, "align.span_fit_slack must be >= 0")
        _check(self.sync_max_matches >= 0, "align.sync_max_matches must be >= 0")
        _check(self.ambiguity_margin >= 0, "align.ambiguity_margin must be >= 0")
        _check(self.ambiguity_min_shift_s > 0, "align.ambiguity_min_shift_s must be > 0")


@dataclass(frozen=True)
class IndexConfig:
    kind: str  # auto | flat | ivfpq (pipeline/index/structure.py)
    memory_gb: float  # what the frame search structures may hold in RAM, all segments together
    flat_max_vectors: int  # auto: exact search up to this many frame descriptors
    min_train_vectors: int  # fewer descriptors than this stay exact whatever the kind
    train_max_vectors: int  # descriptors sampled to train the compressed structure
    nprobe: int  # inverted-file cells visited per query vector; 0 = the structure's choice
    segment_vectors: int  # a flat segment takes new references until it holds this many vectors
    merge_factor: int  # coded segments per shard before a background compaction merges them
    auto_compact: bool  # index add/import start a background compaction when one is due
    cache_mb: int  # descriptors of recently aligned references kept in memory
    shards: int  # search shards: Ray actors with --ray-address, each holding its segments

    def validate(self) -> None:
        _check(self.kind in ("auto", "flat", "ivfpq"), "index.kind must be auto, flat or ivfpq")
        _check(self.memory_gb > 0 and self.cache_mb >= 0, "index.memory_gb/cache_mb")
        _check(self.min_train_vectors >= 256, "index.min_train_vectors must be >= 256")
        _check(self.train_max_vectors >= self.min_train_vectors, "index.train_max_vectors")
        _check(self.nprobe >= 0 and self.segment_vectors > 0, "index.nprobe/segment_vectors")
        _check(self.merge_factor >= 2 and self.shards >= 1, "index.merge_factor/shards")


@dataclass(frozen=True)
class StreamingConfig:
    window_s: float  # seconds of video decoded, prepared and embedded at a time
    live_window_s: float  # the same for a live stream: bounds how late its alerts come
    live_poll_s: float  # how often a live playlist is read again
    live_stall_s: float  # a live stream with no new segment this long has ended

    def validate(self) -> None:
        _check(self.window_s > 0 and self.live_window_s > 0, "streaming.*window_s must be > 0")
        _check(self.live_poll_s > 0 and self.live_stall_s > 0, "streaming.live_* must be > 0")


@dataclass(frozen=True)
class PolicyConfig:
    """Alert policy: every threshold must be met for a match to raise an alert."""

    min_copied_s: float
    min_upload_share: float
    min_reference_share: float
    min_score: float
    require: str = "any"  # what a match must rest on: any | video | audio | both
    audio_weight: float = 1.0  # audio-only segments' scores count this much toward min_score

    def validate(self) -> None:
        _check(self.min_copied_s >= 0, "policy.min_copied_s must be >= 0")
        _check(self.require in MODALITY_RULES, f"policy.require must be one of {MODALITY_RULES}")
        _check(0 < self.audio_weight <= 1, "policy.audio_weight must be in (0, 1]")
        for name in ("min_upload_share", "min_reference_share"):
            _check(0 <= getattr(self, name) <= 1, f"policy.{name} must be in [0, 1]")


MODALITY_RULES = ("any", "video", "audio", "both")


@dataclass(frozen=True)
class AudioConfig:
    """The soundtrack as evidence (pipeline/audio/): landmark hashes matched beside frames."""

    enabled: bool
    min_votes: int  # hashes of the query found at one time offset in a reference, at least
    max_gap_s: float  # a copied stretch of sound breaks where no hash agrees for this long
    min_length_s: float  # shortest audio segment reported
    max_segments: int  # per (query, reference) pair

    def validate(self) -> None:
        _check(self.min_votes >= 3, "audio.min_votes must be >= 3")
        _check(self.max_gap_s > 0 and self.min_length_s >= 0, "audio gaps and lengths >= 0")
        _check(self.max_segments >= 1, "audio.max_segments must be >= 1")


@dataclass(frozen=True)
class ServeConfig:
    bootstrap_servers: str
    uploads_topic: str
    alerts_topic: str
    dlq_topic: str
    group_id: str
    index: str
    allowed_roots: list[str]
    state_dir: str
    max_attempts: int
    backoff_s: float
    max_backoff_s: float
    session_timeout_ms: int
    max_poll_interval_ms: int
    fetch_max_wait_ms: int  # longest a fetch for new uploads waits at the broker
    shutdown_grace_s: float
    metrics_port: int
    index_unmatched: bool

    def validate(self) -> None:
        _check(self.max_attempts >= 1, "serve.max_attempts must be >= 1")
        _check(self.backoff_s >= 0 and self.max_backoff_s >= self.backoff_s, "serve.backoff_s")
        _check(self.metrics_port >= 0, "serve.metrics_port must be >= 0 (0 = off)")
        _check(self.fetch_max_wait_ms >= 1, "serve.fetch_max_wait_ms must be >= 1")


@dataclass(frozen=True)
class ApiConfig:
    workers: int  # queries run at once
    queue: int  # requests that may wait for a worker; beyond them: 503 at once
    max_upload_mb: int  # largest multipart upload
    retry_after_s: int  # what a 503 asks the client to wait

    def validate(self) -> None:
        _check(self.workers >= 1 and self.queue >= 0, "api.workers >= 1, api.queue >= 0")
        _check(self.max_upload_mb >= 1 and self.retry_after_s >= 1, "api.max_upload_mb")


@dataclass(frozen=True)
class RayConfig:
    address: str
    num_cpus: int
    object_store_mb: int
    decoders: int
    embedders: int
    aligners: int
    decoder_cpus: float
    embedder_cpus: float
    aligner_cpus: float
    shard_cpus: float  # each index shard's actor (with --ray-address)
    embedder_gpus: float
    max_in_flight: int
    max_restarts: int
    max_task_retries: int
    embed_batch_wait_ms: int

    def validate(self) -> None:
        _check(min(self.decoders, self.embedders, self.aligners) >= 1, "ray: >= 1 actor per stage")
        _check(self.max_in_flight >= 1, "ray.max_in_flight must be >= 1")
        _check(self.object_store_mb >= 64, "ray.object_store_mb must be >= 64")
        _check(self.max_restarts >= 0 and self.max_task_retries >= 0, "ray retries must be >= 0")


@dataclass(frozen=True)
class Config:
    decode: DecodeConfig
    embed: EmbedConfig
    suppress: SuppressConfig
    whiten: WhitenConfig
    keyframes: KeyframesConfig
    views: ViewsConfig
    search: SearchConfig
    align: AlignConfig
    index: IndexConfig
    streaming: StreamingConfig
    policy: PolicyConfig
    audio: AudioConfig
    serve: ServeConfig
    api: ApiConfig
    ray: RayConfig

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a config shipped to another process (a Ray actor) as a plain dict."""
        config = _build(cls, data)
        config.validate()
        return config


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown config key {where}{key}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} must be a mapping")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _coerce(kind: Any, value: Any, name: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are wanted."""
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, f"{name}.")
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"config key {name} must be a list")
        return [_coerce(item, v, f"{name}[]") for v in value]
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
    raise ConfigError(f"config key {name} has a value of the wrong type: {value!r}")


def _build(cls: type, data: Any, where: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or 'root'} must be a mapping")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            raise ConfigError(f"config key {where}{field.name} is missing")
        kwargs[field.name] = _coerce(hints[field.name], data[field.name], where + field.name)
    return cls(**kwargs)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults from ``configs/default.yaml``, then the file at ``path``, then ``overrides``."""
    data = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
    if overrides:
        data = _merge(data, overrides)
    config = _build(Config, data)
    config.validate()
    return config
