"""Latency of edgeprune's host build against onnxruntime, same machine, same threads, batch 1.

    python tools/bench_latency.py [MODEL.onnx ...] [--threads N] [--repeat N] [--markdown]

Prints a table (GFLOP/s counts 2 FLOPs per MAC); --markdown prints it for BENCHMARKS.md.
Default model: examples/tinycnn.onnx.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

from benchtable import print_table  # tools/ is on the path of a script run from it

REPO = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=[str(REPO / "examples" / "tinycnn.onnx")])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from edgeprune.pipeline import compile_model
    from edgeprune.profile import profile_bundle

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            bundle = Path(tmp) / Path(path).stem
            result = compile_model(path, "host", bundle)
            prof = profile_bundle(bundle, repeat=args.repeat, threads=args.threads)
            macs = result.manifest["totals"]["macs"]
            ort = prof["baselines"]["onnxruntime"]["median_ms"]
            rows.append([Path(path).name, f"{macs / 1e6:.1f}", f"{ort:.3f}", f"{prof['median_ms']:.3f}",
                         f"{prof['median_ms'] / ort:.1f}x", f"{2 * macs / prof['median_ms'] / 1e6:.2f}",
                         f"{2 * macs / ort / 1e6:.2f}"])
    header = ["model", "MMACs", "onnxruntime ms", "edgeprune ms", "edgeprune / ort", "edgeprune GFLOP/s", "ort GFLOP/s"]
    caption = (f"{date.today()} · {cpu_name()} · {args.threads} thread(s) · batch 1 · "
               f"`python tools/bench_latency.py {' '.join(sys.argv[1:])}`")
    print_table(header, rows, args.markdown, caption if args.markdown else "", align="right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
