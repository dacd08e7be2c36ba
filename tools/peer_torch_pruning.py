"""The peer in our pruning benchmarks: Torch-Pruning on the same PyTorch reference model, to a MAC target.

Both benchmarks (bench_pruning, bench_cycle) prune through this one function so their Torch-Pruning
columns mean the same thing: MetaPruner with L1 magnitude importance and global ranking, the ratio
bisected to the MAC target as edgeprune's --target-macs does, the classifier left whole, and the
export keeping BatchNormalization nodes, as our fixtures do.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def torch_pruning(name: str, keep: float, example: np.ndarray):
    """The pruned reference model `name` (fmnist-cnn, lenet300) as ONNX, or None without the train extra."""
    try:
        import torch
        import torch_pruning as tp
        from train_reference import FmnistCNN, LeNet300
    except ImportError:
        return None
    import onnx

    cls = {"fmnist-cnn": FmnistCNN, "lenet300": LeNet300}[name]
    state = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    x = torch.from_numpy(example)
    base, _ = tp.utils.count_ops_and_params(cls().eval(), x)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = cls().eval()
        trial.load_state_dict(state)
        last = trial.fc if hasattr(trial, "fc") else trial.fc3
        tp.pruner.MetaPruner(trial, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=mid,
                             global_pruning=True, ignored_layers=[last]).step()
        macs, _ = tp.utils.count_ops_and_params(trial, x)
        lo, hi = (mid, hi) if macs > keep * base else (lo, mid)
        if macs <= keep * base:
            best = trial
    with tempfile.TemporaryDirectory() as tmp:
        torch.onnx.export(best, x, f"{tmp}/tp.onnx", input_names=["input"], output_names=["logits"], dynamo=False,
                          opset_version=17, dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          training=torch.onnx.TrainingMode.PRESERVE)
        return onnx.load(f"{tmp}/tp.onnx")
