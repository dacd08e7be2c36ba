"""Split/Slice on the channel axis then Concat (YOLOv8 C2f, ShuffleNetV2 without the shuffle)."""
import numpy as np
import pytest

import zoo
from edgeprune.prune.depgraph import build
from zoo import Net
from oracle import assert_identity_at_zero, assert_pruned, shapes


@pytest.mark.parametrize("name", ["c2f_split", "shufflenet_slice"])
def test_identity_at_zero(name):
    assert_identity_at_zero(zoo.ZOO[name]())


@pytest.mark.parametrize("name", ["c2f_split", "shufflenet_slice"])
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_exact(name, ratio):
    assert_pruned(zoo.ZOO[name](), ratio=ratio)


def test_split_cutting_through_concat_inputs():
    model = zoo.concat_split_misaligned()
    assert_identity_at_zero(model)
    a = [n.output[0] for n in model.graph.node if n.op_type == "Conv"][1]
    groups = [g for g in build(model).groups if a in g.atoms[0] and not g.blocked]
    # a[0:2] reaches split outputs 0 and 2; a[2:4] outputs 0 and 1; a[4:6] outputs 1 and 2
    assert sorted(sorted(int(i) for atom in g.atoms for i in atom[a]) for g in groups) == [[0, 1], [2, 3], [4, 5]]
    pruned, report = assert_pruned(model, ratio=0.5)
    inits = {i.name: i for i in pruned.graph.initializer}
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    gone = set(report.removed[a])
    b_gone = len(report.removed[[n.output[0] for n in model.graph.node if n.op_type == "Conv"][2]])
    expect = [4 - len(gone & {0, 1, 2, 3}), 2 - len(gone & {4, 5}) + 6 - b_gone + 2 - len(gone & {0, 1}),
              4 - len(gone & {2, 3, 4, 5})]
    assert onnx_array(inits[split.input[1]]) == expect


def test_split_sizes_rewritten():
    pruned, _ = assert_pruned(zoo.c2f_split(), ratio=0.5)
    inits = {i.name: i for i in pruned.graph.initializer}
    sizes = [list(onnx_array(inits[n.input[1]])) for n in pruned.graph.node if n.op_type == "Split"]
    assert sizes == [[4, 4], [2, 2, 3]]


def test_slice_bounds_rewritten():
    model = zoo.shufflenet_slice()
    pruned, report = assert_pruned(model, ratio=0.5)
    gone = np.array(report.removed[model.graph.node[0].output[0]])
    inits = {i.name: i for i in pruned.graph.initializer}
    bounds = [(onnx_array(inits[n.input[1]]), onnx_array(inits[n.input[2]]))
              for n in pruned.graph.node if n.op_type == "Slice"]
    left = 6 - np.sum(gone < 6)
    mid_start, mid = 4 - np.sum(gone < 4), 8 - np.sum((gone >= 4) & (gone < 12))
    assert bounds == [([0], [left]), ([left], [left + 10 - np.sum(gone >= 6)]), ([0, mid_start], [1, mid_start + mid])]


def onnx_array(tensor):
    from onnx import numpy_helper

    return np.asarray(numpy_helper.to_array(tensor)).tolist()


def split_model(opset: int):
    """Split as attribute (opset 11), as input (13), as num_outputs (18); Concat along H too."""
    n = Net(20)
    x = n.conv("x", 3, 12)
    if opset < 13:
        a, b = n.node("Split", [x], n_out=2, axis=1, split=[4, 8])
    elif opset < 18:
        a, b = n.node("Split", [x, n.const(np.array([4, 8], np.int64))], n_out=2, axis=1)
    else:
        a, b = n.node("Split", [x], n_out=2, axis=1, num_outputs=2)
    half = 4 if opset < 18 else 6
    top, bottom = n.node("Split", [n.conv(b, 12 - half, 6)], n_out=2, axis=2, **({"split": [3, 5]} if opset < 13 else
                                                                                 {"num_outputs": 2} if opset >= 18 else {}))
    y = n.node("Concat", [bottom, top], axis=2)  # not the channel axis: channels tie one to one
    y = n.node("Concat", [n.conv(a, half, 5), y], axis=1)
    return n.model([1, 3, 8, 8], {n.head(y, 11): None}, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_forms(opset):
    model = split_model(opset)
    assert_identity_at_zero(model)
    pruned, _ = assert_pruned(model, ratio=0.5)
    last = next(n for n in pruned.graph.node if n.op_type == "Gemm")
    assert shapes(pruned)[last.input[1]] == (5, 3 + 3)
