"""Configurations a rule refuses block their groups; the rest of the model still prunes exactly."""
import numpy as np
import pytest

from edgeprune.prune.depgraph import build
from oracle import assert_exact
from zoo import Net


def strided_slice(n, x):
    i64 = lambda *v: n.const(np.array(v, np.int64))  # noqa: E731
    return n.node("Slice", [x, i64(0), i64(8), i64(1), i64(2)]), 4


def pad_channels(n, x):
    return n.node("Pad", [x, n.const(np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))]), 10


def reduce_channels(n, x):
    return n.node("ReduceMean", [x, n.const(np.array([1], np.int64))], keepdims=1), 1


def shared_weight(n, x):
    w = n.const(n.weights(8, 8, 1, 1))
    a = n.node("Conv", [x, w], kernel_shape=[1, 1])
    return n.node("Add", [a, n.node("Conv", [x, w], kernel_shape=[1, 1])]), 8


def channel_shuffle(n, x):
    y = n.node("Reshape", [x, n.const(np.array([1, 2, 4, 8, 8], np.int64))])
    y = n.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
    return n.node("Reshape", [y, n.const(np.array([1, 8, 8, 8], np.int64))]), 8


def maxpool_indices(n, x):
    y, idx = n.node("MaxPool", [x], n_out=2, kernel_shape=[2, 2])
    return n.node("Add", [y, n.node("Cast", [idx], to=1)]), 8


HAZARDS = {
    "strided_slice": (strided_slice, "strided slice"),
    "pad_channels": (pad_channels, "pads the channel axis"),
    "reduce_channels": (reduce_channels, "reduces over the channel axis"),
    "shared_weight": (shared_weight, "weight or bias is not a constant of its own"),
    "channel_shuffle": (channel_shuffle, "reshape mixes the channel axis"),
    "maxpool_indices": (maxpool_indices, "second output is used"),
}


def model_with(hazard):
    n = Net(30)
    x = n.conv("x", 3, 8)
    y, channels = hazard(n, x)
    y = n.conv(n.conv(y, channels, 6), 6, 6)
    return n.model([1, 3, 8, 8], {n.head(y, 6): None}, opset=18)


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_blocks_and_stays_exact(name):
    hazard, reason = HAZARDS[name]
    model = model_with(hazard)
    blocked = [g for g in build(model).groups if any(reason in r for r in g.blocked)]
    assert blocked, [g.blocked for g in build(model).groups]
    assert any(g.producers == [model.graph.node[0].name] for g in blocked)  # the stem conv's channels stay
    pruned, report = assert_exact(model, ratio=0.5)
    assert report.params_after < report.params_before  # the convs after the hazard still shrink
