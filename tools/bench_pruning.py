"""Structured pruning of the Fashion-MNIST reference CNN without training, beside Torch-Pruning.

    python tools/bench_pruning.py [--calib 1024] [--scope global] [--criteria l1,l2,...] [--relu] [--markdown]

At 30/50/70% fewer MACs, for every importance criterion: accuracy on the full Fashion-MNIST test
set (10k, the Debian package dataset-fashion-mnist), parameters, MACs and onnxruntime latency (1
thread) of edgeprune's pruned model, plain, with BatchNorm statistics re-estimated, and with the
full recovery (least-squares reconstruction, then BatchNorm re-estimation); with `--relu` also the
ReLU-aware reconstruction (`prune --reconstruct-relu`). Calibration (the data
criteria and the recovery) uses `--calib` random TRAINING images, never test images. Torch-Pruning
(PyPI torch-pruning, needs the train extra) prunes the same PyTorch model to the same MACs with its
magnitude importance and global pruning, with no fine-tuning either, exported to ONNX and measured
the same way.
"""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from benchtable import print_table  # noqa: E402
from peer_torch_pruning import torch_pruning  # noqa: E402
FIXTURE = REPO / "tests" / "fixtures" / "fmnist-cnn"


def latency_ms(model, feeds: dict) -> float:
    from edgeprune.profile.latency import time_callable
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return time_callable(lambda: sess.run(None, feeds), 200, 20)["median_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", type=int, default=1024, help="training images to calibrate on (default 1024)")
    parser.add_argument("--scope", choices=["global", "local"], default="global")
    parser.add_argument("--criteria", default="l1,l2,bn-scale,activation,redundancy,reconstruction")
    parser.add_argument("--levels", default="0.7,0.5,0.3", help="fractions of the MACs to keep")
    parser.add_argument("--relu", action="store_true", help="also rows with the ReLU-aware reconstruction")
    parser.add_argument("--round-to", type=int, default=1, help="channel counts at multiples of N (8: AVX2 fp32 lanes)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    from datasets import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist, preprocess
    from edgeprune.graph import canonicalize, load_model, top1_accuracy, totals
    from edgeprune.prune import prune
    from edgeprune.prune.reconstruct import reconstruct, reestimate_batchnorm

    train_x, _ = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    pick = np.random.default_rng(0).choice(len(train_x), args.calib, replace=False)
    calib = [{"input": x[None]} for x in preprocess(train_x[pick], FMNIST_MEAN, FMNIST_STD)]
    test = [{"input": x[None]} for x in preprocess(test_x, FMNIST_MEAN, FMNIST_STD)]
    model = canonicalize(load_model(FIXTURE.with_suffix(".onnx")))
    dense = totals(model)
    dense_ms = latency_ms(model, test[0])

    def row(name: str, m) -> list:
        m = canonicalize(m)  # every row timed in the same form (Torch-Pruning's export carries Identity nodes)
        t = totals(m)
        ms = latency_ms(m, test[0])
        line = [name, f"{100 * (1 - t['macs'] / dense['macs']):.0f}%", f"{t['params']:,}", f"{t['macs']:,}",
                f"{100 * top1_accuracy(m, test, test_y):.2f}", f"{ms:.3f}", f"{100 * (1 - ms / dense_ms):.0f}%"]
        print("  ".join(line), file=sys.stderr, flush=True)  # progress: the run takes a while
        return line

    rows = [row("dense", model)]
    for keep in (float(k) for k in args.levels.split(",")):
        for criterion in args.criteria.split(","):
            name = f"edgeprune {args.scope} {criterion}"
            pruned, report = prune(model, target_macs=keep, scope=args.scope, criterion=criterion, samples=calib,
                                   round_to=args.round_to)
            rows.append(row(name, pruned))
            rows.append(row(f"{name} + BN re-estimation", reestimate_batchnorm(model, pruned, report.removed, calib)[0]))
            for relu in (False, True) if args.relu else (False,):
                rebuilt, _ = reconstruct(model, pruned, report.removed, calib, relu=relu)
                rebuilt, _ = reestimate_batchnorm(model, rebuilt, report.removed, calib)
                rows.append(row(f"{name} + {'ReLU-aware ' if relu else ''}reconstruction + BN", rebuilt))
        tp_model = torch_pruning("fmnist-cnn", keep, test[0]["input"])
        if tp_model is not None:
            rows.append(row("Torch-Pruning global l1 (no fine-tuning)", tp_model))
    header = ["method", "MACs removed", "params", "MACs", "accuracy %", "onnxruntime ms", "latency removed"]
    caption = (f"{date.today()} · `python tools/bench_pruning.py {' '.join(sys.argv[1:])}` · Fashion-MNIST test 10k, "
               f"calibration {args.calib} training images, no training")
    print_table(header, rows, args.markdown, caption if args.markdown else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
