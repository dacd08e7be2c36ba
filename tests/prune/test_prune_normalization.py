"""Transpose (channels move axis), LayerNormalization (channels pass or block), GroupNormalization (whole groups)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeprune.prune import build, prune
from oracle import assert_identity_at_zero, assert_pruned, attr, shapes
from zoo import Net


def _transpose_matmul(layer_norm_axis: int | None = None):
    """conv 8 -> Transpose to NHWC -> (LayerNorm) -> MatMul over the channels (the last axis)."""
    n = Net(21)
    y = n.node("Transpose", [n.conv("x", 3, 8)], perm=[0, 2, 3, 1])
    if layer_norm_axis is not None:
        y = n.node("LayerNormalization", [y, n.const(n.rng.uniform(0.5, 1.5, 8).astype(np.float32))],
                   axis=layer_norm_axis)
    y = n.node("MatMul", [y, n.const(n.weights(8, 6))])
    return n.model([1, 3, 4, 4], {y: None})


def test_transpose_moves_the_channel_axis():
    pruned, _ = assert_pruned(_transpose_matmul(), ratio=0.5)
    matmul = next(node for node in pruned.graph.node if node.op_type == "MatMul")
    assert shapes(pruned)[matmul.input[1]] == (4, 6)


def test_layer_norm_over_the_channels_blocks():
    model = _transpose_matmul(layer_norm_axis=-1)
    assert_identity_at_zero(model)
    blocked = [g for g in build(model).groups if any("normalizes over the channel axis" in r for r in g.blocked)]
    assert blocked and all(g.blocked for g in build(model).groups)


def test_layer_norm_over_other_axes_passes_channels():
    n = Net(22)
    y = n.conv("x", 3, 8, bn=False)
    y = n.node("LayerNormalization", [y, n.const(n.rng.uniform(0.5, 1.5, (4, 4)).astype(np.float32)),
                                      n.const(n.rng.normal(0, 0.3, (4, 4)).astype(np.float32))], axis=2)
    y = n.conv(y, 8, 6)
    assert_pruned(n.model([1, 3, 4, 4], {n.head(y, 6): None}), ratio=0.5)


@pytest.mark.parametrize("opset, per_channel", [(21, True)])  # opset 18's per-group form fails onnx.checker
def test_group_norm_removes_whole_groups(opset, per_channel):
    n = Net(23)
    y = n.conv("x", 3, 8, bn=False)
    width = 8 if per_channel else 4
    y = n.node("GroupNormalization", [y, n.const(n.rng.uniform(0.5, 1.5, width).astype(np.float32)),
                                      n.const(n.rng.normal(0, 0.3, width).astype(np.float32))], num_groups=4)
    norm_out = y
    y = n.conv(n.node("Relu", [y]), 8, 6)
    model = n.model([1, 3, 8, 8], {n.head(y, 6): [1, 5]}, opset=opset)
    model.ir_version = 10 if opset >= 21 else model.ir_version
    # onnx infers no shape for GroupNormalization (a function op): give its output's, as exporters do
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(norm_out, onnx.TensorProto.FLOAT, [1, 8, 8, 8]))
    model = onnx.shape_inference.infer_shapes(model)
    assert_identity_at_zero(model)
    pruned, report = assert_pruned(model, ratio=0.5)
    gone = next(ix for t, ix in report.removed.items() if len(ix) == 4)
    assert {i // 2 for i in gone} == {i // 2 for i in gone[::2]} and len({i // 2 for i in gone}) == 2
    norm = next(node for node in pruned.graph.node if node.op_type == "GroupNormalization")
    assert attr(pruned, norm.name, "num_groups") == 2
    assert shapes(pruned)[norm.input[1]] == ((4,) if per_channel else (2,))
