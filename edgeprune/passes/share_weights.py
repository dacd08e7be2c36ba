"""Weight sharing as a pass: each large weight tensor keeps at most 2^bits distinct values.

The model stays an ordinary ONNX model (the shared values are written back), so every runtime and
back end reads it unchanged; `edgeprune compress` then stores it as codebook + Huffman-coded indices.
Works on float weights and on the int8 weights of a QDQ model (behind DequantizeLinear).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.passes.base import Pass
from edgeprune.passes.magnitude_prune import WEIGHT_OPS
from edgeprune.quant.sharing import relative_error, share


def weight_tensors(graph: gs.Graph) -> list[gs.Constant]:
    """The weight operand of every compute op: the constant itself, or the int8 tensor its DequantizeLinear reads."""
    found: dict[str, gs.Constant] = {}
    for node in graph.nodes:
        if node.op not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if not isinstance(weight, gs.Constant) and weight.inputs and weight.inputs[0].op == "DequantizeLinear":
            weight = weight.inputs[0].inputs[0]
        if isinstance(weight, gs.Constant):
            found.setdefault(weight.name, weight)
    return list(found.values())


@dataclass
class ShareWeights(Pass):
    name = "share-weights"
    bits: int = 4
    min_size: int = 256  # smaller tensors (tiny heads, depthwise kernels) save nothing worth their error

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        layers = {}
        for tensor in weight_tensors(graph):
            values = tensor.values
            if values.size < self.min_size:
                continue
            shared = share(values, self.bits)
            new = shared.values()
            layers[tensor.name] = {"size": int(values.size), "distinct": int(shared.codebook.size),
                                   "bits": int(np.ceil(np.log2(max(shared.codebook.size, 2)))),
                                   "relative_error": round(relative_error(values, new), 6)}
            tensor.values = new
        ctx.report(layers=layers)
        return graph
