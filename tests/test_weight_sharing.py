"""Weight sharing: at most 2^bits values per tensor, zeros exact, small loss on a real model."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO
from edgeprune.context import Context
from edgeprune.data import load_npz
from edgeprune.graph import load_model, top1_accuracy
from edgeprune.passes import make_pass
from edgeprune.pipeline import run_passes
from edgeprune.quant.sharing import relative_error, share


@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_codebook_size_and_zeros(bits):
    rng = np.random.default_rng(bits)
    w = rng.laplace(0, 0.1, 50_000).astype(np.float32)
    w[rng.random(w.size) < 0.7] = 0
    shared = share(w, bits)
    values = shared.values()
    assert shared.codebook.size <= 2**bits and np.unique(values).size <= 2**bits
    assert np.array_equal(values == 0, w == 0)  # pruned weights stay pruned, no others become zero
    assert values.dtype == np.float32 and values.shape == w.shape


def test_error_falls_with_bits_and_extremes_survive():
    w = np.random.default_rng(0).standard_normal(20_000).astype(np.float32)
    errors = [relative_error(w, share(w, b).values()) for b in (2, 3, 4, 5, 6)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.05
    codebook = share(w, 4).codebook  # linear initialization keeps a centroid near each extreme
    assert codebook.max() > 0.7 * w.max() and codebook.min() < 0.7 * w.min()


def test_int8_weights_stay_integer():
    q = np.random.default_rng(1).integers(-127, 128, (32, 16, 3, 3)).astype(np.int8)
    shared = share(q, 4)
    assert shared.codebook.dtype == np.int8 and np.unique(shared.values()).size <= 16
    assert np.array_equal(shared.values() == 0, q == 0)


def test_few_values_are_kept_exactly():
    w = np.array([0.5, -0.25, 0.5, 0.0, 3.0], np.float32)
    assert np.array_equal(share(w, 3).values(), w)


FIXTURE = REPO / "tests" / "fixtures" / "lenet300.onnx"


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture made by tools/train_reference.py")
def test_lenet300_keeps_its_accuracy_at_5_bits():
    model = load_model(FIXTURE)
    samples, labels = load_npz(REPO / "tests" / "fixtures" / "mnist_test256.npz", model)
    ctx = Context(samples=samples, labels=labels, calibrated=True)
    shared = run_passes(model, [make_pass("canonicalize"), make_pass("share-weights", {"bits": 5})], ctx)
    layers = ctx.records[-1].details["layers"]
    assert set(layers) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert all(layer["distinct"] <= 32 for layer in layers.values())
    assert top1_accuracy(shared, samples, labels) >= top1_accuracy(model, samples, labels) - 0.01


# ---- centroid fine-tuning (Deep Compression's retraining of shared weights) ----------------------

def _tiny_gemm() -> onnx.ModelProto:
    w = np.array([[0.5, 0.0, -0.25], [0.5, 0.25, 0.0], [-0.25, 0.5, 0.25], [0.0, 0.0, 0.5]], np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_centroid_gradient_is_the_sum_of_its_cluster():
    torch = pytest.importorskip("torch")
    from edgeprune.train.module import OnnxModule

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    dense = OnnxModule(_tiny_gemm())
    dense(x).square().sum().backward()
    per_weight = next(iter(dense.weights.values())).grad.numpy()
    tied = OnnxModule(_tiny_gemm())
    assert tied.tie("w") == 4  # -0.25, 0, 0.25, 0.5
    tied(x).square().sum().backward()
    codebook = next(iter(tied.weights.values()))
    w = numpy_helper.to_array(_tiny_gemm().graph.initializer[0])
    for value, grad in zip(codebook.detach().numpy(), codebook.grad.numpy()):
        expected = 0.0 if value == 0 else per_weight[w == value].sum()  # the zero centroid never moves
        assert grad == pytest.approx(expected, abs=1e-6)


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture made by tools/train_reference.py")
def test_centroid_finetuning_recovers_accuracy_on_the_codebook():
    pytest.importorskip("torch")
    model = load_model(FIXTURE)
    samples, labels = load_npz(REPO / "tests" / "fixtures" / "mnist_test256.npz", model)
    ctx = Context(samples=samples, labels=labels, calibrated=True)
    pruned = run_passes(model, [make_pass("canonicalize"), make_pass("magnitude-prune", {"sparsity": 0.9})], ctx)
    shared = run_passes(pruned, [make_pass("share-weights", {"bits": 2})], ctx)
    tuned = run_passes(pruned, [make_pass("share-weights", {"bits": 2, "finetune": 3, "lr": 0.01, "threads": 1})], ctx)
    report = ctx.records[-1].details["finetune"]
    assert report["accuracy_before"] == top1_accuracy(shared, samples, labels)
    assert report["accuracy_after"] > report["accuracy_before"]  # 2 bits cost points; training wins some back
    weights = {"fc1.weight", "fc2.weight", "fc3.weight"}
    before = {i.name: numpy_helper.to_array(i) for i in shared.graph.initializer if i.name in weights}
    after = {i.name: numpy_helper.to_array(i) for i in tuned.graph.initializer if i.name in weights}
    zeros = {i.name: numpy_helper.to_array(i) == 0 for i in pruned.graph.initializer if i.name in weights}
    moved = 0
    for name, old in before.items():
        new = after[name]
        assert np.array_equal(new == 0, zeros[name])  # pruned stay pruned, no other weight became zero
        assert np.unique(new).size <= 4  # still on a 2-bit codebook
        for value in np.unique(old):  # indices fixed: a cluster moves as one
            assert np.unique(new[old == value]).size == 1
        moved += int(not np.array_equal(np.unique(new), np.unique(old)))
    assert moved == len(before)  # every layer's centroids trained


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture made by tools/train_reference.py")
def test_share_cli_with_finetuning(tmp_path, cli):
    pytest.importorskip("torch")
    import json

    data = REPO / "tests" / "fixtures" / "mnist_test256.npz"
    out = tmp_path / "shared.onnx"
    code, stdout, err = cli("share", FIXTURE, "-o", out, "--bits", "3", "--op-bits", "Gemm=3", "--calib", data,
                            "--finetune", "1", "--train", data, "--distill", "--threads", "1", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["finetune_report"]["shared"] == {n: report["layers"][n]["distinct"] for n in report["layers"]}
    assert all(layer["distinct_after_finetune"] <= 8 for layer in report["layers"].values())
    assert out.exists() and {"accuracy_before", "accuracy_after"} <= set(report)


@pytest.mark.parametrize("args, message", [
    (["--finetune", "1"], "--train"),
    (["--op-bits", "Conv8"], "--op-bits Conv8"),
    (["--op-bits", "Gemm=20"], "bits 20 for Gemm"),
])
def test_share_cli_user_errors(tmp_path, cli, args, message):
    code, _, err = cli("share", FIXTURE, "-o", tmp_path / "s.onnx", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s.onnx").exists()
