"""compress / decompress: coded weights, a skeleton model, and an exact round trip."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import EXAMPLE
from edgeprune.context import Context
from edgeprune.data import random_samples
from edgeprune.graph import canonicalize, load_model, random_inputs, run
from edgeprune.passes import make_pass
from edgeprune.pipeline import run_passes
from edgeprune.quant.quantize import quantize


def _mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.laplace(0, 0.05, (256, 128)).astype(np.float32)
    w1[np.abs(w1) < 0.04] = 0  # magnitude-pruned: about half the weights are zero
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.normal(0, 0.1, (128, 10)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 128).astype(np.float32), "b1")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _shared(bits: int) -> onnx.ModelProto:
    model = _mlp()
    return run_passes(model, [make_pass("share-weights", {"bits": bits, "min_size": 256})],
                      Context(samples=random_samples(model, 1)))


def _round_trip(tmp_path, cli, model: onnx.ModelProto) -> dict:
    (tmp_path / "in.onnx").write_bytes(model.SerializeToString())
    code, out, err = cli("compress", tmp_path / "in.onnx", "-o", tmp_path / "c", "--json")
    assert code == 0, err
    report = json.loads(out)
    code, _, err = cli("decompress", tmp_path / "c", "-o", tmp_path / "back.onnx")
    assert code == 0, err
    back = load_model(tmp_path / "back.onnx")
    for feeds in (random_inputs(back, seed=s) for s in range(3)):
        for name, value in run(model, feeds).items():
            np.testing.assert_array_equal(run(back, feeds)[name], value)  # exact, not close
    return report


def test_shared_sparse_weights_compress_and_return_exactly(tmp_path, cli):
    report = _round_trip(tmp_path, cli, _shared(bits=4))
    assert {"original_bytes", "compressed_bytes", "ratio", "huffman_bits", "entropy_bits"} <= set(report)
    assert report["ratio"] > 8  # 32-bit floats -> 4-bit shared values, Huffman-coded, zeros cheap
    assert {t["name"] for t in report["tensors"]} == {"w1", "w2"}
    assert report["huffman_bits"] <= report["entropy_bits"] * 1.05 + 64


def test_int8_qdq_weights_round_trip(tmp_path, cli):
    model = canonicalize(load_model(EXAMPLE))
    q = quantize(model, random_samples(model, 4))
    report = _round_trip(tmp_path, cli, q)
    assert report["compressed_bytes"] <= report["original_bytes"]


def test_corrupt_container_is_one_line(tmp_path, cli):
    _round_trip(tmp_path, cli, _shared(bits=4))
    weights = tmp_path / "c" / "weights.ephc"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x5A
    weights.write_bytes(bytes(data))
    code, _, err = cli("decompress", tmp_path / "c", "-o", tmp_path / "bad.onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "weights.ephc" in err
    assert not (tmp_path / "bad.onnx").exists()


def test_compress_refuses_to_overwrite(tmp_path, cli):
    (tmp_path / "in.onnx").write_bytes(_mlp().SerializeToString())
    (tmp_path / "mine").mkdir()
    code, _, err = cli("compress", tmp_path / "in.onnx", "-o", tmp_path / "mine", "--force")
    assert code == 2 and "not written by edgeprune" in err


def test_a_compressed_folder_is_a_model_for_every_command(tmp_path, cli):
    """`compile`, `inspect` and friends take the folder: the weights are decoded on load, bit for bit."""
    _round_trip(tmp_path, cli, _shared(bits=4))
    assert load_model(tmp_path / "c").graph == load_model(tmp_path / "back.onnx").graph
    code, out, err = cli("compile", tmp_path / "c", "--target", "host", "-o", tmp_path / "bundle", "--json")
    assert code == 0, err
    assert json.loads(out)["build"]["vs_reference"]["max_abs_error"] < 1e-4
    (tmp_path / "plain").mkdir()
    code, _, err = cli("inspect", tmp_path / "plain")
    assert code == 2 and "nor a folder written by `edgeprune compress`" in err
