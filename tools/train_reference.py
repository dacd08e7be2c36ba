"""Train the project's reference models on real data and export them as test fixtures.

    python tools/train_reference.py fmnist-cnn      ResNet-8-style CNN, Fashion-MNIST (~8 min)
    python tools/train_reference.py lenet300        LeNet-300-100, MNIST (~1 min)
    python tools/train_reference.py lenet5          LeNet-5 (Caffe variant of Deep Compression), MNIST (~3 min)

Each writes to tests/fixtures/: <name>.onnx (opset 17, BatchNormalization kept as inference nodes
so BN-scale saliency has something to read), <name>.json (onnxruntime accuracy on the full test
set and how the model was made), <name>.pt (the state_dict, for PyTorch-side comparisons) and the
dataset's 256-image evaluation set <dataset>_test256.npz. The model classes are importable:
    sys.path.insert(0, "tools"); from train_reference import FmnistCNN, LeNet300, LeNet5
Needs torch==2.13.0 (CPU) and the data packages named in tools/datasets.py.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from datasets import (FMNIST_MEAN, FMNIST_STD, MNIST_MEAN, MNIST_STD, DatasetMissing, load_fashion_mnist,
                      load_mnist, preprocess)

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
INPUT, OUTPUT = "input", "logits"
EVAL_SAMPLES = 256
MAX_PT_BYTES = 2 * 1024 * 1024
ORT_TOLERANCE = 1e-4


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class FmnistCNN(nn.Module):
    """ResNet-8-style CNN for 1x28x28 inputs (78k params): stem 16, blocks 16/32/64, GAP, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class LeNet300(nn.Module):
    """LeNet-300-100 on flat 784 inputs, as pruned in Deep Compression."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe's LeNet-5 (Deep Compression): conv20 5x5, pool, conv50 5x5, pool, fc500, relu, fc10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


@dataclass(frozen=True)
class Recipe:
    """How one reference model is trained: SGD with Nesterov momentum under a one-cycle schedule."""
    dataset: str
    epochs: int
    batch_size: int
    max_lr: float
    weight_decay: float
    augment: bool  # random horizontal flip + random 28x28 crop of the image padded by 2


@dataclass(frozen=True)
class Reference:
    """A model class, its recipe, and whether it takes flat 784-vectors instead of images."""
    model: Callable[[], nn.Module]
    recipe: Recipe
    flat: bool


DATASETS = {"fashion-mnist": (load_fashion_mnist, FMNIST_MEAN, FMNIST_STD, "fmnist_test256.npz"),
            "mnist": (load_mnist, MNIST_MEAN, MNIST_STD, "mnist_test256.npz")}
REFERENCES = {
    "fmnist-cnn": Reference(FmnistCNN, Recipe("fashion-mnist", 8, 128, 0.1, 5e-4, True), flat=False),
    "lenet300": Reference(LeNet300, Recipe("mnist", 10, 128, 0.1, 1e-4, False), flat=True),
    "lenet5": Reference(LeNet5, Recipe("mnist", 8, 128, 0.05, 5e-4, False), flat=False),
}


def augment(x: torch.Tensor, background: float, gen: torch.Generator) -> torch.Tensor:
    """Random flip and 2-pixel translation per image; the uncovered border is background."""
    n, _, h, w = x.shape
    x = torch.where((torch.rand(n, generator=gen) < 0.5)[:, None, None, None], x.flip(3), x)
    padded = F.pad(x[:, 0], (2, 2, 2, 2), value=background)
    dy, dx = (torch.randint(0, 5, (n, 1, 1), generator=gen) for _ in range(2))
    rows, cols = dy + torch.arange(h)[None, :, None], dx + torch.arange(w)[None, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols][:, None]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, background: float,
          evaluate: Callable[[nn.Module], float]) -> None:
    """Fixed-length training (no model selection on the test set: it is only logged)."""
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(len(x) / recipe.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.max_lr, momentum=0.9, nesterov=True,
                          weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.max_lr, total_steps=recipe.epochs * steps)
    for epoch in range(recipe.epochs):
        model.train()
        start, loss_sum, correct = time.time(), 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(recipe.batch_size):
            xb = augment(x[idx], background, gen) if recipe.augment else x[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        print(f"epoch {epoch + 1}/{recipe.epochs}: loss {loss_sum / len(x):.4f} train acc {correct / len(x):.4f} "
              f"test acc {evaluate(model):.4f} ({time.time() - start:.0f} s)", flush=True)


def export(model: nn.Module, path: Path, sample: torch.Tensor) -> onnx.ModelProto:
    """Legacy exporter, opset 17, BatchNorm kept as nodes (PRESERVE on an eval-mode model)."""
    model.eval()
    with warnings.catch_warnings():  # the legacy exporter is chosen; the folding warning is for training-mode models
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        torch.onnx.export(model, (sample,), str(path), dynamo=False, opset_version=17, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}},
                          training=torch.onnx.TrainingMode.PRESERVE)
    exported = onnx.load(str(path))
    onnx.checker.check_model(exported, full_check=True)
    return exported


def check_batchnorm(exported: onnx.ModelProto, model: nn.Module) -> int:
    """Every BN module is an inference BatchNormalization node carrying its running statistics."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    stats = [(m.running_mean.numpy(), m.running_var.numpy()) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    nodes = [n for n in exported.graph.node if n.op_type == "BatchNormalization"]
    if len(nodes) != len(stats):
        raise RuntimeError(f"{len(stats)} BatchNorm modules exported as {len(nodes)} BatchNormalization nodes")
    for node, (mean, var) in zip(nodes, stats):
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if training or len(node.output) != 1 or not (np.array_equal(inits[node.input[3]], mean)
                                                     and np.array_equal(inits[node.input[4]], var)):
            raise RuntimeError(f"{node.name}: not an inference BatchNormalization with the running statistics")
    return len(nodes)


def onnx_logits(session: ort.InferenceSession, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def build(name: str, seed: int, epochs: int | None) -> dict:
    """Train, export, verify and write one reference model's fixtures; returns its record."""
    ref = REFERENCES[name]
    recipe = ref.recipe if epochs is None else replace(ref.recipe, epochs=epochs)
    load, mean, std, npz_name = DATASETS[recipe.dataset]
    (train_images, train_labels), (test_images, test_labels) = load("train"), load("test")
    x_train, x_test = (preprocess(i, mean, std, ref.flat) for i in (train_images, test_images))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = ref.model()
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} params, {len(x_train)} training images, {recipe}", flush=True)

    def torch_accuracy(m: nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            return (m(torch.from_numpy(x_test)).argmax(1).numpy() == test_labels).mean().item()

    start = time.time()
    train(model, torch.from_numpy(x_train), torch.from_numpy(train_labels), recipe, seed,
          background=-mean / std, evaluate=torch_accuracy)
    train_seconds = time.time() - start

    FIXTURES.mkdir(parents=True, exist_ok=True)
    onnx_path = FIXTURES / f"{name}.onnx"
    x_eval, y_eval = x_test[:EVAL_SAMPLES], test_labels[:EVAL_SAMPLES]
    exported = export(model, onnx_path, torch.from_numpy(x_eval[:1]))
    bn_nodes = check_batchnorm(exported, model)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        diff = float(np.abs(onnx_logits(session, x_eval) - model(torch.from_numpy(x_eval)).numpy()).max())
    if diff > ORT_TOLERANCE:
        raise RuntimeError(f"onnxruntime differs from torch by {diff:.2e} (> {ORT_TOLERANCE})")
    accuracy = float((onnx_logits(session, x_test).argmax(1) == test_labels).mean())
    eval_accuracy = float((onnx_logits(session, x_eval).argmax(1) == y_eval).mean())
    np.savez_compressed(FIXTURES / npz_name, **{INPUT: x_eval.reshape(-1, 1, 28, 28), "labels": y_eval})

    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    pt_path = FIXTURES / f"{name}.pt"
    if state.tell() <= MAX_PT_BYTES:
        pt_path.write_bytes(state.getvalue())
    record = {
        "model": name, "class": type(model).__name__, "dataset": recipe.dataset, "params": params,
        "onnx": onnx_path.name, "state_dict": pt_path.name if state.tell() <= MAX_PT_BYTES else None,
        "input": {"name": INPUT, "shape": ["N", 784] if ref.flat else ["N", 1, 28, 28]}, "output": OUTPUT,
        "preprocessing": {"formula": "(uint8 / 255 - mean) / std", "mean": mean, "std": std,
                          "layout": "flat 784" if ref.flat else "NCHW"},
        "test_accuracy": accuracy, "test_samples": len(test_labels),
        "eval_set": {"file": npz_name, "samples": EVAL_SAMPLES, "accuracy": eval_accuracy,
                     "note": f"the first {EVAL_SAMPLES} test images, stored as [n, 1, 28, 28]: reshape to the input"},
        "measured_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        "max_abs_diff_torch_onnxruntime": diff, "batchnorm_nodes": bn_nodes,
        "training": {**asdict(recipe), "optimizer": "SGD momentum 0.9 nesterov", "schedule": "OneCycleLR",
                     "train_samples": len(x_train), "seconds": round(train_seconds), "torch_threads": 1},
        "seed": seed, "torch": torch.__version__, "onnx_opset": 17,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python tools/train_reference.py {name} --seed {seed}" + (f" --epochs {epochs}" if epochs else ""),
    }
    (FIXTURES / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=REFERENCES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the build machines are small and shared: 2 threads collapse under contention
    try:
        record = build(args.model, args.seed, args.epochs)
    except DatasetMissing as exc:
        print(f"train_reference: {exc}", file=sys.stderr)
        return 2
    print(f"{args.model}: test accuracy {record['test_accuracy']:.4f} (onnxruntime, {record['test_samples']} images), "
          f"first {EVAL_SAMPLES}: {record['eval_set']['accuracy']:.4f}, torch vs onnxruntime "
          f"{record['max_abs_diff_torch_onnxruntime']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
