"""ConvTranspose (plain, grouped, depthwise) and Resize (scales and sizes) in an FPN-like top-down path."""
import numpy as np
import pytest

import zoo
from zoo import Net
from oracle import assert_identity_at_zero, assert_pruned, attr, shapes


def test_identity_at_zero():
    assert_identity_at_zero(zoo.fpn())


def test_exact():
    pruned, _ = assert_pruned(zoo.fpn(), ratio=0.5)
    s = shapes(pruned)
    deconv = next(n for n in pruned.graph.node if n.op_type == "ConvTranspose")
    assert s[deconv.input[1]] == (6, 5, 2, 2)
    resize = [n for n in pruned.graph.node if n.op_type == "Resize"][1]
    from onnx import numpy_helper
    sizes = numpy_helper.to_array(next(i for i in pruned.graph.initializer if i.name == resize.input[3]))
    assert sizes.tolist() == [1, 6, 16, 16]


@pytest.mark.parametrize("group, per_out, expect", [(8, 1, (4, 1, 2, 2)), (8, 2, (4, 2, 2, 2)), (4, 2, (4, 1, 2, 2))])
def test_grouped_and_depthwise_conv_transpose(group, per_out, expect):
    n = Net(22)
    y = n.conv("x", 3, 8)
    w = n.const(n.weights(8, per_out, 2, 2))
    y = n.node("ConvTranspose", [y, w, n.const(n.rng.normal(0, 0.5, group * per_out).astype(np.float32))],
               strides=[2, 2], group=group)
    y = n.conv(n.node("Relu", [y]), group * per_out, 6)
    model = n.model([1, 3, 4, 4], {n.head(y, 6): None})
    assert_identity_at_zero(model)
    pruned, _ = assert_pruned(model, ratio=0.5)
    deconv = next(x for x in pruned.graph.node if x.op_type == "ConvTranspose")
    assert shapes(pruned)[deconv.input[1]] == expect
    assert attr(pruned, deconv.name, "group") == 4  # depthwise: 8 groups -> 4; grouped: 4 stay
