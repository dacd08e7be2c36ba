#!/usr/bin/env python3
"""Run this bundle's model on the device with nothing but TVM's runtime and numpy.

    python3 run_model.py                  # check against the expected outputs in check.npz, then time it
    python3 run_model.py --input x=a.npy  # run on your own input (one --input per model input)

Written by edgeprune into every Linux bundle; it reads manifest.json beside it.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

HERE = Path(__file__).resolve().parent


def main():
    manifest = json.loads((HERE / "manifest.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    args = parser.parse_args()

    dev = tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(HERE / manifest["library"])), dev)
    check = np.load(HERE / "check.npz")
    feeds = {i["name"]: check["input:" + i["name"]] for i in manifest["inputs"]}
    for item in args.input:
        name, _, path = item.partition("=")
        if name not in feeds:
            sys.exit(f"run_model: the model has no input {name!r} (inputs: {', '.join(feeds)})")
        feeds[name] = np.load(path).astype(feeds[name].dtype).reshape(feeds[name].shape)
    inputs = [tvm.runtime.tensor(feeds[i["name"]], dev) for i in manifest["inputs"]]
    out = vm["main"](*inputs)
    outputs = list(out) if not hasattr(out, "numpy") else [out]
    for spec, value in zip(manifest["outputs"], outputs):
        value = value.numpy()
        line = f"{spec['name']}: shape {list(value.shape)}"
        if value.ndim == 2 and value.shape[0] == 1:
            line += f", argmax {int(value.argmax())}"
        if not args.input:
            expected = check["output:" + spec["name"]]
            error = float(np.abs(value.astype(np.float64) - expected).max())
            line += f", max abs error vs reference {error:.3g} ({'OK' if error <= 1e-3 * max(1.0, float(np.abs(expected).max())) else 'MISMATCH'})"
        print(line)
    vm.set_input("main", *inputs)
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=args.repeat + 3, min_repeat_ms=0)
    runs = sorted(list(timer("main").results)[3:])
    print(f"latency: median {1e3 * runs[len(runs) // 2]:.3f} ms over {len(runs)} runs")


if __name__ == "__main__":
    main()
