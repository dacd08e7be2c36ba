"""The ONNX -> torch interpreter: same numbers as onnxruntime on every zoo topology, exact write-back."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cycle_setup import FIXTURES

torch = pytest.importorskip("torch")

import zoo  # noqa: E402
from edgeprune.data import load_npz  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402
from edgeprune.graph import load_model, random_inputs  # noqa: E402
from edgeprune.train.module import OnnxModule, max_difference, trainable_names, write_back  # noqa: E402


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_model_matches_onnxruntime(name):
    model = zoo.ZOO[name]()
    module = OnnxModule(model)
    assert max_difference(model, module, [random_inputs(model, seed=s) for s in range(2)]) < 1e-4
    assert len(list(module.parameters())) > 0


@pytest.mark.parametrize("name,data", [("fmnist-cnn", "fmnist_test256"), ("lenet300", "mnist_test256")])
def test_reference_models_match_in_batches(name, data):
    model = load_model(FIXTURES / f"{name}.onnx")  # not canonicalized: the batch stays symbolic
    samples, _ = load_npz(FIXTURES / f"{data}.npz", model)
    batch = {"input": np.concatenate([s["input"] for s in samples[:32]])}  # symbolic batch: 32 at once
    assert max_difference(model, OnnxModule(model), [batch]) < 1e-4


def test_parameters_are_the_initializers():
    model = zoo.ZOO["elementwise"]()
    module = OnnxModule(model)
    trained = trainable_names(model)
    inits = {i.name: i for i in model.graph.initializer}
    assert all(inits[n].data_type == TensorProto.FLOAT for n in trained)
    scalars = {t for n in model.graph.node if n.op_type in ("Add", "Sub", "Mul", "Div", "Pad", "Clip")
               for t in n.input if t in inits and int(np.prod(inits[t].dims)) == 1}
    assert scalars and not scalars & trained  # scalars (Div 1.7, Pad value, Clip bounds) stay fixed
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert bn.input[1] in trained and bn.input[3] not in trained  # gamma trains, running mean is a buffer
    assert {module.names[n] for n in trained} == set(module.weights.keys())


def test_write_back_is_exact_and_carries_changes():
    model = zoo.ZOO["chain"]()
    module = OnnxModule(model)
    same = write_back(model, module)
    assert [numpy_helper.to_array(i).tobytes() for i in same.graph.initializer] == \
        [numpy_helper.to_array(i).tobytes() for i in model.graph.initializer]
    name = next(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    with torch.no_grad():
        module.weights[module.names[name]].mul_(2.0)
    changed = write_back(model, module)
    new = {i.name: numpy_helper.to_array(i) for i in changed.graph.initializer}
    old = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(new[name], 2 * old[name])
    assert max_difference(changed, module, [random_inputs(model)]) < 1e-4  # onnxruntime sees the change


def test_training_mode_updates_batchnorm_statistics():
    model = zoo.ZOO["chain"]()
    module = OnnxModule(model).train()
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    before = module.tensor(bn.input[3]).clone()
    module(torch.randn(8, 3, 16, 16))
    assert not torch.equal(before, module.tensor(bn.input[3]))


def test_unsupported_op_names_the_node():
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(UserError, match="Hardmax.*the_hardmax"):
        OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_asymmetric_pads_and_same_auto_pad():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[0, 1, 2, 0], strides=[2, 2]),
             helper.make_node("Conv", ["a", "w2"], ["b"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("MaxPool", ["b"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1])]
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 2, 2)).astype(np.float32), "w2")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    assert max_difference(model, OnnxModule(model), [random_inputs(model)]) < 1e-4


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.delitem(sys.modules, "edgeprune.train", raising=False)
    with pytest.raises(UserError, match=r"edgeprune\[train\]"):
        importlib.import_module("edgeprune.train")
