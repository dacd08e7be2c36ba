"""Concat on the channel axis: DenseNet (input reused in two concats) and Inception branches."""
import pytest

import zoo
from edgeprune.prune.depgraph import build
from oracle import assert_identity_at_zero, assert_pruned, shapes


@pytest.mark.parametrize("name", ["densenet", "inception"])
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


@pytest.mark.parametrize("name", ["densenet", "inception"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_exact(name, scope):
    assert_pruned(zoo.ZOO[name](), ratio=0.5, scope=scope)


def test_densenet_offsets():
    model = zoo.densenet()
    groups = {g.producers[0]: g for g in build(model).groups if g.producers and not g.blocked}
    cat2 = [n.output[0] for n in model.graph.node if n.op_type == "Concat"][1]
    stem, first, second = [groups[n.name] for n in model.graph.node if n.op_type == "Conv"][:3]
    assert sorted(i for a in stem.atoms for i in a[cat2]) == list(range(8))
    assert sorted(i for a in first.atoms for i in a[cat2]) == list(range(8, 14))
    assert sorted(i for a in second.atoms for i in a[cat2]) == list(range(14, 20))


def test_inception_concat_width():
    pruned, _ = assert_pruned(zoo.inception(), ratio=0.5)
    last = [n for n in pruned.graph.node if n.op_type == "Conv"][-1]
    assert shapes(pruned)[last.input[1]][1] == 3 + 4 + 3 + 2
