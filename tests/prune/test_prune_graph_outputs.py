"""Channels that reach a graph output are never pruned, nor anything tied to them."""
import zoo
from edgeprune.graph.runtime import random_inputs, run
from oracle import assert_identity_at_zero, assert_pruned, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.graph_outputs())


def test_output_channels_kept():
    model = zoo.graph_outputs()
    pruned, report = assert_pruned(model, ratio=0.5)
    convs = [n for n in pruned.graph.node if n.op_type == "Conv"]
    s = shapes(pruned)
    assert [s[c.input[1]][:2] for c in convs] == [(4, 3), (10, 4), (3, 10)]
    feats = run(pruned, random_inputs(model))
    assert feats[model.graph.output[0].name].shape == (1, 10, 8, 8)
    assert any("graph output" in r for g in report.groups for r in g.blocked)
