"""Conv -> Flatten/Reshape -> Gemm (a channel owns H*W features), and MLP chains of Gemm/MatMul."""
import numpy as np
import pytest

import zoo
from zoo import Net
from oracle import assert_identity_at_zero, assert_pruned, shapes


@pytest.mark.parametrize("name", ["conv_flatten_gemm", "mlp"])
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


def test_flatten_features_follow_channels():
    pruned, _ = assert_pruned(zoo.conv_flatten_gemm(), ratio=0.5)
    s = shapes(pruned)
    gemms = [n for n in pruned.graph.node if n.op_type == "Gemm"]
    assert s[gemms[0].input[1]] == (10, 4 * 16)  # transB: (out, in)
    assert s[gemms[1].input[1]] == (4 * 16, 10)
    reshape = next(n for n in pruned.graph.node if n.op_type == "Reshape")
    assert shapes(pruned)[reshape.input[1]] == (2,)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_mlp(scope):
    pruned, _ = assert_pruned(zoo.mlp(), ratio=0.5, scope=scope)
    s = shapes(pruned)
    matmuls = [n for n in pruned.graph.node if n.op_type == "MatMul"]
    assert s[matmuls[0].input[1]][1] < 24
    prelu = next(n for n in pruned.graph.node if n.op_type == "PRelu")
    assert s[prelu.input[1]][0] == s[matmuls[0].input[1]][1]


def test_flatten_into_matmul_and_transposed_gemm_input():
    n = Net(21)
    y = n.conv("x", 3, 6)
    f = n.node("Flatten", [y])  # 6 * 4 * 4
    h = n.node("MatMul", [f, n.const(n.weights(96, 12))])
    t = n.node("Gemm", [h, n.const(n.weights(1, 7))], transA=1)  # (1, 12)^T @ (1, 7): blocks its input
    model = n.model([1, 3, 4, 4], {t: None})
    pruned, report = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    matmul = next(x for x in pruned.graph.node if x.op_type == "MatMul")
    assert s[matmul.input[1]] == (48, 12)
    assert any("transposed input" in r for g in report.groups for r in g.blocked)


def test_matmul_on_sequences():
    """(batch, tokens, features) activations: the channel axis is the last one."""
    n = Net(25)
    y = n.node("MatMul", ["x", n.const(n.weights(12, 16))])
    y = n.node("Relu", [n.node("Add", [y, n.const(n.rng.normal(0, 0.5, 16).astype(np.float32))])])
    y = n.node("MatMul", [y, n.const(n.weights(16, 8))])
    y = n.node("Mul", [y, n.const(n.rng.uniform(0.5, 1.5, (1, 1, 8)).astype(np.float32))])
    y = n.node("MatMul", [n.node("Sigmoid", [y]), n.const(n.weights(8, 3))])
    model = n.model([1, 4, 12], {y: None})
    assert_identity_at_zero(model)
    pruned, _ = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    assert [s[m.input[1]] for m in pruned.graph.node if m.op_type == "MatMul"] == [(12, 8), (8, 4), (4, 3)]
