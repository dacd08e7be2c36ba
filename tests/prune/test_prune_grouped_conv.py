"""Grouped conv (ResNeXt): the same positions go from every group, `group` stays."""
import zoo
from oracle import assert_identity_at_zero, assert_pruned, attr, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.resnext())


def test_equal_counts_per_group():
    pruned, report = assert_pruned(zoo.resnext(), ratio=0.5)
    s = shapes(pruned)
    g4, g2 = [n for n in pruned.graph.node if n.op_type == "Conv" and attr(pruned, n.name, "group", 1) > 1]
    assert attr(pruned, g4.name, "group") == 4 and s[g4.input[1]][:2] == (8, 2)
    assert attr(pruned, g2.name, "group") == 2 and s[g2.input[1]][:2] == (12, 4)


def test_round_to():
    _, report = assert_pruned(zoo.resnext(), ratio=0.6, round_to=2, scope="global")
    assert all(g.kept % 2 == 0 for g in report.groups if not g.blocked)
