"""Shared initializers: small per-channel vectors are copied per reader; tied weight matrices block."""
import zoo
from oracle import assert_identity_at_zero, assert_pruned, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.shared_constants())


def test_each_reader_gets_its_own_slice():
    model = zoo.shared_constants()
    pruned, report = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    norms = [n for n in pruned.graph.node if n.op_type == "BatchNormalization"][:2]
    assert [s[n.input[1]] for n in norms] == [(4,), (4,)]
    assert norms[0].input[1] != norms[1].input[1]  # the two stems kept different channels
    assert [s[n.input[1]] for n in pruned.graph.node if n.op_type == "Mul"] == [(1, 4, 1, 1)] * 2
