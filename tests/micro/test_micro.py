"""Microcontroller back end: firmware projects built with arm-none-eabi-gcc and run under qemu-system-arm."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO, conv_model
from edgeprune.backends.micro.arena import Block, lifetimes, plan_arena
from edgeprune.backends.micro.plan import Call, Program, Tensor
from edgeprune.errors import UserError
from edgeprune.pipeline import compile_model, transform_model
from edgeprune.targets import load_target

sys.path.insert(0, str(REPO / "tests" / "prune"))
import zoo  # noqa: E402

QEMU_BOARDS = ["cortex-m3-qemu", "cortex-m4-qemu", "cortex-m7-qemu"]
FMNIST = REPO / "tests" / "fixtures" / "fmnist-cnn.onnx"
FMNIST_DATA = REPO / "tests" / "fixtures" / "fmnist_test256.npz"


def qemu(test):
    """Needs arm-none-eabi-gcc and qemu-system-arm (Debian packages in tools/apt-packages.txt)."""
    return pytest.mark.emulator(pytest.mark.cross(test))


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def _quantized(model_path: str, tmp_path, calib: dict[str, np.ndarray] | None = None) -> str:
    """The QDQ model `edgeprune quantize` writes, calibrated on `calib` (seeded random inputs by default)."""
    from edgeprune.graph.runtime import random_inputs
    from edgeprune.passes import make_pass

    if calib is None:
        feeds = [random_inputs(onnx.load(model_path), seed=s) for s in range(8)]
        calib = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    np.savez(tmp_path / "calib.npz", **calib)
    shapes = {k: [1, *v.shape[1:]] for k, v in calib.items()}
    out = tmp_path / "q.onnx"
    transform_model(model_path, [make_pass("quantize", {"method": "minmax", "per_channel": True, "pow2": False})], out,
                    calib=str(tmp_path / "calib.npz"), input_shapes=shapes)
    return str(out)


# ---- fast: no toolchain ----

def test_micro_targets_parse_with_budgets():
    for name in [*QEMU_BOARDS, "stm32f746g-disco", "nrf52840", "rp2040"]:
        t = load_target(name)
        assert t.kind == "micro" and t.memory["flash_bytes"] > 0 and t.memory["ram_bytes"] > 0
        assert t.device["qemu_machine"].startswith("mps2-") and t.toolchain["cflags"][0].startswith("-mcpu=")
    assert load_target("rp2040").toolchain["cflags"][0] == "-mcpu=cortex-m0plus"  # armv6-m code, not the M3's


def test_target_memory_table_is_checked(tmp_path):
    text = (REPO / "targets" / "nrf52840.toml").read_text().replace("ram_bytes = 262144", 'ram_bytes = "lots"')
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(UserError, match="memory.ram_bytes"):
        load_target(tmp_path / "bad.toml")


def test_micro_target_without_budgets_is_refused(tmp_path, cli):
    text = (REPO / "targets" / "cortex-m4-qemu.toml").read_text().replace("flash_bytes = 4194304\n", "")
    (tmp_path / "nobudget.toml").write_text(text)
    code, _, err = cli("compile", _save(conv_model(), tmp_path / "m.onnx"), "--target", tmp_path / "nobudget.toml",
                       "-o", tmp_path / "fw")
    assert code == 2 and "memory.flash_bytes" in err and not (tmp_path / "fw").exists()


def _chain_program(sizes: list[int]) -> Program:
    """input -> k0 -> t1 -> k1 -> t2 ... : a straight chain of float tensors of the given element counts."""
    tensors = [Tensor(0, (sizes[0],), "float32", "input", 0)]
    tensors += [Tensor(i, (n,), "float32", "arena") for i, n in enumerate(sizes[1:], 1)]
    tensors[-1].role = "output"
    return Program(tensors, [Call(f"k{i}", [i, i + 1]) for i in range(len(sizes) - 1)], [len(sizes) - 1])


def test_arena_reuses_memory_of_dead_tensors():
    program = _chain_program([10, 100, 50, 100, 50, 10])  # t1..t4 in the arena, t5 is the output
    arena = plan_arena(program, {})
    # at most two activations live at once: 100 + 50 floats, aligned
    assert arena.size == arena.peak_live == 400 + 208
    blocks = lifetimes(program, {})
    for a in blocks:
        for b in blocks:
            if a is not b and a.first <= b.last and b.first <= a.last:  # alive together: no overlap in memory
                oa, ob = arena.offsets[a.key], arena.offsets[b.key]
                assert oa + a.size <= ob or ob + b.size <= oa


def test_arena_places_workspaces_only_during_their_call():
    program = _chain_program([10, 100, 100, 10])
    arena = plan_arena(program, {"k1": [256, 64]})
    assert arena.workspace_peak == 256 + 64
    assert Block(("workspace", 1, 0), 256, 1, 1) in lifetimes(program, {"k1": [256, 64]})
    assert arena.size == 400 + 400 + 256 + 64  # k1 reads t1, writes t2 and needs both temporaries


def test_kernels_are_plain_c_with_typed_pointers():
    """Golden shape of the TVMScript pointer rewrite against the pinned TVM (see kernels.py)."""
    from edgeprune.backends.micro.kernels import kernels_to_c
    from edgeprune.backends.micro.plan import read_program, relax_lower
    from edgeprune.compile.tvm_build import import_onnx

    lowered = relax_lower(import_onnx(conv_model()))
    kernels = kernels_to_c(lowered)
    program = read_program(lowered)
    assert '#include "tvm/' not in kernels.source and "__tvm_ffi" not in kernels.source
    assert {c.kernel for c in program.calls} <= set(kernels.workspace)
    for decl in kernels.declarations:
        assert decl.startswith("int32_t ep_k_") and "float* " in decl
    assert kernels.source.count("return 0;") == len(kernels.declarations)
    assert [t.role for t in program.tensors].count("input") == 1 and len(program.outputs) == 1


def _kernels_agree(mod) -> int:
    """Every kernel the micro schedules change, built for this CPU before and after, on the same random inputs."""
    import tvm
    from tvm import tirx

    from edgeprune.backends.micro.schedule import schedule_kernel

    rng = np.random.default_rng(0)
    changed = 0
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or (new := schedule_kernel(func)).script() == func.script():
            continue
        changed += 1
        args = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) if "float" in str(p.dtype) else
                rng.integers(-100, 100, [int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
        outs = []
        for f in (func, new):
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
            tensors = [tvm.runtime.tensor(a.copy()) for a in args]
            lib["main"](*tensors)
            outs.append(tensors[-1].numpy())
        np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5, err_msg=gv.name_hint)
    return changed


@pytest.mark.slow  # builds every kernel twice with LLVM
@pytest.mark.parametrize("name", ["mobilenet_v2", "inception", "elementwise", "conv_flatten_gemm", "resnext", "fpn"])
def test_micro_schedules_preserve_every_kernel(name):
    from edgeprune.backends.micro.plan import relax_lower
    from edgeprune.compile.tvm_build import import_onnx

    assert _kernels_agree(relax_lower(import_onnx(getattr(zoo, name)()))) > 0


@pytest.mark.slow
def test_micro_schedules_preserve_every_kernel_of_the_tflite_fixture():
    """Padded channels after pooling (the epilogue over a larger domain than the reduction) once went wrong here."""
    pytest.importorskip("ai_edge_litert")
    from edgeprune.backends.micro.plan import relax_lower
    from edgeprune.compile.source import TfliteSource

    source = TfliteSource.load(REPO / "tests" / "fixtures" / "face_detection_short_range.tflite")
    assert _kernels_agree(relax_lower(source.relax_module())) > 10


def test_unsupported_op_is_refused_before_any_output(tmp_path, cli):
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="where"),
             helper.make_node("Cast", ["nz"], ["y"], name="cast", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    code, _, err = cli("compile", _save(model, tmp_path / "nz.onnx"), "--target", "cortex-m7-qemu", "-o", tmp_path / "fw")
    assert code == 2 and "NonZero" in err and "where" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fw").exists()


# ---- under QEMU ----

@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@qemu
def test_firmware_matches_onnxruntime_on_each_board(board, precision, tmp_path):
    path = _save(conv_model(), tmp_path / "conv.onnx")
    if precision == "int8":
        path = _quantized(path, tmp_path)
    result = compile_model(path, board, tmp_path / "fw")
    build = result.manifest["build"]
    err = build["vs_reference"]["max_abs_error"]
    if precision == "int8":
        assert build["arithmetic"] == {"int16 x int8 -> int32": 2}
        assert err == 0.0  # integer-only lowering: bit-exact to onnxruntime at DISABLE_ALL
    else:
        assert err < 1e-4
    assert build["instructions"] > 100_000 and build["compiler_warnings"] == 0
    assert 0 < build["flash_bytes"] < 64 << 10 and build["ram_bytes"] >= build["arena_bytes"]
    assert build["arena_bytes"] <= build["peak_live_bytes"] * 1.25
    for rel in ["Makefile", "README.md", "model/ep_model.h", "model/ep_model.c", "model/ep_weights.c",
                "model/ep_kernels.c", "app/main.c", "board/startup.c", "board/qemu.ld"]:
        assert rel in result.manifest["files"]
    header = (tmp_path / "fw" / "model" / "ep_model.h").read_text()
    assert f"#define EP_MODEL_ARENA_BYTES {build['arena_bytes']}u" in header and "ep_model_run(" in header
    runner = (tmp_path / "fw" / "model" / "ep_model.c").read_text()
    assert "malloc" not in runner and "static uint8_t ep_arena[" in runner
    assert "const float ep_w" in (tmp_path / "fw" / "model" / "ep_weights.c").read_text() or precision == "int8"


@qemu
def test_micro_schedules_cut_instructions_and_arena(tmp_path):
    """Same firmware with TVM's naive loop nests: the schedules must beat it clearly on both counts."""
    from edgeprune.backends.micro import MicroBackend
    from edgeprune.compile.source import OnnxSource

    model = onnx.load(_quantized(_save(zoo.chain(), tmp_path / "chain.onnx"), tmp_path))
    source, target = OnnxSource(model), load_target("cortex-m4-qemu")
    samples = [source.random_feeds(0)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fast = MicroBackend().build(source, target, tmp_path / "a", samples).info
    naive = MicroBackend(schedule=False).build(source, target, tmp_path / "b", samples).info
    assert fast["vs_reference"]["max_abs_error"] == naive["vs_reference"]["max_abs_error"] == 0.0
    assert fast["instructions"] * 2.5 < naive["instructions"]
    assert fast["arena_bytes"] * 2 < naive["arena_bytes"]


def _dsp_model() -> onnx.ModelProto:
    """3x3 convs whose channel counts take the 4- and the 2-channel micro-kernel, columns of 27 and 72 entries (an
    odd tail), a stride, and a 1x1 conv with a column too short for it (6 entries: TVM's loops)."""
    rng = np.random.default_rng(3)
    shapes = {"w1": (8, 3, 3, 3), "w2": (6, 8, 3, 3), "w3": (4, 6, 1, 1)}
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(v).astype(np.float32) / 3, k) for k, v in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("Conv", ["r2", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "dsp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("board", QEMU_BOARDS)
@qemu
def test_dsp_micro_kernels_are_bit_exact_and_only_on_dsp_cores(board, tmp_path):
    """M4/M7 (device.dsp): the int8 convs call the SMLAD micro-kernels and stay bit-exact to onnxruntime; the same
    model on the same board without them takes more instructions. The M3 has no DSP: plain C loops only."""
    from edgeprune.backends.micro import MicroBackend
    from edgeprune.compile.source import OnnxSource

    model = onnx.load(_quantized(_save(_dsp_model(), tmp_path / "dsp.onnx"), tmp_path))
    source, target = OnnxSource(model), load_target(board)
    samples = [source.random_feeds(s) for s in range(2)]
    info = MicroBackend().build(source, target, tmp_path / "fw", samples).info
    kernels = (tmp_path / "fw" / "model" / "ep_kernels.c").read_text()
    assert info["vs_reference"]["max_abs_error"] == 0.0 and info["compiler_warnings"] == 0
    assert info["arithmetic"] == {"int16 x int8 -> int32": 3}
    if board == "cortex-m3-qemu":
        assert "dsp" not in target.device and "ep_dot_" not in kernels and not (tmp_path / "fw/model/ep_dsp.h").exists()
        return
    assert target.device["dsp"] is True and (tmp_path / "fw" / "model" / "ep_dsp.h").is_file()
    assert "ep_dot_s16s16_4(" in kernels and "ep_dot_s16s16_2(" in kernels  # 8 and 6 output channels
    assert kernels.count("ep_dot_s16s16_") == info["dsp_calls"] == 2  # one per 3x3 conv; the 1x1 keeps its loops
    plain = MicroBackend(dsp=False).build(source, target, tmp_path / "plain", samples).info
    assert "ep_dot_" not in (tmp_path / "plain" / "model" / "ep_kernels.c").read_text()
    assert plain["vs_reference"]["max_abs_error"] == 0.0
    assert info["instructions"] * 1.2 < plain["instructions"]  # 1.3x here (8 and 6 channels); 1.8x on the CNN


@pytest.mark.cross
@pytest.mark.parametrize("cpu,smlad", [("cortex-m4", True), ("cortex-m7", True), ("cortex-m3", False),
                                       ("cortex-m0plus", False)])
def test_dsp_header_uses_smlad_only_on_dsp_cores(cpu, smlad, tmp_path):
    """ep_dsp.h compiles without warnings for every core (plain C without the DSP extension); SMLAD only with it."""
    import shutil
    import subprocess

    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc missing (tools/apt-packages.txt)")
    (tmp_path / "t.c").write_text('#include "ep_dsp.h"\nint32_t f(int16_t* x, int16_t* w, int32_t n, int32_t* a) '
                                  '{ return ep_dot_s16s16_4(x, w, n, a) + ep_dot_s16s16_2(x, w, n, a); }\n')
    files = REPO / "edgeprune" / "backends" / "micro" / "files"
    asm = subprocess.run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                          f"-I{files}", "-S", "-o", "-", str(tmp_path / "t.c")], capture_output=True, text=True, check=True)
    assert ("smlad" in asm.stdout) == smlad


@pytest.mark.slow
@qemu
def test_dsp_falls_back_to_int8_weights_when_int16_ones_do_not_fit(tmp_path):
    """The micro-kernels read int16 weights (twice the flash): a board too small for them gets int8 weights and
    TVM's loops instead of a refusal."""
    from edgeprune.backends.micro import MicroBackend
    from edgeprune.compile.source import OnnxSource

    path = _quantized(str(FMNIST), tmp_path, {"input": np.load(FMNIST_DATA)["input"][:8]})
    text = (REPO / "targets" / "cortex-m7-qemu.toml").read_text().replace("flash_bytes = 4194304", "flash_bytes = 150000")
    (tmp_path / "small.toml").write_text(text)
    source = OnnxSource(onnx.load(path))
    info = MicroBackend().build(source, load_target(tmp_path / "small.toml"), tmp_path / "fw", [source.random_feeds(0)]).info
    assert info["dsp_calls"] == 0 and info["vs_reference"]["max_abs_error"] == 0.0
    assert info["flash_bytes"] < 150_000 < 2 * info["weight_bytes"]  # int8 weights fit; int16 ones would not


@qemu
def test_huffman_coded_weights_shrink_flash_and_stay_exact(tmp_path, cli):
    """Magnitude-pruned int8 weights code well; the firmware decodes them per layer into the arena."""
    from edgeprune.backends.micro import MicroBackend
    from edgeprune.compile.source import OnnxSource

    model = zoo.chain()
    for init in model.graph.initializer:
        w = onnx.numpy_helper.to_array(init)
        if w.ndim == 4:  # 80% of every conv's weights to zero
            w = np.where(np.abs(w) < np.quantile(np.abs(w), 0.8), 0, w).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    source = OnnxSource(onnx.load(_quantized(_save(model, tmp_path / "sparse.onnx"), tmp_path)))
    target, samples = load_target("cortex-m4-qemu"), [source.random_feeds(0)]
    (tmp_path / "plain").mkdir()
    (tmp_path / "coded").mkdir()
    plain = MicroBackend(coded_weights=False).build(source, target, tmp_path / "plain", samples).info
    coded = MicroBackend(coded_weights=True).build(source, target, tmp_path / "coded", samples).info
    assert coded["coded_weights"] >= 2 and coded["vs_reference"] == plain["vs_reference"]  # decoding is exact
    assert coded["weight_bytes"] < 0.7 * plain["weight_bytes"]
    assert coded["instructions"] > plain["instructions"]  # decoding is not free: the cost is reported, not hidden
    assert "ep_unpack(ep_c" in (tmp_path / "coded" / "model" / "ep_model.c").read_text()
    code, out, err = cli("compile", tmp_path / "q.onnx", "--target", "cortex-m4-qemu", "--coded-weights", "-o",
                         tmp_path / "fw", "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "fw" / "manifest.json").read_text())
    assert manifest["target"]["memory"]["coded_weights"] is True and manifest["build"]["coded_weights"] >= 2
    assert "model/ep_huffman.c" in manifest["files"]


def test_coded_weights_flag_only_for_microcontrollers(tmp_path, cli):
    code, _, err = cli("compile", _save(conv_model(), tmp_path / "m.onnx"), "--target", "host", "--coded-weights",
                       "-o", tmp_path / "b")
    assert code == 2 and "--coded-weights" in err and not (tmp_path / "b").exists()


@qemu
def test_profile_emulate_reports_per_layer(tmp_path, cli):
    compile_model(_save(conv_model(), tmp_path / "conv.onnx"), "cortex-m3-qemu", tmp_path / "fw")
    code, out, err = cli("profile", tmp_path / "fw", "--per-layer", "--json", "--emulate")
    assert code == 0, err
    d = json.loads(out)
    assert {"flash_bytes", "ram_bytes", "instructions", "max_abs_error"} <= set(d) and d["max_abs_error"] < 1e-4
    assert [l["name"] for l in d["layers"]][0].startswith("fused_conv2d")
    assert 0.9 * d["instructions"] < sum(l["instructions"] for l in d["layers"]) <= d["instructions"]
    code, out, err = cli("profile", tmp_path / "fw")  # the table; the emulator is the default for firmware
    assert code == 0 and "instructions / inference" in out
    code, _, err = cli("profile", tmp_path / "fw", "--rpc", "127.0.0.1:9")
    assert code == 2 and "--emulate" in err


ZOO = {"chain": zoo.chain, "resnet_basic": lambda: zoo.resnet_basic(True), "conv_flatten_gemm": zoo.conv_flatten_gemm,
       "mlp": zoo.mlp, "mobilenet_v2": zoo.mobilenet_v2, "elementwise": zoo.elementwise, "inception": zoo.inception}


@pytest.mark.parametrize("name", sorted(ZOO))
@qemu
def test_zoo_models_on_cortex_m7(name, tmp_path):
    path = _save(ZOO[name](), tmp_path / f"{name}.onnx")
    build = compile_model(path, "cortex-m7-qemu", tmp_path / "fw").manifest["build"]
    assert build["vs_reference"]["max_abs_error"] <= 1e-4 * 10 and build["instructions"] > 0


@qemu
def test_model_too_large_for_the_board_says_by_how_much(tmp_path, cli):
    text = (REPO / "targets" / "cortex-m4-qemu.toml").read_text().replace("ram_bytes = 4194304", "ram_bytes = 8192")
    (tmp_path / "tiny.toml").write_text(text.replace('name = "cortex-m4-qemu"', 'name = "tiny"'))
    path = _save(conv_model(), tmp_path / "conv.onnx")
    code, _, err = cli("compile", path, "--target", tmp_path / "tiny.toml", "-o", tmp_path / "fw")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "RAM" in err and "more than the board's 8,192" in err
    assert not (tmp_path / "fw").exists() and not list(tmp_path.glob(".fw*"))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@qemu
def test_fmnist_cnn_on_cortex_m7_and_profile(precision, tmp_path, cli):
    path = str(FMNIST)
    if precision == "int8":  # calibrated on real Fashion-MNIST images
        path = _quantized(path, tmp_path, {"input": np.load(FMNIST_DATA)["input"][:32]})
    code, out, err = cli("compile", path, "--target", "cortex-m7-qemu", "-o", tmp_path / "fw", "--input-shape",
                         "input=1,1,28,28", "--json")
    assert code == 0, err
    code, out, err = cli("profile", tmp_path / "fw", "--emulate", "--per-layer", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["max_abs_error"] == 0.0 if precision == "int8" else d["max_abs_error"] < 1e-4
    assert d["flash_bytes"] > d["weight_bytes"] and d["ram_bytes"] > d["arena_bytes"] > 0
    layers = sum(l["instructions"] for l in d["layers"])
    assert 0.9 * d["instructions"] < layers <= d["instructions"] and len(d["layers"]) >= 10


# ---- `profile --serial`: the firmware's UART link, over QEMU's CMSDK UART as a TCP socket ----

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(bundle, target_name: str, work, **defines):
    """QEMU running the bundle's firmware built with -DEP_SERIAL; returns (process, socket URL) once it listens."""
    from edgeprune.backends.micro import emulate

    target = load_target(target_name)
    fw = emulate.build(bundle, work, target, defines=("EP_SERIAL", *(f"{k}={v}" for k, v in defines.items())))
    port = _free_port()
    proc = emulate.serve(fw, target, port)
    line = proc.stderr.readline().decode()  # "QEMU waiting for connection on: ...", printed once it listens
    assert "waiting for connection" in line, line
    return proc, f"socket://127.0.0.1:{port}"


@pytest.mark.parametrize("board,precision", [("cortex-m3-qemu", "fp32"), ("cortex-m7-qemu", "int8")])
@qemu
def test_profile_serial_runs_the_firmware_over_its_uart(board, precision, tmp_path, cli):
    from edgeprune.backends.micro import serial_link

    path = _save(conv_model(), tmp_path / "conv.onnx")
    if precision == "int8":
        path = _quantized(path, tmp_path)
    build = compile_model(path, board, tmp_path / "fw").manifest["build"]
    proc, url = _serve(tmp_path / "fw", board, tmp_path / "work", EP_SERIAL_GAP_TICKS=2_500_000)  # 0.1 s at 25 MHz
    try:
        code, out, err = cli("profile", tmp_path / "fw", "--serial", url, "--repeat", "3", "--json")
        assert code == 0, err
        d = json.loads(out)
        assert d["runs"] == 3 and d["counter"] == "qemu-icount" and d["clock_hz"] == 25_000_000
        assert d["max_abs_error"] == 0.0 if precision == "int8" else d["max_abs_error"] < 1e-4
        assert abs(d["instructions"] - build["instructions"]) < 0.02 * build["instructions"]  # the --emulate count
        # A board running another model is refused by its sizes, before any run.
        manifest = json.loads((tmp_path / "fw" / "manifest.json").read_text())
        manifest["inputs"][0]["shape"] = [1, 3, 8, 8]
        link = serial_link.Link(url, 115200, 10.0)
        with pytest.raises(UserError, match="runs another model"):
            serial_link.read_info(link, manifest)
        # A half-sent frame: the host gives up after its timeout, the board drops it after its gap and serves again.
        link.conn.write(serial_link.frame("R", b"\0" * 3072)[:20])
        link.timeout = 0.5
        with pytest.raises(UserError, match="no complete reply within 0.5 s"):
            link.request("I")  # lands inside the half frame's payload: no reply
        link.timeout = 2.0
        for _ in range(10):  # how a host resynchronises: retry after a silence longer than the board's gap
            try:
                assert link.request("I")[:4] == b"\1\0\0\0"
                break
            except UserError:
                continue
        else:
            pytest.fail("the board never dropped the half frame")
        link.conn.write(b"EP" + b"\x49\0\3\0\0\0abc\0\0\0\0")  # an info request with a wrong length and CRC
        with pytest.raises(UserError, match="bad length"):
            link.request("I")
        link.close()
    finally:
        proc.kill()
        proc.wait()


def test_profile_serial_errors_are_one_line(tmp_path, cli):
    """No board (a port that cannot be opened; a peer that never answers): exit 2, one line, within the timeout."""
    import socket
    import time

    path = _save(conv_model(), tmp_path / "conv.onnx")
    compile_model(path, "host", tmp_path / "host")
    code, _, err = cli("profile", tmp_path / "host", "--serial", "/dev/nonexistent-uart")
    assert code == 2 and "microcontroller" in err
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        from edgeprune.backends.micro import serial_link

        link = serial_link.Link(f"socket://127.0.0.1:{port}", 115200, 1.0)
        start = time.monotonic()
        with pytest.raises(UserError, match="no complete reply within 1 s"):
            link.request("I")
        assert time.monotonic() - start < 5
        link.close()
    with pytest.raises(UserError, match="cannot open"):
        serial_link.Link("/dev/nonexistent-uart", 115200, 1.0)


@qemu
def test_profile_serial_packs_several_inputs(tmp_path, cli):
    """Inputs whose sizes are not multiples of 16 land at their aligned places on the board."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = onnx.numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8), "w")
    graph = helper.make_graph([helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
                               helper.make_node("Mul", ["ab", "w"], ["y"])], "two", [a, b], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compile_model(_save(model, tmp_path / "two.onnx"), "cortex-m4-qemu", tmp_path / "fw")
    proc, url = _serve(tmp_path / "fw", "cortex-m4-qemu", tmp_path / "work")
    try:
        code, out, err = cli("profile", tmp_path / "fw", "--serial", url, "--repeat", "2", "--json")
        assert code == 0, err
        assert json.loads(out)["max_abs_error"] == 0.0  # one multiply per element: exact, and wrong if misplaced
    finally:
        proc.kill()
        proc.wait()
