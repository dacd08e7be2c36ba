"""QDQ models compile to integer arithmetic, bit-exact to onnxruntime's QDQ reference."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from conftest import EXAMPLE
from edgeprune.compile.integer import arithmetic_dtypes, fixed_point
from edgeprune.compile.tvm_build import import_onnx
from edgeprune.graph import canonicalize, load_model, random_inputs
from edgeprune.passes import make_pass
from edgeprune.pipeline import compile_model
from edgeprune.quant.quantize import quantize


@pytest.fixture(scope="module")
def calib():
    model = canonicalize(load_model(EXAMPLE))
    return model, [random_inputs(model, seed=100 + i) for i in range(16)]


def _reference(model, feeds_list):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # QDQ as written, no int8 fusion
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds_list])


def _tvm(mod, feeds_list):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(f["input"])).numpy() for f in feeds_list])


@pytest.mark.parametrize("pow2, per_channel", [(False, True), (False, False), (True, True)])
def test_bit_exact_integer_model(calib, pow2, per_channel):
    model, samples = calib
    q = quantize(model, samples, per_channel=per_channel, pow2=pow2)
    mod = import_onnx(q)
    assert arithmetic_dtypes(mod) == {"int16 x int8 -> int32": 6}  # five convs and the classifier
    feeds = [random_inputs(q, seed=s) for s in range(12)]
    np.testing.assert_array_equal(_tvm(mod, feeds), _reference(q, feeds))


@pytest.mark.parametrize("multiplier", [1.0, 0.75, 0.5, 3e-4, 0.999999, 7.9])
def test_fixed_point_represents_the_multiplier(multiplier):
    m0, shift = fixed_point(np.array([multiplier]))
    assert 2**30 <= m0[0] < 2**31
    assert abs(m0[0] * 2.0 ** -shift[0] - multiplier) <= multiplier * 2**-30


def test_float_models_stay_float(calib):
    assert arithmetic_dtypes(import_onnx(calib[0])) == {"float32 x float32 -> float32": 6}


def test_int8_bundle_reports_integer_arithmetic(tmp_path, calib):
    np.savez(tmp_path / "c.npz", input=np.concatenate([s["input"] for s in calib[1]]))
    result = compile_model(EXAMPLE, "host", tmp_path / "b", passes=[make_pass("quantize")], calib=str(tmp_path / "c.npz"))
    build = result.manifest["build"]
    assert build["arithmetic"] == {"int16 x int8 -> int32": 6}
    assert build["vs_reference"]["max_abs_error"] == 0.0


def test_float64_requantization_is_the_integer_one():
    """requant.py rewrites a requantization to float64 only where |acc * m0| < 2^53 (a 3x3 depthwise conv here),
    keeps int64 above it (a 1x1 conv over 2048 channels), and gives TVM's unscheduled int64 build's numbers."""
    import tvm
    from tvm import relax

    from edgeprune.compile.schedules.requant import float64_requant
    from edgeprune.compile.tvm_build import build
    from edgeprune.targets import load_target
    from test_schedules import _chain

    shape = [1, 2048, 6, 6]
    model = canonicalize(_chain(shape, [("conv", {"k": 16, "ks": 1, "pad": 0, "act": "Relu"}),
                                        ("conv", {"k": 16, "group": 16, "stride": 2})]))
    rng = np.random.default_rng(3)
    q = quantize(model, [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)])
    mod = import_onnx(q)
    text = float64_requant()(mod)["main"].script(show_meta=False)
    assert text.count("R.round(") == 1 and text.count('dtype="int64") = R.multiply(') == 1
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    vm = relax.VirtualMachine(build(q, load_target("host")), tvm.cpu())
    ours = np.concatenate([vm["main"](tvm.runtime.tensor(f["x"])).numpy() for f in feeds])
    unscheduled = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    np.testing.assert_array_equal(ours, np.concatenate([unscheduled["main"](tvm.runtime.tensor(f["x"])).numpy()
                                                        for f in feeds]))
    np.testing.assert_array_equal(ours, _reference(q, feeds))
