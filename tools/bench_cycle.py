"""The prune cycle on the reference models: accuracy against sparsity and MACs, beside Torch-Pruning.

    python tools/bench_cycle.py [--train 20000] [--steps 4] [--epochs 1] [--models fmnist-cnn,lenet300]
                                [--keep 0.5,0.3] [--sparsity 0.9,0.95] [--markdown]

Fashion-MNIST CNN (structured, 50% and 70% fewer MACs, global L1) and LeNet-300-100 on MNIST
(unstructured, 90% and 95% global magnitude sparsity; structured at 70% fewer MACs). Methods:
one-shot (one cut, no recovery), one-shot + least-squares reconstruction (structured), the same
cut fine-tuned (no reconstruction) for all the epochs the cycle spends (steps x epochs), AGP
without training (reconstruction after every step when structured), AGP with fine-tuning
(`--epochs` per step on `--train` training images), the same with distillation from the unpruned
model, with splicing (unstructured), and Torch-Pruning (MetaPruner, global L1, same MACs) fine-tuned
by the same trainer for the same total epochs (steps x epochs). Every cycle runs with an unlimited
budget so that it reaches the target; its decisions are measured on 2,000 held-out training images,
and every figure in the table is top-1 accuracy on the full 10k test set (onnxruntime).
torch runs on 1 thread. Needs the train extra and the datasets of tools/datasets.py.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from benchtable import print_table  # noqa: E402
from peer_torch_pruning import torch_pruning  # noqa: E402
FIXTURES = REPO / "tests" / "fixtures"
VALIDATION = 2000  # held-out training images the cycle evaluates on


def load(name: str, train_count: int, seed: int = 0):
    """(train feeds, train labels), (validation feeds, labels), (test feeds, labels) as the model takes them."""
    from datasets import FMNIST_MEAN, FMNIST_STD, MNIST_MEAN, MNIST_STD, load_fashion_mnist, load_mnist, preprocess

    loader, mean, std, flat = {"fmnist-cnn": (load_fashion_mnist, FMNIST_MEAN, FMNIST_STD, False),
                               "lenet300": (load_mnist, MNIST_MEAN, MNIST_STD, True)}[name]
    tx, ty = loader("train")
    vx, vy = loader("test")
    order = np.random.default_rng(seed).permutation(len(tx))
    fit, held = order[:train_count], order[len(tx) - VALIDATION:]

    def feeds(images):
        return [{"input": x[None]} for x in preprocess(images, mean, std, flat)]

    return (feeds(tx[fit]), ty[fit]), (feeds(tx[held]), ty[held]), (feeds(vx), vy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=20000, help="training images for fine-tuning")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per step")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--models", default="fmnist-cnn,lenet300")
    parser.add_argument("--keep", help="structured MAC fractions to keep, comma-separated (default 0.5,0.3 for the "
                        "CNN, 0.3 for LeNet-300-100)")
    parser.add_argument("--sparsity", default="0.9,0.95", help="unstructured sparsities (LeNet-300-100)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from edgeprune.graph import canonicalize, load_model, top1_accuracy, totals
    from edgeprune.prune import prune
    from edgeprune.prune.reconstruct import reconstruct
    from edgeprune.prune.schedule import prune_cycle
    from edgeprune.train.finetune import FinetuneOptions, finetune, stack

    rows = []

    def nonzero(m) -> int:
        from onnx import numpy_helper

        return sum(int(np.count_nonzero(numpy_helper.to_array(i))) for i in m.graph.initializer)

    for name in args.models.split(","):
        (fit, fit_y), (held, held_y), (test, test_y) = load(name, args.train)
        dense = canonicalize(load_model(FIXTURES / f"{name}.onnx"))
        base = totals(dense)
        dense_acc = top1_accuracy(dense, test, test_y)
        ft = dict(epochs=args.epochs, lr=args.lr, threads=1)

        def row(method: str, target: str, model, seconds: float) -> None:
            t = totals(model)
            acc = top1_accuracy(model, test, test_y)
            rows.append([name, method, target, f"{nonzero(model):,}", f"{100 * (1 - nonzero(model) / nonzero(dense)):.1f}",
                         f"{100 * (1 - t['macs'] / base['macs']):.1f}", f"{100 * acc:.2f}",
                         f"{100 * (acc - dense_acc):+.2f}", f"{seconds:.0f}"])
            print("  ".join(rows[-1]), file=sys.stderr, flush=True)

        row("dense", "-", dense, 0)

        def cycle(method: str, target: str, **options) -> None:
            start = time.perf_counter()
            model, _ = prune_cycle(dense, held, held_y, train=(fit, fit_y), budget=100.0, steps=args.steps, **options)
            row(method, target, model, time.perf_counter() - start)

        structured = [float(k) for k in args.keep.split(",")] if args.keep else {"fmnist-cnn": [0.5, 0.3],
                                                                                 "lenet300": [0.3]}[name]
        for keep in structured:
            target = f"{100 * (1 - keep):.0f}% fewer MACs"
            common = dict(target_macs=keep, scope="global")
            start = time.perf_counter()
            pruned, report = prune(dense, target_macs=keep, scope="global")
            row("one-shot", target, pruned, time.perf_counter() - start)
            rebuilt, _ = reconstruct(dense, pruned, report.removed, fit[:1024])
            row("one-shot + reconstruction", target, rebuilt, time.perf_counter() - start)
            cycle("AGP + reconstruction (no training)", target, **common)
            cycle("AGP + fine-tuning", target, **common, **ft)
            cycle("AGP + fine-tuning + distillation", target, **common, **ft, distill=True)
            start = time.perf_counter()
            model, _ = prune_cycle(dense, held, held_y, train=(fit, fit_y), budget=100.0, schedule="oneshot", steps=1,
                                   **common, **{**ft, "epochs": args.steps * args.epochs})
            row(f"one-shot + fine-tuning ({args.steps * args.epochs} epochs)", target, model,
                time.perf_counter() - start)
            start = time.perf_counter()
            tp_model = canonicalize(torch_pruning(name, keep, test[0]["input"]))
            row("Torch-Pruning one-shot (no training)", target, tp_model, time.perf_counter() - start)
            tuned, _ = finetune(tp_model, stack(fit, ["input"]), fit_y,
                                FinetuneOptions(epochs=args.steps * args.epochs, lr=args.lr, threads=1))
            row(f"Torch-Pruning + fine-tuning ({args.steps * args.epochs} epochs)", target, tuned,
                time.perf_counter() - start)
        if name == "lenet300":
            for sparsity in (float(s) for s in args.sparsity.split(",")):
                target = f"{100 * sparsity:.0f}% sparse"
                common = dict(unstructured=True, sparsity=sparsity, scope="global")
                start = time.perf_counter()
                model, _ = prune_cycle(dense, held, held_y, schedule="oneshot", steps=1, budget=100.0, recovery="none",
                                       **common)
                row("one-shot", target, model, time.perf_counter() - start)
                cycle("AGP (no training)", target, recovery="none", **common)
                cycle("AGP + fine-tuning", target, **common, **ft)
                cycle("AGP + fine-tuning + distillation", target, **common, **ft, distill=True)
                cycle("AGP + fine-tuning + splicing", target, **common, **ft, splice=True)
                cycle("AGP + rewinding + fine-tuning", target, **common, **ft, rewind=True)

    header = ["model", "method", "target", "non-zero params", "sparsity %", "MACs removed %", "test accuracy %",
              "vs dense", "s"]
    caption = (f"{date.today()} · {platform.processor() or platform.machine()} · torch 1 thread · "
               f"`python tools/bench_cycle.py {' '.join(sys.argv[1:])}` · fine-tuning on {args.train} training images, "
               f"{args.steps} steps x {args.epochs} epoch(s), cycle evaluated on {VALIDATION} held-out training images, "
               "accuracy on the 10k test set")
    print_table(header, rows, args.markdown, caption if args.markdown else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
