"""Run the SSCD ONNX exports in PyTorch, so the default model embeds on a CUDA GPU.

onnxruntime runs the int8 export on the CPU; its GPU build is a separate install tied to one
CUDA version. PyTorch with CUDA is the GPU runtime a machine usually has, so this module
interprets the same ONNX graph node by node with torch ops. QuantizeLinear/DequantizeLinear are
emulated exactly (scale, round half to even, saturate): the quantiser folded the ReLUs into
those saturations, so they are part of the model, not an approximation to drop. The descriptors
agree with onnxruntime's to rounding (tests/test_embed.py), so an index built with either
runtime accepts the other's queries and ``model_id`` stays the model's name.

Only the operators the exports use are implemented; any other is refused at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

_TORCH_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16"}


def _broadcast_along(values, axis: int, ndim: int):
    """A per-channel parameter (1-D) shaped to broadcast along ``axis`` of an ndim tensor."""
    if values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def _quant_range(zero_point) -> tuple[int, int]:
    import torch

    return (-128, 127) if zero_point is not None and zero_point.dtype == torch.int8 else (0, 255)


class OnnxTorchModule:
    """An ONNX graph (opset 17 subset) evaluated with torch on ``device``."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        import onnx
        import torch
        from onnx import numpy_helper

        model = onnx.load(str(path))
        graph = model.graph
        self.device = torch.device(device)
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.dim = int(graph.output[0].type.tensor_type.shape.dim[1].dim_value)
        values = {
            init.name: torch.from_numpy(numpy_helper.to_array(init).copy()).to(self.device)
            for init in graph.initializer
        }
        self.nodes = []
        for node in graph.node:
            if node.op_type not in _OPS:
                raise ValueError(f"{path}: ONNX operator {node.op_type} is not supported")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        # Evaluate once whatever depends on initializers alone (weight dequantisation, mostly).
        with torch.inference_mode():
            running = []
            for op, inputs, outputs, attrs in self.nodes:
                if all(not name or name in values for name in inputs):
                    args = [values[name] if name else None for name in inputs]
                    values[outputs[0]] = _OPS[op](attrs, *args)
                else:
                    running.append((op, inputs, outputs, attrs))
        # Constant nodes make their tensors on the CPU; everything the graph reads lives on device.
        self.constants = {name: value.to(self.device) for name, value in values.items()}
        self.nodes = _fuse_quant_dequant(running, values)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            values = dict(self.constants)
            values[self.input_name] = torch.from_numpy(np.ascontiguousarray(images)).to(
                self.device, non_blocking=True
            )
            for op, inputs, outputs, attrs in self.nodes:
                args = [values[name] if name else None for name in inputs]
                values[outputs[0]] = _OPS[op](attrs, *args)
            return values[self.output_name].float().cpu().numpy()


def _fuse_quant_dequant(nodes: list, constants: dict) -> list:
    """Quantize then dequantize with one per-tensor scale, as one kernel (torch's fake_quantize).

    Every activation in the int8 export goes through such a pair; fusing them saves two
    full-tensor passes each on the GPU and gives the same values (same rounding, same clamp).
    """
    consumers: dict[str, list[int]] = {}
    for i, (_, inputs, _, _) in enumerate(nodes):
        for name in inputs:
            consumers.setdefault(name, []).append(i)
    fused = list(nodes)
    for i, (op, inputs, outputs, _) in enumerate(nodes):
        users = consumers.get(outputs[0], [])
        if op != "QuantizeLinear" or len(inputs) < 3 or not users:
            continue
        scale, zero_point = constants.get(inputs[1]), constants.get(inputs[2])
        if scale is None or zero_point is None or scale.numel() != 1:
            continue
        if any(nodes[j][0] != "DequantizeLinear" or nodes[j][1][1:] != inputs[1:] for j in users):
            continue
        low, high = _quant_range(zero_point)
        attrs = {"scale": float(scale), "zero_point": int(zero_point), "low": low, "high": high}
        fused[i] = ("QuantDequant", inputs[:1], outputs, attrs)
        for j in users:
            fused[j] = ("Identity", [outputs[0]], nodes[j][2], {})
    return fused


def _quant_dequant(attrs, x):
    import torch

    return torch.fake_quantize_per_tensor_affine(
        x, attrs["scale"], attrs["zero_point"], attrs["low"], attrs["high"]
    )


def _quantize(attrs, x, scale, zero_point=None):
    import torch

    axis = attrs.get("axis", 1)
    low, high = _quant_range(zero_point)
    scale = _broadcast_along(scale, axis, x.dim())
    zp = 0 if zero_point is None else _broadcast_along(zero_point, axis, x.dim()).float()
    quantized = torch.clamp(torch.round(x / scale) + zp, low, high)  # round: half to even
    return quantized.to(torch.int8 if low < 0 else torch.uint8)


def _dequantize(attrs, q, scale, zero_point=None):
    axis = attrs.get("axis", 1)
    scale = _broadcast_along(scale, axis, q.dim())
    zp = 0 if zero_point is None else _broadcast_along(zero_point, axis, q.dim()).float()
    return (q.float() - zp) * scale


def _conv(attrs, x, weight, bias=None):
    import torch.nn.functional as F

    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:  # asymmetric: pad explicitly (left, right, top, bottom)
        x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
        pads = [0, 0, 0, 0]
    return F.conv2d(
        x,
        weight,
        bias,
        stride=attrs.get("strides", [1, 1]),
        padding=pads[:2],
        dilation=attrs.get("dilations", [1, 1]),
        groups=attrs.get("group", 1),
    )


def _max_pool(attrs, x):
    import torch.nn.functional as F

    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise ValueError("asymmetric MaxPool padding is not supported")
    return F.max_pool2d(
        x,
        attrs["kernel_shape"],
        stride=attrs.get("strides", attrs["kernel_shape"]),
        padding=pads[:2],
        dilation=attrs.get("dilations", [1, 1]),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def _gemm(attrs, a, b, c=None):
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    return out if c is None else out + attrs.get("beta", 1.0) * c


def _reshape(attrs, x, shape):
    dims = [int(d) for d in shape.tolist()]
    if not attrs.get("allowzero", 0):  # 0 copies the input's dimension
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _expand(attrs, x, shape):
    import torch

    return x.expand(torch.broadcast_shapes(x.shape, tuple(int(d) for d in shape.tolist())))


def _shape(attrs, x):
    import torch

    dims = list(x.shape)[attrs.get("start", 0) : attrs.get("end", len(x.shape))]
    return torch.tensor(dims, dtype=torch.int64)


def _clip(attrs, x, low=None, high=None):
    import torch

    return torch.clamp(x, low, high)


def _reduce(fn: Callable):
    def run(attrs, x, axes=None):
        dims = attrs.get("axes") if axes is None else [int(a) for a in axes.tolist()]
        return fn(x, dim=dims, keepdim=bool(attrs.get("keepdims", 1)))

    return run


def _cast(attrs, x):
    import torch

    return x.to(getattr(torch, _TORCH_DTYPES[attrs["to"]]))


def _l2(x, dim, keepdim):
    import torch

    return torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=keepdim)


def _mean(x, dim, keepdim):
    return x.mean(dim=dim, keepdim=keepdim)


def _constant(attrs):
    import torch
    from onnx import numpy_helper

    return torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())


_OPS: dict[str, Callable] = {
    "Constant": _constant,
    "Add": lambda attrs, a, b: a + b,
    "Sub": lambda attrs, a, b: a - b,
    "Div": lambda attrs, a, b: a / b,
    "Pow": lambda attrs, a, b: a**b,
    "Relu": lambda attrs, x: x.clamp_min(0),
    "Cast": _cast,
    "Transpose": lambda attrs, x: x.permute(*attrs["perm"]),
    "QuantizeLinear": _quantize,
    "QuantDequant": _quant_dequant,
    "Identity": lambda attrs, x: x,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "Gemm": _gemm,
    "Reshape": _reshape,
    "Expand": _expand,
    "Shape": _shape,
    "Clip": _clip,
    "ReduceMean": _reduce(_mean),
    "ReduceL2": _reduce(_l2),
}
