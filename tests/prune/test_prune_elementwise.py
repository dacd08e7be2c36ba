"""Unary ops, binary ops with per-channel/scalar/spatial constants, a broadcast gate, Pad, Upsample."""
import pytest

import zoo
from edgeprune.prune.depgraph import build
from oracle import assert_identity_at_zero, assert_pruned, shapes


@pytest.mark.parametrize("name", ["elementwise", "upsample_opset9"])
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


@pytest.mark.parametrize("name", ["elementwise", "upsample_opset9"])
def test_exact(name):
    assert_pruned(zoo.ZOO[name](), ratio=0.5)


def test_per_channel_constants_are_sliced_and_others_pass():
    model = zoo.elementwise()
    pruned, _ = assert_pruned(model, ratio=0.5)
    s, before = shapes(pruned), shapes(model)
    ops = {n.op_type: n for n in pruned.graph.node}
    assert s[ops["Sub"].input[1]] == (1, 6, 1, 1)
    assert s[ops["Max"].input[1]] == (5, 1, 1)
    assert s[ops["Div"].input[1]] == ()
    assert s[ops["Add"].input[1]] == before[ops["Add"].input[1]] == (1, 1, 15, 15)
    assert [s[n.input[1]] for n in pruned.graph.node if n.op_type == "Mul" and n.input[1] in s] == [(1, 5)]
    assert [s[n.input[0]] for n in pruned.graph.node if n.op_type == "Mul" and n.input[0] in s] == [(6, 1, 1)]


def test_broadcast_gate_keeps_its_channel():
    gate = next(g for g in build(zoo.elementwise()).groups if g.size == 1)
    assert any("broadcast along the channel axis" in r for r in gate.blocked)
