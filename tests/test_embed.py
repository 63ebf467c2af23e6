"""Frame descriptors: real SSCD ONNX models and a user's TorchScript model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.decode import decode_video
from pipeline.embed import OnnxEmbedder, TorchScriptEmbedder, make_embedder
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
