"""Per-kernel latency INSIDE a model: edgeprune's kernels beside onnxruntime's nodes, matched in order.

    python tools/bench_inmodel.py MODEL.onnx [--threads 1] [--runs 20] [--markdown]

Single-layer benchmarks mislead in both directions: onnxruntime's time for one layer includes an NCHW <-> NCHWc
reorder and an output copy it never pays inside a model, and our kernels inside a model read weights and
activations that are no longer in cache. Here the whole model runs: our kernels are timed one by one through the
Relax VM's instrument hook, onnxruntime's nodes through its profiler (whose own overhead makes its per-node times
a little high), both on the same thread count, each the median over --runs. The conv/matmul kernels of both are
paired in execution order (onnxruntime may run a block's two branches in the other order: read the shapes).
The model is canonicalized and its batch norms folded, as `edgeprune compile` does.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchtable import print_table  # noqa: E402


def onnxruntime_nodes(model_bytes: bytes, feeds: dict, threads: int, runs: int) -> tuple[float, list]:
    """(whole-model median ms without the profiler, [(node, op type, median ms)] from a profiled session)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    plain = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    whole = []
    for i in range(runs + 3):
        start = time.perf_counter()
        plain.run(None, feeds)
        if i >= 3:
            whole.append(time.perf_counter() - start)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    profiled = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    for _ in range(runs + 3):
        profiled.run(None, feeds)
    times: dict[str, list] = collections.defaultdict(list)
    order = []
    for event in json.loads(Path(profiled.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            if name not in times:
                order.append((name, event["args"].get("op_name", "")))
            times[name].append(event["dur"] / 1e3)
    return float(np.median(whole)) * 1e3, [(n, op, float(np.median(times[n][3:] or times[n]))) for n, op in order]


def edgeprune_kernels(model, feeds: dict, runs: int) -> tuple[float, list]:
    """(whole-model median ms, [(kernel, median ms)] in call order) of the host build."""
    import tvm
    from tvm import relax

    from edgeprune.compile.tvm_build import build
    from edgeprune.targets import load_target

    vm = relax.VirtualMachine(build(model, load_target("host")), tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in feeds.values()]
    whole = []
    for i in range(runs + 3):
        start = time.perf_counter()
        vm["main"](*args)
        if i >= 3:
            whole.append(time.perf_counter() - start)
    calls: list = []
    started: dict = {}

    def instrument(func, symbol: str, before: bool, ret, *rest) -> int:
        if not symbol.startswith("vm.builtin."):
            if before:
                started[symbol] = time.perf_counter()
            else:
                calls.append((symbol, time.perf_counter() - started.pop(symbol)))
        return 0

    vm.set_instrument(instrument)
    per_call: dict[int, list] = collections.defaultdict(list)
    names: list = []
    for _ in range(runs):
        calls.clear()
        vm["main"](*args)
        names = [name for name, _ in calls]
        for i, (_, seconds) in enumerate(calls):
            per_call[i].append(seconds * 1e3)
    vm.set_instrument(None)
    return float(np.median(whole)) * 1e3, [(names[i], float(np.median(per_call[i]))) for i in range(len(names))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts

    from edgeprune.graph import random_inputs
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import transform_model

    work = Path(tempfile.mkdtemp())
    model, _ = transform_model(args.model, [make_pass("fold-batchnorm")], work / "model.onnx", force=True)
    feeds = random_inputs(model, seed=0)
    ort_ms, nodes = onnxruntime_nodes(model.SerializeToString(), feeds, args.threads, args.runs)
    ep_ms, kernels = edgeprune_kernels(model, feeds, args.runs)
    ours = [(n, ms) for n, ms in kernels if any(k in n for k in ("conv", "matmul"))]
    theirs = [(n, op, ms) for n, op, ms in nodes if any(k in op for k in ("Conv", "Gemm", "MatMul"))]
    rows = [[name, f"{ms:.3f}", op, f"{other:.3f}", f"{ms / other:.2f}", f"{ms - other:+.3f}"]
            for (name, ms), (_, op, other) in zip(ours, theirs)]
    rest_ours = sum(ms for n, ms in kernels) - sum(ms for _, ms in ours)
    rest_theirs = sum(ms for *_, ms in nodes) - sum(ms for *_, ms in theirs)
    rows.append(["(other kernels)", f"{rest_ours:.3f}", "(other nodes)", f"{rest_theirs:.3f}", "", ""])
    caption = (f"{args.model.name} · {args.threads} thread(s) · median of {args.runs} runs · whole model: "
               f"edgeprune {ep_ms:.3f} ms, onnxruntime {ort_ms:.3f} ms ({ep_ms / ort_ms:.2f}x) · "
               f"`python tools/bench_inmodel.py {args.model.name} --threads {args.threads} --runs {args.runs}`")
    print_table(["edgeprune kernel", "ms", "onnxruntime node", "ms", "ratio", "gap ms"], rows, args.markdown, caption)


if __name__ == "__main__":
    main()
