"""Plain chain Conv-BN-Relu x3 -> GAP -> Flatten -> Gemm; also the pruning options."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import zoo
from edgeprune.errors import UserError
from edgeprune.graph.runtime import run
from edgeprune.prune.pruner import mask, prune
from oracle import assert_exact, assert_identity_at_zero, assert_pruned, shapes


def convs(model):
    return [n for n in model.graph.node if n.op_type == "Conv"]


def out_channels(model):
    s = shapes(model)
    return [s[n.input[1]][0] for n in convs(model)]


def test_identity_at_zero():
    assert_identity_at_zero(zoo.chain())


def test_local_ratio_halves_every_layer():
    pruned, report = assert_pruned(zoo.chain(), ratio=0.5)
    assert out_channels(pruned) == [4, 8, 6]
    assert report.macs_after < report.macs_before
    fc = next(n for n in pruned.graph.node if n.op_type == "Gemm")
    assert shapes(pruned)[fc.input[1]] == (5, 6)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_global_scope(criterion):
    pruned, report = assert_pruned(zoo.chain(), ratio=0.5, scope="global", criterion=criterion)
    assert sum(out_channels(pruned)) == 36 - 18


def test_round_to_and_min_channels():
    pruned, _ = assert_exact(zoo.chain(), ratio=0.7, round_to=4)
    assert all(c % 4 == 0 for c in out_channels(pruned))
    pruned, _ = assert_exact(zoo.chain(), ratio=0.95, min_channels=3)
    assert out_channels(pruned) == [3, 3, 3]


def test_removes_the_weakest_filters():
    model = zoo.chain()
    first, second = convs(model)[:2]
    inits = {i.name: i for i in model.graph.initializer}
    for name, axis in ((first.input[1], 0), (second.input[1], 1)):
        w = numpy_helper.to_array(inits[name]).copy()
        np.moveaxis(w, axis, 0)[[1, 5]] *= 1e-3
        inits[name].CopyFrom(numpy_helper.from_array(w, name))
    _, report = prune(model, ratio=0.25)
    assert report.removed[first.output[0]] == [1, 5]


def test_protect_keeps_a_layer():
    model = zoo.chain()
    pruned, report = assert_exact(model, ratio=0.5, protect=[convs(model)[1].name])
    assert out_channels(pruned)[1] == 16
    assert out_channels(pruned)[0] == 8  # the protected conv's input channels stay too


@pytest.mark.parametrize("key", ["target_macs", "target_params"])
def test_targets(key):
    model = zoo.chain()
    pruned, report = assert_exact(model, **{key: 0.5})
    field = key.split("_")[1]
    before, after = getattr(report, f"{field}_before"), getattr(report, f"{field}_after")
    assert after <= 0.5 * before
    assert after > 0.2 * before  # the smallest ratio that meets the target, not any
    _, absolute = prune(model, **{key: int(0.5 * before)})
    assert getattr(absolute, f"{field}_after") <= int(0.5 * before)


@pytest.mark.parametrize("options, word", [
    ({}, "exactly one"), ({"ratio": 0.5, "target_macs": 100}, "exactly one"), ({"ratio": 1.0}, "ratio"),
    ({"ratio": 0.5, "scope": "layer"}, "scope"), ({"ratio": 0.5, "criterion": "taylor"}, "criterion"),
    ({"ratio": 0.5, "protect": ["nope"]}, "nope"), ({"target_macs": 10}, "unreachable"),
    ({"ratio": 0.5, "min_channels": 0}, "min_channels"),
])
def test_user_errors(options, word):
    with pytest.raises(UserError, match=word):
        prune(zoo.chain(), **options)


def test_dynamic_batch_and_model_fields_survive():
    model = zoo.chain()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.producer_name = "zoo"
    pruned, report = prune(model, ratio=0.5)
    onnx.checker.check_model(pruned, full_check=True)
    assert out_channels(pruned) == [4, 8, 6]
    assert (pruned.ir_version, pruned.opset_import) == (model.ir_version, model.opset_import)
    assert pruned.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    got = run(pruned, {"x": x})
    want = run(mask(model, report.removed), {"x": x})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_macs_target_with_rounding_is_met_closely(scope):
    """Rounded counts move every group at once: the ratio search alone gave 25% of the MACs for a 50% target."""
    from pathlib import Path

    from edgeprune.graph import canonicalize, load_model

    model = canonicalize(load_model(Path(__file__).parent.parent / "fixtures" / "fmnist-cnn.onnx"))
    pruned, report = assert_exact(model, target_macs=0.5, round_to=8, scope=scope)
    assert 0.45 <= report.macs_after / report.macs_before <= 0.5
    assert all(g.kept % 8 == 0 or g.kept == g.channels for g in report.groups)
