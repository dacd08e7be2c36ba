"""Int8 QDQ quantization: calibrated on the user's data, small error, power-of-two mode exact to its promise."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import EXAMPLE
from edgeprune.graph import canonicalize, compare_models, load_model, run, validate
from edgeprune.quant.quantize import is_quantized, quantize


@pytest.fixture(scope="module")
def float_model():
    return canonicalize(load_model(EXAMPLE))


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    return [{"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)} for _ in range(16)]


def _initializers(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_qdq_model_is_close_to_float(float_model, samples, method):
    q = quantize(float_model, samples, method=method)
    validate(q)
    assert is_quantized(q)
    weights = [a for n, a in _initializers(q).items() if a.dtype == np.int8 and a.ndim == 4]
    assert weights, "conv weights are stored as int8"
    scale = max(float(np.abs(run(float_model, s)["logits"]).max()) for s in samples)
    diff = compare_models(float_model, q, samples[0])
    assert diff.max_abs < 0.05 * scale


def test_per_channel_and_per_tensor(float_model, samples):
    per_channel = _initializers(quantize(float_model, samples, per_channel=True))
    per_tensor = _initializers(quantize(float_model, samples, per_channel=False))
    assert any(v.ndim == 1 and v.size == 16 and n.endswith("weight_scale") for n, v in per_channel.items())
    assert all(v.ndim == 0 for n, v in per_tensor.items() if n.endswith("weight_scale"))


def test_pow2_scales_and_zero_points(float_model, samples):
    q = quantize(float_model, samples, pow2=True)
    validate(q)
    for name, value in _initializers(q).items():
        if name.endswith("scale"):
            exponent = np.log2(value.astype(np.float64))
            assert np.array_equal(exponent, np.round(exponent)), name
        if name.endswith("zero_point"):
            assert not value.any(), name
    reference = quantize(float_model, samples, pow2=False)
    d_pow2 = compare_models(float_model, q, samples[1]).max_abs
    d_free = compare_models(float_model, reference, samples[1]).max_abs
    assert d_pow2 < 4 * d_free + 1e-3  # coarser scales cost at most a couple of bits


def test_pow2_biases_follow_their_scales(float_model, samples):
    """A bias dequantizes with (input scale x weight scale): requantized consistently, the model stays close."""
    q = quantize(float_model, samples, pow2=True)
    inits = _initializers(q)
    producer = {o: n for n in q.graph.node for o in n.output}
    checked = 0
    for node in q.graph.node:
        if node.op_type == "Conv" and len(node.input) == 3:
            act, w, b = (producer[i] for i in node.input)
            np.testing.assert_array_equal(inits[b.input[1]], inits[act.input[1]] * inits[w.input[1]])
            checked += 1
    assert checked == 5


def test_cli_quantize_reports_accuracy(tmp_path, cli):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "c.npz", input=rng.standard_normal((8, 1, 28, 28)).astype(np.float32),
             labels=rng.integers(0, 10, 8))
    code, out, err = cli("quantize", EXAMPLE, "-o", tmp_path / "q.onnx", "--calib", tmp_path / "c.npz", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"max_abs_error", "accuracy_float", "accuracy_int8", "top1_agreement"} <= set(data)
    assert data["bytes_int8"] < data["bytes_float"] / 2
    assert is_quantized(onnx.load(tmp_path / "q.onnx"))
    code, _, err = cli("quantize", EXAMPLE, "-o", tmp_path / "q.onnx", "--calib", tmp_path / "c.npz")
    assert code == 2 and "--force" in err


def test_quantize_pass_needs_real_data(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{EXAMPLE}"\ntarget = "host"\noutput = "b"\n[[passes]]\nname = "quantize"\n')
    code, _, err = cli("run", recipe)
    assert code == 2 and "--calib" in err and not (tmp_path / "b").exists()


def test_quantized_model_compiles_for_host(tmp_path, float_model, samples):
    from edgeprune.pipeline import compile_model

    np.savez(tmp_path / "c.npz", input=np.concatenate([s["input"] for s in samples]))
    from edgeprune.passes import make_pass

    result = compile_model(EXAMPLE, "host", tmp_path / "b", passes=[make_pass("quantize")], calib=str(tmp_path / "c.npz"))
    assert [r["name"] for r in result.manifest["passes"]] == ["canonicalize", "quantize", "fold-batchnorm"]
    assert result.manifest["build"]["vs_reference"]["max_abs_error"] < 1e-3
