"""Default CPU schedules: scheduled builds give onnxruntime's numbers on awkward shapes, and the rules fire."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.compile.tvm_build import build, import_onnx
from edgeprune.graph import run
from edgeprune.targets import load_target


def _chain(shape: list[int], layers: list[tuple[str, dict]], seed: int = 0) -> onnx.ModelProto:
    """A model from ("conv", attrs), ("residual", {"step": i}), ("gemm", {"n": n}) or (onnx op, attrs) steps.

    A conv's attrs: k (out channels), ks, stride, pad, group, act ("Relu", "Clip" or None), bias.
    """
    rng = np.random.default_rng(seed)
    nodes, inits, outs, cur, c, hw = [], [], [], "x", shape[1], shape[2:]
    for i, (op, a) in enumerate(layers):
        out = f"t{i}"
        if op == "conv":
            k, ks, stride, group = a["k"], a.get("ks", 3), a.get("stride", 1), a.get("group", 1)
            dil = a.get("dilation", 1)
            pads = a.get("pads", [a.get("pad", 1)] * 4)  # ONNX order: top, left, bottom, right
            weight = rng.standard_normal((k, c // group, ks, ks)).astype(np.float32)
            inits.append(numpy_helper.from_array(weight, f"w{i}"))
            inputs = [cur, f"w{i}"]
            if a.get("bias", True):
                inits.append(numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), f"b{i}"))
                inputs.append(f"b{i}")
            nodes.append(helper.make_node("Conv", inputs, [out], kernel_shape=[ks, ks], strides=[stride] * 2,
                                          pads=pads, group=group, dilations=[dil] * 2))
            c = k
            hw = [(d + pads[j] + pads[j + 2] - dil * (ks - 1) - 1) // stride + 1 for j, d in enumerate(hw)]
            if a.get("act"):
                extra = ["lo", "hi"] if a["act"] == "Clip" else []
                nodes.append(helper.make_node(a["act"], [out, *extra], [f"{out}a"]))
                out = f"{out}a"
        elif op == "residual":  # add the output of an earlier step of the same shape
            nodes.append(helper.make_node("Add", [cur, outs[a["step"]]], [out]))
        elif op == "gemm":
            nodes.append(helper.make_node("Flatten", [cur], [f"{out}f"]))
            features = c * int(np.prod(hw))
            inits += [numpy_helper.from_array(rng.standard_normal((a["n"], features)).astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(rng.standard_normal(a["n"]).astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [f"{out}f", f"w{i}", f"b{i}"], [out], transB=1))
            c, hw = a["n"], []
        else:  # pooling and elementwise ops, attrs passed through
            nodes.append(helper.make_node(op, [cur], [out], **a))
            if op == "GlobalAveragePool":
                hw = [1, 1]
            elif "kernel_shape" in a:
                ks, st, pad = a["kernel_shape"][0], a.get("strides", [1])[0], a.get("pads", [0])[0]
                hw = [(d + 2 * pad - ks) // st + 1 for d in hw]
        cur = out
        outs.append(out)
    inits += [numpy_helper.from_array(np.array(v, np.float32), name) for v, name in ((0.0, "lo"), (6.0, "hi"))]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _prepared(target, model: onnx.ModelProto):
    """The model as the rules see it: legalized, fused PrimFuncs, before any schedule."""
    import tvm

    from edgeprune.compile.schedules import prepare_passes

    with target.tvm_target():
        return tvm.transform.Sequential(prepare_passes(target))(import_onnx(model))


CASES = {
    "conv3x3-odd-channels": ([1, 13, 17, 17], [("conv", {"k": 21, "act": "Relu"}), ("conv", {"k": 21, "act": "Relu"}),
                                                ("residual", {"step": 0})]),
    "conv3x3-even": ([1, 16, 14, 14], [("conv", {"k": 32, "act": "Relu"}), ("conv", {"k": 64, "ks": 1, "pad": 0})]),
    "conv-stride2-no-bias": ([1, 24, 15, 15], [("conv", {"k": 40, "stride": 2, "bias": False, "act": "Clip"}),
                                               ("conv", {"k": 7, "ks": 5, "pad": 2})]),
    "conv7x7-stem-maxpool": ([1, 3, 32, 32], [("conv", {"k": 16, "ks": 7, "stride": 2, "pad": 3, "act": "Relu"}),
                                              ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2],
                                                           "pads": [1, 1, 1, 1]})]),
    "depthwise-mobilenet": ([1, 24, 19, 19], [("conv", {"k": 24, "group": 24, "act": "Clip"}),
                                              ("conv", {"k": 48, "ks": 1, "pad": 0, "act": "Clip"}),
                                              ("conv", {"k": 48, "group": 48, "stride": 2}),
                                              ("conv", {"k": 11, "ks": 1, "pad": 0})]),
    "depthwise-stride2-odd-channels": ([1, 13, 20, 20], [("conv", {"k": 13, "group": 13, "stride": 2, "act": "Relu"}),
                                                        ("conv", {"k": 13, "group": 13, "pad": 0})]),
    "depthwise-prime-widths": ([1, 10, 19, 19], [("conv", {"k": 10, "group": 10, "stride": 2, "act": "Clip"}),
                                                 ("conv", {"k": 10, "group": 10, "stride": 2, "pad": 0})]),
    "conv-odd-widths-5x5": ([1, 5, 13, 13], [("conv", {"k": 11, "ks": 5, "pad": 2, "act": "Relu"}),
                                             ("conv", {"k": 3, "stride": 2, "pad": 0})]),
    "conv-asymmetric-pad-dilated-batch2": ([2, 8, 12, 11], [("conv", {"k": 24, "pads": [0, 1, 1, 0], "dilation": 2}),
                                                            ("conv", {"k": 9, "ks": 1, "pad": 0, "act": "Relu"})]),
    "conv1x1-downsample-residual": ([1, 33, 14, 14], [("conv", {"k": 66, "ks": 1, "pad": 0, "stride": 2}),
                                                      ("conv", {"k": 66, "act": "Relu"}), ("residual", {"step": 0})]),
    "pointwise-expand-project-batch2": ([2, 16, 12, 12], [("conv", {"k": 96, "ks": 1, "pad": 0, "act": "Clip"}),
                                                          ("conv", {"k": 13, "ks": 1, "pad": 0}),
                                                          ("conv", {"k": 24, "ks": 1, "pad": 0, "act": "Relu"})]),
    "pointwise-residual-and-fallbacks": ([1, 24, 8, 8], [("conv", {"k": 24, "ks": 1, "pad": 0, "act": "Relu"}),
                                                         ("conv", {"k": 24, "ks": 1, "pad": 0}),
                                                         ("residual", {"step": 0}),
                                                         ("conv", {"k": 200, "ks": 1, "pad": 0}),
                                                         ("conv", {"k": 8, "ks": 1, "pad": 0}),
                                                         ("conv", {"k": 8, "ks": 1, "pad": 0, "stride": 2})]),
    "pointwise-14x14-padded-columns": ([1, 32, 14, 14], [("conv", {"k": 64, "ks": 1, "pad": 0, "act": "Clip"}),
                                                         ("conv", {"k": 64, "ks": 1, "pad": 0}),
                                                         ("residual", {"step": 0})]),
    "1x1-7x7-padded-map-then-pixel-runs": ([1, 40, 7, 7], [("conv", {"k": 208, "ks": 1, "pad": 0, "act": "Clip"}),
                                                                ("conv", {"k": 208, "ks": 1, "pad": 0}),
                                                                ("residual", {"step": 0})]),
    "conv3x3-three-vector-tile": ([1, 16, 12, 12], [("conv", {"k": 24, "act": "Relu"}),
                                                   ("conv", {"k": 48, "stride": 2})]),
    "strided-1x1-copied-out": ([1, 64, 30, 30], [("conv", {"k": 80, "ks": 1, "pad": 0, "stride": 2, "act": "Relu"}),
                                                 ("conv", {"k": 16, "ks": 1, "pad": 0})]),
    "flat-3x3-rows-batch2": ([2, 8, 30, 28], [("conv", {"k": 16, "act": "Relu"}), ("conv", {"k": 16}),
                                              ("residual", {"step": 0}), ("conv", {"k": 24, "act": "Clip"})]),
    "windows-pixels-in-lanes": ([1, 3, 34, 32], [("conv", {"k": 16, "stride": 2, "act": "Clip"}),
                                                 ("conv", {"k": 8, "act": "Relu"}),
                                                 ("conv", {"k": 12, "ks": 5, "pad": 2, "stride": 2})]),
    "pixel-runs-7x7-residual-batch2": ([2, 64, 7, 7], [("conv", {"k": 64, "act": "Relu"}), ("conv", {"k": 64}),
                                                       ("residual", {"step": 0})]),
    "pixel-runs-strided-padded-filters-5x5": ([1, 32, 15, 15], [("conv", {"k": 40, "stride": 2, "pads": [0, 1, 1, 0],
                                                                          "act": "Clip"}),
                                                                ("conv", {"k": 48, "ks": 5, "pad": 2})]),
    "blocked-channels-grouped": ([1, 32, 12, 12], [("conv", {"k": 64, "act": "Relu"}), ("conv", {"k": 64, "group": 2}),
                                                   ("conv", {"k": 16, "group": 4, "act": "Relu"})]),
    "grouped-conv": ([1, 12, 10, 10], [("conv", {"k": 18, "group": 3, "act": "Relu"}),
                                       ("conv", {"k": 16, "group": 2})]),
    "padded-pools": ([1, 11, 30, 30], [("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
                                       ("Relu", {}),
                                       ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                                       ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2],
                                                        "pads": [1, 1, 1, 1]}),
                                       ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                        "count_include_pad": 1})]),
    "padded-max-pools": ([1, 11, 30, 30], [("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2],
                                                       "pads": [1, 1, 1, 1]}),
                                           ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})]),
    "pool-gemm-head": ([1, 37, 9, 9], [("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
                                       ("GlobalAveragePool", {}), ("gemm", {"n": 19}), ("Sigmoid", {})]),
    "gemm-batch": ([3, 50, 1, 1], [("gemm", {"n": 33}), ("Relu", {}), ("gemm", {"n": 16})]),
}


@pytest.fixture(scope="module")
def host():
    return load_target("host")


@pytest.mark.parametrize("name", sorted(CASES))
def test_scheduled_build_matches_onnxruntime(host, name, monkeypatch):
    import tvm
    from tvm import relax

    from edgeprune.compile.schedules import common

    monkeypatch.setattr(common, "PARALLEL_MIN_WORK", 0)  # small layers, but their loops must run in parallel too
    shape, layers = CASES[name]
    model = _chain(shape, layers)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    want = next(iter(run(model, {"x": x}).values()))
    vm = relax.VirtualMachine(build(model, host), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_rules_fire(host, monkeypatch):
    """Every CNN kind is recognized from its loops; convs and matmuls get vector tiles (over repacked weights
    where there is a channel reduction), pooling parallel loops."""
    import tvm
    from tvm import relax, s_tir, tirx

    from edgeprune.compile.schedules import classify, common, machine_for, schedule_module

    monkeypatch.setattr(common, "PARALLEL_MIN_WORK", 0)  # these layers are small; parallel loops are the point
    shape, layers = CASES["depthwise-mobilenet"]
    layers = [*layers, ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}), ("gemm", {"n": 10}), ("Relu", {})]
    mod = import_onnx(_chain(shape, layers))
    with host.tvm_target():
        mod = tvm.transform.Sequential([*relax.backend.cpu_generic.legalize_passes(host.tvm_target()),
                                        relax.transform.AttachAttrLayoutFreeBuffers()])(mod)
    kinds = {g: classify(s_tir.Schedule(f)).kind for g, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    assert sorted(set(kinds.values())) == ["conv2d", "depthwise", "elementwise", "matmul", "pool"], kinds.values()
    scheduled = schedule_module(mod, machine_for(host))
    for gvar, kind in kinds.items():
        if kind == "elementwise":  # tails here are too short to split (the correctness cases run them)
            continue
        text = scheduled[gvar].script()
        assert "T.parallel" in text, (gvar.name_hint, kind)
        if kind in ("conv2d", "matmul", "depthwise"):  # an accumulator tile (LLVM vectorizes ragged depthwise rows)
            assert 'scope="local"' in text, gvar.name_hint
        if kind in ("conv2d", "matmul"):
            assert "T.vectorized" in text and "meta_schedule.layout_rewrite_preproc" in text, gvar.name_hint


def test_pointwise_rule_takes_1x1_convs(host):
    """Float 1x1 stride-1 convs with whole vectors of pixels put pixels in the lanes, whatever their input count
    (their weights repacked to [K/kt, 1, 1, C, kt] for kt output channels per tile, not to vectors of channels);
    strided ones keep the channel-lane rule. 14x14 maps get two zero columns first, 7x7 ones a row and a column
    (those over short reductions: pixel_runs.py takes the others)."""
    import re

    from tvm import s_tir, tirx

    from edgeprune.compile.schedules import classify, machine_for, schedule_module
    from edgeprune.compile.schedules.pointwise import _tile, applies

    shape, layers = CASES["pointwise-residual-and-fallbacks"]
    model = _chain(shape, [*layers, ("conv", {"k": 16, "ks": 1, "pad": 0})])
    mod = _prepared(host, model)
    machine = machine_for(host)
    taken = {}
    for gvar, func in mod.functions.items():
        sch = s_tir.Schedule(func) if isinstance(func, tirx.PrimFunc) else None
        if sch is not None and (anchor := classify(sch)).kind == "conv2d":
            _, k, y, x, rc, _, _ = sch.get(anchor.block).iter_vars
            kt = _tile(int(k.dom.extent), int(y.dom.extent * x.dom.extent), machine.lanes, machine.registers)[0]
            taken[gvar] = (int(rc.dom.extent), applies(sch, anchor, machine), kt)
    # 24->24 twice, 24->200, 200->8 and 8->16 at 4x4 qualify; 8->8 is strided
    assert sorted(t[:2] for t in taken.values()) == [(8, False), (8, True), (24, True), (24, True), (24, True),
                                                      (200, True)], taken
    scheduled = schedule_module(mod, machine)
    for gvar, (_, pointwise, kt) in taken.items():
        packed = re.search(r"_global = T.sblock_alloc_buffer\(\((.*?)\)\)", scheduled[gvar].script()).group(1)
        assert packed.endswith(f"T.int64({kt if pointwise else machine.lanes}"), packed
        assert kt != machine.lanes or not pointwise, packed  # tiles of the rule's own, not vectors of channels

    model = _chain([1, 32, 14, 14], [("conv", {"k": 64, "ks": 1, "pad": 0})])
    mod = _prepared(host, model)
    text = next(f.script() for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    assert "T.int64(14), T.int64(16)" in text and "T_strided_slice" in text  # padded columns, sliced off

    model = _chain([1, 32, 7, 7], [("conv", {"k": 64, "ks": 1, "pad": 0})])
    mod = _prepared(host, model)
    text = next(f.script() for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    assert "T.int64(8), T.int64(8)" in text and "T_strided_slice" in text  # a padded map: 64 pixels, not 49

    # a big strided 1x1 conv: its pixels copied out by a slice of their own, then a stride-1 conv this rule takes
    model = _chain(*CASES["strided-1x1-copied-out"])
    mod = _prepared(host, model)
    convs = [s_tir.Schedule(f) for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    convs = [(sch, anchor) for sch in convs if (anchor := classify(sch)).kind == "conv2d"]
    assert all(applies(sch, anchor, machine) for sch, anchor in convs) and len(convs) == 2
    assert any("x[v_ax0, v_ax1, v_ax2 * T.int64(2), v_ax3 * T.int64(2)]" in f.script()
               for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))


# Not the 7x7 wide-reduction case: at seed 12 one of its int8 sums lands 2e-5 of a step from a rounding tie,
# which onnxruntime's float32 conv rounds the other way (the exact integer result is ours).
INT8_CASES = ["pointwise-expand-project-batch2", "pointwise-residual-and-fallbacks", "pointwise-14x14-padded-columns",
              "conv3x3-odd-channels", "conv-stride2-no-bias", "depthwise-mobilenet", "depthwise-stride2-odd-channels",
              "depthwise-prime-widths", "conv1x1-downsample-residual",
              "grouped-conv", "pool-gemm-head", "padded-max-pools", "gemm-batch", "conv7x7-stem-maxpool",
              "conv-odd-widths-5x5",
              "conv-asymmetric-pad-dilated-batch2"]


def _quantized(name: str):
    from edgeprune.graph import canonicalize
    from edgeprune.quant.quantize import quantize

    shape, layers = CASES[name]
    model = canonicalize(_chain(shape, layers))
    rng = np.random.default_rng(2)
    return quantize(model, [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]), shape


@pytest.mark.parametrize("name", INT8_CASES)
def test_scheduled_int8_build_is_bit_exact(host, name, monkeypatch):
    """The integer kernels go through the same tiles (int32 accumulators in the float32 lanes' place) and
    stay bit-exact to onnxruntime running the QDQ graph as written."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgeprune.compile.schedules import common

    monkeypatch.setattr(common, "PARALLEL_MIN_WORK", 0)
    model, shape = _quantized(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    vm = relax.VirtualMachine(build(model, host), tvm.cpu())
    for seed in range(3):
        x = np.random.default_rng(10 + seed).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), sess.run(None, {"x": x})[0])


def test_int8_rules_fire(host):
    """int16 x int8 -> int32 convs, depthwise convs and dense layers are classified like their float twins and get
    vector tiles (convs and dense layers over int8 weights repacked at compile time); the requantization folds into
    the tile's store, in float64 on x86-64 and AArch64 (requant.py)."""
    from tvm import s_tir

    from edgeprune.compile.schedules import classify, machine_for, schedule_module

    machine = machine_for(host)
    for case, want in (("conv3x3-even", ["conv2d", "conv2d"]), ("pool-gemm-head", ["matmul"]),
                       ("depthwise-stride2-odd-channels", ["depthwise", "depthwise"])):
        mod = _prepared(host, _quantized(case)[0])
        integer = {g: f for g, f in mod.functions.items() if "round" in g.name_hint or "right_shift" in g.name_hint}
        assert sorted(classify(s_tir.Schedule(f)).kind for f in integer.values()) == want, case
        scheduled = schedule_module(mod, machine)
        for gvar in integer:
            text = scheduled[gvar].script()
            assert 'scope="local"' in text and '"int8"' in text, gvar.name_hint
            if "depthwise" not in want:
                assert "T.vectorized" in text and "meta_schedule.layout_rewrite_preproc" in text, gvar.name_hint
            # no int64 tensor is written out between the requantization's steps
            assert not [line for line in text.splitlines() if "alloc_buffer" in line and '"int64"' in line], gvar
            assert ("T.nearbyint" in text and '"float64"' in text) == machine.float64, gvar.name_hint
            if machine.pair_dot and "depthwise" not in want and "conv2d" in gvar.name_hint:  # x86: the pair intrinsic
                assert "llvm.x86.avx" in text and "pmadd" in text, gvar.name_hint


def test_int8_pointwise_puts_pixels_in_the_lanes(host):
    """int16 x int8 1x1 convs that pointwise.py takes run the pair instruction with a weight pair broadcast and
    pixels' channel pairs in the lanes; the 3x3 conv keeps the data pair broadcast."""
    from edgeprune.compile.schedules import machine_for, schedule_module

    machine = machine_for(host)
    if machine.pair_dot is None:
        pytest.skip("no pair instruction on this CPU")
    model = _chain([1, 16, 8, 8], [("conv", {"k": 24, "act": "Relu"}), ("conv", {"k": 40, "ks": 1, "pad": 0})])
    rng = np.random.default_rng(3)
    from edgeprune.graph import canonicalize
    from edgeprune.quant.quantize import quantize

    model = quantize(canonicalize(model), [{"x": rng.standard_normal((1, 16, 8, 8)).astype(np.float32)}] * 2)
    mod = _prepared(host, model)
    scheduled = schedule_module(mod, machine)
    texts = {g.name_hint: scheduled[g].script() for g in mod.functions if "conv2d" in g.name_hint}
    pixel_pair = {name: 'T.Cast("int16x2"' in text for name, text in texts.items()}  # the broadcast weight pair
    assert sorted(pixel_pair.values()) == [False, True], pixel_pair


def _int8_layer_asm(target, shape, layers) -> str:
    from edgeprune.compile.tvm_build import build
    from edgeprune.graph import canonicalize
    from edgeprune.quant.quantize import quantize

    model = canonicalize(_chain(shape, layers))
    rng = np.random.default_rng(2)
    model = quantize(model, [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])
    executable = build(model, target)
    return next(text for lib in (executable.mod, *executable.mod.imports) if (text := lib.inspect_source("asm")))


@pytest.mark.parametrize("target_name, vector_bits, instruction, spill", [
    # AVX2 (this machine): 16 int16 products summed in pairs
    ("host", None, r"vpmaddwd\s+%ymm", r"%ymm\d+, -?\d*\(%rsp\)|\(%rsp\), %ymm"),
    ("host", 512, r"vpmaddwd\s+%zmm", r"%zmm\d+, -?\d*\(%rsp\)|\(%rsp\), %zmm"),  # AVX-512, compiled only
    ("rpi4", None, r"smlal\s+v", r"(str|ldr|stp|ldp)\s+q\d+.*\[sp"),  # AArch64 NEON: widening multiply-add
])
def test_int8_conv_inner_loop_instruction(target_name, vector_bits, instruction, spill):
    """What the int8 conv compiles to, read from the assembly: pmaddwd on x86, smlal on the Pi, and the
    accumulator tile fits the registers (no stack traffic in the loops that multiply)."""
    import dataclasses
    import platform
    import re

    from edgeprune.targets import host_vector_bits, load_target

    target = load_target(target_name)
    if target_name == "host":
        if platform.machine() not in ("x86_64", "AMD64") or (vector_bits is None and host_vector_bits() < 256):
            pytest.skip("an x86 machine with AVX2 builds this case")
        if vector_bits:
            target = dataclasses.replace(target, tvm={**target.tvm, "mcpu": "skylake-avx512"},
                                         device={**target.device, "vector_bits": vector_bits})
    asm = _int8_layer_asm(target, [1, 64, 28, 28], [("conv", {"k": 64, "act": "Relu"})])
    loops = []  # the innermost loops that multiply: from a label to the branch back to it, no label between
    for label in re.finditer(r"^(\.LBB\w+):", asm, re.M):
        back = re.search(rf"^\s+\S+\s+{re.escape(label.group(1))}$", asm[label.end():], re.M)
        body = asm[label.end():label.end() + back.start()] if back else ""
        if re.search(instruction, body) and not re.search(r"^\.LBB", body, re.M):
            loops.append(body)
    assert loops, instruction
    assert not [body for body in loops if re.search(spill, body)]


@pytest.mark.parametrize("int8", [False, True])
def test_pointwise_schedules_replay_as_traces(host, int8):
    """Tuning stores our rules' schedules as traces (compile/tune.py): replayed on the kernel, the pointwise and
    flat rules' traces (flat pixels, rows, padded maps, flat 3x3 convs, pixel runs over blocked data; int8 on its
    intrinsic) give the very same function."""
    import tvm
    from tvm import s_tir

    from edgeprune.compile.schedules import machine_for
    from edgeprune.compile.tune import extract_tasks, rule_schedule

    names = ["pointwise-expand-project-batch2", "pointwise-14x14-padded-columns", "windows-pixels-in-lanes"]
    if not int8:
        names += ["flat-3x3-rows-batch2", "strided-1x1-copied-out", "1x1-7x7-padded-map-then-pixel-runs"]
    machine = machine_for(host)
    replayed = []
    for name in names:
        model = _quantized(name)[0] if int8 else _chain(*CASES[name])
        for task, mod, _ in extract_tasks(import_onnx(model), host):
            sch = rule_schedule(mod, machine)
            if sch is None or "conv" not in task:
                continue
            again = s_tir.Schedule(mod)
            sch.trace.apply_to_schedule(again, remove_postproc=False)
            tvm.ir.assert_structural_equal(again.mod, sch.mod)
            replayed.append(task)
    assert len(replayed) >= 4, replayed
    assert int8 or any("flat_conv" in task for task in replayed) and any("conv2d_runs" in task for task in replayed)


def test_small_reductions_with_windows_put_pixels_in_the_lanes(host):
    """3x3 and 5x5 float convs at stride 1 or 2 with at most MAX_REDUCTION multiply-adds per output take the
    pointwise rule over rows (stride 2 through a copy with even and odd columns apart); a dilated or grouped
    conv, or a 3x3 over 64 channels, does not."""
    from tvm import s_tir, tirx

    from edgeprune.compile.schedules import classify, machine_for
    from edgeprune.compile.schedules.pointwise import applies

    machine = machine_for(host)
    layers = [("conv", {"k": 16, "stride": 2}), ("conv", {"k": 8, "pad": 2, "dilation": 2}),
              ("conv", {"k": 16, "group": 2}), ("conv", {"k": 8}), ("conv", {"k": 64, "ks": 5, "pad": 2}),
              ("conv", {"k": 8})]
    mod = _prepared(host, _chain([1, 3, 32, 32], layers))
    taken = [applies(sch, anchor, machine) for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)
             for sch in [s_tir.Schedule(f)] if (anchor := classify(sch)).kind == "conv2d"]
    assert sorted(taken) == [False, False, False, False, True, True], taken  # 3->16 stride 2, 16->8


def test_float_conv_tiles():
    """12 accumulators where the loads stay at most 3 per 4 FMAs (Zen 2's 5-cycle FMA needs 10 in flight), else 8
    with the fewest loads; integer tiles keep to two weight vectors."""
    from edgeprune.compile.schedules.conv import _register_tile

    assert _register_tile(96, 48, 8, 16) == (3, 4)
    assert _register_tile(64, 56, 8, 16) == (2, 4)  # 1x14 has 14 chains but a load per FMA: measured slower
    assert _register_tile(256, 14, 8, 16) == (1, 14)
    assert _register_tile(96, 48, 8, 16, integer=True)[0] <= 2


def test_flat_rule_takes_wide_3x3_convs(host):
    """Float 3x3 stride-1 convs over rows of 28 or more become flat convs over padded rows (their own kind, the
    padding written into a flat plane, weights repacked for 4 output channels per tile); 14-wide maps, stride 2
    and channel counts that are not whole tiles keep the conv rule."""
    from tvm import s_tir, tirx

    from edgeprune.compile.schedules import classify, machine_for, schedule_module

    model = _chain([1, 8, 28, 28], [("conv", {"k": 16, "act": "Relu"}), ("conv", {"k": 18}),
                                    ("conv", {"k": 16, "stride": 2}), ("conv", {"k": 16})])
    mod = _prepared(host, model)
    kinds = {g: classify(s_tir.Schedule(f)).kind for g, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    assert sorted(kinds.values()).count("flat_conv") == 1 and list(kinds.values()).count("conv2d") == 3, kinds
    flat = next(g for g, kind in kinds.items() if kind == "flat_conv")
    text = schedule_module(mod, machine_for(host))[flat].script()
    assert "T.int64(4), T.int64(8), T.int64(3), T.int64(3), T.int64(4)" in text  # [K/4, C, 3, 3, 4]
    assert "T.int64(30 * 31)" in text or "T.int64(930)" in text  # the plane: rows of 30, flat


def test_pixel_runs_take_rows_without_wide_tiles():
    """Convs whose rows allow no 12-accumulator tile run over runs of 6 or 5 pixels (5 where 6 rounds up more:
    7x7 -> 50, not 54), with zero filters up to whole pairs of vectors when that adds at most a fifth."""
    from edgeprune.compile.schedules import machine_for
    from edgeprune.compile.schedules.pixel_runs import _run

    machine = machine_for(load_target("host"))
    assert _run(512, 7, 7, machine) == (5, 512)
    assert _run(256, 14, 14, machine) == (6, 256)
    assert _run(128, 28, 28, machine) == (6, 128)  # rows of 28: 2x4 tiles, 8 chains
    assert _run(40, 14, 14, machine) == (6, 48)
    assert _run(64, 12, 12, machine) is None  # 2x6 tiles in its rows
    assert _run(24, 7, 7, machine) is None  # 24 -> 32 filters: a third more


def test_pixel_runs_rewrite(host):
    """The pass leaves short reductions and 1x1 convs over maps pointwise.py pads a little (pointwise.py's) alone,
    and rows with wide tiles; the runs are
    convs to the classifier, tiled 2 x RUN over channels blocked in lines, and their bias and activation run
    after the slice."""
    from tvm import s_tir, tirx

    from edgeprune.compile.schedules import classify, machine_for, schedule_module

    model = _chain([1, 16, 20, 20], [("conv", {"k": 32}), ("conv", {"k": 64, "act": "Relu"}),
                                     ("conv", {"k": 64, "ks": 1, "pad": 0}), ("conv", {"k": 256, "stride": 2}),
                                     ("conv", {"k": 64, "ks": 1, "pad": 0}),  # 10x10: no whole vectors in 35%
                                     ("conv", {"k": 256, "stride": 2}),
                                     ("conv", {"k": 64, "ks": 1, "pad": 0})])  # 5x5 -> 5x8: 60% more
    mod = _prepared(host, model)
    runs = {g: f for g, f in mod.functions.items() if "conv2d_runs" in g.name_hint}
    outputs = sorted(tuple(int(d) for d in f.params[-1].shape) for f in runs.values())
    # 32->64 at 20x20, 64->256 at stride 2 (10x10) and its 1x1 256->64, 256->256 at stride 2 (5x5) and its 1x1
    assert outputs == [(1, 64, 5, 5), (1, 64, 17, 6), (1, 64, 67, 6), (1, 256, 5, 5), (1, 256, 17, 6)], outputs
    wide_14x14 = _prepared(host, _chain([1, 256, 14, 14], [("conv", {"k": 64, "ks": 1, "pad": 0})]))
    assert not any("conv2d_runs" in g.name_hint for g in wide_14x14.functions)  # 14x16 for pointwise.py: 14% more
    rows_of_28 = _prepared(host, _chain([1, 32, 28, 28], [("conv", {"k": 32}), ("conv", {"k": 8, "pad": 0})]))
    names = sorted(g.name_hint for g in rows_of_28.functions)  # a wide reduction: runs; 32->8: not 2 vectors
    assert sum("conv2d_runs" in n for n in names) == 1 and not any("flat" in n for n in names), names
    scheduled = schedule_module(mod, machine_for(host))
    for gvar, func in runs.items():
        assert classify(s_tir.Schedule(func)).kind == "conv2d"
        text = scheduled[gvar].script()
        assert "T.sblock_alloc_buffer((T.int64(1), T.int64(" in text and "T.int64(8)))" in text  # [N, C/8, H, W, 8]
        assert "T.vectorized(T.int64(8))" in text and 'scope="local"' in text
        assert "T.max(" not in text  # the relu is not in the runs' kernel
    fused = [g.name_hint for g in mod.functions if "relu" in g.name_hint]
    assert fused and all("conv" not in name for name in fused), fused
