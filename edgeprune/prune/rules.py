"""Channel coupling rules, one table entry per ONNX op type (QONNX-style).

A rule has two halves. `couple(node, g)` tells the dependency graph how channel indices on the
node's inputs map to channel indices on its outputs (ties), which parameters own which channels
(for importance and for the masked oracle), and blocks whatever it does not understand.
`rewrite(node, g)` shrinks the node's parameters and attributes once channels are removed;
`g.kept(tensor)` gives the kept indices on that tensor's channel axis (None: nothing removed there).

An op missing from RULES blocks every channel space it touches: pruning is then less, never wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from edgeprune.prune.depgraph import DepGraph


@dataclass(frozen=True)
class Rule:
    couple: Callable[[gs.Node, "DepGraph"], None]
    rewrite: Callable[[gs.Node, "DepGraph"], None]


def _nothing(node: gs.Node, g: "DepGraph") -> None:
    """Ops whose parameters do not depend on the channel count (activations, pooling, Concat)."""


def _weight(node: gs.Node, g: "DepGraph", index: int, shared_ok: bool = False) -> gs.Constant | None:
    """A constant input; shared only if `shared_ok`.

    Exporters share identical small vectors (BN statistics, zero biases): slicing gives the reader a
    copy, which costs little. A weight matrix shared by two layers is real weight tying: those
    layers are left alone rather than silently doubling the weight.
    """
    if index >= len(node.inputs):
        return None
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant) and (shared_ok or g.readers(tensor) == 1):
        return tensor
    return None


def _ints(node: gs.Node, index: int) -> list[int] | None:
    """A constant integer input (split sizes, slice bounds, shapes) as a list, None if absent/dynamic."""
    if index >= len(node.inputs) or not isinstance(node.inputs[index], gs.Constant):
        return None
    return [int(v) for v in np.asarray(node.inputs[index].values).reshape(-1)]


def _set_const(node: gs.Node, index: int, values: np.ndarray) -> None:
    """Give the node a fresh constant: small int inputs (shapes, bounds) are often shared between nodes."""
    name = f"{node.outputs[0].name}__{index}"
    const = gs.Constant(name, np.asarray(values))
    if index < len(node.inputs):
        node.inputs[index] = const
    else:
        node.inputs.extend([gs.Variable.empty()] * (index - len(node.inputs)) + [const])


def _slice_const(node: gs.Node, index: int, axis: int, kept: np.ndarray) -> None:
    """Slice in place, or into this reader's own copy when other nodes read the constant too."""
    const = node.inputs[index]
    values = np.take(np.asarray(const.values), kept, axis=axis)
    if len(const.outputs) > 1:
        node.inputs[index] = gs.Constant(f"{const.name}__{node.outputs[0].name}", values)
    else:
        const.values = values


# --- elementwise unary: output channel i is input channel i -----------------------------------

def _unary_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if any(o.outputs for o in node.outputs[1:]):  # Dropout's mask, MaxPool's indices: not modelled
        g.opaque(node, f"{node.op} second output is used")
        return
    if src is not None:
        g.new_space(node.outputs[0], src.axis)
        g.tie_all(node.inputs[0], node.outputs[0])


UNARY = Rule(_unary_couple, _nothing)


# --- Conv / ConvTranspose ----------------------------------------------------------------------

def _conv_operands(node: gs.Node, g: "DepGraph"):
    """(weight, input space, output space, groups) of a Conv or ConvTranspose, or None once it is made opaque."""
    w = _weight(node, g, 1)
    bias_ok = len(node.inputs) < 3 or _weight(node, g, 2, shared_ok=True) is not None
    out = g.new_space(node.outputs[0], 1)
    if w is None or not bias_ok or out is None:
        g.opaque(node, "weight or bias is not a constant of its own")
        return None
    return w, g.space(node.inputs[0]), out, int(node.attrs.get("group", 1))


def _tie_groups(node: gs.Node, g: "DepGraph", groups: int, per_in: int, per_out: int) -> None:
    """Position j inside every group is removed together, so the groups stay equal."""
    for k in range(1, groups):
        g.tie(node.inputs[0], np.arange(per_in), node.inputs[0], k * per_in + np.arange(per_in))
        g.tie(node.outputs[0], np.arange(per_out), node.outputs[0], k * per_out + np.arange(per_out))


def _tie_whole_groups(node: gs.Node, g: "DepGraph", groups: int, per_in: int, per_out: int) -> None:
    """Group k's inputs and outputs are one unit (ResNeXt cardinality): `group` shrinks, kept groups stay whole."""
    for k in range(groups):
        first_in, first_out = k * per_in, k * per_out
        g.tie(node.inputs[0], first_in + np.arange(per_in), node.inputs[0], np.full(per_in, first_in))
        g.tie(node.outputs[0], first_out + np.arange(per_out), node.outputs[0], np.full(per_out, first_out))
        g.tie(node.inputs[0], [first_in], node.outputs[0], [first_out])


GROUPED_CONV = {  # how a grouped (not depthwise) Conv loses channels; the user picks (prune --grouped-conv)
    "equal": _tie_groups,  # the same positions from every group: `group` stays, each group narrows
    "whole": _tie_whole_groups,  # whole groups: `group` shrinks; the weights reading them go with their filters
}


def _conv_couple(node: gs.Node, g: "DepGraph") -> None:
    operands = _conv_operands(node, g)
    if operands is None:
        return
    w, x, out, groups = operands
    per_in, per_out = w.shape[1], w.shape[0] // groups
    g.param(node, w, node.outputs[0], axis=0, role="out")
    if x is None or x.axis != 1:
        g.block(node.inputs[0], f"Conv '{node.name}': input channels are not on axis 1")
        if groups > 1:  # the group structure needs the input: outputs alone could leave groups unequal
            g.block(node.outputs[0], f"Conv '{node.name}': grouped, and its input cannot follow")
    elif groups == 1:
        g.param(node, w, node.inputs[0], axis=1, role="in")
    elif per_in == 1:  # depthwise (with multiplier): input channel i feeds outputs i*m..i*m+m-1
        ins = np.repeat(np.arange(groups), per_out)
        g.tie(node.inputs[0], ins, node.outputs[0], np.arange(groups * per_out))
    else:
        GROUPED_CONV[g.grouped_conv](node, g, groups, per_in, per_out)
        if g.grouped_conv == "equal":  # whole groups: the filters reading a removed group are removed themselves
            g.param(node, w, node.inputs[0], axis=1, role="in", index=np.arange(x.size) % per_in)


def _conv_rewrite(node: gs.Node, g: "DepGraph") -> None:
    w = node.inputs[1]
    groups = int(node.attrs.get("group", 1))
    kept_out, kept_in = g.kept(node.outputs[0]), g.kept(node.inputs[0])
    per_in = w.shape[1]
    if kept_out is not None:
        _slice_const(node, 1, 0, kept_out)
        if len(node.inputs) > 2:
            _slice_const(node, 2, 0, kept_out)
    if kept_in is None:
        return
    if groups == 1:
        _slice_const(node, 1, 1, kept_in)
    elif per_in == 1:
        node.attrs["group"] = len(kept_in)
    elif g.grouped_conv == "whole":
        node.attrs["group"] = len(kept_in) // per_in
    else:
        _slice_const(node, 1, 1, kept_in[kept_in < per_in])


def _conv_transpose_couple(node: gs.Node, g: "DepGraph") -> None:
    """Weight (C_in, C_out/group, k...): axis 0 is the full input, axis 1 the output inside a group."""
    operands = _conv_operands(node, g)
    if operands is None:
        return
    w, x, out, groups = operands
    per_in, per_out = w.shape[0] // groups, w.shape[1]
    if x is None or x.axis != 1:
        g.block(node.inputs[0], f"ConvTranspose '{node.name}': input channels are not on axis 1")
        if groups == 1:
            g.param(node, w, node.outputs[0], axis=1, role="out")
        else:
            g.block(node.outputs[0], f"ConvTranspose '{node.name}': grouped, and its input cannot follow")
    elif groups == 1:
        g.param(node, w, node.outputs[0], axis=1, role="out")
        g.param(node, w, node.inputs[0], axis=0, role="in")
    elif per_in == 1:  # depthwise: input channel i is the whole group i, weight row i its filters
        g.tie(node.inputs[0], np.repeat(np.arange(groups), per_out), node.outputs[0], np.arange(groups * per_out))
        g.param(node, w, node.inputs[0], axis=0, role="out")
    else:
        _tie_groups(node, g, groups, per_in, per_out)
        g.param(node, w, node.outputs[0], axis=1, role="out", index=np.arange(out.size) % per_out)
        g.param(node, w, node.inputs[0], axis=0, role="in")


def _conv_transpose_rewrite(node: gs.Node, g: "DepGraph") -> None:
    w = node.inputs[1]
    groups = int(node.attrs.get("group", 1))
    per_in, per_out = w.shape[0] // groups, w.shape[1]
    kept_out, kept_in = g.kept(node.outputs[0]), g.kept(node.inputs[0])
    if kept_in is not None:
        _slice_const(node, 1, 0, kept_in)
        if groups > 1 and per_in == 1:
            node.attrs["group"] = len(kept_in)
    if kept_out is not None:
        if groups == 1:
            _slice_const(node, 1, 1, kept_out)
        elif per_in > 1:
            _slice_const(node, 1, 1, kept_out[kept_out < per_out])
        if len(node.inputs) > 2:
            _slice_const(node, 2, 0, kept_out)


# --- BatchNormalization: four per-channel vectors ----------------------------------------------

def _bn_couple(node: gs.Node, g: "DepGraph") -> None:
    params = [_weight(node, g, i, shared_ok=True) for i in range(1, 5)]
    src = g.space(node.inputs[0])
    if any(p is None for p in params) or src is None or src.axis != 1 or any(o.outputs for o in node.outputs[1:]):
        g.opaque(node, "parameters are not constants, or training outputs are used")
        return
    g.new_space(node.outputs[0], 1)
    g.tie_all(node.inputs[0], node.outputs[0])
    g.param(node, params[0], node.outputs[0], axis=0, role="scale")


# --- elementwise between tensors (Add, Mul, ..., PRelu): broadcasting decides -----------------

def _operand_axis(tensor: gs.Tensor, out_rank: int, axis: int) -> int:
    """The operand's own axis that lines up with the output's `axis` under numpy broadcasting."""
    return axis - (out_rank - len(tensor.shape))


def _channel_dim(tensor: gs.Tensor, out_rank: int, axis: int) -> int:
    local = _operand_axis(tensor, out_rank, axis)
    dim = tensor.shape[local] if local >= 0 else 1
    return dim if isinstance(dim, int) else -1  # symbolic: never equal to a channel count


def _binary_couple(node: gs.Node, g: "DepGraph") -> None:
    out = node.outputs[0]
    first = next((t for t in node.inputs if g.space(t) is not None), None)
    if first is None or out.shape is None or any(t.shape is None for t in node.inputs):
        if any(not isinstance(t, gs.Constant) for t in node.inputs):
            g.opaque(node, "no operand carries a known channel axis")
        return
    rank = len(out.shape)
    axis = g.space(first).axis + rank - len(first.shape)
    size = out.shape[axis]
    carriers = []
    for tensor in node.inputs:
        dim = _channel_dim(tensor, rank, axis)
        space = g.space(tensor)
        if dim == 1:  # broadcast along channels: scalars, spatial gates (whose one channel must stay)
            g.block(tensor, f"{node.op} '{node.name}': broadcast along the channel axis")
            continue
        if dim != size:
            g.opaque(node, f"operand '{tensor.name}' has {dim} channels, another {size}")
            return
        if isinstance(tensor, gs.Constant):
            continue  # sliced by the rewrite (into a copy if shared)
        if space is None or space.axis != _operand_axis(tensor, rank, axis):
            g.opaque(node, f"operand '{tensor.name}' carries channels the graph cannot follow")
            return
        carriers.append(tensor)
    g.new_space(out, axis)
    for tensor in carriers:
        g.tie_all(tensor, out)


def _binary_rewrite(node: gs.Node, g: "DepGraph") -> None:
    out, kept = node.outputs[0], g.kept(node.outputs[0])
    if kept is None:
        return
    rank, axis, size = len(out.shape), g.space(out).axis, g.space(out).size
    for i, tensor in enumerate(node.inputs):
        if isinstance(tensor, gs.Constant) and _channel_dim(tensor, rank, axis) == size:
            _slice_const(node, i, _operand_axis(tensor, rank, axis), kept)


BINARY = Rule(_binary_couple, _binary_rewrite)


# --- Concat: offsets on the channel axis, identity on any other axis ---------------------------

def _concat_couple(node: gs.Node, g: "DepGraph") -> None:
    spaces = [g.space(t) for t in node.inputs]
    if any(s is None for s in spaces) or len({s.axis for s in spaces}) != 1:
        g.opaque(node, "an input carries no channel space (constant or unknown shape)")
        return
    channel_axis = spaces[0].axis
    axis = int(node.attrs["axis"]) % len(node.inputs[0].shape)
    if g.new_space(node.outputs[0], channel_axis) is None:
        g.opaque(node, "output shape unknown")
        return
    offset = 0
    for tensor, space in zip(node.inputs, spaces):
        if axis == channel_axis:
            g.tie(tensor, np.arange(space.size), node.outputs[0], offset + np.arange(space.size))
            offset += space.size
        else:
            g.tie_all(tensor, node.outputs[0])


CONCAT = Rule(_concat_couple, _nothing)


# --- Split: slices of the channel axis; sizes rewritten -----------------------------------------

def _split_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None:
        return
    axis = int(node.attrs.get("axis", 0)) % len(node.inputs[0].shape)
    spaces = [g.new_space(o, src.axis) for o in node.outputs]
    if any(s is None for s in spaces) or (len(node.inputs) > 1 and _ints(node, 1) is None):
        g.opaque(node, "output shapes or split sizes unknown")
        return
    offset = 0
    for out, space in zip(node.outputs, spaces):
        if axis == src.axis:
            g.tie(node.inputs[0], offset + np.arange(space.size), out, np.arange(space.size))
            offset += space.size
        else:
            g.tie_all(node.inputs[0], out)


def _split_rewrite(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None or int(node.attrs.get("axis", 0)) % len(node.inputs[0].shape) != src.axis:
        return
    sizes = np.array([len(g.kept_all(o)) for o in node.outputs], dtype=np.int64)
    if g.opset < 13:
        node.attrs["split"] = [int(s) for s in sizes]
    else:
        node.attrs.pop("num_outputs", None)  # opset 18: an equal split may not stay equal
        _set_const(node, 1, sizes)


SPLIT = Rule(_split_couple, _split_rewrite)


# --- Slice: a contiguous window of the channel axis; starts/ends rewritten ---------------------

def _slice_window(node: gs.Node, g: "DepGraph") -> tuple[int, int, int, int] | None:
    """(entry in starts/ends, start, end, step) on the channel axis, or None if the slice leaves it whole."""
    src = g.space(node.inputs[0])
    starts, ends = _ints(node, 1), _ints(node, 2)
    rank = len(node.inputs[0].shape)
    axes = _ints(node, 3) if len(node.inputs) > 3 else list(range(len(starts)))
    steps = _ints(node, 4) if len(node.inputs) > 4 else [1] * len(starts)
    for entry, axis in enumerate(axes):
        if axis % rank == src.axis:
            start, end = starts[entry], ends[entry]
            start = min(max(start + src.size if start < 0 else start, 0), src.size)
            end = min(max(end + src.size if end < 0 else end, 0), src.size)
            return entry, start, max(end, start), steps[entry]
    return None


def _slice_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None:
        return
    bounds = [_ints(node, i) for i in range(1, len(node.inputs))]
    if any(b is None for b in bounds) or g.new_space(node.outputs[0], src.axis) is None:
        g.opaque(node, "slice bounds are not constants")
        return
    window = _slice_window(node, g)
    if window is None:
        g.tie_all(node.inputs[0], node.outputs[0])
    elif window[3] != 1:
        g.opaque(node, "strided slice on the channel axis")
    else:
        _, start, end, _ = window
        g.tie(node.inputs[0], np.arange(start, end), node.outputs[0], np.arange(end - start))


def _slice_rewrite(node: gs.Node, g: "DepGraph") -> None:
    if g.space(node.inputs[0]) is None:
        return
    window = _slice_window(node, g)
    if window is None:
        return
    entry, start, _, _ = window
    kept_in, kept_out = g.kept_all(node.inputs[0]), g.kept_all(node.outputs[0])
    starts, ends = np.array(_ints(node, 1), np.int64), np.array(_ints(node, 2), np.int64)
    starts[entry] = int(np.sum(kept_in < start))
    ends[entry] = starts[entry] + len(kept_out)
    _set_const(node, 1, starts)
    _set_const(node, 2, ends)


SLICE = Rule(_slice_couple, _slice_rewrite)


# --- Pad, Resize: spatial only; channels pass if the channel axis is left alone ----------------

def _pad_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None:
        return
    pads = node.attrs.get("pads") or _ints(node, 1)
    rank = len(node.inputs[0].shape)
    axes = _ints(node, 3) if len(node.inputs) > 3 and node.inputs[3].name else list(range(rank))
    if pads is None or axes is None:
        g.opaque(node, "pads are not constants")
        return
    half = len(pads) // 2
    if any(pads[i] or pads[i + half] for i, a in enumerate(axes) if a % rank == src.axis):
        g.opaque(node, "pads the channel axis")
        return
    UNARY.couple(node, g)


def _resize_couple(node: gs.Node, g: "DepGraph") -> None:
    src, out = g.space(node.inputs[0]), node.outputs[0]
    if src is None:
        return
    if out.shape is None or out.shape[src.axis] != src.size:
        g.opaque(node, "resizes the channel axis")
        return
    UNARY.couple(node, g)


def _resize_rewrite(node: gs.Node, g: "DepGraph") -> None:
    kept = g.kept(node.outputs[0])
    sizes = _ints(node, 3) if len(node.inputs) > 3 else None
    if kept is not None and sizes:
        sizes[g.space(node.outputs[0]).axis] = len(kept)
        _set_const(node, 3, np.array(sizes, np.int64))


# --- Gemm and MatMul: features of a fully connected layer --------------------------------------

def _gemm_couple(node: gs.Node, g: "DepGraph") -> None:
    b = _weight(node, g, 1)
    c = node.inputs[2] if len(node.inputs) > 2 else None
    trans_b = int(node.attrs.get("transB", 0))
    ok_c = c is None or isinstance(c, gs.Constant)
    if b is None or not ok_c or int(node.attrs.get("transA", 0)) or g.new_space(node.outputs[0], 1) is None:
        g.opaque(node, "transposed input, or weight/bias not a constant of its own")
        return
    g.param(node, b, node.outputs[0], axis=0 if trans_b else 1, role="out")
    if g.space(node.inputs[0]) is not None and g.space(node.inputs[0]).axis != 1:
        g.block(node.inputs[0], f"Gemm '{node.name}': input channels are not on axis 1")
    elif g.space(node.inputs[0]) is not None:
        g.param(node, b, node.inputs[0], axis=1 if trans_b else 0, role="in")


def _gemm_rewrite(node: gs.Node, g: "DepGraph") -> None:
    trans_b = int(node.attrs.get("transB", 0))
    kept_out, kept_in = g.kept(node.outputs[0]), g.kept(node.inputs[0])
    if kept_out is not None:
        _slice_const(node, 1, 0 if trans_b else 1, kept_out)
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None and c.shape and c.shape[-1] == g.space(node.outputs[0]).size:
            _slice_const(node, 2, len(c.shape) - 1, kept_out)
    if kept_in is not None:
        _slice_const(node, 1, 1 if trans_b else 0, kept_in)


def _matmul_couple(node: gs.Node, g: "DepGraph") -> None:
    w = _weight(node, g, 1)
    a = g.space(node.inputs[0])
    out = node.outputs[0]
    if w is None or len(w.shape) != 2 or out.shape is None:
        g.opaque(node, "weight is not a 2-D constant of its own")
        return
    g.new_space(out, len(out.shape) - 1)
    g.param(node, w, out, axis=1, role="out")
    if a is not None and a.axis != len(node.inputs[0].shape) - 1:
        g.block(node.inputs[0], f"MatMul '{node.name}': input channels are not on the contracted axis")
    elif a is not None:
        g.param(node, w, node.inputs[0], axis=0, role="in")


def _matmul_rewrite(node: gs.Node, g: "DepGraph") -> None:
    kept_out, kept_in = g.kept(node.outputs[0]), g.kept(node.inputs[0])
    if kept_out is not None:
        _slice_const(node, 1, 1, kept_out)
    if kept_in is not None:
        _slice_const(node, 1, 0, kept_in)


# --- Flatten / Reshape: into FC (a channel owns H*W features) or keeping the channel axis ----

def _reshape_kind(node: gs.Node, g: "DepGraph") -> str | None:
    """'flat' (N,C,...)->(N,C*...), 'keep' (N,C,...)->(N,C,...'), or None (anything else)."""
    src, x, out = g.space(node.inputs[0]), node.inputs[0], node.outputs[0]
    if src is None or out.shape is None or len(out.shape) < 2 or src.axis != 1:
        return None
    if any(not isinstance(d, int) for d in [*x.shape, *out.shape]) or out.shape[0] != x.shape[0]:
        return None
    if out.shape[1] == src.size:
        return "keep"
    if len(out.shape) == 2 and out.shape[1] == int(np.prod(x.shape[1:])):
        return "flat"
    return None


def _reshape_couple(node: gs.Node, g: "DepGraph") -> None:
    if g.space(node.inputs[0]) is None:
        return
    kind = _reshape_kind(node, g)
    if kind is None or (node.op == "Reshape" and _ints(node, 1) is None):
        g.opaque(node, "reshape mixes the channel axis with others")
        return
    g.new_space(node.outputs[0], 1)
    if kind == "keep":
        g.tie_all(node.inputs[0], node.outputs[0])
    else:
        c = g.space(node.inputs[0]).size
        inner = int(np.prod(node.inputs[0].shape[2:]))
        g.tie(node.inputs[0], np.repeat(np.arange(c), inner), node.outputs[0], np.arange(c * inner))


def _reshape_rewrite(node: gs.Node, g: "DepGraph") -> None:
    kept = g.kept(node.outputs[0])
    if node.op != "Reshape" or kept is None:
        return
    shape = _ints(node, 1)
    if shape[1] > 0:
        shape[1] = len(kept)
        _set_const(node, 1, np.array(shape, np.int64))


RESHAPE = Rule(_reshape_couple, _reshape_rewrite)


# --- reductions over spatial axes (squeeze-excite), Squeeze/Unsqueeze: the channel axis moves ----

def _axes(node: gs.Node) -> list[int] | None:
    """The `axes` attribute (older opsets) or input 1 (newer ones); None if absent or dynamic."""
    axes = node.attrs.get("axes")
    return list(axes) if axes is not None else (_ints(node, 1) if len(node.inputs) > 1 else None)


def _follow_axis(node: gs.Node, g: "DepGraph", axis: int | None, reason: str) -> None:
    """Channels pass one to one, onto `axis` of the output (None: they cannot pass)."""
    if axis is None:
        g.opaque(node, reason)
        return
    g.new_space(node.outputs[0], axis)
    g.tie_all(node.inputs[0], node.outputs[0])


def _reduce_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None:
        return
    rank = len(node.inputs[0].shape)
    axes = [a % rank for a in _axes(node) or []]
    keepdims = int(node.attrs.get("keepdims", 1))
    axis = src.axis if keepdims else src.axis - sum(a < src.axis for a in axes)
    _follow_axis(node, g, axis if axes and src.axis not in axes else None, "reduces over the channel axis")


def _squeeze_couple(node: gs.Node, g: "DepGraph") -> None:
    src, shape = g.space(node.inputs[0]), node.inputs[0].shape
    if src is None:
        return
    axes = _axes(node)
    if axes is None and all(isinstance(d, int) for d in shape):
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = None if axes is None else [a % len(shape) for a in axes]
    axis = None if axes is None or src.axis in axes else src.axis - sum(a < src.axis for a in axes)
    _follow_axis(node, g, axis, "squeezes the channel axis, or its axes are unknown")


def _unsqueeze_couple(node: gs.Node, g: "DepGraph") -> None:
    src = g.space(node.inputs[0])
    if src is None:
        return
    axes = _axes(node)
    if axes is None:
        _follow_axis(node, g, None, "axes are not constants")
        return
    rank = len(node.inputs[0].shape) + len(axes)
    kept_axes = [a for a in range(rank) if a not in {x % rank for x in axes}]
    _follow_axis(node, g, kept_axes[src.axis], "")


# --- InstanceNormalization: per-channel scale and bias, statistics per channel -----------------

def _instance_norm_couple(node: gs.Node, g: "DepGraph") -> None:
    params = [_weight(node, g, i, shared_ok=True) for i in (1, 2)]
    src = g.space(node.inputs[0])
    if src is None or src.axis != 1 or any(p is None for p in params):
        g.opaque(node, "scale/bias are not constants")
        return
    _follow_axis(node, g, 1, "")
    g.param(node, params[0], node.outputs[0], axis=0, role="scale")


def _per_channel_rewrite(node: gs.Node, g: "DepGraph") -> None:
    """BatchNormalization (4 vectors) and InstanceNormalization (2): slice every constant input."""
    kept = g.kept(node.outputs[0])
    if kept is not None:
        for i in range(1, len(node.inputs)):
            _slice_const(node, i, 0, kept)


# --- Transpose, LayerNormalization, GroupNormalization -----------------------------------------

def _transpose_couple(node: gs.Node, g: "DepGraph") -> None:
    """The channel axis moves to where `perm` puts it (default: all axes reversed)."""
    src = g.space(node.inputs[0])
    if src is None:
        return
    perm = list(node.attrs.get("perm") or reversed(range(len(node.inputs[0].shape))))
    _follow_axis(node, g, perm.index(src.axis), "")


def _layer_norm_couple(node: gs.Node, g: "DepGraph") -> None:
    """Statistics over the axes from `axis` on: channels before it pass; channels inside cannot go."""
    src = g.space(node.inputs[0])
    if src is None:
        return
    start = int(node.attrs.get("axis", -1)) % len(node.inputs[0].shape)
    if any(o.outputs for o in node.outputs[1:]):
        g.opaque(node, "mean/inverse-std outputs are used")
        return
    _follow_axis(node, g, src.axis if src.axis < start else None,
                 "normalizes over the channel axis: removing channels would change every statistic")


def _group_norm_couple(node: gs.Node, g: "DepGraph") -> None:
    """Statistics per group of channels: a whole group goes or stays, so the others keep their numbers."""
    src = g.space(node.inputs[0])
    params = [_weight(node, g, i, shared_ok=True) for i in (1, 2)]
    if src is None:
        return
    groups = int(node.attrs.get("num_groups", 0))
    if src.axis != 1 or any(p is None for p in params) or groups < 1 or src.size % groups:
        g.opaque(node, "scale/bias are not constants, or channels do not split into num_groups")
        return
    per = src.size // groups
    _follow_axis(node, g, 1, "")
    for k in range(groups):
        g.tie(node.inputs[0], np.full(per - 1, k * per), node.inputs[0], k * per + np.arange(1, per))
    index = None if params[0].shape[0] == src.size else np.arange(src.size) // per  # opset 18: per group
    g.param(node, params[0], node.outputs[0], axis=0, role="scale", index=index)


def _group_norm_rewrite(node: gs.Node, g: "DepGraph") -> None:
    kept = g.kept(node.outputs[0])
    if kept is None:
        return
    per = g.space(node.outputs[0]).size // int(node.attrs["num_groups"])
    node.attrs["num_groups"] = len(kept) // per
    per_channel = node.inputs[1].shape[0] == g.space(node.outputs[0]).size
    for i in (1, 2):
        _slice_const(node, i, 0, kept if per_channel else kept[::per] // per)


UNARY_OPS = [
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Tanh", "Erf", "Exp", "Log", "Sqrt",
    "Neg", "Abs", "Reciprocal", "Identity", "Dropout", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish",
    "Gelu", "ThresholdedRelu", "Floor", "Ceil", "Round", "Sin", "Cos", "Cast",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "Upsample",  # opset < 10; its scales on the channel axis are 1 in every exporter we know
]

RULES: dict[str, Rule] = {
    **{op: UNARY for op in UNARY_OPS},
    **{op: BINARY for op in ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"]},
    "Conv": Rule(_conv_couple, _conv_rewrite),
    "ConvTranspose": Rule(_conv_transpose_couple, _conv_transpose_rewrite),
    "BatchNormalization": Rule(_bn_couple, _per_channel_rewrite),
    "InstanceNormalization": Rule(_instance_norm_couple, _per_channel_rewrite),
    "Concat": CONCAT,
    "Split": SPLIT,
    "Slice": SLICE,
    "Pad": Rule(_pad_couple, _nothing),
    "Resize": Rule(_resize_couple, _resize_rewrite),
    "Gemm": Rule(_gemm_couple, _gemm_rewrite),
    "MatMul": Rule(_matmul_couple, _matmul_rewrite),
    "Flatten": RESHAPE,
    "Reshape": RESHAPE,
    **{op: Rule(_reduce_couple, _nothing) for op in ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"]},
    "Squeeze": Rule(_squeeze_couple, _nothing),
    "Unsqueeze": Rule(_unsqueeze_couple, _nothing),
    "Transpose": Rule(_transpose_couple, _nothing),
    "LayerNormalization": Rule(_layer_norm_couple, _nothing),
    "GroupNormalization": Rule(_group_norm_couple, _group_norm_rewrite),
}
