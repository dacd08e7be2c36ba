"""An op without a rule (Softmax over channels, a custom-domain op) blocks the groups it touches."""
import numpy as np
import onnx

import zoo
from edgeprune.prune.depgraph import build, format_group
from edgeprune.prune.pruner import prune
from oracle import assert_identity_at_zero, assert_pruned, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.unknown_op())


def test_softmax_blocks_its_neighbours_only():
    model = zoo.unknown_op()
    pruned, report = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    assert [s[c.input[1]][:2] for c in pruned.graph.node if c.op_type == "Conv"] == [(4, 3), (8, 4), (3, 8), (3, 3)]
    blocked = [g for g in build(model).groups if any("Softmax" in r for r in g.blocked)]
    assert len(blocked) == 2
    assert "blocked by Softmax" in format_group(blocked[0])


def test_custom_domain_blocks():
    model = zoo.custom_domain()
    groups = build(model).groups
    reasons = [r for g in groups for r in g.blocked]
    assert any("custom.zoo:Mystery" in r for r in reasons)
    pruned, report = prune(model, ratio=0.5)
    # Nothing moves: the op feeds one conv, and shape inference cannot see past it, so the convs
    # after it have no known channel counts either (less pruning, never a wrong one).
    assert report.params_after == report.params_before and report.removed == {}
    mystery = next(n for n in pruned.graph.node if n.op_type == "Mystery")
    assert mystery.domain == "custom.zoo"
    onnx.checker.check_model(pruned)


def test_subgraph_captures_block():
    """An If branch reads a conv output from the outer graph without listing it as an input."""
    from onnx import TensorProto, helper

    from zoo import Net

    n = Net(26)
    x = n.conv("x", 3, 8)
    inner = n.conv(x, 8, 6)
    then = helper.make_graph([helper.make_node("Relu", [inner], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 6, 8, 8])])
    other = helper.make_graph([helper.make_node("Sigmoid", [inner], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 6, 8, 8])])
    flag = n.const(np.array(True))
    y = n.node("If", [flag], then_branch=then, else_branch=other)
    model = n.model([1, 3, 8, 8], {n.head(n.conv(y, 6, 4), 4): None})
    groups = build(model).groups
    assert any(any("read by its subgraph" in r for r in g.blocked) for g in groups)
    pruned, report = assert_pruned(model, ratio=0.5)
    conv = [c for c in pruned.graph.node if c.op_type == "Conv"][1]
    assert shapes(pruned)[conv.input[1]][0] == 6  # its output is read inside the If
