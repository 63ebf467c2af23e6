"""Frame descriptors: real SSCD ONNX models and a user's TorchScript model."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from pipeline.describe.decode import decode_video
from pipeline.describe.embed import (
    OnnxEmbedder,
    OpenVinoEmbedder,
    TorchOnnxEmbedder,
    TorchScriptEmbedder,
    make_embedder,
    onnx_model_path,
    resolve_runtime,
)
from pipeline.errors import ConfigError


def _tiny_model(path):
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float().permute(0, 3, 1, 2) / 255.0
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    torch.jit.script(Tiny()).save(str(path))
    return path


@pytest.mark.parametrize("model", ["sscd", "sscd_distilled"])
def test_sscd_descriptors_tell_copies_from_other_footage(clips, config, model):
    embedder = OnnxEmbedder(model, batch_size=8)
    frames = decode_video(clips["bikes"], config.decode).frames
    other = decode_video(clips["cup"], config.decode).frames
    a = embedder.embed(frames)
    assert a.shape == (len(frames), 512) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    flipped_crop = np.ascontiguousarray(frames[:, 10:-10, 20:-20])  # a mild crop of the same
    b, c = embedder.embed(flipped_crop), embedder.embed(other)
    same = np.sum(a * b, axis=1)
    unrelated = (a @ c.T).max()
    assert same.min() > unrelated + 0.2


def test_batching_does_not_change_descriptors(clips, config):
    frames = decode_video(clips["bikes"], config.decode).frames
    one = OnnxEmbedder("sscd_distilled", batch_size=1).embed(frames)
    many = OnnxEmbedder("sscd_distilled", batch_size=7).embed(frames)
    assert np.allclose(one, many, atol=1e-4)


def test_torchscript_backend(tmp_path, clips, config):
    path = _tiny_model(tmp_path / "tiny.pt")
    cfg = dataclasses.replace(config.embed, model="torchscript", torchscript_path=str(path))
    embedder = make_embedder(cfg)
    assert isinstance(embedder, TorchScriptEmbedder)
    assert embedder.dim == 48 and embedder.model_id.startswith("torchscript:tiny:")
    frames = decode_video(clips["bikes"], config.decode).frames
    out = embedder.embed(frames)
    assert out.shape == (len(frames), 48)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert embedder.embed(frames[:0]).shape == (0, 48)


def test_torchscript_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        TorchScriptEmbedder(tmp_path / "absent.pt")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def _runtimes_agree(clips, config, device: str) -> None:
    """The torch runtime gives onnxruntime's descriptors: exactly for the float export, and for
    the int8 export as closely as onnxruntime agrees with itself across its optimisation levels
    (a rounding tie that flips one quantised activation carries through 50 layers)."""
    frames = decode_video(clips["bikes"], config.decode).frames[::4][:6]
    for model, floor in (("sscd_distilled", 0.99999), ("sscd", 0.995)):
        torch_embedder = TorchOnnxEmbedder(model, batch_size=4)
        assert torch_embedder.device == device and torch_embedder.model_id == model
        reference = OnnxEmbedder(model).embed(frames)
        got = torch_embedder.embed(frames)
        assert got.shape == reference.shape == (len(frames), 512)
        assert _cosines(got, reference).min() > floor
    # The fused kernels are in use (the int8 export has 71 activation quantisers).
    ops = [node[0] for node in torch_embedder.module.nodes]
    assert ops.count("QuantDequant") == 71 and "QuantizeLinear" not in ops


def test_torch_runtime_gives_onnxruntime_descriptors(clips, config):
    import torch

    _runtimes_agree(clips, config, "cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
def test_torch_runtime_embeds_on_the_gpu(clips, config):
    import torch

    assert torch.cuda.is_available()
    assert resolve_runtime("auto") == "torch"  # onnxruntime has no CUDA provider there
    assert isinstance(make_embedder(config.embed), TorchOnnxEmbedder)
    _runtimes_agree(clips, config, "cuda")


def test_runtime_choice(config):
    import onnxruntime as ort
    import torch

    torch_cfg = dataclasses.replace(config.embed, model="sscd_distilled", runtime="torch")
    assert isinstance(make_embedder(torch_cfg), TorchOnnxEmbedder)
    ort_cfg = dataclasses.replace(torch_cfg, runtime="onnxruntime")
    assert isinstance(make_embedder(ort_cfg), OnnxEmbedder)
    ov_cfg = dataclasses.replace(torch_cfg, runtime="openvino")
    assert isinstance(make_embedder(ov_cfg), OpenVinoEmbedder)
    ort_gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    expected = "torch" if torch.cuda.is_available() and not ort_gpu else "openvino"
    assert resolve_runtime("auto") == expected


def test_openvino_gives_onnxruntime_descriptors(clips, config):
    """OpenVINO runs the same export: in f32 to rounding; with ``precision: auto`` in bf16 where
    the CPU has bf16 units, as close as a frame is to itself re-encoded at high quality."""
    frames = decode_video(clips["bikes"], config.decode).frames[::3][:9]
    reference = OnnxEmbedder("sscd_distilled").embed(frames)
    exact = OpenVinoEmbedder("sscd_distilled", batch_size=4, precision="f32")
    assert exact.precision == "f32" and exact.model_id == "sscd_distilled" and exact.dim == 512
    assert _cosines(exact.embed(frames), reference).min() > 0.9999
    fast = OpenVinoEmbedder("sscd_distilled", batch_size=4)
    assert fast.precision in ("bf16", "f32")
    got = fast.embed(frames)
    assert got.shape == (len(frames), 512) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert _cosines(got, reference).min() > 0.995
    assert fast.embed(frames[:0]).shape == (0, 512)


def test_openvino_serves_threads_at_once(clips, config):
    """The API embeds from several threads: each has its own infer request."""
    frames = decode_video(clips["bikes"], config.decode).frames[:8]
    embedder = OpenVinoEmbedder("sscd_distilled", batch_size=2)
    alone = embedder.embed(frames)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda k: embedder.embed(np.roll(frames, k, axis=0)), range(8)))
    for k, result in enumerate(results):
        assert np.allclose(result, np.roll(alone, k, axis=0), atol=1e-5)


def test_auto_runtime_leaves_torch_unloaded_without_a_gpu_driver():
    """On a CPU machine choosing the runtime must not import torch (a second per start)."""
    from pipeline.describe.embed import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    probe = "import sys; from pipeline.describe.embed import resolve_runtime; "
    probe += "print(resolve_runtime('auto'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["openvino", "False"]


def test_torch_runtime_refuses_unknown_operators(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from pipeline.describe.onnx_torch import OnnxTorchModule

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="Softmax is not supported"):
        OnnxTorchModule(path)
    assert onnx_model_path("sscd").is_file()


def test_openvino_memory_stays_bounded_across_frame_shapes():
    """Every region view has its own frame size; OpenVINO prepares kernels per input shape and
    kept them all (2 MB a shape: a long upload grew by 0.4 GB). Only a few are kept now."""
    from pathlib import Path

    def resident_mb() -> float:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    embedder = OpenVinoEmbedder("sscd_distilled", batch_size=4)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 206, 700, 3), dtype=np.uint8)

    def embed_shapes(count: int) -> None:  # region views: 206 px high, 1-4 frames, any width
        for _ in range(count):
            n, width = int(rng.integers(1, 5)), int(rng.integers(206, 700))
            embedder.embed(np.ascontiguousarray(frames[:n, :, :width]))

    embedder.embed(frames)  # the largest shape first: later ones grow no buffer
    embed_shapes(100)  # to the caches' steady state
    settled = resident_mb()
    embed_shapes(50)
    assert resident_mb() - settled < 8  # with every shape kept: 20 MB
