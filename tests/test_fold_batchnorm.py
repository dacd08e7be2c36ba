"""fold-batchnorm: exact, and only where nothing else reads the Conv's output."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeprune.context import Context
from edgeprune.data import random_samples
from edgeprune.passes import make_pass
from edgeprune.pipeline import run_passes


def _model(conv_bias: bool, tap: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    c = 6
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "W")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("B", rng.standard_normal(c)), ("g", rng.uniform(0.5, 2, c)), ("b", rng.standard_normal(c)),
        ("m", rng.standard_normal(c)), ("v", rng.uniform(0.2, 2, c)))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"] if conv_bias else ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], epsilon=1e-3),
             helper.make_node("Relu", ["y"], ["r"])]
    outputs = [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, c, 8, 8])]
    if tap:  # a second reader of the Conv's output: folding would change what it sees
        nodes.append(helper.make_node("Sigmoid", ["c"], ["t"]))
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, c, 8, 8]))
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fold(model):
    ctx = Context(samples=random_samples(model, 2))
    out = run_passes(model, [make_pass("fold-batchnorm")], ctx)
    return out, ctx.records[0].difference


def test_folds_exactly_with_and_without_bias():
    for bias in (True, False):
        out, diff = _fold(_model(bias, tap=False))
        assert [n.op_type for n in out.graph.node] == ["Conv", "Relu"]
        assert diff["max_abs_error"] < 1e-5


def test_keeps_bn_when_the_conv_output_has_another_reader():
    out, diff = _fold(_model(True, tap=True))
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    assert diff["max_abs_error"] == 0.0
