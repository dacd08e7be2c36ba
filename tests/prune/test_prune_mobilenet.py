"""Depthwise conv: input tied to output, `group` rewritten; with a channel multiplier too."""
import zoo
from oracle import assert_identity_at_zero, assert_pruned, attr, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.mobilenet_v2())


def test_depthwise_group_follows_channels():
    pruned, _ = assert_pruned(zoo.mobilenet_v2(), ratio=0.5)
    s = shapes(pruned)
    depthwise = [n for n in pruned.graph.node if n.op_type == "Conv" and attr(pruned, n.name, "group", 1) > 1]
    assert len(depthwise) == 2
    plain, multiplier = depthwise
    assert attr(pruned, plain.name, "group") == s[plain.input[1]][0] == 24
    assert s[plain.input[1]][1] == 1
    assert attr(pruned, multiplier.name, "group") == 8  # 16 -> 8 input channels
    assert s[multiplier.input[1]][0] == 16  # each keeps its 2 outputs


def test_global_scope():
    assert_pruned(zoo.mobilenet_v2(), ratio=0.4, scope="global")
