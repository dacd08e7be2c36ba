"""Parameters and multiply-accumulates per node: what pruning shrinks and what latency follows."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

import numpy as np
import onnx

from edgeprune.graph.shapes import value_shapes

Shapes = dict[str, list]


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _conv_macs(node: onnx.NodeProto, s: Shapes) -> int:
    out, w = s.get(node.output[0]), s.get(node.input[1])
    return prod(out) * prod(w[1:]) if _known(out) and _known(w) else 0


def _conv_transpose_macs(node: onnx.NodeProto, s: Shapes) -> int:
    # Each input element is scattered through a (C_out/group) x kH x kW kernel slice.
    x, w = s.get(node.input[0]), s.get(node.input[1])
    return prod(x) * prod(w[1:]) if _known(x) and _known(w) else 0


def _matmul_macs(node: onnx.NodeProto, s: Shapes) -> int:
    a, out = s.get(node.input[0]), s.get(node.output[0])
    return prod(out) * a[-1] if _known(a) and _known(out) else 0


def _gemm_macs(node: onnx.NodeProto, s: Shapes) -> int:
    a, out = s.get(node.input[0]), s.get(node.output[0])
    trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
    return prod(out) * (a[0] if trans_a else a[1]) if _known(a) and _known(out) else 0


# Ops that carry the arithmetic; everything else (activations, pooling, adds) is counted as zero
# MACs, as Torch-Pruning, fvcore and TFLite's profiler do, so figures compare with theirs.
MAC_RULES: dict[str, Callable[[onnx.NodeProto, Shapes], int]] = {
    "Conv": _conv_macs,
    "ConvInteger": _conv_macs,
    "QLinearConv": lambda n, s: _conv_macs(onnx.helper.make_node("Conv", [n.input[0], n.input[3]], n.output), s),
    "ConvTranspose": _conv_transpose_macs,
    "MatMul": _matmul_macs,
    "MatMulInteger": _matmul_macs,
    "Gemm": _gemm_macs,
}


@dataclass
class NodeStats:
    name: str
    op: str
    params: int
    macs: int


def node_stats(model: onnx.ModelProto) -> list[NodeStats]:
    """Per node: parameters it reads (each initializer counted at its first reader) and MACs."""
    if not model.graph.value_info:  # counts need intermediate shapes; infer them on a copy
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = value_shapes(model)
    init_sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    seen: set[str] = set()
    rows = []
    for idx, node in enumerate(model.graph.node):
        params = 0
        for name in node.input:
            if name in init_sizes and name not in seen:
                seen.add(name)
                params += init_sizes[name]
        macs = MAC_RULES[node.op_type](node, shapes) if node.op_type in MAC_RULES else 0
        rows.append(NodeStats(node.name or f"#{idx}", node.op_type, params, macs))
    return rows


def totals(model: onnx.ModelProto) -> dict[str, int]:
    """Whole-model counts: nodes, parameters (every initializer element) and MACs."""
    rows = node_stats(model)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return {"nodes": len(model.graph.node), "params": params, "macs": sum(r.macs for r in rows)}
