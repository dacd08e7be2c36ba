"""The graph core: load, canonicalize (outputs unchanged), validate, compare, save, count."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import EXAMPLE, conv_model
from edgeprune.errors import UserError
from edgeprune.graph import (WORKING_OPSET, canonicalize, compare_models, load_model, node_stats, random_inputs, run,
                             save_model, totals, validate)


def _messy_model() -> onnx.ModelProto:
    """Exporter debris: Constant nodes, Identity, Dropout, a Shape->Gather->Concat->Reshape chain, opset 11."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "W")
    fc = numpy_helper.from_array(rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32), "F")
    nodes = [
        helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(rng.standard_normal(4).astype(np.float32))),
        helper.make_node("Conv", ["x", "W", "B"], ["c"]),
        helper.make_node("Identity", ["c"], ["ci"]),
        helper.make_node("Relu", ["ci"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Shape", ["d"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["d", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "F"], ["g"], transB=1),
        helper.make_node("Identity", ["g"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "messy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [w, fc])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_canonicalize_removes_debris_and_keeps_outputs():
    messy = _messy_model()
    onnx.checker.check_model(messy, full_check=True)
    canon = canonicalize(messy)
    assert [n.op_type for n in canon.graph.node] == ["Conv", "Relu", "Reshape", "Gemm"]
    assert {i.name for i in canon.graph.initializer} >= {"B", "W", "F"}
    assert next(o.version for o in canon.opset_import if o.domain == "") == WORKING_OPSET
    assert [o.name for o in canon.graph.output] == ["y"]
    assert [d.dim_value for d in canon.graph.input[0].type.tensor_type.shape.dim] == [1, 2, 8, 8]
    validate(canon)
    feeds = random_inputs(canon, seed=3)
    diff = compare_models(messy, canon, feeds)
    assert diff.max_abs == 0.0 and diff.top1_agreement is None or diff.top1_agreement == 1.0


def test_canonicalize_is_idempotent():
    once = canonicalize(_messy_model())
    twice = canonicalize(once)
    assert once.graph == twice.graph


def test_user_shape_fixes_dynamic_dims():
    m = conv_model(batch="N")
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    with pytest.raises(UserError, match="--input-shape x="):
        canonicalize(m)
    canon = canonicalize(m, {"x": [1, 3, 20, 20]})
    assert [d.dim_value for d in canon.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 20, 20]
    with pytest.raises(UserError, match="no input 'z'"):
        canonicalize(m, {"z": [1]})


def test_load_from_path_and_bytes(tmp_path):
    from_path = load_model(EXAMPLE)
    from_bytes = load_model(EXAMPLE.read_bytes())
    assert from_path == from_bytes


def test_external_data_round_trip(tmp_path):
    model = conv_model()
    path = tmp_path / "ext.onnx"
    onnx.save_model(conv_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    loaded = load_model(path)
    feeds = random_inputs(loaded)
    assert compare_models(model, loaded, feeds).max_abs == 0.0
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(UserError, match="external weight data"):
        load_model(path)


def test_save_round_trip(tmp_path):
    model = conv_model()
    assert load_model(save_model(model, tmp_path / "sub" / "m.onnx")) == model


def test_counts_match_hand_arithmetic():
    model = canonicalize(conv_model())
    rows = {r.name: r for r in node_stats(model)}
    assert rows["conv"].macs == 8 * 16 * 16 * 3 * 3 * 3
    assert rows["conv"].params == 8 * 3 * 3 * 3 + 8
    assert rows["fc"].macs == 10 * 8
    assert totals(model) == {"nodes": 5, "params": 8 * 27 + 8 + 80, "macs": 8 * 16 * 16 * 27 + 80}


def test_matmul_and_conv_transpose_macs():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 6, 2, 2)).astype(np.float32), "W")  # Cin=4, Cout=6
    m = numpy_helper.from_array(rng.standard_normal((12, 7)).astype(np.float32), "M")
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["t"], strides=[2, 2], name="up"),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "M"], ["y"], name="mm")]
    shape = numpy_helper.from_array(np.array([1, 6 * 8 * 8 // 12, 12], np.int64), "shape")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, m, shape])
    model = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rows = {r.name: r for r in node_stats(model)}
    assert rows["up"].macs == (4 * 4 * 4) * 6 * 2 * 2
    assert rows["mm"].macs == (6 * 8 * 8 // 12) * 7 * 12


def test_compare_detects_a_change():
    a, b = conv_model(seed=0), conv_model(seed=0)
    b.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(8, np.float32), "B"))
    feeds = random_inputs(a)
    diff = compare_models(a, b, feeds)
    assert diff.max_abs > 0 and diff.mean_abs > 0
    assert run(a, feeds)["y"].shape == (1, 10)
