"""Structured pruning of the Fashion-MNIST reference CNN without training, beside Torch-Pruning.

    python tools/bench_pruning.py [--calib 1024] [--fit N] [--batch B] [--draws N] [--scope global]
                                  [--criteria l1,l2,...] [--allocate-by CRITERION] [--relu] [--recovered-only]
                                  [--markdown]

At 30/50/70% fewer MACs, for every importance criterion: accuracy on the full Fashion-MNIST test
set (10k, the Debian package dataset-fashion-mnist), parameters, MACs and onnxruntime latency (1
thread) of edgeprune's pruned model, plain, with BatchNorm statistics re-estimated, and with the
full recovery (`prune --reconstruct`: least-squares reconstruction, BatchNorm re-estimation, the
classifier refit last); with `--relu` also the ReLU-aware reconstruction (`prune --reconstruct-relu`). With `--allocate-by C` every criterion only
picks the channels inside each group, C's global ranking sets how many (`prune --allocate-by`).
Calibration (the data criteria and the recovery) uses `--calib` random TRAINING images, never test
images; `--draws N` repeats every edgeprune row on N independent draws of them (seeds 0..N-1) and
gives the accuracy as mean +- standard deviation (parameters, MACs and latency: draw 0), because the
draw moves the result by several tenths of a point. `--fit N` gives the recovery N training images
per draw (the first `--calib` of them still rank the channels and fit all but the classifier); `--batch B` feeds them B images per
run (the model's batch fixed to B while pruning, 1 again for the test), which is the same fit with
other sampled positions, 10x faster. Torch-Pruning
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


def with_batch(model, batch: int):
    """A copy whose input and output batch dimension is `batch` (shapes inside inferred again)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for value in (*out.graph.input, *out.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    return onnx.shape_inference.infer_shapes(out)


def draw_images(total: int, calib: int, fit: int, seed: int) -> np.ndarray:
    """`calib` training images (the same as with no `fit`), then `fit - calib` others for the recovery."""
    rng = np.random.default_rng(seed)
    calib_ix = rng.choice(total, calib, replace=False)
    return np.concatenate([calib_ix, rng.choice(np.setdiff1d(np.arange(total), calib_ix), fit - calib, replace=False)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", type=int, default=1024, help="training images to calibrate on (default 1024)")
    parser.add_argument("--scope", choices=["global", "local"], default="global")
    parser.add_argument("--criteria", default="l1,l2,bn-scale,activation,redundancy,reconstruction")
    parser.add_argument("--levels", default="0.7,0.5,0.3", help="fractions of the MACs to keep")
    parser.add_argument("--relu", action="store_true", help="also rows with the ReLU-aware reconstruction")
    parser.add_argument("--allocate-by", metavar="CRITERION", help="channel counts per group from this criterion")
    parser.add_argument("--draws", type=int, default=1, help="calibration draws per edgeprune row (default 1)")
    parser.add_argument("--seeds", help="the draws' seeds, e.g. 3,4 to run part of them in another process "
                        "(default 0..draws-1)")
    parser.add_argument("--fit", type=int, default=0, help="training images per draw for the recovery (default --calib)")
    parser.add_argument("--batch", type=int, default=1, help="images per calibration run (default 1)")
    parser.add_argument("--recovered-only", action="store_true", help="only the rows with reconstruction + BN")
    parser.add_argument("--baseline", action="store_true", help="also session 4's recovery: reconstruction + BN on "
                        "the --calib images, no classifier refit")
    parser.add_argument("--round-to", type=int, default=1, help="channel counts at multiples of N (8: AVX2 fp32 lanes)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    from datasets import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist, preprocess
    from edgeprune.graph import canonicalize, load_model, top1_accuracy, totals
    from edgeprune.prune import prune
    from edgeprune.prune.reconstruct import reconstruct, recover, reestimate_batchnorm

    train_x, _ = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    train = preprocess(train_x, FMNIST_MEAN, FMNIST_STD)
    fit = max(args.fit, args.calib)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(args.draws))
    if fit % args.batch or args.calib % args.batch:
        parser.error(f"--batch {args.batch} must divide --calib {args.calib} and --fit {fit}")
    fits = [[{"input": train[ix[i:i + args.batch]]} for i in range(0, fit, args.batch)]
            for ix in (draw_images(len(train), args.calib, fit, seed) for seed in seeds)]
    calibs = [feeds[: args.calib // args.batch] for feeds in fits]
    test = [{"input": x[None]} for x in preprocess(test_x, FMNIST_MEAN, FMNIST_STD)]
    model = canonicalize(load_model(FIXTURE.with_suffix(".onnx")))
    calib_model = with_batch(model, args.batch)
    dense = totals(model)
    dense_ms = latency_ms(model, test[0])

    def row(name: str, models: list) -> list:
        # every row timed in the same form, batch 1 (Torch-Pruning's has Identity nodes)
        models = [canonicalize(with_batch(m, 1)) for m in models]
        t = totals(models[0])
        ms = latency_ms(models[0], test[0])
        accuracy = [100 * top1_accuracy(m, test, test_y) for m in models]
        shown = f"{accuracy[0]:.2f}" if len(models) == 1 else \
            f"{np.mean(accuracy):.2f} ± {np.std(accuracy, ddof=1):.2f}"
        line = [name, f"{100 * (1 - t['macs'] / dense['macs']):.0f}%", f"{t['params']:,}", f"{t['macs']:,}", shown,
                f"{ms:.3f}", f"{100 * (1 - ms / dense_ms):.0f}%"]
        print("  ".join(line), " ".join(f"{a:.2f}" for a in accuracy), file=sys.stderr, flush=True)  # progress
        return line

    def recovered(pruned, removed: dict, feeds: list, relu: bool):
        return recover(calib_model, pruned, removed, feeds, relu=relu, limit=len(calibs[0]))[0]

    rows = [row("dense", [model])]
    for keep in (float(k) for k in args.levels.split(",")):
        for criterion in args.criteria.split(","):
            name = f"edgeprune {args.scope} {criterion}"
            if args.allocate_by and args.allocate_by != criterion:
                name = f"edgeprune {args.scope} {args.allocate_by} counts, {criterion} choice"
            cuts = [prune(calib_model, target_macs=keep, scope=args.scope, criterion=criterion, samples=calib,
                          round_to=args.round_to, allocate_by=args.allocate_by) for calib in calibs]
            if not args.recovered_only:
                rows.append(row(name, [pruned for pruned, _ in cuts]))
                rows.append(row(f"{name} + BN re-estimation", [reestimate_batchnorm(calib_model, pruned, report.removed, calib)[0]
                                                               for (pruned, report), calib in zip(cuts, calibs)]))
            if args.baseline:
                rows.append(row(f"{name} + reconstruction + BN (session 4)",
                                [reestimate_batchnorm(calib_model, reconstruct(calib_model, pruned, report.removed, calib)[0],
                                                      report.removed, calib)[0]
                                 for (pruned, report), calib in zip(cuts, calibs)]))
            for relu in (False, True) if args.relu else (False,):
                on = f" (recovery on {fit})" if fit > args.calib else ""
                rows.append(row(f"{name} + {'ReLU-aware ' if relu else ''}reconstruction + BN + output refit{on}",
                                [recovered(pruned, report.removed, feeds, relu)
                                 for (pruned, report), feeds in zip(cuts, fits)]))
        tp_model = torch_pruning("fmnist-cnn", keep, test[0]["input"])
        if tp_model is not None:
            rows.append(row("Torch-Pruning global l1 (no fine-tuning)", [tp_model]))
    header = ["method", "MACs removed", "params", "MACs", "accuracy %", "onnxruntime ms", "latency removed"]
    draws = f" (draws {args.seeds or '0-' + str(args.draws - 1)}: mean ± std)" if len(seeds) > 1 else ""
    recovery = f", recovery on {fit}" if fit > args.calib else ""
    caption = (f"{date.today()} · `python tools/bench_pruning.py {' '.join(sys.argv[1:])}` · Fashion-MNIST test 10k, "
               f"calibration {args.calib} training images{recovery}{draws}, no training")
    print_table(header, rows, args.markdown, caption if args.markdown else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
