"""Latency of edgeprune's default CPU schedules against TVM's unscheduled build and onnxruntime.

    /work/venv/bin/python tools/bench_schedules.py [--threads 1 2] [--repeat 7] [--only conv3x3] [--int8]

Models: examples/tinycnn.onnx (canonicalized and BN-folded as `edgeprune compile` does), ResNet-18 and
single layers at ResNet / MobileNet shapes, the last two built in code with random weights. Each thread
count runs in its own process, since TVM reads TVM_NUM_THREADS once, when its thread pool starts. Times
are medians over `--repeat` rounds that alternate between the three runtimes: the machine is shared, so
read ratios, not single numbers. --int8: every model quantized (QDQ, per-channel, calibrated on 4 random
inputs): onnxruntime fuses it to its own int8 kernels, edgeprune lowers it to integer arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINYCNN, RESNET18 = "tinycnn (whole model)", "resnet18 224x224 (whole model)"
# name -> (op, in channels, out channels, input size, kernel, stride, group); "dense" uses (in, out)
LAYERS = {
    "conv7x7 s2 3->64 224x224": ("conv", 3, 64, 224, 7, 2, 1),
    "conv3x3 64->64 56x56": ("conv", 64, 64, 56, 3, 1, 1),
    "conv3x3 128->128 28x28": ("conv", 128, 128, 28, 3, 1, 1),
    "conv3x3 256->256 14x14": ("conv", 256, 256, 14, 3, 1, 1),
    "conv3x3 512->512 7x7": ("conv", 512, 512, 7, 3, 1, 1),
    "conv3x3 s2 64->128 56x56": ("conv", 64, 128, 56, 3, 2, 1),
    "conv1x1 256->64 56x56": ("conv", 256, 64, 56, 1, 1, 1),
    "conv1x1 16->96 112x112": ("conv", 16, 96, 112, 1, 1, 1),
    "conv1x1 24->144 56x56": ("conv", 24, 144, 56, 1, 1, 1),
    "conv1x1 144->24 56x56": ("conv", 144, 24, 56, 1, 1, 1),
    "conv1x1 96->576 14x14": ("conv", 96, 576, 14, 1, 1, 1),
    "conv3x3 pruned 61->93 28x28": ("conv", 61, 93, 28, 3, 1, 1),
    "dw3x3 144 56x56": ("conv", 144, 144, 56, 3, 1, 144),
    "dw3x3 s2 96 112x112": ("conv", 96, 96, 112, 3, 2, 96),
    "dw3x3 576 14x14": ("conv", 576, 576, 14, 3, 1, 576),
    "maxpool3x3 s2 64 112x112": ("maxpool", 64, 64, 112, 3, 2, 1),
    "dense 512->1000": ("dense", 512, 1000, 1, 1, 1, 1),
    "dense 1280->1000": ("dense", 1280, 1000, 1, 1, 1, 1),
}


def layer_model(op: str, c: int, k: int, size: int, ks: int, stride: int, group: int) -> tuple[onnx.ModelProto, int]:
    """One layer (conv + bias + relu as it fuses in a CNN) and its multiply-accumulate count."""
    rng = np.random.default_rng(0)
    pad = ks // 2
    out = (size + 2 * pad - ks) // stride + 1
    if op == "dense":
        inits = [numpy_helper.from_array(rng.standard_normal((k, c)).astype(np.float32), "w"),
                 numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b")]
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
        shapes, macs = ([1, c], [1, k]), c * k
    elif op == "maxpool":
        inits = []
        nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[ks, ks], strides=[stride] * 2, pads=[pad] * 4)]
        shapes, macs = ([1, c, size, size], [1, c, out, out]), c * out * out * ks * ks
    else:
        inits = [numpy_helper.from_array(rng.standard_normal((k, c // group, ks, ks)).astype(np.float32) * 0.1, "w"),
                 numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b")]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[ks, ks], strides=[stride] * 2,
                                  pads=[pad] * 4, group=group), helper.make_node("Relu", ["c"], ["y"])]
        shapes, macs = ([1, c, size, size], [1, k, out, out]), k * (c // group) * ks * ks * out * out
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes[0])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes[1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), macs


def resnet18() -> tuple[onnx.ModelProto, int]:
    """ResNet-18 at 224x224 with random weights, batch norms already folded into the convs."""
    rng = np.random.default_rng(0)
    nodes, inits, macs = [], [], 0

    def conv(x: str, c: int, k: int, size: int, ks: int, stride: int, relu: bool = True) -> tuple[str, int]:
        nonlocal macs
        name = f"c{len(nodes)}"
        scale = np.sqrt(2.0 / (c * ks * ks))
        weight = (rng.standard_normal((k, c, ks, ks)) * scale).astype(np.float32)
        bias = np.zeros(k, np.float32)
        inits.extend([numpy_helper.from_array(weight, f"{name}w"), numpy_helper.from_array(bias, f"{name}b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}w", f"{name}b"], [name], kernel_shape=[ks, ks],
                                      strides=[stride] * 2, pads=[ks // 2] * 4))
        out = (size + 2 * (ks // 2) - ks) // stride + 1
        macs += k * c * ks * ks * out * out
        if relu:
            nodes.append(helper.make_node("Relu", [name], [f"{name}r"]))
            name = f"{name}r"
        return name, out

    x, size = conv("x", 3, 64, 224, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, size, c = "pool", size // 2, 64
    for k, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        y, out = conv(x, c, k, size, 3, stride)
        y, _ = conv(y, k, k, out, 3, 1, relu=False)
        skip = conv(x, c, k, size, 1, stride, relu=False)[0] if stride != 1 else x
        nodes += [helper.make_node("Add", [y, skip], [f"{y}s"]), helper.make_node("Relu", [f"{y}s"], [f"{y}o"])]
        x, size, c = f"{y}o", out, k
    inits += [numpy_helper.from_array(rng.standard_normal((1000, 512)).astype(np.float32) * 0.04, "fcw"),
              numpy_helper.from_array(np.zeros(1000, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["y"], transB=1)]
    macs += 512 * 1000
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in (("x", [1, 3, 224, 224]),
                                                                                      ("y", [1, 1000]))]
    graph = helper.make_graph(nodes, "resnet18", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), macs


def tinycnn(workdir: Path) -> tuple[onnx.ModelProto, int]:
    from edgeprune.graph import totals
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    model, _ = transform_model(REPO / "examples" / "tinycnn.onnx", [make_pass("fold-batchnorm")],
                               workdir / "tinycnn.onnx", force=True)
    return model, totals(model)["macs"]


def _interleaved_ms(runs: dict[str, object], repeat: int) -> dict[str, float]:
    """Median ms per runtime over `repeat` rounds that alternate between the runtimes, so load from other
    users of the machine hits all of them alike; each round lasts >= 20 ms or one call."""
    numbers = {}
    for label, run in runs.items():
        start = time.perf_counter()
        run()
        numbers[label] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    rounds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            start = time.perf_counter()
            for _ in range(numbers[label]):
                run()
            rounds[label].append((time.perf_counter() - start) / numbers[label])
    return {label: float(np.median(times)) * 1e3 for label, times in rounds.items()}


def quantized(model: onnx.ModelProto) -> onnx.ModelProto:
    from edgeprune.graph import canonicalize, random_inputs
    from edgeprune.quant.quantize import quantize

    model = canonicalize(model)
    return quantize(model, [random_inputs(model, seed=s) for s in range(4)])


def measure(models: dict[str, onnx.ModelProto], threads: int, repeat: int, unscheduled: bool = True
            ) -> dict[str, dict[str, float]]:
    """onnxruntime, TVM's default build and edgeprune's scheduled build, in this process's thread setting."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgeprune.backends.host import QUANT_STEPS, _output_step
    from edgeprune.compile.source import OnnxSource
    from edgeprune.compile.tvm_build import build, import_onnx
    from edgeprune.graph import random_inputs
    from edgeprune.targets import load_target

    target = load_target("host")
    results = {}
    for name, model in models.items():
        feeds = random_inputs(model, seed=0)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        # The reference is the graph as written: fused into onnxruntime's int8 kernels, a QDQ model requantizes
        # in float and lands several steps away from both the written graph and our exact integer sums.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        reference = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        want = reference.run(None, feeds)[0]
        atol = max(1e-4 * np.abs(want).max(), QUANT_STEPS * _output_step(OnnxSource(model)))
        runs = {"onnxruntime": lambda: session.run(None, feeds)}
        args = [tvm.runtime.tensor(v) for v in feeds.values()]
        builds = {"edgeprune": lambda: build(model, target)}
        if unscheduled:
            builds = {"tvm default": lambda: tvm.compile(import_onnx(model), target=target.tvm_target()), **builds}
        for label, make in builds.items():
            executable = make()
            main = relax.VirtualMachine(executable, tvm.cpu())["main"]
            got = main(*args).numpy()
            assert np.allclose(got, want, rtol=1e-4, atol=atol), f"{name}: {label} output differs"
            runs[label] = lambda main=main: main(*args)
        results[name] = _interleaved_ms(runs, repeat)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", default="", help="run the models whose name contains this text")
    parser.add_argument("--int8", action="store_true", help="quantize every model (QDQ) first")
    parser.add_argument("--no-unscheduled", action="store_true", help="skip TVM's unscheduled build (slow)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        if args.only in TINYCNN:
            models[TINYCNN] = tinycnn(Path(tmp))
        if args.only in RESNET18:
            models[RESNET18] = resnet18()
        models |= {name: layer_model(*spec) for name, spec in LAYERS.items() if args.only in name}
        if args.worker:
            chosen = {n: quantized(m) if args.int8 else m for n, (m, _) in models.items()}
            print(json.dumps(measure(chosen, args.worker, args.repeat, not args.no_unscheduled)))
            return
        per_threads = {}
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--worker", str(threads), "--repeat", str(args.repeat),
                   "--only", args.only, *(["--int8"] if args.int8 else []),
                   *(["--no-unscheduled"] if args.no_unscheduled else [])]
            out = subprocess.run(cmd, env={**os.environ, "TVM_NUM_THREADS": str(threads)}, check=True,
                                 capture_output=True, text=True).stdout
            per_threads[threads] = json.loads(out.strip().splitlines()[-1])
    head = f"{'model':30} {'MMACs':>7}" + "".join(
        f" | {t}t: {'onnxrt':>7} {'tvm-def':>8} {'edgeprn':>7} {'x ort':>5}" for t in per_threads)
    print(head)
    print("-" * len(head))
    for name, (_, macs) in models.items():
        line = f"{name:30} {macs / 1e6:7.1f}"
        for rows in per_threads.values():
            r = rows[name]
            unscheduled = r.get("tvm default", float("nan"))
            line += (f" | {'':3} {r['onnxruntime']:7.3f} {unscheduled:8.2f} {r['edgeprune']:7.3f}"
                     f" {r['edgeprune'] / r['onnxruntime']:5.2f}")
        print(line)
    print("times in ms (median); 'x ort' = edgeprune / onnxruntime")


if __name__ == "__main__":
    main()
