"""Fold inference BatchNormalization into the Conv before it.

A BN after a Conv is a per-output-channel affine map, so it folds exactly into the Conv's weight and
bias: one kernel instead of four elementwise ops in every back end (TVM, the microcontroller C, VTA).
It runs after pruning, whose bn-scale criterion needs the BN nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.passes.base import Pass


def _foldable(bn: gs.Node, graph: gs.Graph) -> gs.Node | None:
    """The Conv feeding `bn` when the fold is exact and touches nothing else."""
    source = bn.inputs[0]
    if len(bn.outputs) != 1 or not source.inputs or len(source.outputs) != 1 or source in graph.outputs:
        return None
    conv = source.inputs[0]
    params = [*bn.inputs[1:5], *conv.inputs[1:]]
    if conv.op != "Conv" or not all(isinstance(t, gs.Constant) for t in params):
        return None
    return conv


@dataclass
class FoldBatchNorm(Pass):
    name = "fold-batchnorm"

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
            conv = _foldable(bn, graph)
            if conv is None:
                continue
            gamma, beta, mean, var = (t.values.astype(np.float64) for t in bn.inputs[1:5])
            factor = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
            weight = conv.inputs[1].values
            bias = conv.inputs[2].values.astype(np.float64) if len(conv.inputs) > 2 else np.zeros(weight.shape[0])
            folded_w = (weight * factor.reshape(-1, *[1] * (weight.ndim - 1))).astype(weight.dtype)
            folded_b = ((bias - mean) * factor + beta).astype(weight.dtype)
            # New constants: the originals may be shared with other nodes.
            while len(conv.inputs) > 1:
                conv.inputs.pop()
            label = conv.name or conv.outputs[0].name
            conv.inputs.extend([gs.Constant(f"{label}.weight_bn", folded_w), gs.Constant(f"{label}.bias_bn", folded_b)])
            output = bn.outputs.pop()
            conv.outputs.pop()
            conv.outputs.append(output)
        graph.cleanup().toposort()
        return graph
