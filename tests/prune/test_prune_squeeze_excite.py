"""Squeeze-excite: the gate's excite layer and the trunk are one group; the squeeze layer reads it."""
import pytest

import zoo
from edgeprune.prune.depgraph import build
from oracle import assert_identity_at_zero, assert_pruned, shapes


@pytest.mark.parametrize("name", ["squeeze_excite", "squeeze_excite_fc"])
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


def test_gate_and_trunk_pruned_together():
    model = zoo.squeeze_excite()
    trunk = next(g for g in build(model).groups if g.size == 24 and not g.blocked)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert trunk.producers == sorted([convs[1], convs[3], convs[5]])  # the trunk conv and both excite convs
    assert trunk.consumers == sorted([convs[2], convs[4], convs[6]])  # both squeeze convs and the next conv
    pruned, report = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    convs = [n for n in pruned.graph.node if n.op_type == "Conv"]
    assert [s[c.input[1]][:2] for c in convs] == [(8, 3), (12, 8), (3, 12), (12, 3), (4, 12), (12, 4), (8, 12)]


def test_fully_connected_gate_through_squeeze_and_unsqueeze():
    model = zoo.squeeze_excite_fc()
    trunk = next(g for g in build(model).groups if g.size == 16 and not g.blocked)
    gemms = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    assert trunk.producers == sorted([conv, gemms[1]])
    assert trunk.consumers == sorted([gemms[0], gemms[2]])
    pruned, _ = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    norm = next(n for n in pruned.graph.node if n.op_type == "InstanceNormalization")
    assert s[norm.input[1]] == s[norm.input[2]] == (8,)
    assert [s[n.input[1]] for n in pruned.graph.node if n.op_type == "Gemm"] == [(2, 8), (2, 8), (5, 8)]
