"""Whole models on VTA: partitioning, the bundle `edgeprune compile --target pynq-z1` writes, its driver's pure
parts, `profile --simulate`, and the one-line errors for models VTA cannot take."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.backends.vta import driver
from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import Load, Store, decode_program
from edgeprune.backends.vta.pack import pack_activations, unpack_activations
from edgeprune.backends.vta.part import PartImage
from edgeprune.backends.vta.partition import CpuStep, VtaStep, partition, reference_vta, run_plan
from edgeprune.errors import UserError
from edgeprune.quant.quantize import quantize

SHAPE = (1, 3, 20, 20)


def residual_cnn(seed: int = 0, width: int = 24) -> onnx.ModelProto:
    """conv-relu, conv + residual add + relu, 3x3/2 max-pool, strided conv-relu, global pool, flatten, dense."""
    rng = np.random.default_rng(seed)

    def w(*s):
        return (rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)

    inits = {"W1": w(width, 3, 3, 3), "B1": w(width) * 0.1, "W2": w(width, width, 3, 3), "B2": w(width) * 0.1,
             "W3": w(40, width, 3, 3), "B3": w(40) * 0.1, "F": w(10, 40), "FB": w(10) * 0.1}
    node = helper.make_node
    nodes = [node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             node("Add", ["c2", "r1"], ["a"], name="add"), node("Relu", ["a"], ["r2"], name="relu2"),
             node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Conv", ["p", "W3", "B3"], ["c3"], name="conv3", pads=[1, 1, 1, 1], strides=[2, 2]),
             node("Relu", ["c3"], ["r3"], name="relu3"), node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
             node("Flatten", ["g"], ["f"], name="flatten"), node("Gemm", ["f", "F", "FB"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(n: int = 6, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def pow2_model() -> onnx.ModelProto:
    return quantize(residual_cnn(), _samples(), pow2=True)


def test_partition_puts_the_int8_layers_on_vta(pow2_model):
    plan = partition(pow2_model, "cnn")
    kinds = [[l.op for l in s.layers] if isinstance(s, VtaStep) else "cpu" for s in plan.steps]
    assert kinds == ["cpu", ["conv2d", "conv2d", "add", "maxpool", "conv2d"], "cpu", ["dense"], "cpu"]
    cpu_ops = {n.op_type for s in plan.steps if isinstance(s, CpuStep) for n in s.model.graph.node}
    assert {"GlobalAveragePool", "Flatten"} <= cpu_ops and not cpu_ops & {"Conv", "Gemm", "Add", "MaxPool", "Relu"}
    layers = {l.name: l for s in plan.steps if isinstance(s, VtaStep) for l in s.layers}
    assert [stage[1] for stage in layers["conv1"].params["stages"]] == [False, True]  # Q -> DQ -> Relu -> Q fused
    # every layer rounds half to even as onnxruntime's QuantizeLinear does, and onnxruntime's float arithmetic is
    # exact on these power-of-two values: the integer reference gives onnxruntime's own output
    from edgeprune.graph import run

    for feeds in _samples(3, seed=7):
        np.testing.assert_array_equal(run_plan(plan, feeds, reference_vta)["y"], run(pow2_model, feeds)["y"])


def test_partition_errors_are_one_line(pow2_model):
    float_model = residual_cnn()
    with pytest.raises(UserError, match="not an int8 QDQ model"):
        partition(float_model, "cnn.onnx")
    not_pow2 = quantize(residual_cnn(), _samples())
    with pytest.raises(UserError, match=r"cnn.onnx: node '.*' .*power-of-two.*--pow2") as err:
        partition(not_pow2, "cnn.onnx")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def pruned_pow2_bundle(tmp_path_factory):
    """The issue's path, by the CLI: build in code, prune for pynq-z1 (rounds to 16), quantize --pow2, compile."""
    from edgeprune.cli import main

    tmp = tmp_path_factory.mktemp("vta")
    onnx.save(residual_cnn(), str(tmp / "cnn.onnx"))
    np.savez(tmp / "calib.npz", x=np.concatenate([s["x"] for s in _samples(8)]))
    steps = [["prune", tmp / "cnn.onnx", "--ratio", "0.4", "--target", "pynq-z1", "-o", tmp / "pruned.onnx"],  # rounds to 16
             ["quantize", tmp / "pruned.onnx", "--pow2", "--calib", tmp / "calib.npz", "-o", tmp / "q.onnx"],
             ["compile", tmp / "q.onnx", "--target", "pynq-z1", "-o", tmp / "bundle"]]
    for args in steps:
        assert main([str(a) for a in args] + ["--json"]) == 0, args
    return tmp


@pytest.mark.slow
def test_pruned_cnn_end_to_end_bit_exact(pruned_pow2_bundle, cli):
    bundle = pruned_pow2_bundle / "bundle"
    pruned = onnx.load(str(pruned_pow2_bundle / "pruned.onnx"))
    assert all(i.dims[0] % 16 == 0 for i in pruned.graph.initializer if i.name in ("W1", "W2", "W3"))
    code, out, err = cli("profile", bundle, "--simulate", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["bit_exact"] is True and data["vta_layers"] == 6 and data["max_abs_error_vs_onnxruntime"] == 0
    assert data["instructions"] > 0 and data["gemm_ops"] > 0 and data["dram_bytes"] > 0
    assert 0 < data["estimated_ms"] < 10 and "AXI" in data["timing_model"]
    assert 0 < data["buffer_utilization"]["inp"] <= 1
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["build"]["simulated"]["bit_exact"] and "unverified" in manifest["build"]["vta"]["hardware"]
    readme = (bundle / "README.md").read_text()
    assert "No bitstream is produced" in readme and "apache/tvm-vta" in readme and "1x16_i8w8a32_15_15_18_17" in readme
    code, out, _ = cli("profile", bundle, "--simulate")
    assert code == 0 and "bit-exact" in out and "estimated" in out


@pytest.mark.slow
def test_huffman_coded_weights_compile_to_the_same_packed_blocks(pruned_pow2_bundle, cli):
    """A folder from `edgeprune compress` is decoded at load, so VTA packs exactly the blocks of the plain model."""
    tmp = pruned_pow2_bundle
    code, _, err = cli("compress", tmp / "q.onnx", "-o", tmp / "coded")
    assert code == 0, err
    code, _, err = cli("compile", tmp / "coded", "--target", "pynq-z1", "-o", tmp / "coded-bundle")
    assert code == 0, err
    plain, coded = (json.loads((tmp / b / "manifest.json").read_text())["files"] for b in ("bundle", "coded-bundle"))
    packed = [f for f in plain if f.startswith("vta") and not f.endswith(".json")]
    assert packed and all(coded[f]["sha256"] == plain[f]["sha256"] for f in packed)


@pytest.mark.slow
def test_bundle_relocations_and_driver(pruned_pow2_bundle):
    bundle = pruned_pow2_bundle / "bundle"
    info = json.loads((bundle / "manifest.json").read_text())["build"]["vta"]
    config = VTAConfig.from_dict(info["config"])
    for part in info["parts"]:
        code = (bundle / part["insn"]).read_bytes()
        insns = decode_program(code)
        relocs = json.loads((bundle / part["relocs"]).read_text())
        # every DRAM address is relocated, and nothing else
        assert sorted(r["insn"] for r in relocs) == [i for i, op in enumerate(insns)
                                                    if isinstance(op, (Load, Store)) and op.x_size]
        assert sum(l["insn_count"] for l in part["layers"]) == len(insns) == part["insn_count"]
        # the driver's relocation (raw bits, no edgeprune) gives what the simulator ran
        image = PartImage(bundle, part, config)
        linked = driver.relocate(code, relocs, image.base)
        assert decode_program(linked.tobytes()) == image.insns
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 40, 5, 3)).astype(np.int8)
    packed = list(pack_activations(x, 16).shape)
    np.testing.assert_array_equal(driver.pack(x, packed), pack_activations(x, 16).view(np.uint8).ravel())
    np.testing.assert_array_equal(driver.unpack(driver.pack(x, packed), packed, list(x.shape)),
                                  unpack_activations(pack_activations(x, 16), 40))


@pytest.mark.slow
def test_tampered_weights_are_caught(pruned_pow2_bundle, tmp_path):
    """The simulator runs the bundle's own files: a changed weight byte breaks bit-exactness."""
    import shutil

    from edgeprune.artifact import verify
    from edgeprune.backends.vta.simulate import simulate_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(pruned_pow2_bundle / "bundle", bundle)
    manifest = verify(bundle)
    wgt = bundle / "vta0.wgt.bin"
    raw = bytearray(wgt.read_bytes())
    raw[: len(raw) // 2] = bytes(len(raw) // 2)
    wgt.write_bytes(bytes(raw))
    assert simulate_bundle(bundle, manifest)["bit_exact"] is False


def test_bad_models_fail_in_one_line(tmp_path, cli):
    onnx.save(residual_cnn(), str(tmp_path / "float.onnx"))
    onnx.save(quantize(residual_cnn(), _samples()), str(tmp_path / "affine.onnx"))
    custom = quantize(residual_cnn(), _samples(), pow2=True)
    custom.graph.node.append(helper.make_node("Frobnicate", ["y"], ["z"], name="frob", domain="example.ops"))
    custom.graph.output[0].name = "z"
    custom.opset_import.append(helper.make_opsetid("example.ops", 1))
    onnx.save(custom, str(tmp_path / "custom.onnx"))
    for name, words in (("float", "op Conv in float (VTA runs int8"), ("affine", "power-of-two"),
                        ("custom", "Frobnicate")):
        code, out, err = cli("compile", tmp_path / f"{name}.onnx", "--target", "pynq-z1", "-o", tmp_path / name)
        assert code == 2 and words in err and err.count("\n") == 1, (name, err)
        assert not (tmp_path / name).exists()


class _BoardStandIn:
    """What `pynq` gives driver.py on a Pynq board, backed by our simulator: contiguous buffers in one DRAM, the
    four register blocks, and a fetch start that runs the instructions at the fetch registers' address. pynq
    cannot run here; this checks the driver's own work (relocation with physical addresses, the register
    protocol, packing, CPU parts) end to end."""

    def __init__(self, registers: dict[str, int], config: VTAConfig) -> None:
        import types

        from edgeprune.backends.vta.sim import Simulator

        self.dram, self.end = np.zeros(16 << 20, np.uint8), 1 << 20  # buffers from 1 MiB, page-aligned
        self.sim, self.regs = Simulator(self.dram, config), {a: {} for a in registers.values()}
        self.blocks, self.launches = registers, 0
        board = self

        class Buffer(np.ndarray):
            def flush(self) -> None: ...

            def invalidate(self) -> None: ...

        class MMIO:
            def __init__(self, base: int, span: int) -> None:
                assert base in board.regs and span == driver.REG_SPAN
                self.base = base

            def write(self, offset: int, value: int) -> None:
                board.regs[self.base][offset] = value
                if self.base == board.blocks["fetch"] and offset == 0 and value == driver.AP_START:
                    board.launch()

            def read(self, offset: int) -> int:
                return board.regs[self.base].get(offset, 0)

        def allocate(shape, dtype):
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            start, board.end = board.end, board.end + -(-n // 4096) * 4096
            buf = board.dram[start:start + n].view(dtype).reshape(shape).view(Buffer)
            buf.physical_address = start
            return buf

        self.module = types.ModuleType("pynq")
        self.module.MMIO, self.module.allocate, self.module.Overlay = MMIO, allocate, lambda bitstream: None

    def launch(self) -> None:
        fetch, compute = self.regs[self.blocks["fetch"]], self.regs[self.blocks["compute"]]
        compute[driver.COMPUTE_DONE] = 0
        start, count = fetch[driver.FETCH_INSN_ADDR], fetch[driver.FETCH_INSN_COUNT]
        self.sim.run(self.dram[start:start + count * driver.INSN_BYTES].tobytes())
        compute[driver.COMPUTE_DONE] = 1
        self.launches += 1


@pytest.mark.slow
def test_driver_runs_the_bundle_on_a_simulated_board(pruned_pow2_bundle, monkeypatch):
    from edgeprune.graph import run

    bundle = pruned_pow2_bundle / "bundle"
    info = json.loads((bundle / "manifest.json").read_text())["build"]["vta"]
    board = _BoardStandIn(info["board"]["registers"], VTAConfig.from_dict(info["config"]))
    monkeypatch.setitem(__import__("sys").modules, "pynq", board.module)
    feeds = _samples(1, seed=11)[0]
    got = driver.run(bundle, "vta.bit", feeds, timeout=5.0)
    assert board.launches == sum(len(p["layers"]) for p in info["parts"])
    np.testing.assert_array_equal(got["y"], run(onnx.load(str(bundle / "model.onnx")), feeds)["y"])
