"""ONNX operators as torch functions: the table the interpreter in module.py runs.

Each entry takes (inputs, attrs, opset) and returns a tensor or a list of tensors. `inputs` holds
None for an omitted optional input; integer inputs that ONNX uses as shapes and axes arrive as
tensors and are read with `.tolist()`. Semantics follow the ONNX spec for what the spec allows
and torch can express exactly; anything else raises NotImplementedError with the reason, which
the interpreter turns into a one-line error naming the node.
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable

import torch
from torch.nn import functional as F

Op = Callable[[list, dict[str, Any], int], Any]


def _spatial(x: torch.Tensor) -> int:
    return x.dim() - 2


def _pairs(pads: list[int]) -> list[tuple[int, int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> [(b1, e1), (b2, e2), ...]."""
    half = len(pads) // 2
    return list(zip(pads[:half], pads[half:]))


def _window(x: torch.Tensor, a: dict, kernel: list[int]) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Strides, dilations and per-axis (begin, end) pads, auto_pad resolved against x's size."""
    n = len(kernel)
    strides, dilations = a.get("strides", [1] * n), a.get("dilations", [1] * n)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = _pairs(a.get("pads", [0] * 2 * n))
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:  # SAME_UPPER / SAME_LOWER: output = ceil(input / stride)
        pads = []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return strides, dilations, pads


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """Per-axis pads in F.pad's order (last axis first)."""
    return [p for pair in reversed(pads) for p in pair]


def _symmetric(x: torch.Tensor, pads: list[tuple[int, int]], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """Pads torch's conv/pool take as one number per axis; an asymmetric rest is padded explicitly."""
    common = [min(b, e) for b, e in pads]
    extra = [(b - c, e - c) for (b, e), c in zip(pads, common)]
    if any(b or e for b, e in extra):
        x = F.pad(x, _torch_pad(extra), value=value)
    return x, common


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def conv(i: list, a: dict, opset: int) -> torch.Tensor:
    x, w, b = i[0], i[1], i[2] if len(i) > 2 else None
    strides, dilations, pads = _window(x, a, list(w.shape[2:]))
    x, padding = _symmetric(x, pads)
    return _CONV[_spatial(x)](x, w, b, strides, padding, dilations, a.get("group", 1))


def conv_transpose(i: list, a: dict, opset: int) -> torch.Tensor:
    x, w, b = i[0], i[1], i[2] if len(i) > 2 else None
    n = _spatial(x)
    if a.get("output_shape") or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError("ConvTranspose with output_shape or SAME auto_pad")
    pads = _pairs(a.get("pads", [0] * 2 * n))
    if any(b_ != e for b_, e in pads):
        raise NotImplementedError("ConvTranspose with asymmetric pads")
    return _CONV_T[n](x, w, b, a.get("strides", [1] * n), [p for p, _ in pads], a.get("output_padding", [0] * n),
                      a.get("group", 1), a.get("dilations", [1] * n))


def max_pool(i: list, a: dict, opset: int) -> torch.Tensor:
    x, kernel = i[0], a["kernel_shape"]
    if a.get("storage_order", 0):
        raise NotImplementedError("MaxPool with storage_order 1")
    strides, dilations, pads = _window(x, a, kernel)
    x, padding = _symmetric(x, pads, float("-inf"))
    return _MAX_POOL[_spatial(x)](x, kernel, strides, padding, dilations, bool(a.get("ceil_mode", 0)))


def avg_pool(i: list, a: dict, opset: int) -> torch.Tensor:
    x, kernel = i[0], a["kernel_shape"]
    strides, _, pads = _window(x, a, kernel)
    include = bool(a.get("count_include_pad", 0))
    if not include and any(b != e for b, e in pads):
        raise NotImplementedError("AveragePool with asymmetric pads that are not counted")
    x, padding = _symmetric(x, pads)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise NotImplementedError("AveragePool with pads over half the kernel")
    return _AVG_POOL[_spatial(x)](x, kernel, strides, padding, bool(a.get("ceil_mode", 0)), include)


def gemm(i: list, a: dict, opset: int) -> torch.Tensor:
    x, w = i[0], i[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * i[2] if len(i) > 2 and i[2] is not None else y


def batch_norm(i: list, a: dict, opset: int, training: bool = False) -> torch.Tensor:
    """Inference form unless the module trains, then batch statistics update the running ones."""
    x, scale, bias, mean, var = i[:5]
    return F.batch_norm(x, mean, var, scale, bias, training, 1.0 - a.get("momentum", 0.9), a.get("epsilon", 1e-5))


def _axes(i: list, a: dict, position: int) -> list[int] | None:
    """Axes from the input at `position` (newer opsets) or the attribute (older ones)."""
    if len(i) > position and i[position] is not None:
        return [int(v) for v in i[position].tolist()]
    return a.get("axes")


def _reduce(fn: Callable) -> Op:
    def op(i: list, a: dict, opset: int) -> torch.Tensor:
        axes = _axes(i, a, 1)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return i[0]
            axes = list(range(i[0].dim()))
        return fn(i[0], dim=axes, keepdim=bool(a.get("keepdims", 1)))
    return op


def reshape(i: list, a: dict, opset: int) -> torch.Tensor:
    x, shape = i[0], [int(v) for v in i[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if d == 0 else d for k, d in enumerate(shape)]
    return x.reshape(shape)


def flatten(i: list, a: dict, opset: int) -> torch.Tensor:
    x, axis = i[0], a.get("axis", 1)
    axis = axis % x.dim() if axis < 0 else axis
    return x.reshape(prod(x.shape[:axis]), -1)


def squeeze(i: list, a: dict, opset: int) -> torch.Tensor:
    axes = _axes(i, a, 1)
    if axes is None:
        return i[0].squeeze()
    return i[0].squeeze(tuple(ax % i[0].dim() for ax in axes))


def unsqueeze(i: list, a: dict, opset: int) -> torch.Tensor:
    x = i[0]
    rank = x.dim() + len(_axes(i, a, 1))
    for ax in sorted(ax % rank for ax in _axes(i, a, 1)):
        x = x.unsqueeze(ax)
    return x


def split(i: list, a: dict, opset: int, outputs: int = 1) -> list[torch.Tensor]:
    x, axis = i[0], a.get("axis", 0)
    sizes = [int(v) for v in i[1].tolist()] if len(i) > 1 and i[1] is not None else a.get("split")
    if not sizes:
        step = -(-x.shape[axis] // outputs)
        sizes = [min(step, x.shape[axis] - k * step) for k in range(outputs)]
    return list(torch.split(x, sizes, dim=axis))


def slice_(i: list, a: dict, opset: int) -> torch.Tensor:
    x = i[0]
    starts, ends = i[1].tolist(), i[2].tolist()
    axes = i[3].tolist() if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = i[4].tolist() if len(i) > 4 and i[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step < 1:
            raise NotImplementedError("Slice with a negative step")
        size = x.shape[axis]
        start, end = (max(0, min(size, v + size if v < 0 else v)) for v in (start, end))
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def pad(i: list, a: dict, opset: int) -> torch.Tensor:
    x = i[0]
    pads = [int(v) for v in i[1].tolist()] if opset >= 11 else a["pads"]
    value = float(i[2].item()) if len(i) > 2 and i[2] is not None else a.get("value", 0.0)
    pairs = _pairs(pads)
    axes = _axes(i, {}, 3)
    if axes is not None:
        full = [(0, 0)] * x.dim()
        for axis, pair in zip(axes, pairs):
            full[axis % x.dim()] = pair
        pairs = full
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[a.get("mode", "constant")]
    while pairs and pairs[0] == (0, 0) and mode != "constant":  # torch pads only trailing axes in these modes
        pairs = pairs[1:]
    return F.pad(x, _torch_pad(pairs), mode=mode, value=value if mode == "constant" else None)


def clip(i: list, a: dict, opset: int) -> torch.Tensor:
    low = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
    high = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
    return i[0] if low is None and high is None else torch.clamp(i[0], low, high)


def resize(i: list, a: dict, opset: int) -> torch.Tensor:
    """Nearest (integer scales) and (bi/tri)linear resizes of the spatial axes."""
    x = i[0]
    scales = sizes = None
    if opset < 11:
        scales = i[1]
    else:
        scales = i[2] if len(i) > 2 and i[2] is not None and i[2].numel() else None
        sizes = i[3] if len(i) > 3 and i[3] is not None and i[3].numel() else None
    if scales is not None and [float(v) for v in scales.tolist()[:2]] != [1.0, 1.0]:
        raise NotImplementedError("Resize of the batch or channel axis")
    mode = a.get("mode", "nearest")
    coords = a.get("coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric")
    size = [int(v) for v in sizes.tolist()[2:]] if sizes is not None else None
    factor = [float(v) for v in scales.tolist()[2:]] if size is None else None
    if mode == "nearest":
        if factor is None or any(f != int(f) for f in factor) or coords not in ("half_pixel", "asymmetric"):
            raise NotImplementedError("nearest Resize other than integer upscaling")
        return F.interpolate(x, scale_factor=factor, mode="nearest")
    if mode != "linear" or coords not in ("half_pixel", "align_corners", "pytorch_half_pixel"):
        raise NotImplementedError(f"Resize mode {mode} with {coords} coordinates")
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[_spatial(x)]
    return F.interpolate(x, size=size, scale_factor=factor, mode=linear, align_corners=coords == "align_corners")


def gather(i: list, a: dict, opset: int) -> torch.Tensor:
    x, index = i[0], i[1].long()
    axis = a.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index)
    picked = torch.index_select(x, axis, index.reshape(-1))
    return picked.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1:])


def softmax(i: list, a: dict, opset: int) -> torch.Tensor:
    x, axis = i[0], a.get("axis", -1 if opset >= 13 else 1)
    if opset >= 13:
        return torch.softmax(x, axis)
    return torch.softmax(x.flatten(axis), -1).reshape(x.shape)  # the old spec coerces to 2-D


def _unary(fn: Callable) -> Op:
    return lambda i, a, opset: fn(i[0])


def _binary(fn: Callable) -> Op:
    return lambda i, a, opset: fn(i[0], i[1])


def _variadic(fn: Callable) -> Op:
    def op(i: list, a: dict, opset: int) -> torch.Tensor:
        out = i[0]
        for other in i[1:]:
            out = fn(out, other)
        return out
    return op


_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}

OPS: dict[str, Op] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": _binary(torch.matmul),
    "BatchNormalization": batch_norm,
    "InstanceNormalization": lambda i, a, o: F.instance_norm(i[0], weight=i[1], bias=i[2], eps=a.get("epsilon", 1e-5)),
    "MaxPool": max_pool,
    "AveragePool": avg_pool,
    "GlobalAveragePool": lambda i, a, o: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda i, a, o: i[0].amax(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "Relu": _unary(torch.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Abs": _unary(torch.abs),
    "Neg": _unary(torch.neg),
    "Reciprocal": _unary(torch.reciprocal),
    "Softplus": _unary(F.softplus),
    "HardSwish": _unary(F.hardswish),
    "Identity": _unary(lambda x: x),
    "Dropout": _unary(lambda x: x),  # an inference graph: the ratio is not applied
    "LeakyRelu": lambda i, a, o: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Elu": lambda i, a, o: F.elu(i[0], a.get("alpha", 1.0)),
    "Selu": lambda i, a, o: a.get("gamma", 1.0507) * torch.where(i[0] > 0, i[0], a.get("alpha", 1.6733) * torch.expm1(i[0])),
    "HardSigmoid": lambda i, a, o: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "Gelu": lambda i, a, o: F.gelu(i[0], approximate=a.get("approximate", "none")),
    "PRelu": lambda i, a, o: torch.where(i[0] >= 0, i[0], i[0] * i[1]),
    "Clip": clip,
    "Softmax": softmax,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax),
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": lambda i, a, o: i[0].permute(a.get("perm", list(reversed(range(i[0].dim()))))),
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Concat": lambda i, a, o: torch.cat([t for t in i if t is not None], dim=a["axis"]),
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Resize": resize,
    "Upsample": resize,
    "Shape": lambda i, a, o: torch.tensor(i[0].shape, dtype=torch.int64)[a.get("start", 0):a.get("end")],
    "Gather": gather,
    "Cast": lambda i, a, o: i[0].to(_DTYPES[a["to"]]),
}

# Ops whose output count depends on the node (the interpreter passes it).
MULTI_OUTPUT = {"Split"}
# Ops that behave differently while training (the interpreter passes `training`).
TRAINING_AWARE = {"BatchNormalization"}
