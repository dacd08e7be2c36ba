"""Residual Add: both operands' producers (and the shortcut projection) are pruned as one group."""
import pytest

import zoo
from oracle import assert_identity_at_zero, assert_pruned, shapes

MODELS = ["resnet_basic", "resnet_basic_projection", "resnet_bottleneck", "resnet_bottleneck_projection"]


@pytest.mark.parametrize("name", MODELS)
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


@pytest.mark.parametrize("name", MODELS)
def test_residual_operands_stay_aligned(name):
    model = zoo.ZOO[name]()
    pruned, report = assert_pruned(model, ratio=0.5)
    s = shapes(pruned)
    produced = {n.output[0]: n for n in pruned.graph.node}
    for add in (n for n in pruned.graph.node if n.op_type == "Add"):
        assert len(set(_channels(produced, s, t) for t in add.input)) == 1
    assert report.params_after < 0.6 * report.params_before


def _channels(produced, s, tensor):
    """Walk back through BN/Relu to the producing conv's out-channels."""
    node = produced.get(tensor)
    while node is not None and node.op_type != "Conv":
        node = produced.get(node.input[0])
    return s[node.input[1]][0]


def test_projection_shortcut_is_a_producer_of_the_residual_group():
    from edgeprune.prune.depgraph import build

    model = zoo.resnet_bottleneck(projection=True)
    groups = [g for g in build(model).groups if not g.blocked and len(g.producers) == 2]
    assert len(groups) == 1 and groups[0].size == 32
